"""Run locking per pair: a Kubernetes Lease in the cluster, a local lease file elsewhere.

Backend choice: the lease_backend setting (`kubernetes` or `local`); by default `kubernetes` inside a pod
and `local` outside one.
"""

from __future__ import annotations

from ..settings import Settings
from .base import HeldLease, LeaseHeld, LeaseLost, TransientLeaseError
from .identity import holder_identity, in_cluster


def backend_name(settings: Settings) -> str:
    return str(settings.lease_backend or ("kubernetes" if in_cluster() else "local"))


def acquire_for_pair(pair: str, ttl: int, run_id: str, settings: Settings) -> HeldLease:
    """Take lease ha-sync-<pair> for this run, or raise LeaseHeld (another live run has it)."""
    holder = holder_identity(run_id)
    if backend_name(settings) == "kubernetes":
        from .kube import acquire_kube

        return acquire_kube(pair, holder, ttl, namespace=settings.lease_namespace or None)
    from .local import acquire_local

    return acquire_local(settings.state_dir, pair, holder, ttl).start_heartbeat()


__all__ = [
    "HeldLease",
    "LeaseHeld",
    "LeaseLost",
    "TransientLeaseError",
    "acquire_for_pair",
    "backend_name",
    "holder_identity",
]
