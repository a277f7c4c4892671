"""The steps of a sync job.  Thin: each reads its inputs, calls the engine, audit or lease layer, and
reports metadata.  The pair and direction come from the job's tags (set by the factory)."""


import os
import pickle

import dagster as dg

from ..audit import AuditStore, AuditTrail, DsnError, expire_old_and_warn, flush_pending
from ..engine import PARTIAL_FAILURE, SafetyRefusal, plan_pair, split_batches, walk_pair
from ..engine import trash
from ..engine.fingerprint import fingerprint
from ..engine.run import conflict_results
from ..engine.workers import ApplyContext, OpResult, apply_batch
from ..lease import LeaseHeld, LeaseLost, acquire_for_pair
from ..pairs import load_registry, sides
from . import live
from .config import SyncConfig
from .live import LiveRun, RunState

PAIR_TAG, DIRECTION_TAG, SKIPPED_TAG = "ha-sync/pair", "ha-sync/direction", "ha-sync/skipped"
DEFAULT_LOG_DIR = "/var/log/ha-sync"


def folder_key(side: str, pair: str) -> dg.AssetKey:
    return dg.AssetKey([side, pair])


def _skip(context: dg.OpExecutionContext, why: str, message: str) -> None:
    context.instance.add_run_tags(context.run_id, {SKIPPED_TAG: why})
    context.log.info(message)


def _save(state: RunState, name: str, obj) -> str:
    path = os.path.join(state.work_dir, name)
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _load(path: str):
    with open(path, "rb") as f:
        return pickle.load(f)


@dg.op(out=dg.Out(RunState, is_required=False),
       description="Take the pair's lease (or end the run, skipped, if another run holds it) and flush "
                   "opslogs left by earlier runs.")
def acquire_lease(context: dg.OpExecutionContext, config: SyncConfig):
    problems = config.problems()
    if problems:
        raise dg.Failure(description="bad run config: " + "; ".join(problems))
    pair_name, direction = context.run.tags[PAIR_TAG], context.run.tags[DIRECTION_TAG]
    src, dest = load_registry().get(pair_name).endpoints(direction)
    try:
        store = AuditStore(os.environ.get("HA_SYNC_DB_DSN"))
    except DsnError as exc:
        raise dg.Failure(description=f"HA_SYNC_DB_DSN: {exc}") from None
    try:
        lease = acquire_for_pair(pair_name, config.lock_ttl, context.run_id)
    except LeaseHeld as exc:
        store.dispose()
        _skip(context, "lease-held", f"{exc}: nothing to do, the run ends here")
        return  # no output: every later step is skipped
    state = RunState(context.run_id, pair_name, direction, src, dest, live.work_dir_for(context.run_id),
                     os.environ.get("HA_SYNC_LOG_DIR") or DEFAULT_LOG_DIR, config.model_dump())
    trail = AuditTrail(store, state.log_dir, run_id=context.run_id, pair=pair_name, direction=direction,
                       src=src, dest=dest, dry_run=config.dry_run, dagster_run_id=context.run_id)
    live.register(context.run_id, LiveRun(lease, store, trail,
                                          trash_stamp=trash.new_stamp(context.run_id, config.trash_retain_days)))
    if os.path.isdir(state.log_dir):
        outcomes, db_error = flush_pending(store, state.log_dir)
        for outcome in outcomes:
            if outcome.error:
                context.log.error(outcome.error)
        if db_error:
            context.log.warning(f"{db_error}; earlier opslogs stay for the next run")
    yield dg.Output(state, metadata={"lease": lease.name, "holder": lease.holder, "source": src,
                                     "destination": dest})


@dg.op(out={"source_tree": dg.Out(str), "dest_tree": dg.Out(str)},
       description="Walk source and destination at the same time (the source in a forked process) and "
                   "record each folder's file count, bytes and fingerprint as an asset observation.")
def walk(context: dg.OpExecutionContext, state: RunState):
    opts = SyncConfig(**state.config).sync_options()
    try:
        src_tree, dest_tree = walk_pair(state.src, state.dest, opts)
    except SafetyRefusal as exc:  # a missing or unusable root
        raise dg.Failure(description=f"refused, nothing changed: {exc}") from None
    for side, tree in zip(sides(state.direction), (src_tree, dest_tree)):
        fp = fingerprint(tree)
        context.log_event(dg.AssetObservation(
            asset_key=folder_key(side, state.pair), tags={"dagster/data_version": fp},
            metadata={"files": tree.files, "directories": tree.directories, "symlinks": tree.symlinks,
                      "bytes": tree.bytes, "fingerprint": fp, "unreadable_dirs": len(tree.unreadable),
                      "path": tree.root}))
    yield dg.Output(_save(state, "source.tree", src_tree), "source_tree")
    yield dg.Output(_save(state, "dest.tree", dest_tree), "dest_tree")


@dg.op(out={"batch": dg.DynamicOut(str), "planned": dg.Out(RunState, is_required=False)},
       description="Compare, check safety, and cut the plan into a few batches (files in the work folder). "
                   "A dry-run records the plan instead, unless it is already current.")
def plan(context: dg.OpExecutionContext, state: RunState, source_tree: str, dest_tree: str):
    cfg = SyncConfig(**state.config)
    opts = cfg.sync_options()
    current = live.get(state.run_id)
    src_tree, dest_tree = _load(source_tree), _load(dest_tree)
    try:
        the_plan = plan_pair(src_tree, dest_tree, opts)
    except SafetyRefusal as exc:
        raise dg.Failure(description=f"refused, nothing changed: {exc}") from None
    report = current.report
    report.skipped = the_plan.skipped
    report.errors += [msg for _, msg in the_plan.errors]
    current.plan_stats = {"dest_newer": the_plan.dest_newer, "dest_only": the_plan.dest_only_kept,
                          "conflicts": len(the_plan.conflicts), "ops": len(the_plan.ops)}
    if cfg.dry_run:
        message = current.trail.already_current(the_plan)
        if message:
            live.end(state.run_id)
            _skip(context, "dry-run-current", message)
            return
    current.trail.begin()
    for result in conflict_results(the_plan):
        _record(current, result)
    if cfg.dry_run:
        for op in the_plan.ops:
            _record(current, OpResult(op, True))
    else:
        for i, batch in enumerate(split_batches(the_plan.ops, opts.batch_max_ops, opts.batch_max_bytes)):
            yield dg.DynamicOutput(_save(state, f"batch-{i:04d}", batch), mapping_key=f"batch_{i:04d}",
                                       output_name="batch")
    context.add_output_metadata({"operations": len(the_plan.ops), "bytes_to_copy": the_plan.copy_bytes,
                                 "conflicts": len(the_plan.conflicts), "dry_run": cfg.dry_run,
                                 **{a: the_plan.count(a) for a in ("mkdir", "copy", "touch", "symlink",
                                                                   "delete", "rmdir")}},
                                output_name="planned")
    yield dg.Output(state, "planned")


def _record(current: LiveRun, result: OpResult) -> None:
    current.report.add(result)
    current.trail.record(result)


@dg.op(description="Apply one batch: worker processes stage copies, one syncfs, lease check, then renames "
                   "and deletes. Per-file failures are recorded, not raised.")
def apply_batch_op(context: dg.OpExecutionContext, state: RunState, batch: str) -> dict:
    current = live.get(state.run_id)
    cfg = SyncConfig(**state.config)
    ops = _load(batch)
    ctx = ApplyContext(state.src, state.dest, current.trash_stamp, workers=cfg.workers,
                       check_lease=current.lease.check, on_result=lambda r: _record(current, r),
                       prepare=current.trail.prepare)
    try:
        results = apply_batch(ops, ctx)
    except LeaseLost as exc:
        raise dg.Failure(description=f"lease lost, changes stopped: {exc}") from None
    finally:
        current.trail.write_out()  # a batch's records are on disk when its step ends, whatever comes next
    failed = [r for r in results if not r.ok]
    for r in failed[:20]:
        context.log.warning(f"{r.op.describe()}: {r.error}")
    return {"operations": len(results), "failed": len(failed), "bytes": sum(r.bytes for r in results)}


@dg.op(description="Add up the batches.")
def collect(context: dg.OpExecutionContext, state: RunState, batches: list) -> RunState:
    report = live.get(state.run_id).report
    context.add_output_metadata({"batches": len(batches), "created": report.created, "updated": report.updated,
                                 "deleted": report.deleted, "skipped": report.skipped, "failed": report.failed,
                                 "bytes": report.bytes})
    return state


@dg.op(description="Close the opslog with its summary and flush it into the audit database (a dead "
                   "database leaves it for the next run).")
def flush_opslog(context: dg.OpExecutionContext, state: RunState) -> RunState:
    current = live.get(state.run_id)
    report = current.report
    outcome = current.trail.finish(report, report.status)
    current.finished = True
    for warning in current.trail.warnings:
        context.log.warning(warning)
    context.add_output_metadata({"status": report.status, "opslog": current.trail.writer.path,
                                 "iteration_id": outcome.iteration_id if outcome else None,
                                 "in_database": bool(outcome and outcome.iteration_id)})
    return state


@dg.op(description="Delete old opslogs and old trash, give the lease back, and say whether the two sides "
                   "agree. Fails the run if some operations failed.")
def cleanup(context: dg.OpExecutionContext, state: RunState) -> None:
    cfg = SyncConfig(**state.config)
    current = live.get(state.run_id)
    report, stats = current.report, current.plan_stats
    expired = expire_old_and_warn(state.log_dir, cfg.log_retain_days)
    if expired:
        context.log.warning(expired)
    if not cfg.dry_run:
        trash.purge(state.dest, cfg.trash_retain_days)
    agree = (report.status == "success" and stats.get("dest_newer") == 0 and stats.get("dest_only") == 0
             and (not cfg.dry_run or stats.get("ops") == 0))
    context.log_event(dg.AssetCheckEvaluation(
        asset_key=folder_key("dell", state.pair), check_name="sides_agree", passed=agree,
        metadata={"direction": state.direction, "dry_run": cfg.dry_run, "status": report.status, **stats},
        severity=dg.AssetCheckSeverity.WARN))
    live.end(state.run_id)
    if report.status == PARTIAL_FAILURE:
        raise dg.Failure(description=f"{report.failed} operations failed; see the audit trail",
                         metadata={"failed": report.failed, "errors": "\n".join(report.errors[:20])})


@dg.failure_hook
def release_on_failure(context: dg.HookContext) -> None:
    """Any step failing ends the run: close the trail as failed and give the lease back."""
    error = str(context.op_exception) if context.op_exception else f"step {context.step_key} failed"
    live.end(context.run_id, error)

