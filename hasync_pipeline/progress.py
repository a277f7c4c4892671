"""A one-line progress display for a terminal (files, bytes, rate, ETA) and the end-of-run summary."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from .engine.outcome import Outcome
from .engine.workers import OpResult


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class Progress:
    """Redraws one line on `stream` every `interval` seconds while operations complete."""

    def __init__(self, total_ops: int, total_bytes: int, stream: TextIO = sys.stderr, interval: float = 0.5):
        self.total_ops, self.total_bytes, self.stream, self.interval = total_ops, total_bytes, stream, interval
        self.done_ops = self.done_bytes = 0
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def __enter__(self) -> Progress:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.stream.write("\r\033[K")
        self.stream.flush()

    def update(self, result: OpResult) -> None:
        self.done_ops += 1
        self.done_bytes += result.bytes

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-6)
        rate = self.done_bytes / elapsed
        left = self.total_bytes - self.done_bytes
        eta = f"{left / rate:.0f}s" if rate > 0 and left > 0 else "--"
        return (
            f"{self.done_ops}/{self.total_ops} ops  {human_bytes(self.done_bytes)}/"
            f"{human_bytes(self.total_bytes)}  {human_bytes(rate)}/s  ETA {eta}"
        )

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.stream.write("\r\033[K" + self.line())
            self.stream.flush()


def summary(outcome: Outcome, dry_run: bool) -> str:
    report = outcome.report
    verb = "would be " if dry_run else ""
    lines = [
        f"{'Dry-run' if dry_run else 'Sync'} {outcome.status.value}: "
        f"{report.created} {verb}created, {report.updated} {verb}updated, {report.deleted} {verb}deleted, "
        f"{report.skipped} skipped, {report.failed} failed"
        f"{f', {report.conflicts} conflicts (both versions kept)' if report.conflicts else ''}; "
        f"{human_bytes(report.bytes)} transferred in {report.duration:.1f}s"
    ]
    lines += [f"  error: {e}" for e in report.errors[:50]]
    if len(report.errors) > 50:
        lines.append(f"  ... and {len(report.errors) - 50} more errors")
    return "\n".join(lines)
