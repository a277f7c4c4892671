"""What a sync run keeps in its process between steps: its SyncSession (the held lease with its heartbeat
thread, the open opslog, the trees and the plan) and the audit store.

Why in memory: a lease heartbeat and an open, locked opslog cannot be passed through an IO manager.  So
the sync jobs use the in-process executor (it is also the cheap one: ~0.1 s a step against ~2 s for a
process per step, measured here), and whatever ends the run - the last step, a failure hook, or the
interpreter exiting after a termination - closes the session: opslog closed, lease given back.
"""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass

from ..audit import AuditStore
from ..engine.outcome import Outcome
from ..engine.session import SyncSession


@dataclass(frozen=True)
class RunRef:
    """Passed between steps: which run, which pair and direction (small and picklable)."""

    run_id: str
    pair: str
    direction: str
    src: str
    dest: str


@dataclass
class LiveRun:
    session: SyncSession
    store: AuditStore


_LIVE: dict[str, LiveRun] = {}
_LOCK = threading.Lock()


def register(run_id: str, live: LiveRun) -> None:
    with _LOCK:
        _LIVE[run_id] = live


def get(run_id: str) -> SyncSession:
    with _LOCK:
        live = _LIVE.get(run_id)
    if live is None:
        raise RuntimeError(
            f"run {run_id} holds no lease in this process: the sync jobs must run with the "
            "in_process executor (a step was started in another process, or re-executed alone)"
        )
    return live.session


def end(run_id: str, reason: str = "the run stopped before it finished") -> Outcome | None:
    """Close the run's session (recorded as failed for `reason` if it had not ended) and forget it.  Idempotent."""
    with _LOCK:
        live = _LIVE.pop(run_id, None)
    if live is None:
        return None
    try:
        return live.session.close(reason)
    finally:
        live.store.dispose()


@atexit.register
def _release_everything() -> None:
    """The process is going away (e.g. the run was terminated): never leave a lease or an open opslog."""
    for run_id in list(_LIVE):
        end(run_id, "the run's process exited before the run finished (terminated?)")
