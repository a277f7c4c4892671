"""What one `ha-sync` invocation does once its settings are known: the engine's SyncSession, run step by step
(engine/session.py decides every outcome), with the audit trail and the lease plugged in, and what the user
sees on the terminal.  A dead database never stops the sync: the opslog waits for the next run."""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Callable
from typing import TextIO

from .audit import AuditStore, DsnError
from .engine.forking import Child
from .engine.liveness import Board
from .engine.options import SyncOptions
from .engine.outcome import EXIT_USAGE, Outcome, Status
from .engine.plan import Plan
from .engine.session import SyncSession
from .engine.workers import OpResult
from .progress import Progress, summary
from .session_factory import build_session
from .settings import BY_NAME, Settings


class Terminal:
    """What the user sees: the dry-run plan, each operation once (failures always, the rest with --verbose),
    progress on a TTY, the summary; with --json only a JSON summary on stdout."""

    def __init__(self, settings: Settings, out: TextIO, err: TextIO, as_json: bool = False):
        self.settings, self.out, self.err, self.as_json = settings, out, err, as_json
        self.progress: Progress | None = None

    def warn(self, message: str) -> None:
        print(f"ha-sync: {message}", file=self.err)

    def say(self, line: str) -> None:
        if not self.as_json:
            print(line, file=self.out)

    def on_plan(self, plan: Plan) -> None:
        if self.settings.dry_run:  # the plan is the dry run's whole output, in its own tense
            for op in plan.ops:
                self.say(f"would {op.describe()}")
        elif self.out.isatty() and plan.ops and not self.as_json:
            self.progress = Progress(len(plan.ops), plan.copy_bytes).__enter__()

    def on_result(self, result: OpResult) -> None:
        if self.progress is not None:
            self.progress.update(result)
        if self.settings.dry_run:
            return  # said once, by on_plan
        if not result.ok:
            self.say(f"FAIL  {result.op.describe()}: {result.error}")
        elif self.settings.verbose:
            self.say(f"done  {result.op.describe()}")

    def ended(self, outcome: Outcome) -> None:
        if self.progress is not None:
            self.progress.__exit__(None, None, None)
            self.progress = None
        if self.as_json:
            print(json.dumps(as_json(outcome, self.settings.dry_run)), file=self.out)
            for message in outcome.warnings:
                self.warn(message)
            return
        for note in outcome.report.notes:  # conflicts, restores, first-sync mode: said in every mode
            print(note, file=self.out)
        if outcome.status == Status.ALREADY_CURRENT:
            print(outcome.message, file=self.out)
        elif outcome.status in (Status.SUCCESS, Status.CONFLICTS, Status.PARTIAL_FAILURE):
            print(summary(outcome, self.settings.dry_run), file=self.out)
        else:
            self.warn(outcome.message)
        for message in outcome.warnings:
            self.warn(message)


def as_json(outcome: Outcome, dry_run: bool) -> dict[str, object]:
    """The --json summary: what a script needs to decide, with the exit code the process ends with."""
    report = outcome.report
    return {
        "status": outcome.status.value,
        "exit_code": outcome.exit_code,
        "dry_run": dry_run,
        "message": outcome.message,
        "created": report.created,
        "updated": report.updated,
        "deleted": report.deleted,
        "skipped": report.skipped,
        "failed": report.failed,
        "conflicts": report.conflicts,
        "bytes": report.bytes,
        "duration_s": round(report.duration, 3),
        "errors": report.errors,
        "notes": report.notes,
        "warnings": outcome.warnings,
    }


def side_labels(direction: str) -> tuple[str, str]:
    """What to call the two sides in a conflict copy's name: "dell-to-hp" or "dell_to_hp" -> dell, hp."""
    for sep in ("-to-", "_to_"):
        src, found, dest = direction.partition(sep)
        if found and src and dest:
            return _label(src), _label(dest)
    return "source", "destination"


def _label(word: str) -> str:
    return "".join(c for c in word if c.isalnum() or c in "-_")[:32] or "side"


def run_from_cli(
    args: argparse.Namespace,
    settings: Settings,
    opts: SyncOptions,
    out: TextIO,
    err: TextIO,
    walks: tuple[Child | None, Child | None] = (None, None),
    stop_requested: Callable[[], None] = lambda: None,
    board: Board | None = None,
    adopt: Callable[[SyncSession], None] = lambda session: None,
) -> int:
    """Run the session; the caller (cli.main) has installed the signal handlers that raise Interrupted,
    and hands the check the engine polls between files (`stop_requested`), the board the early `walks`
    show their progress on, and `adopt`, which hands it the session (its last resort on a signal)."""
    terminal = Terminal(settings, out, err, as_json=getattr(args, "json", False))
    run_id = uuid.uuid4().hex
    try:
        store = AuditStore(settings.db_dsn, settings.db_timeout)
    except DsnError as exc:
        terminal.warn(f"bad --db-dsn / {BY_NAME['db_dsn'].env}: {exc}")
        for child in walks:
            if child is not None:
                child.cancel(within=1.0)
        return EXIT_USAGE
    try:
        session = build_session(
            settings,
            opts,
            store,
            run_id=run_id,
            pair=args.pair,
            direction=args.direction,
            src=args.src,
            dest=args.dest,
            labels=side_labels(args.direction),
            on_plan=terminal.on_plan,
            on_result=terminal.on_result,
            stop_requested=stop_requested,
            started_walks=walks,
            board=board,
        )
        adopt(session)
        outcome = session.run()
        terminal.ended(outcome)
        return outcome.exit_code
    finally:
        store.dispose()
