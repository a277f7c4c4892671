"""A SyncSession for one run of one pair, assembled from its settings: the audit trail (opslog + database),
the pair's lease, the names of the two sides.  Both drivers (the CLI and the Dagster ops) build it here, so
they cannot differ in how a run is wired."""

from __future__ import annotations

import os
from typing import Any

from .audit import AuditStore, AuditTrail
from .engine.liveness import PROBE_TIMEOUT
from .engine.options import SyncOptions
from .engine.session import SyncSession
from .lease import acquire_for_pair
from .settings import Settings


def build_session(
    settings: Settings,
    opts: SyncOptions,
    store: AuditStore,
    *,
    run_id: str,
    pair: str,
    direction: str,
    src: str,
    dest: str,
    labels: tuple[str, str],
    dagster_run_id: str | None = None,
    **hooks: Any,
) -> SyncSession:
    """`hooks`: the driver's own on_plan, on_result, stop_requested, started_walks (see SyncSession)."""
    trail = AuditTrail(
        store,
        settings.log_dir,
        run_id=run_id,
        pair=pair,
        direction=direction,
        src=src,
        dest=dest,
        dry_run=opts.dry_run,
        dagster_run_id=dagster_run_id,
        log_retain_days=settings.log_retain_days,
        spool_dir=os.path.join(settings.state_dir, "opslog-spool"),
        stall_timeout=opts.stall_timeout,
        probe_timeout=min(PROBE_TIMEOUT, opts.stall_timeout),
    )
    return SyncSession(
        src,
        dest,
        opts,
        run_id,
        trail=trail,
        lease_name=f"the lease ha-sync-{pair}",
        take_lease=lambda: acquire_for_pair(pair, settings.lock_ttl, run_id, settings),
        labels=labels,
        **hooks,
    )
