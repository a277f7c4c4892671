"""What one `ha-sync` invocation does, start to end:

    lease -> flush leftover opslogs -> walk + plan -> (dry-run: already current? stop) -> opslog + iteration
    row -> apply -> summary + flush -> expire old opslogs -> release the lease

and the exit code.  A dead database never stops the sync: the opslog waits for the next run.
"""

from __future__ import annotations

import argparse
import os
import signal
import uuid
from typing import TextIO

from . import cli
from .audit import AuditStore, AuditTrail, DsnError, expire_old_and_warn, flush_pending
from .engine import FAILED, Plan, SafetyRefusal, SyncOptions, SyncReport, WalkError, run_sync
from .engine.forking import Child
from .engine.paths import display
from .engine.transfer import describe_error
from .engine.workers import OpResult
from .lease import LeaseConfigError, LeaseHeld, LeaseLost, acquire_for_pair
from .progress import Progress, summary


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived: stop changing things, clean up, release, exit."""


_SIGNALLED: list[str] = []


def _raise_interrupted(signum, _frame):
    _SIGNALLED.append(signal.Signals(signum).name)
    raise Interrupted(_SIGNALLED[-1])


def _stop_if_signalled() -> None:
    """Raise again a signal whose exception was swallowed (it can land in an at-fork hook or a finalizer,
    where Python only prints it): the engine polls this between files."""
    if _SIGNALLED:
        raise Interrupted(_SIGNALLED[-1])


def _cancel(walks: tuple[Child | None, Child | None]) -> None:
    for child in walks:
        if child is not None:
            child.cancel()


def run_from_cli(args: argparse.Namespace, opts: SyncOptions, out: TextIO, err: TextIO,
                 walks: tuple[Child | None, Child | None] = (None, None)) -> int:
    def warn(msg: str) -> None:
        print(f"ha-sync: {msg}", file=err)

    src, dest = os.path.abspath(args.src), os.path.abspath(args.dest)
    run_id = uuid.uuid4().hex
    try:
        store = AuditStore(args.db_dsn)
    except DsnError as exc:
        warn(f"bad --db-dsn / HA_SYNC_DB_DSN: {exc}")
        _cancel(walks)
        return cli.EXIT_USAGE
    _SIGNALLED.clear()
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            lease = acquire_for_pair(args.pair, args.lock_ttl, run_id)
        except LeaseHeld as exc:
            print(f"ha-sync: {exc}; nothing changed", file=err)
            return cli.EXIT_LEASE_HELD
        except LeaseConfigError as exc:
            warn(str(exc))
            return cli.EXIT_USAGE
        except Exception as exc:  # noqa: BLE001 - no kubeconfig, API server unreachable...: say so, change nothing
            warn(f"cannot take the lease ha-sync-{args.pair}, nothing changed: {describe_error(exc)}")
            return cli.EXIT_FAILED
        try:
            return _run_locked(args, opts, store, lease, src, dest, run_id, out, warn, walks)
        finally:
            lease.release()
    except Interrupted as exc:
        warn(f"interrupted by {exc} before any change")
        return cli.EXIT_INTERRUPTED
    finally:
        _cancel(walks)  # not used (lease held, interrupted...): never leave them behind
        for s, handler in previous.items():
            signal.signal(s, handler)
        store.dispose()


def _run_locked(args, opts: SyncOptions, store: AuditStore, lease, src: str, dest: str, run_id: str,
                out: TextIO, warn, walks: tuple[Child | None, Child | None]) -> int:
    leftovers, db_error = flush_pending(store, args.log_dir) if os.path.isdir(args.log_dir) else ([], None)
    for outcome in leftovers:
        if outcome.error:
            warn(outcome.error)
    if db_error:
        warn(f"{db_error}; earlier opslogs stay in {args.log_dir} for the next run")
    trail = AuditTrail(store, args.log_dir, run_id=run_id, pair=args.pair, direction=args.direction,
                       src=src, dest=dest, dry_run=opts.dry_run)
    live = SyncReport()
    progress: Progress | None = None

    def on_plan(plan: Plan) -> bool:
        nonlocal progress
        if opts.dry_run:
            current = trail.already_current(plan)
            if current:
                print(current, file=out)
                return False
            for op in plan.ops:
                print(op.describe(), file=out)
        trail.begin()
        if not opts.dry_run and out.isatty() and plan.ops:
            progress = Progress(len(plan.ops), plan.copy_bytes).__enter__()
        return True

    def on_result(result: OpResult) -> None:
        trail.record(result)
        if progress is not None:
            progress.update(result)
        if not result.ok:
            print(f"FAIL {result.op.action:<8} {display(result.op.path)}: {result.error}", file=out)
        elif args.verbose:
            print(f"ok   {result.op.describe()}", file=out)

    def fail(code: int, message: str) -> int:
        warn(message)
        trail.finish(live, FAILED, message)
        _report_warnings(trail, warn)
        return code

    try:
        try:
            report, _plan = run_sync(src, dest, opts, run_id, on_result=on_result, on_plan=on_plan,
                                     check_lease=lease.check, report=live, prepare=trail.prepare,
                                     stop_requested=_stop_if_signalled, started_walks=walks)
        finally:
            if progress is not None:
                progress.__exit__(None, None, None)
    except SafetyRefusal as exc:
        return fail(cli.EXIT_REFUSED, f"refused, nothing changed: {exc}")
    except LeaseLost as exc:
        return fail(cli.EXIT_FAILED, f"lease lost, changes stopped: {exc}")
    except Interrupted as exc:
        return fail(cli.EXIT_INTERRUPTED, f"interrupted by {exc}; changes stopped, temp files removed")
    except (WalkError, OSError) as exc:
        return fail(cli.EXIT_FAILED, f"failed: {describe_error(exc)}")
    if trail.writer is not None:  # None: a dry-run that was already current wrote nothing
        trail.finish(report, report.status)
        print(summary(report, opts.dry_run), file=out)
    expired = expire_old_and_warn(args.log_dir, args.log_retain_days)
    if expired:
        warn(expired)
    _report_warnings(trail, warn)
    return cli.EXIT_OK if report.status == "success" else cli.EXIT_PARTIAL


def _report_warnings(trail: AuditTrail, warn) -> None:
    for message in trail.warnings:
        warn(message)
