"""Run locking per pair: a Kubernetes Lease in the cluster, a local lease file elsewhere.

Backend choice: $HA_SYNC_LEASE_BACKEND (`kubernetes` or `local`); by default `kubernetes` inside a pod and
`local` outside one.
"""

from __future__ import annotations

import os

from ..audit.dsn import state_dir
from .base import HeldLease, LeaseHeld, LeaseLost, TransientLeaseError
from .identity import holder_identity, in_cluster


class LeaseConfigError(ValueError):
    """HA_SYNC_LEASE_BACKEND names no known backend."""


def backend_name() -> str:
    name = os.environ.get("HA_SYNC_LEASE_BACKEND") or ("kubernetes" if in_cluster() else "local")
    if name not in ("kubernetes", "local"):
        raise LeaseConfigError(f"HA_SYNC_LEASE_BACKEND={name!r}: use 'kubernetes' or 'local'")
    return name


def acquire_for_pair(pair: str, ttl: int, run_id: str) -> HeldLease:
    """Take lease ha-sync-<pair> for this run, or raise LeaseHeld (another live run has it)."""
    holder = holder_identity(run_id)
    if backend_name() == "kubernetes":
        from .kube import acquire_kube
        return acquire_kube(pair, holder, ttl)
    from .local import acquire_local
    return acquire_local(state_dir(), pair, holder, ttl).start_heartbeat()


__all__ = ["HeldLease", "LeaseHeld", "LeaseLost", "TransientLeaseError", "LeaseConfigError", "acquire_for_pair",
           "backend_name", "holder_identity"]
