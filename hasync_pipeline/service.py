"""What one `ha-sync` invocation does, start to end: signals, the engine run, the summary, the exit code."""

from __future__ import annotations

import argparse
import signal
import uuid
from typing import TextIO

from . import cli
from .engine import SafetyRefusal, SyncOptions, WalkError, run_sync
from .engine.paths import display
from .engine.transfer import describe_error
from .engine.workers import OpResult
from .progress import Progress, summary


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived: stop changing things, clean up, release, exit."""


def _raise_interrupted(signum, _frame):
    raise Interrupted(signal.Signals(signum).name)


def run_from_cli(args: argparse.Namespace, opts: SyncOptions, out: TextIO, err: TextIO) -> int:
    previous = {s: signal.signal(s, _raise_interrupted) for s in (signal.SIGTERM, signal.SIGINT)}
    run_id = uuid.uuid4().hex
    progress: Progress | None = None

    def on_result(result: OpResult) -> None:
        if progress is not None:
            progress.update(result)
        if not result.ok:
            print(f"FAIL {result.op.action:<8} {display(result.op.path)}: {result.error}", file=out)
        elif args.verbose:
            print(f"ok   {result.op.describe()}", file=out)

    def on_plan(plan) -> bool:
        nonlocal progress
        if opts.dry_run:
            for op in plan.ops:
                print(op.describe(), file=out)
        elif err.isatty() and plan.ops:
            progress = Progress(len(plan.ops), plan.copy_bytes, err).__enter__()
        return True

    try:
        try:
            report, _plan = run_sync(args.src, args.dest, opts, run_id, on_result=on_result, on_plan=on_plan)
        finally:
            if progress is not None:
                progress.__exit__(None, None, None)
    except SafetyRefusal as exc:
        print(f"ha-sync: refused, nothing changed: {exc}", file=err)
        return cli.EXIT_REFUSED
    except Interrupted as exc:
        print(f"ha-sync: interrupted by {exc}; changes stopped, temp files removed", file=err)
        return cli.EXIT_INTERRUPTED
    except (WalkError, OSError) as exc:
        print(f"ha-sync: failed: {describe_error(exc)}", file=err)
        return cli.EXIT_FAILED
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    print(summary(report, opts.dry_run), file=out)
    return cli.EXIT_OK if report.status == "success" else cli.EXIT_PARTIAL
