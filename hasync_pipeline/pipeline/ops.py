"""The steps of a sync job.  Each op calls exactly one step of the engine's SyncSession and only translates:
run config in; metadata, asset events, tags and Dagster's success/skip/failure out.  How a run ends is the
session's decision (engine/outcome.py), the same as for `ha-sync`."""

import time
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, TypeVar

import dagster as dg

from ..engine.fingerprint import fingerprint
from ..engine.liveness import SideStopped
from ..engine.outcome import Outcome, RunEnded, Status
from ..engine.session import SyncSession
from ..engine.walk import TreeListing
from ..engine.workers import OpResult
from ..pairs import sides
from ..progress import human_bytes
from .config import SyncConfig
from .resources import PLANNED, STARTED, WALKED, RunSettingsError, SyncRun

PAIR_TAG, DIRECTION_TAG, SKIPPED_TAG = "ha-sync/pair", "ha-sync/direction", "ha-sync/skipped"
CONFLICTS_TAG, MODE_TAG = "ha-sync/conflicts", "ha-sync/mode"
SCOPE_TAG = "ha-sync/scope"  # full or changes (ha-sync/mode already says dry-run or real)
NOT_ANSWERING_TAG = "ha-sync/not-answering"  # the server(s) a run found dead, e.g. "dell"
SKIP_TAG_VALUES = {Status.LEASE_HELD: "lease-held", Status.ALREADY_CURRENT: "dry-run-current"}
SUPERSEDED = "superseded"
PROGRESS_EVERY = 10.0  # seconds between progress lines of a batch
T = TypeVar("T")


class ProgressLog:
    """A batch's progress in the run's log: every PROGRESS_EVERY seconds while it goes, and once at its end
    (the UI otherwise showed nothing for the hour a first sync of 100k files can take)."""

    def __init__(self, log: Any, ops: list[Any]):
        self.log, self.total, self.total_bytes = log, len(ops), sum(op.copy_bytes for op in ops)
        self.done = self.failed = self.bytes = 0
        self.last = time.monotonic()

    def __call__(self, result: OpResult) -> None:
        self.done += 1
        self.failed += not result.ok
        self.bytes += result.bytes
        if time.monotonic() - self.last >= PROGRESS_EVERY:
            self.said()

    def said(self) -> None:
        self.last = time.monotonic()
        self.log.info(
            f"{self.done}/{self.total} operations done ({self.failed} failed), "
            f"{human_bytes(self.bytes)} of {human_bytes(self.total_bytes)} copied"
        )


def folder_key(side: str, pair: str) -> dg.AssetKey:
    return dg.AssetKey([side, pair])


E = TypeVar("E", dg.AssetObservation, dg.AssetMaterialization)


def folder_event(kind: type[E], key: dg.AssetKey, tree: TreeListing, **extra: Any) -> E:
    """A folder asset's observation or materialization: its content fingerprint is the data version."""
    fp = fingerprint(tree)
    metadata = {"files": tree.files, "bytes": tree.bytes, "fingerprint": fp, "path": tree.root, **extra}
    return kind(asset_key=key, tags={"dagster/data_version": fp}, metadata=metadata)


class _Skipped(Exception):
    """The run ended without fault (lease held, dry-run already current): later steps get no input."""


def _step(context: dg.OpExecutionContext, sync: SyncRun, step: Callable[[], T]) -> T:
    """Run one session step; a run it ends becomes a skip or a Failure saying why.  Any other error ends
    the session at once, naming the step (lease given back before the run's other steps end)."""
    try:
        return step()
    except RunEnded as ended:
        _report_end(context, sync.end(ended.outcome.message) or ended.outcome)
        raise _Skipped() from None
    except RunSettingsError as exc:
        raise dg.Failure(description=f"bad settings: {exc}") from None
    except Exception as exc:
        step_key = _step_key(context)
        sync.end(f"step {step_key}: {exc}", failed_step=step_key)
        raise


def _step_key(context: dg.OpExecutionContext) -> str:
    """The step's key as Dagster shows it ("apply_batch_op[3]"): the op's name and its mapping key (the graph
    is flat: an op's name is its node's)."""
    mapping = context.get_mapping_key()
    return f"{context.op_def.name}[{mapping}]" if mapping else context.op_def.name


def _target(context: dg.OpExecutionContext) -> tuple[str, str]:
    """The run's pair and direction, from the job's tags (steps pass nothing but "done" to each other)."""
    return context.run.tags[PAIR_TAG], context.run.tags[DIRECTION_TAG]


def _session(context: dg.OpExecutionContext, sync: SyncRun, needs: int) -> SyncSession:
    """This run's session, brought to step `needs` (rebuilt, in a run that re-executes from a later step)."""
    ops_config: dict[str, Any] = dict(context.run_config.get("ops") or {})  # type: ignore[call-overload]
    raw = (ops_config.get("acquire_lease") or {}).get("config") or {}
    overrides = {k: v for k, v in raw.items() if v is not None}
    pair, direction = _target(context)
    step = _step_key(context)
    return _step(context, sync, lambda: sync.session(context.run_id, pair, direction, overrides, needs, step))


def superseded_by(context: dg.OpExecutionContext, dry_run: bool) -> str | None:
    """For a run of a past window (a backfill, a late schedule tick): the later run of this job that already
    synced the current state - it succeeded, was not skipped, started after the window ended, and was real
    (or, for a dry-run, of the same kind).  A sync is of the current state: that run covers the window."""
    if not context.has_partition_key:
        return None
    window_end = context.partition_time_window.end
    records = context.instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=context.job_name, statuses=[dg.DagsterRunStatus.SUCCESS], created_after=window_end
        ),
        limit=50,
    )
    for run in (record.dagster_run for record in records):
        tags = run.tags
        if run.run_id == context.run_id or SKIPPED_TAG in tags:
            continue
        if tags.get(MODE_TAG) == "real" or (dry_run and tags.get(MODE_TAG) == "dry-run"):
            return f"run {run.run_id[:8]} ({tags.get('dagster/partition', 'no window')})"
    return None


def _report_end(context: dg.OpExecutionContext, outcome: Outcome) -> None:
    for warning in outcome.warnings:
        context.log.warning(warning)
    if outcome.skipped:
        context.instance.add_run_tags(context.run_id, {SKIPPED_TAG: SKIP_TAG_VALUES[outcome.status]})
        context.log.info(f"{outcome.message}: the run ends here")
        return
    if outcome.not_answering:
        context.instance.add_run_tags(context.run_id, {NOT_ANSWERING_TAG: ",".join(outcome.not_answering)})
    raise dg.Failure(description=outcome.message, metadata={"status": outcome.status.value})


# The steps hand each other nothing but "done" (Nothing): the session lives in the SyncRun resource, so no
# IO manager writes, loads or logs anything (16 of a no-change run's 54 event-log writes went there).
DONE = dg.Out(dg.Nothing, is_required=False)


@dg.op(
    out=DONE,
    description="Take the pair's lease (or end the run, skipped, if another run holds it) and flush "
    "opslogs left by earlier runs.",
)
def acquire_lease(context: dg.OpExecutionContext, config: SyncConfig, sync: SyncRun) -> Iterator[dg.Output[None]]:
    pair_name, direction = _target(context)
    started = _step(context, sync, lambda: sync.start(context.run_id, pair_name, direction, config.overrides()))
    dry_run = started.opts.dry_run
    context.instance.add_run_tags(
        context.run_id, {MODE_TAG: "dry-run" if dry_run else "real", SCOPE_TAG: started.opts.scope}
    )
    later = superseded_by(context, dry_run)
    if later is not None:
        sync.end(SUPERSEDED)  # nothing taken, nothing recorded: no lease, no opslog yet
        context.instance.add_run_tags(context.run_id, {SKIPPED_TAG: SUPERSEDED})
        context.log.info(f"window {context.partition_key} is already covered by {later}: the run ends here")
        return
    try:
        session = _session(context, sync, STARTED)
    except _Skipped:
        return
    for warning in session.trail.warnings:
        context.log.warning(warning)
    yield dg.Output(
        None, metadata={"source": session.src, "destination": session.dest, "dry_run": session.opts.dry_run}
    )


@dg.op(
    ins={"started": dg.In(dg.Nothing)},
    out=DONE,
    description="Walk source and destination at the same time (the source in a forked process) and "
    "record each folder's file count, bytes and fingerprint as an asset observation.",
)
def walk(context: dg.OpExecutionContext, sync: SyncRun) -> Iterator[Any]:
    try:
        session = _session(context, sync, WALKED)
    except _Skipped:
        return
    pair, direction = _target(context)
    for side, tree in zip(sides(direction), (session.src_tree, session.dest_tree), strict=True):
        assert tree is not None
        context.log_event(
            folder_event(
                dg.AssetObservation,
                folder_key(side, pair),
                tree,
                directories=tree.directories,
                symlinks=tree.symlinks,
                unreadable_dirs=len(tree.unreadable),
            )
        )
    yield dg.Output(None)


@dg.op(
    ins={"walked": dg.In(dg.Nothing)},
    out={"batch": dg.DynamicOut(int), "planned": DONE},
    description="Compare, check safety, record conflicts and cut the plan into a few batches. A dry-run "
    "records the plan instead, unless it is already current.",
)
def plan(context: dg.OpExecutionContext, sync: SyncRun) -> Iterator[Any]:
    try:
        session = _session(context, sync, PLANNED)
    except _Skipped:
        return
    the_plan = session.the_plan
    assert the_plan is not None
    for index in range(len(session.batches)):
        yield dg.DynamicOutput(index, mapping_key=f"batch_{index:04d}", output_name="batch")
    yield dg.Output(
        None,
        "planned",
        metadata={
            "operations": len(the_plan.ops),
            "bytes_to_copy": the_plan.copy_bytes,
            "conflicts": the_plan.conflicts,
            "dry_run": session.opts.dry_run,
            **{a: the_plan.count(a) for a in ("mkdir", "copy", "touch", "symlink", "delete", "rmdir")},
        },
    )


@dg.op(
    ins={"planned": dg.In(dg.Nothing)},
    out=dg.Out(dg.Nothing),
    description="Apply one batch: worker processes stage copies, one syncfs, lease check, then renames "
    "and deletes. Per-file failures are recorded, not raised.",
)
def apply_batch_op(context: dg.OpExecutionContext, batch: int, sync: SyncRun) -> Iterator[dg.Output[None]]:
    session = _session(context, sync, PLANNED)
    indices = sync.batches_for(batch)
    progress = ProgressLog(context.log, [op for i in indices for op in session.batches[i]])
    session.on_result = progress  # this step's operations, as they end
    try:
        results = [r for index in indices for r in _step(context, sync, partial(session.apply, index))]
    finally:
        session.on_result = lambda result: None
    progress.said()
    failed = [r for r in results if not r.ok]
    for r in failed[:20]:
        context.log.warning(f"{r.op.describe()}: {r.error}")
    yield dg.Output(
        None, metadata={"operations": len(results), "failed": len(failed), "bytes": sum(r.bytes for r in results)}
    )


@dg.op(
    ins={"planned": dg.In(dg.Nothing), "batches": dg.In(dg.Nothing)},
    out=dg.Out(dg.Nothing),
    description="Wait for every batch, decide the outcome, close the opslog with its summary and flush it "
    "into the audit database (a dead database leaves it for the next run).",
)
def flush_opslog(context: dg.OpExecutionContext, sync: SyncRun) -> Iterator[dg.Output[None]]:
    session = _session(context, sync, PLANNED)
    for index in sync.batches_for(None):  # a run re-executed from here: what is left is applied first
        _step(context, sync, partial(session.apply, index))
    outcome = _step(context, sync, session.finish)
    report = outcome.report
    for note in report.notes:  # conflicts, restores, first-sync mode
        context.log.warning(note)
    if report.conflicts:
        context.instance.add_run_tags(context.run_id, {CONFLICTS_TAG: str(report.conflicts)})
    pair, direction = _target(context)
    now = None  # the destination folder as this run made it
    if not session.opts.dry_run:
        try:
            now = session.destination_now()
        except SideStopped as exc:  # since the sync ended: the next run says it again, and fails then
            context.log.warning(f"the destination folder is not materialized: {exc}")
    if now is not None:
        context.log_event(
            folder_event(
                dg.AssetMaterialization,
                folder_key(sides(direction)[1], pair),
                now,
                created=report.created,
                updated=report.updated,
                deleted=report.deleted,
                conflicts=report.conflicts,
                status=outcome.status.value,
            )
        )
    yield dg.Output(
        None,
        metadata={
            "status": outcome.status.value,
            "created": report.created,
            "updated": report.updated,
            "deleted": report.deleted,
            "skipped": report.skipped,
            "failed": report.failed,
            "bytes": report.bytes,
            "errors": len(report.errors),
            "conflicts": report.conflicts,
        },
    )


@dg.op(
    ins={"flushed": dg.In(dg.Nothing)},
    out=DONE,
    description="Delete old opslogs, give the lease back, and say whether the two sides agree. Fails the "
    "run if some operations failed or some entries could not be synced.",
)
def cleanup(context: dg.OpExecutionContext, sync: SyncRun) -> Iterator[dg.AssetCheckEvaluation]:
    session = _session(context, sync, PLANNED)
    if session.outcome is None:  # a run re-executed from here
        for index in sync.batches_for(None):
            _step(context, sync, partial(session.apply, index))
        _step(context, sync, session.finish)
    plan = session.the_plan
    outcome = sync.end("cleanup") or session.close()
    assert plan is not None
    stats = {
        "left_for_the_opposite_run": plan.left_for_reverse,
        "kept_deleted": plan.kept_deleted,
        "conflicts": plan.conflicts,
        "ops": len(plan.ops),
    }
    dry_run = session.opts.dry_run
    agree = (
        outcome.status == Status.SUCCESS
        and not plan.left_for_reverse
        and not plan.kept_deleted
        and (not dry_run or not plan.ops)
    )
    pair, direction = _target(context)
    check = dg.AssetCheckEvaluation(
        asset_key=folder_key("dell", pair),
        check_name="sides_agree",
        passed=agree,
        metadata={"direction": direction, "dry_run": dry_run, "status": outcome.status.value, **stats},
        severity=dg.AssetCheckSeverity.WARN,
    )
    yield check
    if outcome.report.errors:
        context.log.warning("\n".join(outcome.report.errors[:20]))
    if not outcome.ok:
        _report_end(context, outcome)
