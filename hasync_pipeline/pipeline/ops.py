"""The steps of a sync job.  Each op calls exactly one step of the engine's SyncSession and only translates:
run config in; metadata, asset events, tags and Dagster's success/skip/failure out.  How a run ends is the
session's decision (engine/outcome.py), the same as for `ha-sync`."""

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import dagster as dg

from ..audit import AuditStore, DsnError
from ..engine.fingerprint import fingerprint
from ..engine.outcome import Outcome, RunEnded, Status
from ..pairs import RegistryError, load_registry, sides
from ..session_factory import build_session
from ..settings import SettingError
from . import live
from .config import SyncConfig
from .live import LiveRun, RunRef

PAIR_TAG, DIRECTION_TAG, SKIPPED_TAG = "ha-sync/pair", "ha-sync/direction", "ha-sync/skipped"
CONFLICTS_TAG = "ha-sync/conflicts"
SKIP_TAG_VALUES = {Status.LEASE_HELD: "lease-held", Status.ALREADY_CURRENT: "dry-run-current"}
T = TypeVar("T")


def folder_key(side: str, pair: str) -> dg.AssetKey:
    return dg.AssetKey([side, pair])


class _Skipped(Exception):
    """The run ended without fault (lease held, dry-run already current): later steps get no input."""


def _step(context: dg.OpExecutionContext, step: Callable[[], T]) -> T:
    """Run one session step; a run it ends becomes a skip or a Failure saying why."""
    try:
        return step()
    except RunEnded as ended:
        _report_end(context, live.end(context.run_id) or ended.outcome)
        raise _Skipped() from None


def _report_end(context: dg.OpExecutionContext, outcome: Outcome) -> None:
    for warning in outcome.warnings:
        context.log.warning(warning)
    if outcome.skipped:
        context.instance.add_run_tags(context.run_id, {SKIPPED_TAG: SKIP_TAG_VALUES[outcome.status]})
        context.log.info(f"{outcome.message}: the run ends here")
        return
    raise dg.Failure(description=outcome.message, metadata={"status": outcome.status.value})


@dg.op(
    out=dg.Out(RunRef, is_required=False),
    description="Take the pair's lease (or end the run, skipped, if another run holds it) and flush "
    "opslogs left by earlier runs.",
)
def acquire_lease(context: dg.OpExecutionContext, config: SyncConfig) -> Iterator[dg.Output[RunRef]]:
    pair_name, direction = context.run.tags[PAIR_TAG], context.run.tags[DIRECTION_TAG]
    try:
        registry = load_registry()
        settings = registry.settings_for(pair_name, overrides=config.model_dump())
        store = AuditStore(settings.db_dsn, settings.db_timeout)
    except (SettingError, RegistryError, DsnError) as exc:
        raise dg.Failure(description=f"bad settings: {exc}") from None
    src, dest = registry.get(pair_name).endpoints(direction, settings)
    run_id = context.run_id
    opts = settings.sync_options()
    session = build_session(
        settings,
        opts,
        store,
        run_id=run_id,
        pair=pair_name,
        direction=direction,
        src=src,
        dest=dest,
        labels=sides(direction),
        dagster_run_id=run_id,
    )
    live.register(run_id, LiveRun(session, store))
    try:
        _step(context, session.preflight)
    except _Skipped:
        return
    for warning in session.trail.warnings:
        context.log.warning(warning)
    yield dg.Output(
        RunRef(run_id, pair_name, direction, src, dest),
        metadata={"source": src, "destination": dest, "dry_run": opts.dry_run},
    )


@dg.op(
    out=dg.Out(RunRef, is_required=False),
    description="Walk source and destination at the same time (the source in a forked process) and "
    "record each folder's file count, bytes and fingerprint as an asset observation.",
)
def walk(context: dg.OpExecutionContext, run: RunRef) -> Iterator[Any]:
    session = live.get(run.run_id)
    try:
        _step(context, session.walk)
    except _Skipped:
        return
    for side, tree in zip(sides(run.direction), (session.src_tree, session.dest_tree), strict=True):
        assert tree is not None
        fp = fingerprint(tree)
        context.log_event(
            dg.AssetObservation(
                asset_key=folder_key(side, run.pair),
                tags={"dagster/data_version": fp},
                metadata={
                    "files": tree.files,
                    "directories": tree.directories,
                    "symlinks": tree.symlinks,
                    "bytes": tree.bytes,
                    "fingerprint": fp,
                    "unreadable_dirs": len(tree.unreadable),
                    "path": tree.root,
                },
            )
        )
    yield dg.Output(run)


@dg.op(
    out={"batch": dg.DynamicOut(int), "planned": dg.Out(RunRef, is_required=False)},
    description="Compare, check safety, record conflicts and cut the plan into a few batches. A dry-run "
    "records the plan instead, unless it is already current.",
)
def plan(context: dg.OpExecutionContext, run: RunRef) -> Iterator[Any]:
    session = live.get(run.run_id)
    try:
        batches = _step(context, session.plan)
    except _Skipped:
        return
    the_plan = session.the_plan
    assert the_plan is not None
    for index in range(batches):
        yield dg.DynamicOutput(index, mapping_key=f"batch_{index:04d}", output_name="batch")
    context.add_output_metadata(
        {
            "operations": len(the_plan.ops),
            "bytes_to_copy": the_plan.copy_bytes,
            "conflicts": the_plan.conflicts,
            "dry_run": session.opts.dry_run,
            **{a: the_plan.count(a) for a in ("mkdir", "copy", "touch", "symlink", "delete", "rmdir")},
        },
        output_name="planned",
    )
    yield dg.Output(run, "planned")


@dg.op(
    description="Apply one batch: worker processes stage copies, one syncfs, lease check, then renames "
    "and deletes. Per-file failures are recorded, not raised."
)
def apply_batch_op(context: dg.OpExecutionContext, run: RunRef, batch: int) -> dict[str, int]:
    session = live.get(run.run_id)
    results = _step(context, lambda: session.apply(batch))
    failed = [r for r in results if not r.ok]
    for r in failed[:20]:
        context.log.warning(f"{r.op.describe()}: {r.error}")
    return {"operations": len(results), "failed": len(failed), "bytes": sum(r.bytes for r in results)}


@dg.op(description="Wait for every batch.")
def collect(context: dg.OpExecutionContext, run: RunRef, batches: list[dict[str, int]]) -> RunRef:
    context.add_output_metadata({"batches": len(batches)})
    return run


@dg.op(
    description="Decide the outcome, close the opslog with its summary and flush it into the audit "
    "database (a dead database leaves it for the next run)."
)
def flush_opslog(context: dg.OpExecutionContext, run: RunRef) -> RunRef:
    session = live.get(run.run_id)
    outcome = _step(context, session.finish)
    report = outcome.report
    for note in report.notes:  # conflicts, restores, first-sync mode
        context.log.warning(note)
    if report.conflicts:
        context.instance.add_run_tags(context.run_id, {CONFLICTS_TAG: str(report.conflicts)})
    context.add_output_metadata(
        {
            "status": outcome.status.value,
            "created": report.created,
            "updated": report.updated,
            "deleted": report.deleted,
            "skipped": report.skipped,
            "failed": report.failed,
            "bytes": report.bytes,
            "errors": len(report.errors),
            "conflicts": report.conflicts,
        }
    )
    return run


@dg.op(
    description="Delete old opslogs, give the lease back, and say whether the two sides agree. Fails the "
    "run if some operations failed or some entries could not be synced."
)
def cleanup(context: dg.OpExecutionContext, run: RunRef) -> None:
    session = live.get(run.run_id)
    plan = session.the_plan
    outcome = live.end(run.run_id) or session.close()
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
    check = dg.AssetCheckEvaluation(
        asset_key=folder_key("dell", run.pair),
        check_name="sides_agree",
        passed=agree,
        metadata={"direction": run.direction, "dry_run": dry_run, "status": outcome.status.value, **stats},
        severity=dg.AssetCheckSeverity.WARN,
    )
    context.log_event(check)  # type: ignore[arg-type]  # log_event takes check evaluations too
    if outcome.report.errors:
        context.log.warning("\n".join(outcome.report.errors[:20]))
    if not outcome.ok:
        _report_end(context, outcome)


@dg.failure_hook
def release_on_failure(context: dg.HookContext) -> None:
    """Any step failing ends the run: close the session (recorded as failed) and give the lease back."""
    error = str(context.op_exception) if context.op_exception else f"step {context.step_key} failed"
    live.end(context.run_id, error)
