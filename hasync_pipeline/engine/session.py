"""One sync of one folder pair in one direction, as the steps both drivers call, in this order:

    preflight  look at both roots (their liveness probe), take the lease, flush the opslogs earlier runs left
    walk       list source and destination at once (each root checked first)
    plan       read the journal, reconcile (reconcile.py: every two-way decision), check the plan is safe;
               cut it into batches (a dry-run records it instead)
    apply      one batch: conflict renames and moves, folders, stage copies, one syncfs + lease check,
               renames into place and deletes
    finish     purge old trash, write the journal, decide the outcome, close and flush the opslog
    close      expire old opslogs, give the lease back (always, whatever happened)

`ha-sync` runs them in a loop (`SyncSession.run`); a Dagster job runs one per op.  Every way a run can end
is decided here, once: a step that ends the run raises `RunEnded` with its `Outcome`, after recording it.

The session never touches a root itself: every call on one runs in a child, under the run's deadlines
(liveness.py), so a dead server ends the run (`unreachable`, exit 8) instead of hanging it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from . import journal, safety, trash
from .changelog import fence
from .echo import echo_tip
from .folders import FolderSettler
from .forking import Child, call_in_child
from .incremental import (
    ChangesWalk,
    Scope,
    carry_positions,
    direction_key,
    list_scope,
    overlay,
    read_positions,
    save_positions,
    walk_changes,
)
from .latency import workers_for
from .liveness import DEST, SRC, Board, Deadlines, Side, SideStopped
from .options import SyncOptions
from .outcome import AUDIT_STATUS, INTERRUPTED_WORDS, REFUSED_WORDS, Outcome, RunEnded, Status
from .paths import ExcludeMatcher, display, split
from .plan import Op, Plan
from .ports import AuditUnwritable, Interrupted, Lease, LeaseHeld, LeaseLost, NoLease, NoTrail, Trail
from .reconcile import Draft, ReconcileOptions, finalize, reconcile
from .report import SyncReport
from .transfer import Ident, Preserve, cleanup_leftovers, describe_error
from .walk import TreeListing, walk_tree
from .workers import ApplyContext, OpResult, apply_batch_apart


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
        board: Board | None = None,
    ):
        """`board`: the one `started_walks` show their progress on (they were forked before this session)."""
        self.src, self.dest = os.path.abspath(src), os.path.abspath(dest)
        self.opts = opts  # workers 0 is chosen in preflight, by where the destination is (latency.py)
        self.remote = False  # a root is across a network: every operation a round trip or more (preflight)
        self.sides = (Side.of(labels[0], self.src), Side.of(labels[1], self.dest))
        self.deadlines = Deadlines(self.sides, opts.stall_timeout, stop_requested, board)
        self.facts: tuple[safety.RootFacts, safety.RootFacts] | None = None
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
        self.roots_now: tuple[journal.RootState, journal.RootState] | None = None  # markers and journals, read
        self.feed: ChangesWalk | None = None  # a changes run's walk: what to record as its positions
        self.generation: str | None = None  # the journal's generation once the run has ended (positions go with it)
        self.agreed: journal.Journal | None = None  # that journal (the echo test reads it: echo.py)
        self.ids: tuple[str, str] | None = None  # (source, destination) root ids, once the journal is saved

    # ---- the steps -------------------------------------------------------------------------------------
    def preflight(self) -> None:
        """Look at both roots (a root that does not answer within a few seconds ends the run before the lease
        is taken), take the pair's lease, then flush the opslogs that earlier runs left (a dead database
        leaves them)."""
        with self._ending("before any change"):
            self._look_at_roots()
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
            note = getattr(self.lease, "note", None)  # e.g. taken over from a holder whose pod is gone
            if note:
                self.report.notes.append(note)
            try:
                self.trail.check()
            except AuditUnwritable as exc:
                raise self._end(Status.REFUSED, f"{REFUSED_WORDS}: {exc}", exc) from None
            self._recording = True
            self.trail.flush_leftovers()

    def _look_at_roots(self) -> None:
        """Each root's facts, in a child each, within the probe's few seconds: its liveness probe."""
        try:
            self.facts = tuple(
                self.deadlines.results(
                    [
                        ((slot,), safety.look_at_root, (root, not self.opts.dry_run))
                        for slot, root in enumerate(self.roots)
                    ],
                    within=self.deadlines.probe_timeout,
                )
            )
        except SideStopped:
            self._recording = True  # a dead server is said in the audit trail, although no lease was taken
            raise
        src, dest = self.facts
        self.remote = src.network or dest.network
        self.opts = dataclasses.replace(self.opts, workers=workers_for(dest.network, self.opts.workers))

    @property
    def roots(self) -> tuple[str, str]:
        return self.src, self.dest

    def walk(self) -> None:
        """List both trees, each root checked first (missing, not a folder, the same or nested: refused).  In
        changes scope, only what the change logs name (incremental.py), unless they cannot vouch for it."""
        with self._ending():
            if self.opts.scope == "changes" and self.facts is not None:
                safety.check_roots(*self.facts)
                src_state, dest_state = self._read_roots()
                assert self.base is not None
                ids = (src_state.root_id, dest_state.root_id)
                self.feed = walk_changes(self.roots, ids, self.base, self.deadlines, self.opts)
                if self.feed.trees is not None:
                    self.src_tree, self.dest_tree = self.feed.trees
                    scope = self.feed.scope
                    named = scope.paths if scope is not None else 0
                    self.report.notes.append(f"changes only: {named} folders named by the change logs listed")
                    return
                self.report.notes.append(f"a full walk: {self.feed.why}")
            self.src_tree, self.dest_tree = walk_pair(
                self.src, self.dest, self.opts, self.deadlines, self.started_walks, self.facts
            )

    def _read_roots(self) -> tuple[journal.RootState, journal.RootState]:
        """Both roots' markers and journal copies (the source's whole, the destination's header), once."""
        if self.roots_now is None:
            src_files, dest_state = self.deadlines.results(
                [((SRC,), journal.read_files, (self.src,)), ((DEST,), _journal_header, (self.dest,))]
            )
            self.roots_now = journal.parse_root(src_files), dest_state
            self.base = journal.baseline(*self.roots_now)
        return self.roots_now

    def plan(self) -> int:
        """Compare and check the plan; record conflicts (and, in a dry-run, the whole plan).  Returns the number
        of batches to apply.  Ends the run when the plan is refused or a dry-run is already current."""
        assert self.src_tree is not None and self.dest_tree is not None, "walk() first"
        with self._ending():
            src_state, dest_state = self._read_roots()
            assert self.base is not None
            safety.check_markers(src_state, dest_state, self.src_tree, self.dest_tree, self.base)
            trees = (self.src_tree, self.dest_tree)
            safety.check_mounts(self.base, trees, self.labels, self.opts.allow_unmounted)
            plan, self.draft = plan_pair(
                self.src_tree,
                self.dest_tree,
                self.base,
                self.opts,
                self.labels,
                lambda: self.deadlines.call((DEST,), safety.free_bytes, self.dest),
            )
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
            self.folders = FolderSettler(self.src, self.dest, self.dest_tree, threads=self.opts.workers)
            threshold = self.opts.mtime_threshold
            for notes, errors in self.deadlines.results(
                [
                    ((SRC,), prepare_root, (self.src, [], threshold)),
                    ((DEST,), prepare_root, (self.dest, self.dest_tree.leftovers, threshold)),
                ]
            ):
                report.notes += notes
                report.errors += errors
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
            beat=self.deadlines.board.beater(SRC, DEST),
        )
        with self._ending():
            try:
                return apply_batch_apart(self.batches[index], ctx, self.deadlines)
            finally:
                self.trail.write_out()  # a batch's records are on disk when it ends, whatever comes next

    def finish(self) -> Outcome:
        """Purge old trash, decide the outcome, close the opslog with its summary and flush it."""
        with self._ending():
            if not self.opts.dry_run:
                self.report.errors += self.deadlines.call((SRC, DEST), self._finish_on_shares)
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
        excludes, beat = ExcludeMatcher(self.opts.excludes), self.deadlines.board.beater(DEST)
        if self.feed is not None and self.feed.trees is not None and self.the_plan is not None:
            # a changes run: the folders its operations touched are listed again, the rest is the walk's (as
            # trusted as the run itself; a full walk here took 3 s of a 6 s run at 1M, the pair held meanwhile)
            touched = {rel for op in self.the_plan.ops for rel in (op.path, op.new_path) if rel is not None}
            scope = Scope(folders=touched | {split(rel)[0] for rel in touched})
            part = self.deadlines.call((DEST,), list_scope, self.dest, scope, excludes, beat)
            mounts = frozenset(self.dest_tree.mount_points)
            return overlay(self.dest_tree.dirs, mounts, scope, part, self.dest)
        tree: TreeListing = self.deadlines.call((DEST,), walk_tree, self.dest, excludes, self.opts.walk_threads, beat)
        return tree  # raises SideStopped if the destination stopped answering since the run ended

    def _finish_on_shares(self) -> list[str]:
        """What finish() does on the roots, in a child (liveness.py): purge old trash, settle the folders,
        write the journal.  Returns the errors (what it changes in this object stays in the child)."""
        errors = []
        try:
            mounts = self.dest_tree.mounts if self.dest_tree is not None else []
            trash.purge(self.dest, self.opts.trash_retain_days, mounts=mounts)
        except OSError as exc:
            errors.append(f"old trash not purged: {describe_error(exc)}")
        errors += self._settle_folders()
        errors += self._save_journal()
        self._save_positions(clean=not errors and not self.report.failed and not self.report.errors)
        return errors

    def _save_positions(self, clean: bool) -> None:
        """A run that ended clean records how far it read both change logs (a full walk: their tips before
        it began), so the next changes run starts there and the watchers can tell the replication lag; one
        that did not leaves the old positions (its paths are looked at again next time)."""
        feed, trees, ids = self.feed, (self.src_tree, self.dest_tree), self.ids
        if feed is not None and feed.trees is not None:
            tips = feed.tips  # a changes run: how far it read both logs
        elif trees[0] is not None and trees[1] is not None and trees[0].feed_tip and trees[1].feed_tip:
            tips = (trees[0].feed_tip, trees[1].feed_tip)  # a full walk: both logs' tips from before it began
        else:
            tips = None
        if tips is None or ids is None or self.generation is None or not clean:
            return
        try:
            save_positions(self.roots, self.generation, direction_key(*ids), tips)
        except OSError as exc:
            self.report.notes.append(
                f"change-log positions not recorded ({describe_error(exc)}): the next changes run walks everything"
            )
            return
        self._pass_echoes(ids)

    def _pass_echoes(self, ids: tuple[str, str]) -> None:
        """When the destination's change log holds nothing but this run's own writes since the opposite
        direction's position, move that position to its tip: no run back for an echo (echo.py)."""
        agreed, back = self.agreed, direction_key(ids[1], ids[0])
        side = agreed.side_of(ids[1]) if agreed is not None else None
        if agreed is None or side is None or self.generation is None:
            return
        try:
            theirs = read_positions(self.dest, self.generation, back)
            if theirs is None:
                return  # that direction has recorded no position for this journal: its next run walks anyway
            if self._done:
                fence(self.dest)  # the destination's watcher logs this run's writes first (no answer: as it is)
            tip = echo_tip(self.dest, theirs[0], agreed, side, ExcludeMatcher(self.opts.excludes))
            if tip is not None:
                save_positions(self.roots, self.generation, back, (tip, theirs[1]))
        except OSError as exc:
            self.report.notes.append(f"the destination's change log not checked for echoes ({describe_error(exc)})")

    def _settle_folders(self) -> list[str]:
        """Folders get their final mode and mtime now that their contents are in (folders.py)."""
        if self.folders is None:
            return []
        try:
            idents, errors = self.folders.settle(self.deadlines.board.beater(SRC, DEST))
        except OSError as exc:
            idents, errors = {}, [f"folder modes and mtimes not set: {describe_error(exc)}"]
        self._done.update((key, ident) for key, ident in idents.items() if key in self._done)
        return errors

    def _save_journal(self) -> list[str]:
        """Record what both sides now agree on, and which folders are mount points, in both roots.  Nothing
        to record: nothing written.  A move that failed leaves the old journal (the next run plans again from
        it).  Returns the errors."""
        assert self.base is not None and self.draft is not None
        assert self.src_tree is not None and self.dest_tree is not None
        done = self._done
        if any(id(move) not in done for move in self.draft.moves):
            return ["a move failed: the journal is left as it was; the next run plans again"]
        mounts = (frozenset(self.src_tree.mount_points), frozenset(self.dest_tree.mount_points))
        old = self.base.journal
        if old is not None and not self.draft.changed and not done:
            if (old.mounts[self.base.src_side], old.mounts[self.base.dest_side]) == mounts:
                self.generation, self.agreed = old.generation, old
                self.ids = (old.sides[self.base.src_side], old.sides[self.base.dest_side])
                return []
        try:
            src_id, dest_id = journal.ensure_root_id(self.src), journal.ensure_root_id(self.dest)
            dirs = finalize(self.draft, done)
            if self.base.journal is not None:
                sides, parent = self.base.journal.sides, self.base.journal.generation
                swap = self.base.src_side == 1
            else:
                sides, parent, swap = (src_id, dest_id), None, False
            new = journal.save(
                (self.src, self.dest),
                sides,
                {rel: (pair[1], pair[0]) if swap else pair for rel, pair in dirs.items()},
                parent,
                (mounts[1], mounts[0]) if swap else mounts,
            )
        except OSError as exc:
            return [
                f"the journal could not be written ({describe_error(exc)}): the next run "
                "compares without it (a first sync: nothing deleted)"
            ]
        self.generation, self.agreed, self.ids = new.generation, new, (src_id, dest_id)
        if parent is not None:
            try:
                carry_positions(self.roots, parent, new.generation)  # every direction's positions still hold
            except OSError as exc:
                self.report.notes.append(f"change-log positions not carried over ({describe_error(exc)})")
        return []

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
                child.cancel(within=1.0)  # one stuck on a dead share may not go at once: it is not waited for
        assert self.outcome is not None
        return self.outcome

    def abandon(self) -> None:
        """The last resort of a run that did not answer a signal in time (cli.py's signal thread): kill every
        child, give the lease back.  Safe from another thread; the process exits right after."""
        self.deadlines.abandon()
        for child in self.started_walks:
            if child is not None:
                child.kill()
        lease = self.lease
        if lease is not None:
            lease.release()

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
            self._end(Status.INTERRUPTED, f"{INTERRUPTED_WORDS} {exc}; changes stopped, temp files removed", exc)
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
        if status in (Status.INTERRUPTED, Status.UNREACHABLE):
            self.trail.hurry()  # the process is on its way out: its record must not wait on a share
        if self._recording:
            self._recording = False
            try:
                self.trail.finish(self.report, AUDIT_STATUS[status], message)
            except AuditUnwritable as exc:  # the very problem that ended the run, most likely
                self.trail.warnings.append(str(exc))
        down = tuple(side.label for side in error.sides) if isinstance(error, SideStopped) else ()
        self.outcome = Outcome(status, message, self.report, self.trail.warnings, down)
        return RunEnded(self.outcome)

    @contextlib.contextmanager
    def _ending(self, when: str = "") -> Iterator[None]:
        """Turn what can stop a step into the run's outcome, the same for both drivers."""
        try:
            yield
        except RunEnded:
            raise
        except safety.SafetyRefusal as exc:
            raise self._end(Status.REFUSED, f"{REFUSED_WORDS}: {exc}", exc) from None
        except SideStopped as exc:
            detail = "nothing changed" if when else "changes stopped; the pair goes on by itself once it answers"
            raise self._end(Status.UNREACHABLE, f"{exc}; {detail}", exc) from None
        except LeaseLost as exc:
            raise self._end(Status.FAILED, f"lease lost, changes stopped: {exc}", exc) from None
        except AuditUnwritable as exc:
            raise self._end(Status.FAILED, f"{exc}; changes stopped", exc) from None
        except Interrupted as exc:
            left = (
                "a temp file may be left: the next run removes it" if self.deadlines.cut_short else "temp files removed"
            )
            detail = f" {when}" if when else f"; changes stopped, {left}"
            raise self._end(Status.INTERRUPTED, f"{INTERRUPTED_WORDS} {exc}{detail}", exc) from None
        except Exception as exc:  # noqa: BLE001 - WalkError, OSError, anything else: the run failed, say why
            raise self._end(Status.FAILED, f"failed: {describe_error(exc)}", exc) from None


# ---- the pieces the steps are made of ----------------------------------------------------------------------


def walk_pair(
    src: str,
    dest: str,
    opts: SyncOptions,
    deadlines: Deadlines,
    started: tuple[Child | None, Child | None] = (None, None),
    facts: tuple[safety.RootFacts, safety.RootFacts] | None = None,
) -> tuple[TreeListing, TreeListing]:
    """Walk source and destination at the same time, each in a forked process (two cores, no GIL between
    them, and a dead server's walk killed by `deadlines`), after checking both roots are usable (`facts`:
    as preflight found them, else looked at now).  `started`: walks already running (start_walks)."""
    try:
        if facts is None:
            facts = tuple(
                deadlines.results(
                    [
                        ((SRC,), safety.look_at_root, (src, not opts.dry_run)),
                        ((DEST,), safety.look_at_root, (dest, not opts.dry_run)),
                    ],
                    within=deadlines.probe_timeout,
                )
            )
        safety.check_roots(*facts)
    except BaseException:
        for child in started:
            if child is not None:
                child.cancel(within=1.0)
        raise
    excludes = ExcludeMatcher(opts.excludes)

    def walker(child: Child | None, root: str, slot: int) -> tuple[Child, tuple[int]]:
        beat = deadlines.board.beater(slot)
        return child or call_in_child(walk_tree, root, excludes, opts.walk_threads, beat, group=True), (slot,)

    src_tree, dest_tree = deadlines.collect([walker(started[0], src, SRC), walker(started[1], dest, DEST)])
    return src_tree, dest_tree


def _journal_header(root: str) -> journal.RootState:
    """A root's marker and its journal's header (checksum checked): what a run needs of the destination's copy."""
    return journal.parse_root(journal.read_files(root), with_body=False)


def prepare_root(root: str, leftovers: list[bytes], mtime_threshold: float) -> tuple[list[str], list[str]]:
    """Before a real run changes anything: remove the temp files an interrupted run left, and check the clock
    that stamps files there.  Returns (notes, errors)."""
    errors = cleanup_leftovers(root, leftovers) if leftovers else []
    try:
        skew = safety.clock_skew(root)
    except OSError as exc:
        return [f"could not check the clock of {root}: {describe_error(exc)}"], errors
    if abs(skew) <= mtime_threshold:
        return [], errors
    note = (
        f"clock skew: files written in {root} get mtimes {skew:+.0f} s off this machine's clock (no decision "
        "depends on it; conflict copies' names and first-sync comparisons do); check NTP on its server"
    )
    return [note], errors


def plan_pair(
    src_tree: TreeListing,
    dest_tree: TreeListing,
    base: journal.Baseline,
    opts: SyncOptions,
    labels: tuple[str, str] = ("source", "destination"),
    free_bytes: Callable[[], int] | None = None,
) -> tuple[Plan, Draft]:
    """Reconcile against the journal and check the plan is safe; raises safety.SafetyRefusal otherwise.
    `free_bytes`: the destination's free space (default: asked here, for tools without deadlines)."""
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
    limits = safety.SafetyLimits(opts.max_delete_percent, opts.free_space_reserve_bytes)
    safety.check_plan(plan, dest_tree, limits, free_bytes or (lambda: safety.free_bytes(dest_tree.root)))
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
