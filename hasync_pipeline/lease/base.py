"""What every lease backend shares: the errors, the heartbeat thread and the fencing check.

A run holds a lease `ha-sync-<pair>` for its whole life.  A heartbeat renews it every ttl/3; transient
errors are retried (with backoff) while the lease is still valid.  If it is taken over, or could not be
renewed for a whole ttl, the lease is *lost*: `check()` then raises, and the engine calls `check()` before
every batch of changes, so a run that lost its lease stops changing files.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Self

from ..engine.ports import LeaseHeld as _EngineLeaseHeld
from ..engine.ports import LeaseLost


class LeaseHeld(_EngineLeaseHeld):
    """Another live holder has the lease: this run must not start (not a failure)."""

    def __init__(self, name: str, holder: str, since: datetime | None):
        self.name, self.holder, self.since = name, holder, since
        when = f" since {since.isoformat(timespec='seconds')}" if since else ""
        super().__init__(f"lease {name} is held by {holder}{when}")


RELEASE_WAIT = 2.0  # seconds release() waits for a renewal under way


class TransientLeaseError(Exception):
    """The lease backend did not answer this time (5xx, connection refused, timeout): retry."""


class HeldLease:
    """A lease we hold; backends implement `_renew()`, `_verify()` (both raise LeaseLost or
    TransientLeaseError) and `_delete_if_ours()`."""

    name: str
    holder: str

    def __init__(self, ttl: float, renew_every: float | None = None):
        self.ttl = ttl
        self.renew_every = renew_every if renew_every is not None else ttl / 3
        self.renewals = 0
        self.lost_reason: str | None = None
        self.note: str | None = None  # said in the run's notes (e.g. taken over from a holder that died)
        self._valid_until = time.monotonic() + ttl
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_heartbeat(self) -> Self:
        self._thread = threading.Thread(target=self._heartbeat, name=f"lease-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        delay = self.renew_every
        while not self._stop.wait(delay):
            try:
                self._renew()
                self.renewals += 1
                self._valid_until = time.monotonic() + self.ttl
                delay = self.renew_every
            except LeaseLost as exc:
                self.lost_reason = str(exc)
                return
            except TransientLeaseError:
                if time.monotonic() >= self._valid_until:
                    self.lost_reason = f"could not renew {self.name} for {self.ttl:g}s; it may have been taken"
                    return
                delay = min(max(1.0, delay / 2), self.renew_every)  # retry sooner, but keep trying

    def check(self) -> None:
        """Raise LeaseLost unless we still hold the lease (called before every batch of changes).

        Asks the backend (one read) rather than trusting the last heartbeat: a takeover since then is
        seen before the batch, not up to ttl/3 later.  If the backend does not answer, the lease counts
        as ours while it is still within its ttl."""
        if self.lost_reason is None and time.monotonic() >= self._valid_until:
            self.lost_reason = f"lease {self.name} was not renewed within its ttl ({self.ttl:g}s)"
        if self.lost_reason is None:
            try:
                self._verify()
            except LeaseLost as exc:
                self.lost_reason = str(exc)
            except TransientLeaseError:
                pass
        if self.lost_reason is not None:
            raise LeaseLost(self.lost_reason)

    def release(self) -> None:
        """Stop renewing and give the lease back, only if it is still ours.  Never raises."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(RELEASE_WAIT)  # a renewal stuck on an API that does not answer is not waited out
        if self.lost_reason is None:
            try:
                self._delete_if_ours()
            except Exception:  # noqa: BLE001 - at worst it expires by itself
                pass

    def _renew(self) -> None:
        raise NotImplementedError

    def _verify(self) -> None:
        """Raise LeaseLost if the backend says someone else holds it now."""
        raise NotImplementedError

    def _delete_if_ours(self) -> None:
        raise NotImplementedError
