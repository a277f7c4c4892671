"""What a sync run keeps in its process between steps: the held lease (its heartbeat thread), the audit
trail (the open opslog), the running counts.

Why in memory: a lease heartbeat and an open, locked opslog cannot be passed through an IO manager.  So
the sync jobs use the in-process executor (it is also the cheap one: ~0.1 s a step against ~2 s for a
process per step, measured here), and whatever ends the run - the last step, a failure hook, or the
interpreter exiting after a termination - gives the lease back and closes the opslog.
"""

from __future__ import annotations

import atexit
import os
import shutil
import threading
from dataclasses import dataclass, field

from ..audit import AuditStore, AuditTrail
from ..engine import FAILED, SyncReport
from ..lease import HeldLease


@dataclass(frozen=True)
class RunState:
    """Passed between steps (small and picklable; big things live in files under work_dir)."""

    run_id: str
    pair: str
    direction: str
    src: str
    dest: str
    work_dir: str
    log_dir: str
    config: dict

    @property
    def label(self) -> str:
        return f"{self.pair} {self.direction} ({self.src} -> {self.dest})"


@dataclass
class LiveRun:
    lease: HeldLease
    store: AuditStore
    trail: AuditTrail  # begun (opslog opened) by the plan step; a failure before it still gets a row
    trash_stamp: bytes | None = None  # one trash folder per run, whatever the number of batches
    report: SyncReport = field(default_factory=SyncReport)
    plan_stats: dict = field(default_factory=dict)
    finished: bool = False


_LIVE: dict[str, LiveRun] = {}
_LOCK = threading.Lock()


def register(run_id: str, live: LiveRun) -> None:
    with _LOCK:
        _LIVE[run_id] = live


def get(run_id: str) -> LiveRun:
    with _LOCK:
        live = _LIVE.get(run_id)
    if live is None:
        raise RuntimeError(f"run {run_id} holds no lease in this process: the sync jobs must run with the "
                           "in_process executor (a step was started in another process, or re-executed alone)")
    return live


def end(run_id: str, error: str | None = None) -> None:
    """Close the trail (as failed if `error`), give the lease back, remove the work folder.  Idempotent."""
    with _LOCK:
        live = _LIVE.pop(run_id, None)
    shutil.rmtree(work_dir_path(run_id), ignore_errors=True)
    if live is None:
        return
    try:
        if error is not None and not live.finished:
            live.trail.finish(live.report, FAILED, error)
            live.finished = True
    finally:
        live.lease.release()
        live.store.dispose()


@atexit.register
def _release_everything() -> None:
    """The process is going away (e.g. the run was terminated): never leave a lease or an open opslog."""
    for run_id in list(_LIVE):
        end(run_id, "the run's process exited before the run finished (terminated?)")


def work_dir_path(run_id: str) -> str:
    """Where a run keeps its trees and batches: $HA_SYNC_WORK_DIR, else $DAGSTER_HOME/ha-sync-work."""
    base = os.environ.get("HA_SYNC_WORK_DIR") or os.path.join(
        os.environ.get("DAGSTER_HOME") or os.path.join(os.path.sep, "tmp"), "ha-sync-work")
    return os.path.join(base, run_id)


def work_dir_for(run_id: str) -> str:
    path = work_dir_path(run_id)
    os.makedirs(path, exist_ok=True)
    return path
