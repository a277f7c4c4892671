"""Defaults shared by the CLI and the Dagster jobs (the seed's values), and small validators."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .engine.options import SyncOptions

_ENGINE = SyncOptions()  # the sync knobs' defaults live with the engine; the rest are the service's

_PAIR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")


@dataclass(frozen=True)
class Defaults:
    lock_ttl: int = 3600
    log_dir: str = "/var/log/ha-sync"
    log_retain_days: float = 10
    mtime_threshold: float = _ENGINE.mtime_threshold
    workers: int = _ENGINE.workers
    max_delete_percent: float = _ENGINE.max_delete_percent
    trash_retain_days: float = _ENGINE.trash_retain_days
    audit_retain_days: int = 30


DEFAULTS = Defaults()


def validate_pair_name(name: str) -> str:
    """Pair names become Lease names (ha-sync-<pair>) and file names: letters and digits, a letter first."""
    if not _PAIR_NAME.match(name or ""):
        raise ValueError(f"invalid pair name {name!r}: use letters and digits, starting with a letter")
    return name
