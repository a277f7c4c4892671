"""The knobs of a sync (a module of its own: `ha-sync` needs them before it imports the rest).

The user's settings have no defaults here: those live once, in hasync_pipeline/settings.py, which builds
this object (`Settings.sync_options()`).  Only the engine's internal knobs have defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SyncOptions:
    dry_run: bool
    delete_missing: bool
    workers: int
    mtime_threshold: float
    max_delete_percent: float
    trash_retain_days: float
    excludes: tuple[str, ...]
    xattrs: bool
    hard_links: bool
    sparse: bool
    walk_threads: int  # 0: chosen per root (walk.threads_for)
    stall_timeout: float  # seconds a side may give no answer (liveness.py)
    allow_unmounted: tuple[str, ...]  # former mount points that are plain folders now, on purpose
    scope: str = "full"  # "changes": only what the change logs name (incremental.py)
    free_space_reserve_bytes: int = 64 << 20
    batch_max_ops: int = 20_000
    batch_max_bytes: int = 2 << 30
    durable: bool = True
