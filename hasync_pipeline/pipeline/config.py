"""Run config of a sync job: every setting of the `ha-sync` CLI, editable in the launchpad.

Defaults, later ones winning: the seed's values, pairs.toml [defaults], pairs.toml [pairs.<pair>.settings],
then environment variables HA_SYNC_<SETTING> (e.g. HA_SYNC_DRY_RUN=false, HA_SYNC_EXCLUDES='*.part,*.tmp').
"""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from ..engine import SyncOptions
from ..pairs import Pair, Registry
from ..settings import DEFAULTS


class SyncConfig(dg.Config):
    dry_run: bool = True
    delete_missing: bool = False
    workers: int = DEFAULTS.workers
    mtime_threshold: float = DEFAULTS.mtime_threshold
    lock_ttl: int = DEFAULTS.lock_ttl
    log_retain_days: float = DEFAULTS.log_retain_days
    max_delete: float = DEFAULTS.max_delete_percent
    trash_retain_days: float = DEFAULTS.trash_retain_days
    excludes: list[str] = []
    verbose: bool = False

    def problems(self) -> list[str]:
        """What the types alone do not catch."""
        out = []
        if self.workers < 1:
            out.append("workers must be at least 1")
        if self.lock_ttl < 1:
            out.append("lock_ttl must be at least 1 second")
        if not 0 <= self.max_delete <= 100:
            out.append("max_delete is a percentage (0-100)")
        for name in ("mtime_threshold", "log_retain_days", "trash_retain_days"):
            if getattr(self, name) < 0:
                out.append(f"{name} must be >= 0")
        return out

    def sync_options(self) -> SyncOptions:
        return SyncOptions(dry_run=self.dry_run, delete_missing=self.delete_missing, workers=self.workers,
                           mtime_threshold=self.mtime_threshold, max_delete_percent=self.max_delete,
                           trash_retain_days=self.trash_retain_days, excludes=tuple(self.excludes))


_FALSE, _TRUE = {"0", "false", "no", "off"}, {"1", "true", "yes", "on"}


def _from_env(name: str, kind: Any, raw: str) -> Any:
    if kind is bool:
        low = raw.strip().lower()
        if low not in _TRUE | _FALSE:
            raise ValueError(f"HA_SYNC_{name.upper()}={raw!r} is not true/false")
        return low in _TRUE
    if kind == list[str]:
        return [p.strip() for p in raw.split(",") if p.strip()]
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"HA_SYNC_{name.upper()}={raw!r} is not a {kind.__name__}") from None


def default_config(registry: Registry, pair: Pair) -> SyncConfig:
    values: dict[str, Any] = {}
    fields = SyncConfig.model_fields
    for layer in (registry.defaults, pair.settings):
        unknown = set(layer) - set(fields)
        if unknown:
            raise ValueError(f"{registry.source}: unknown settings {sorted(unknown)} (known: {sorted(fields)})")
        values.update(layer)
    for name, info in fields.items():
        raw = os.environ.get(f"HA_SYNC_{name.upper()}")
        if raw is not None:
            values[name] = _from_env(name, info.annotation, raw)
    return SyncConfig(**values)
