"""What the engine is handed by the layers around it: the audit trail and the lease.  Small interfaces, so
the engine imports no database, Kubernetes or Dagster code; the adapters (audit/, lease/) implement them and
raise the engine's own exceptions below."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .plan import Plan
    from .report import SyncReport
    from .workers import OpResult


class LeaseHeld(Exception):
    """Another live run holds the pair's lease: this run must not start (not a failure)."""


class LeaseLost(Exception):
    """The lease was taken over or expired while the run was going on: changes must stop."""


class AuditUnwritable(Exception):
    """The opslog cannot be written (its folder unusable, its disk full): no change is made without its
    record.  Before any change the run is refused; during the run, changes stop."""


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived: stop changing things, clean up, release, exit."""


class Lease(Protocol):
    def check(self) -> None:
        """Raise LeaseLost unless the lease is still ours (called before every batch of changes)."""

    def release(self) -> None:
        """Give it back; never raises."""


class Trail(Protocol):
    """The run's audit trail: an opslog written as the run goes, flushed into the database at the end."""

    warnings: list[str]

    def check(self) -> None:
        """Raise AuditUnwritable unless the opslog can be written (called before any change)."""

    def flush_leftovers(self) -> None:
        """Flush opslogs earlier runs left behind (called once the lease is held)."""

    def already_current(self, plan: Plan) -> str | None:
        """For a dry-run: the message to show when the last successful dry-run had the same plan."""

    def begin(self) -> None:
        """Open the opslog (and the 'running' row)."""

    def prepare(self, result: OpResult) -> object:
        """Format one operation's record; runs in the worker process that did the operation."""

    def record(self, result: OpResult) -> None: ...

    def write_out(self) -> None:
        """Hand buffered records to the OS (end of a batch)."""

    def finish(self, report: SyncReport, status: str, error: str | None = None) -> object:
        """Close the opslog with its summary (opening it first if need be) and flush it."""

    def expire_old(self) -> None:
        """Delete opslogs past their retention (warnings say what was dropped)."""

    def hurry(self) -> None:
        """The run is ending early (interrupted, a server not answering): no long wait on the log folder."""


class NoTrail:
    """A trail that keeps nothing: engine tests and tools that need no audit."""

    def __init__(self) -> None:
        self.warnings: list[str] = []

    def check(self) -> None: ...
    def flush_leftovers(self) -> None: ...
    def already_current(self, plan: Plan) -> str | None:
        return None

    def begin(self) -> None: ...
    def prepare(self, result: OpResult) -> object:
        return None

    def record(self, result: OpResult) -> None: ...
    def write_out(self) -> None: ...
    def finish(self, report: SyncReport, status: str, error: str | None = None) -> None: ...
    def expire_old(self) -> None: ...
    def hurry(self) -> None: ...


class NoLease:
    """No locking (engine tests; a caller that serialises runs itself)."""

    def check(self) -> None: ...
    def release(self) -> None: ...
