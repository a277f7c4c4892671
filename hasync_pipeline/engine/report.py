"""The running counts of one sync: what was done (or, in a dry-run, would be)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .workers import OpResult

_COUNTER_OF = {"create": "created", "update": "updated", "delete": "deleted"}


@dataclass
class SyncReport:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    skipped: int = 0
    failed: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)  # entries that could not be synced (not operations)
    conflicts: int = 0  # paths changed on both sides: both versions kept, one under a conflict name
    notes: list[str] = field(default_factory=list)  # what the user must hear: conflicts, restores, first sync
    started: float = field(default_factory=time.time)
    duration: float = 0.0

    @property
    def clean(self) -> bool:
        """No operation failed and nothing was left out with an error."""
        return not (self.failed or self.errors)

    def add(self, result: OpResult) -> None:
        if not result.ok:
            self.failed += 1
            return
        self.bytes += result.bytes
        counter = _COUNTER_OF[result.op.operation]
        setattr(self, counter, getattr(self, counter) + 1)

    def stop_clock(self) -> None:
        self.duration = time.time() - self.started
