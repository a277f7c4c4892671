"""Opslog files -> database, exactly once; and the opslog retention.

One file = one transaction (iteration + its operations); the file is deleted only after the commit.  A
crash between commit and delete is harmless: the next flush finds the run_id written and just deletes
the file.  A file without a summary (the run crashed) becomes a `failed` iteration; a file that cannot be
parsed is moved to `<log_dir>/quarantine/`, never deleted.
"""

from __future__ import annotations

import glob
import os
import time
from dataclasses import dataclass
from typing import Any

from .opslog import OPSLOG_GLOB_PREFIX, OpslogCorrupt, ParsedOpslog, read_opslog, try_lock
from .records import naive_utc, parse_iso, summary_values
from .store import AuditStore, AuditUnavailable

QUARANTINE = "quarantine"


@dataclass
class FlushOutcome:
    path: str
    iteration_id: int | None = None
    written: bool = False
    operations: int = 0
    skipped_live: bool = False
    quarantined_to: str | None = None
    error: str | None = None


def final_fields(parsed: ParsedOpslog) -> dict[str, Any]:
    """The iteration's closing columns: from the summary, or reconstructed for a crashed run."""
    if parsed.summary is not None:
        return summary_values(parsed.summary)
    note = " (its last line was cut off)" if parsed.torn_tail else ""
    return {
        "ended_at": naive_utc(parse_iso(parsed.last_ended or parsed.header["started_at"])),
        "status": "failed",
        "files_created": parsed.done["create"],
        "files_updated": parsed.done["update"],
        "files_deleted": parsed.done["delete"],
        "files_skipped": 0,
        "files_failed": parsed.failed,
        "total_bytes_transferred": parsed.bytes,
        "error_message": f"the run ended without a summary (killed or crashed); {len(parsed.rows)} "
        f"operations were recorded before it stopped{note}",
    }


def quarantine(path: str) -> str:
    qdir = os.path.join(os.path.dirname(path), QUARANTINE)
    os.makedirs(qdir, exist_ok=True)
    target = os.path.join(qdir, os.path.basename(path))
    os.replace(path, target)
    return target


def flush_file(store: AuditStore, path: str, written: ParsedOpslog | None = None) -> FlushOutcome:
    """Flush one opslog.  Raises AuditUnavailable (the file stays for the next run).  `written`: what the
    writer of this very file kept in memory (the run's own flush), instead of reading it back."""
    outcome = FlushOutcome(path)
    lock = try_lock(path)
    if lock is None:
        outcome.skipped_live = True  # its writer (or another flusher) holds it
        return outcome
    try:
        if not os.path.exists(path):  # flushed by someone else between our listing and our lock
            return outcome
        try:
            parsed = written if written is not None else read_opslog(path, lock)
        except OpslogCorrupt as exc:
            outcome.quarantined_to = quarantine(path)
            outcome.error = f"corrupt opslog moved to {outcome.quarantined_to}: {exc}"
            return outcome
        outcome.iteration_id, outcome.written = store.write_run(parsed.header, parsed.rows, final_fields(parsed))
        outcome.operations = len(parsed.rows)
        os.unlink(path)
        return outcome
    finally:
        lock.close()


def pending_files(log_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(glob.escape(log_dir), f"{OPSLOG_GLOB_PREFIX}*.jsonl")))


def flush_pending(store: AuditStore, log_dir: str, skip: tuple[str, ...] = ()) -> tuple[list[FlushOutcome], str | None]:
    """Flush every opslog left in log_dir (oldest first).  Returns the outcomes and, if the database went
    away, why (the remaining files wait for the next run)."""
    outcomes = []
    for path in pending_files(log_dir):
        if path in skip:
            continue
        try:
            outcomes.append(flush_file(store, path))
        except AuditUnavailable as exc:
            return outcomes, str(exc)
    return outcomes, None


def expire_old(log_dir: str, retain_days: float, now: float | None = None) -> tuple[int, int]:
    """Delete opslogs older than retain_days (by mtime).  Returns (files deleted, operations in them that
    never reached the database): every file still here was never flushed, so those records are lost."""
    cutoff = (now or time.time()) - retain_days * 86400
    files = dropped = 0
    for path in pending_files(log_dir):
        try:
            if os.stat(path).st_mtime >= cutoff:
                continue
            lock = try_lock(path)
            if lock is None:
                continue
            try:
                dropped += sum(1 for line in lock if line.startswith(b'{"type":"op"'))
                os.unlink(path)
                files += 1
            finally:
                lock.close()
        except FileNotFoundError:
            continue
    return files, dropped


def expire_old_and_warn(log_dir: str, retain_days: float) -> str | None:
    """expire_old, and the warning to show when it dropped records that never reached the database."""
    files, dropped = expire_old(log_dir, retain_days)
    if not dropped:
        return None
    return (
        f"deleted {files} opslogs older than {retain_days:g} days that never reached the database: "
        f"{dropped} operation records were dropped"
    )
