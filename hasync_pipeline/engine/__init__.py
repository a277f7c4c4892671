"""The sync engine: walk, compare, plan, transfer, safety.  Pure Python; no Dagster, database or Kubernetes.

The names below are loaded on first use (PEP 562): `ha-sync` forks its walks after importing only
`walk` and `forking`, and everything else is imported while they run."""

from importlib import import_module

_HOME = {
    "Op": "plan", "Plan": "plan",
    "FAILED": "run", "PARTIAL_FAILURE": "run", "SUCCESS": "run", "SyncOptions": "options", "SyncReport": "run",
    "plan_pair": "run", "run_sync": "run", "split_batches": "run", "walk_pair": "run",
    "SafetyRefusal": "safety",
    "ApplyContext": "workers", "OpResult": "workers", "apply_batch": "workers",
    "TreeListing": "walk", "WalkError": "walk", "walk_tree": "walk",
}
__all__ = sorted(_HOME)


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value
