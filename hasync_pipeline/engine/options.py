"""The knobs of a sync (a module of its own: `ha-sync` needs them before it imports the rest)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SyncOptions:
    """Every knob of a sync, with the seed's defaults (dry_run is the CLI's default: off)."""

    dry_run: bool = False
    delete_missing: bool = False
    workers: int = 4
    mtime_threshold: float = 2
    max_delete_percent: float = 50
    trash_retain_days: float = 10
    excludes: tuple[str, ...] = ()
    free_space_reserve_bytes: int = 64 << 20
    batch_max_ops: int = 20_000
    batch_max_bytes: int = 2 << 30
    walk_threads: int = 1
    durable: bool = True
