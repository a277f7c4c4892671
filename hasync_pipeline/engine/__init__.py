"""The sync engine: walk, compare, plan, transfer, safety, and the session that runs them in order.  Pure
Python; no Dagster, database or Kubernetes.

The names below are loaded on first use (PEP 562): `ha-sync` forks its walks after importing only
`walk` and `forking`, and everything else is imported while they run."""

from importlib import import_module
from typing import Any

_HOME = {
    "Op": "plan",
    "Plan": "plan",
    "Outcome": "outcome",
    "RunEnded": "outcome",
    "Status": "outcome",
    "Interrupted": "ports",
    "LeaseHeld": "ports",
    "LeaseLost": "ports",
    "SyncOptions": "options",
    "SyncReport": "report",
    "SyncSession": "session",
    "plan_pair": "session",
    "run_sync": "session",
    "split_batches": "session",
    "walk_pair": "session",
    "SafetyRefusal": "safety",
    "ApplyContext": "workers",
    "OpResult": "workers",
    "apply_batch": "workers",
    "TreeListing": "walk",
    "WalkError": "walk",
    "walk_tree": "walk",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value
