"""Defaults shared by the CLI and the Dagster jobs (the seed's values), and small validators."""

from __future__ import annotations

import re
from dataclasses import dataclass

_PAIR_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*\Z")


@dataclass(frozen=True)
class Defaults:
    lock_ttl: int = 3600
    log_dir: str = "/var/log/ha-sync"
    log_retain_days: float = 10
    mtime_threshold: float = 2
    workers: int = 4
    max_delete_percent: float = 50
    trash_retain_days: float = 10
    audit_retain_days: int = 30


DEFAULTS = Defaults()


def validate_pair_name(name: str) -> str:
    """Pair names become Lease names (ha-sync-<pair>) and file names: letters and digits, a letter first."""
    if not _PAIR_NAME.match(name or ""):
        raise ValueError(f"invalid pair name {name!r}: use letters and digits, starting with a letter")
    return name
