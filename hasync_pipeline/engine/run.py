"""One whole sync of a folder pair, one direction: the steps the CLI runs in sequence and the Dagster ops
run one per step.  Knows nothing of Dagster, databases or Kubernetes: the audit trail and the lease plug in
through callbacks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from . import safety, trash
from .forking import Child, call_in_child, result_of
from .options import SyncOptions
from .paths import ExcludeMatcher, display
from .plan import CompareOptions, Op, Plan, make_plan
from .transfer import cleanup_leftovers
from .workers import ApplyContext, OpResult, apply_batch
from .walk import TreeListing, walk_tree

SUCCESS, PARTIAL_FAILURE, FAILED = "success", "partial_failure", "failed"
_COUNTER_OF = {"create": "created", "update": "updated", "delete": "deleted"}


@dataclass
class SyncReport:
    """Counts of what happened (or, in a dry-run, would happen)."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    duration: float = 0.0

    @property
    def status(self) -> str:
        return PARTIAL_FAILURE if (self.failed or self.errors) else SUCCESS

    def add(self, result: OpResult) -> None:
        if not result.ok:
            self.failed += 1
            return
        self.bytes += result.bytes
        counter = _COUNTER_OF[result.op.operation]
        setattr(self, counter, getattr(self, counter) + 1)


def walk_pair(src: str, dest: str, opts: SyncOptions,
              started: tuple[Child | None, Child | None] = (None, None)) -> tuple[TreeListing, TreeListing]:
    """Walk source and destination at the same time, the source in a forked process (two cores, no GIL
    between them), after checking both roots are usable.  `started`: walks already running (start_walks)."""
    try:
        safety.check_roots(src, dest)
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


def plan_pair(src_tree: TreeListing, dest_tree: TreeListing, opts: SyncOptions) -> Plan:
    """Compare and check the plan is safe to apply; raises safety.SafetyRefusal otherwise."""
    plan = make_plan(src_tree, dest_tree, CompareOptions(opts.mtime_threshold, opts.delete_missing,
                                                         max(1, opts.workers)))
    safety.check_plan(plan, src_tree, dest_tree,
                      safety.SafetyLimits(opts.max_delete_percent, opts.free_space_reserve_bytes))
    return plan


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


def conflict_results(plan: Plan) -> list[OpResult]:
    """Conflicts are never applied; they are reported as failed operations so nobody misses them."""
    return [OpResult(op, False, f"conflict: {op.detail}; left alone, resolve by hand") for op in plan.conflicts]


def run_sync(src: str, dest: str, opts: SyncOptions, run_id: str,
             on_result: Callable[[OpResult], None] = lambda r: None,
             check_lease: Callable[[], None] = lambda: None,
             on_plan: Callable[[Plan], bool] = lambda plan: True,
             report: SyncReport | None = None,
             prepare: Callable[[OpResult], object] | None = None,
             stop_requested: Callable[[], None] = lambda: None,
             started_walks: tuple[Child | None, Child | None] = (None, None)) -> tuple[SyncReport, Plan]:
    """Walk, plan, check, apply in batches, purge old trash.  `on_plan` may return False to stop before
    applying (the dry-run idempotency check uses it).  Safety refusals and a lost lease raise; pass your own
    `report` to keep the counts of what was done before that."""
    report = report if report is not None else SyncReport()
    src_tree, dest_tree = walk_pair(src, dest, opts, started_walks)
    plan = plan_pair(src_tree, dest_tree, opts)
    report.skipped = plan.skipped
    report.errors += [msg for _, msg in plan.errors]
    report.errors += [f"{display(p)}: special file (FIFO, socket or device) skipped" for p in src_tree.special]
    if not on_plan(plan):
        report.duration = time.time() - report.started
        return report, plan

    def record(result: OpResult) -> None:
        report.add(result)
        on_result(result)

    for result in conflict_results(plan):
        record(result)
    if opts.dry_run:
        for op in plan.ops:
            record(OpResult(op, True))
    else:
        report.errors += cleanup_leftovers(dest, dest_tree.leftovers)
        ctx = ApplyContext(src, dest, trash.new_stamp(run_id, opts.trash_retain_days), workers=opts.workers,
                           durable=opts.durable, check_lease=check_lease, on_result=record, prepare=prepare,
                           stop_requested=stop_requested)
        for batch in split_batches(plan.ops, opts.batch_max_ops, opts.batch_max_bytes):
            apply_batch(batch, ctx)
        trash.purge(dest, opts.trash_retain_days)
    report.duration = time.time() - report.started
    return report, plan

