"""One sync of one folder pair in one direction, as the steps both drivers call, in this order:

    preflight  take the lease, flush the opslogs earlier runs left
    walk       list source and destination at once (each root checked first)
    plan       read the journal, reconcile (reconcile.py: every two-way decision), check the plan is safe;
               cut it into batches (a dry-run records it instead)
    apply      one batch: conflict renames and moves, folders, stage copies, one syncfs + lease check,
               renames into place and deletes
    finish     purge old trash, write the journal, decide the outcome, close and flush the opslog
    close      expire old opslogs, give the lease back (always, whatever happened)

`ha-sync` runs them in a loop (`SyncSession.run`); a Dagster job runs one per op.  Every way a run can end
is decided here, once: a step that ends the run raises `RunEnded` with its `Outcome`, after recording it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from . import journal, safety, trash
from .folders import FolderSettler
from .forking import Child, call_in_child, result_of
from .latency import on_network, workers_for
from .options import SyncOptions
from .outcome import AUDIT_STATUS, Outcome, RunEnded, Status
from .paths import ExcludeMatcher, display
from .plan import Op, Plan
from .ports import AuditUnwritable, Interrupted, Lease, LeaseHeld, LeaseLost, NoLease, NoTrail, Trail
from .reconcile import Draft, ReconcileOptions, finalize, reconcile
from .report import SyncReport
from .transfer import Ident, Preserve, cleanup_leftovers, describe_error
from .walk import TreeListing, walk_tree
from .workers import ApplyContext, OpResult, apply_batch


def _noop() -> None:
    return None


class SyncSession:
    """The state of one run between its steps (held by the CLI's loop, or by the Dagster run)."""

    def __init__(
        self,
        src: str,
        dest: str,
        opts: SyncOptions,
        run_id: str,
        *,
        trail: Trail | None = None,
        take_lease: Callable[[], Lease] = NoLease,
        lease_name: str = "",
        on_plan: Callable[[Plan], object] = lambda plan: None,
        on_result: Callable[[OpResult], None] = lambda result: None,
        stop_requested: Callable[[], None] = _noop,
        started_walks: tuple[Child | None, Child | None] = (None, None),
        labels: tuple[str, str] = ("source", "destination"),
    ):
        self.src, self.dest = os.path.abspath(src), os.path.abspath(dest)
        # workers 0: chosen by where the destination is (latency.py), once, for every step
        self.opts = dataclasses.replace(opts, workers=workers_for(self.dest, opts.workers))
        self.remote = on_network(self.src) or on_network(self.dest)  # every operation a round trip or more
        self.run_id = run_id
        self.trail: Trail = trail if trail is not None else NoTrail()
        self.take_lease, self.lease_name = take_lease, lease_name or "the lease"
        self.on_plan, self.on_result = on_plan, on_result
        self.stop_requested, self.started_walks = stop_requested, started_walks
        self.report = SyncReport()
        self.lease: Lease | None = None
        self.src_tree: TreeListing | None = None
        self.dest_tree: TreeListing | None = None
        self.the_plan: Plan | None = None
        self.batches: list[list[Op]] = []
        self.trash_stamp: bytes | None = None
        self.outcome: Outcome | None = None
        self.error: BaseException | None = None  # what ended the run early, if anything did
        self._recording = False  # the opslog is open: an ending is written to it
        self.labels = labels
        self.base: journal.Baseline | None = None
        self.draft: Draft | None = None
        self._done: dict[int, Ident | None] = {}  # id(op) of each operation done -> its identity
        self.folders: FolderSettler | None = None  # the folders a real run touched: settled in finish()

    # ---- the steps -------------------------------------------------------------------------------------
    def preflight(self) -> None:
        """Take the pair's lease, then flush the opslogs that earlier runs left (a dead database leaves them)."""
        with self._ending("before any change"):
            try:
                self.lease = self.take_lease()
            except LeaseHeld as exc:
                self.trail.flush_leftovers()  # safe without the lease (each file is locked): skipped runs clean up too
                raise self._end(Status.LEASE_HELD, f"{exc}; nothing changed", exc) from None
            except (Interrupted, RunEnded):
                raise
            except Exception as exc:  # noqa: BLE001 - no kubeconfig, API server unreachable...: say so
                raise self._end(
                    Status.FAILED, f"cannot take {self.lease_name}, nothing changed: {describe_error(exc)}", exc
                ) from None
            try:
                self.trail.check()
            except AuditUnwritable as exc:
                raise self._end(Status.REFUSED, f"refused, nothing changed: {exc}", exc) from None
            self._recording = True
            self.trail.flush_leftovers()

    def walk(self) -> None:
        """List both trees, each root checked first (missing, not a folder, the same or nested: refused)."""
        with self._ending():
            self.src_tree, self.dest_tree = walk_pair(self.src, self.dest, self.opts, self.started_walks)

    def plan(self) -> int:
        """Compare and check the plan; record conflicts (and, in a dry-run, the whole plan).  Returns the number
        of batches to apply.  Ends the run when the plan is refused or a dry-run is already current."""
        assert self.src_tree is not None and self.dest_tree is not None, "walk() first"
        with self._ending():
            src_state, dest_state = journal.read_root(self.src), journal.read_root(self.dest, with_body=False)
            self.base = journal.baseline(src_state, dest_state)
            safety.check_markers(src_state, dest_state, self.src_tree, self.dest_tree, self.base)
            plan, self.draft = plan_pair(self.src_tree, self.dest_tree, self.base, self.opts, self.labels)
            self.the_plan = plan
            report = self.report
            report.skipped, report.conflicts = plan.skipped, plan.conflicts
            if plan.first_sync:
                report.notes.append(
                    f"first-sync mode ({plan.first_sync}): both sides are merged, nothing is "
                    "deleted, and differing content is kept twice as a conflict"
                )
            report.notes += plan.notes
            report.errors += [msg for _, msg in plan.errors]
            report.errors += [
                f"{display(p)}: special file (FIFO, socket or device) skipped" for p in self.src_tree.special
            ]
            if self.opts.dry_run:
                current = self.trail.already_current(plan)
                if current:
                    self._recording = False  # the seed: an already-current dry-run writes nothing
                    raise self._end(Status.ALREADY_CURRENT, current)
            self.on_plan(plan)
            self.trail.begin()
            if self.opts.dry_run:
                for op in plan.ops:
                    self._record(OpResult(op, True))
                return 0
            report.errors += cleanup_leftovers(self.dest, self.dest_tree.leftovers)
            self.folders = FolderSettler(self.src, self.dest, self.dest_tree, threads=self.opts.workers)
            report.notes += self._clock_skews()
            self.trash_stamp = trash.new_stamp(self.run_id, self.opts.trash_retain_days)
            self.batches = split_batches(plan.ops, self.opts.batch_max_ops, self.opts.batch_max_bytes)
            return len(self.batches)

    def apply(self, index: int) -> list[OpResult]:
        """Apply batch `index`.  Per-file failures are results; a lost lease or an interruption ends the run."""
        assert self.lease is not None, "preflight() first"
        ctx = ApplyContext(
            self.src,
            self.dest,
            self.trash_stamp,
            workers=self.opts.workers,
            preserve=Preserve(xattrs=self.opts.xattrs, sparse=self.opts.sparse),
            mounts=tuple(self.dest_tree.mounts) if self.dest_tree is not None else (),
            durable=self.opts.durable,
            remote=self.remote,
            check_lease=self.lease.check,
            on_result=self._record,
            prepare=self.trail.prepare,
            stop_requested=self.stop_requested,
        )
        with self._ending():
            try:
                return apply_batch(self.batches[index], ctx)
            finally:
                self.trail.write_out()  # a batch's records are on disk when it ends, whatever comes next

    def finish(self) -> Outcome:
        """Purge old trash, decide the outcome, close the opslog with its summary and flush it."""
        with self._ending():
            if not self.opts.dry_run:
                try:
                    mounts = self.dest_tree.mounts if self.dest_tree is not None else []
                    trash.purge(self.dest, self.opts.trash_retain_days, mounts=mounts)
                except OSError as exc:
                    self.report.errors.append(f"old trash not purged: {describe_error(exc)}")
                self._settle_folders()
                self._save_journal()
            if not self.report.clean:
                status = Status.PARTIAL_FAILURE
            else:
                status = Status.CONFLICTS if self.report.conflicts else Status.SUCCESS
            message = {
                Status.SUCCESS: "",
                Status.CONFLICTS: f"{self.report.conflicts} conflicts: both versions kept, one renamed",
                Status.PARTIAL_FAILURE: f"{self.report.failed} operations failed, {len(self.report.errors)} "
                "entries not synced",
            }[status]
            self.report.stop_clock()
            self.trail.finish(self.report, AUDIT_STATUS[status])
            self._recording = False
            self.outcome = Outcome(status, message, self.report, self.trail.warnings)
            return self.outcome

    def destination_now(self) -> TreeListing:
        """The destination as the run left it: the walk's listing when nothing changed, else walked again
        (the data version of the folder asset)."""
        assert self.dest_tree is not None, "walk() first"
        report = self.report
        if self.opts.dry_run or not (report.created or report.updated or report.deleted or report.conflicts):
            return self.dest_tree
        return walk_tree(self.dest, ExcludeMatcher(self.opts.excludes), self.opts.walk_threads)

    def _clock_skews(self) -> list[str]:
        notes = []
        for root in (self.src, self.dest):
            try:
                skew = safety.clock_skew(root)
            except OSError as exc:
                notes.append(f"could not check the clock of {root}: {describe_error(exc)}")
                continue
            if abs(skew) > self.opts.mtime_threshold:
                notes.append(
                    f"clock skew: files written in {root} get mtimes {skew:+.0f} s off this machine's "
                    "clock (no decision depends on it; conflict copies' names and first-sync "
                    "comparisons do); check NTP on its server"
                )
        return notes

    def _settle_folders(self) -> None:
        """Folders get their final mode and mtime now that their contents are in (folders.py)."""
        if self.folders is None:
            return
        try:
            idents, errors = self.folders.settle()
        except OSError as exc:
            idents, errors = {}, [f"folder modes and mtimes not set: {describe_error(exc)}"]
        self._done.update((key, ident) for key, ident in idents.items() if key in self._done)
        self.report.errors += errors

    def _save_journal(self) -> None:
        """Record what both sides now agree on, in both roots.  Nothing to record: nothing written.  A move
        that failed leaves the old journal (the next run plans again from it)."""
        assert self.base is not None and self.draft is not None
        done = self._done
        if any(id(move) not in done for move in self.draft.moves):
            self.report.errors.append("a move failed: the journal is left as it was; the next run plans again")
            return
        if self.base.journal is not None and not self.draft.changed and not done:
            return
        try:
            src_id, dest_id = journal.ensure_root_id(self.src), journal.ensure_root_id(self.dest)
            dirs = finalize(self.draft, done)
            if self.base.journal is not None:
                sides, parent = self.base.journal.sides, self.base.journal.generation
                swap = self.base.src_side == 1
            else:
                sides, parent, swap = (src_id, dest_id), None, False
            journal.save(
                (self.src, self.dest),
                sides,
                {rel: (pair[1], pair[0]) if swap else pair for rel, pair in dirs.items()},
                parent,
            )
        except OSError as exc:
            self.report.errors.append(
                f"the journal could not be written ({describe_error(exc)}): the next run "
                "compares without it (a first sync: nothing deleted)"
            )

    def close(self, reason: str = "the run stopped before it finished") -> Outcome:
        """Expire old opslogs and give the lease back.  Always called, however the run ended; idempotent.
        A run that ended no other way (a driver's own stop, a bug) is recorded as failed, for `reason`."""
        if self.outcome is None:
            self._end(Status.FAILED, reason, self.error)
        try:  # every run, skipped ones too (a file still being written is locked, never expired)
            self.trail.expire_old()
        except OSError as exc:
            self.trail.warnings.append(f"could not expire old opslogs: {describe_error(exc)}")
        if self.lease is not None:
            self.lease.release()
            self.lease = None
        for child in self.started_walks:  # not used (lease held, interrupted...): never leave them behind
            if child is not None:
                child.cancel()
        assert self.outcome is not None
        return self.outcome

    def run(self) -> Outcome:
        """Every step in order: what `ha-sync` does."""
        try:
            self.preflight()
            self.walk()
            for index in range(self.plan()):
                self.apply(index)
            self.finish()
        except RunEnded:
            pass
        except Interrupted as exc:  # arrived between two steps
            self._end(Status.INTERRUPTED, f"interrupted by {exc}; changes stopped, temp files removed", exc)
        finally:
            self.close()
        assert self.outcome is not None
        return self.outcome

    # ---- how a run ends --------------------------------------------------------------------------------
    def _record(self, result: OpResult) -> None:
        if result.ok:
            self._done[id(result.op)] = result.ident
        if self.folders is not None:
            self.folders.saw(result.op, result.ok)
        self.report.add(result)
        self.trail.record(result)
        self.on_result(result)

    def _end(self, status: Status, message: str, error: BaseException | None = None) -> RunEnded:
        """Record how the run ended (in the opslog, when one is being kept) and make the RunEnded to raise."""
        self.error = error
        self.report.stop_clock()
        if self._recording:
            self._recording = False
            try:
                self.trail.finish(self.report, AUDIT_STATUS[status], message)
            except AuditUnwritable as exc:  # the very problem that ended the run, most likely
                self.trail.warnings.append(str(exc))
        self.outcome = Outcome(status, message, self.report, self.trail.warnings)
        return RunEnded(self.outcome)

    @contextlib.contextmanager
    def _ending(self, when: str = "") -> Iterator[None]:
        """Turn what can stop a step into the run's outcome, the same for both drivers."""
        try:
            yield
        except RunEnded:
            raise
        except safety.SafetyRefusal as exc:
            raise self._end(Status.REFUSED, f"refused, nothing changed: {exc}", exc) from None
        except LeaseLost as exc:
            raise self._end(Status.FAILED, f"lease lost, changes stopped: {exc}", exc) from None
        except AuditUnwritable as exc:
            raise self._end(Status.FAILED, f"{exc}; changes stopped", exc) from None
        except Interrupted as exc:
            detail = f" {when}" if when else "; changes stopped, temp files removed"
            raise self._end(Status.INTERRUPTED, f"interrupted by {exc}{detail}", exc) from None
        except Exception as exc:  # noqa: BLE001 - WalkError, OSError, anything else: the run failed, say why
            raise self._end(Status.FAILED, f"failed: {describe_error(exc)}", exc) from None


# ---- the pieces the steps are made of ----------------------------------------------------------------------


def walk_pair(
    src: str, dest: str, opts: SyncOptions, started: tuple[Child | None, Child | None] = (None, None)
) -> tuple[TreeListing, TreeListing]:
    """Walk source and destination at the same time, the source in a forked process (two cores, no GIL
    between them), after checking both roots are usable.  `started`: walks already running (start_walks)."""
    try:
        safety.check_roots(src, dest, writing=not opts.dry_run)
    except BaseException:
        for child in started:
            if child is not None:
                child.cancel()
        raise
    excludes = ExcludeMatcher(opts.excludes)
    src_child, dest_child = started
    src_child = src_child or call_in_child(walk_tree, src, excludes, opts.walk_threads)
    try:
        dest_tree = result_of(dest_child) if dest_child else walk_tree(dest, excludes, opts.walk_threads)
    finally:
        src_tree = result_of(src_child)
    return src_tree, dest_tree


def plan_pair(
    src_tree: TreeListing,
    dest_tree: TreeListing,
    base: journal.Baseline,
    opts: SyncOptions,
    labels: tuple[str, str] = ("source", "destination"),
) -> tuple[Plan, Draft]:
    """Reconcile against the journal and check the plan is safe; raises safety.SafetyRefusal otherwise."""
    plan, draft = reconcile(
        src_tree,
        dest_tree,
        base,
        ReconcileOptions(
            int(opts.mtime_threshold * 1e9),
            opts.delete_missing,
            max(1, opts.workers),
            labels,
            datetime.now(UTC),
            owners=os.geteuid() == 0,
            xattrs=opts.xattrs,
            hard_links=opts.hard_links,
        ),
    )
    safety.check_plan(plan, dest_tree, safety.SafetyLimits(opts.max_delete_percent, opts.free_space_reserve_bytes))
    return plan, draft


def split_batches(ops: list[Op], max_ops: int, max_bytes: int) -> list[list[Op]]:
    """Cut the plan, in order, into batches bounded by count and bytes: the unit of fan-out."""
    batches: list[list[Op]] = []
    current: list[Op] = []
    size = 0
    for op in ops:
        if current and (len(current) >= max_ops or size + op.copy_bytes > max_bytes):
            batches.append(current)
            current, size = [], 0
        current.append(op)
        size += op.copy_bytes
    if current:
        batches.append(current)
    return batches


def run_sync(src: str, dest: str, opts: SyncOptions, run_id: str = "test", **hooks: object) -> tuple[SyncReport, Plan]:
    """The whole sequence without audit or lease (engine tests, tools): (report, plan).  A refusal or failure
    re-raises what caused it.  `hooks`: on_plan, on_result, stop_requested (see SyncSession)."""
    session = SyncSession(src, dest, opts, run_id, **hooks)  # type: ignore[arg-type]
    outcome = session.run()
    if session.error is not None and not outcome.ok:
        raise session.error
    assert session.the_plan is not None
    return outcome.report, session.the_plan
