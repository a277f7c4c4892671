"""The replication lag of a pair's side: how long its oldest change has waited for the other side, told
from the row its watcher publishes (feed_tips; audit/store.py reads it), never from a share.  The dashboard,
the folder assets' check and the change-feed sensor all read it here, so they never disagree.

A watcher publishes at least once a HEARTBEAT; a row older than SILENT_AFTER means the watcher (or its
database connection) is down, and the lag is unknown: the schedules' full runs still carry the changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

HEARTBEAT = 60.0  # seconds: a watcher republishes its tips this often when nothing moved
SILENT_AFTER = 3 * HEARTBEAT
LAG_WARN_SECONDS = 120.0  # the folder check warns past this: the feed usually carries a change in seconds


@dataclass(frozen=True)
class Lag:
    server: str
    pair: str
    seconds: float | None  # None: unknown (the watcher is silent)
    pending_since: datetime | None  # the oldest waiting change (UTC); None: nothing waits
    heard_at: datetime  # the watcher's last publication (UTC)
    silent: bool

    @property
    def ok(self) -> bool:
        return not self.silent and (self.seconds or 0.0) <= LAG_WARN_SECONDS

    def describe(self) -> str:
        if self.silent:
            return f"{self.server}'s watcher silent since {self.heard_at:%Y-%m-%d %H:%M:%S} UTC: lag unknown"
        if self.pending_since is None:
            return f"every change on {self.server} is on the other side"
        return f"a change on {self.server} has waited {self.seconds:.0f} s for the other side"


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def lag_of(server: str, pair: str, pending_since: datetime | None, heard_at: datetime, now: datetime) -> Lag:
    """One feed_tips row as a lag, at `now` (naive datetimes are UTC, as the audit database stores them)."""
    now, heard = _utc(now), _utc(heard_at)
    since = _utc(pending_since) if pending_since is not None else None
    silent = (now - heard).total_seconds() > SILENT_AFTER
    seconds = None if silent else (max(0.0, (now - since).total_seconds()) if since is not None else 0.0)
    return Lag(server, pair, seconds, since, heard, silent)
