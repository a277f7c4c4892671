"""How a run ends, decided once for both drivers: the status, what the audit row says, the CLI's exit code and
whether Dagster counts the run as skipped or failed."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .report import SyncReport


class Status(StrEnum):
    SUCCESS = "success"
    CONFLICTS = "conflicts"  # done, and some paths had changed on both sides: both versions kept, renamed
    ALREADY_CURRENT = "already_current"  # a dry-run whose plan equals the last one: nothing written
    LEASE_HELD = "lease_held"  # another live run has the pair: nothing done, not a failure
    PARTIAL_FAILURE = "partial_failure"  # some operations failed or some entries were skipped with an error
    REFUSED = "refused"  # a safety check refused the run before any change
    INTERRUPTED = "interrupted"  # SIGTERM/SIGINT: changes stopped, temp files removed
    UNREACHABLE = "unreachable"  # a side stopped answering (a dead server): changes stopped, lease released
    FAILED = "failed"  # the run could not complete (lease lost, unreadable root...)


# How a failed run's message begins (the audit row keeps only "failed" and the message): the words are made
# here and read back by failure_reason, for the metrics' reason label
REFUSED_WORDS = "refused, nothing changed"
INTERRUPTED_WORDS = "interrupted by"
STOPPED_ANSWERING, NOT_ANSWERING = "stopped answering", "is not answering"
FAILURE_REASONS = ("server_not_answering", "refused", "interrupted", "other")  # what failure_reason returns


def failure_reason(message: str) -> str:
    """A failed run's kind, from its audit message: server_not_answering, refused, interrupted or other."""
    if STOPPED_ANSWERING in message or NOT_ANSWERING in message:
        return "server_not_answering"
    if message.startswith(REFUSED_WORDS):
        return "refused"
    if message.startswith(INTERRUPTED_WORDS):
        return "interrupted"
    return "other"


# ha-sync's documented exit codes (2, bad usage, is decided before a run exists)
(
    EXIT_OK,
    EXIT_FAILED,
    EXIT_USAGE,
    EXIT_PARTIAL,
    EXIT_REFUSED,
    EXIT_LEASE_HELD,
    EXIT_INTERRUPTED,
    EXIT_CONFLICTS,
    EXIT_UNREACHABLE,
) = range(9)
EXIT_CODES = {
    Status.CONFLICTS: EXIT_CONFLICTS,
    Status.SUCCESS: EXIT_OK,
    Status.ALREADY_CURRENT: EXIT_OK,
    Status.LEASE_HELD: EXIT_LEASE_HELD,
    Status.PARTIAL_FAILURE: EXIT_PARTIAL,
    Status.REFUSED: EXIT_REFUSED,
    Status.INTERRUPTED: EXIT_INTERRUPTED,
    Status.UNREACHABLE: EXIT_UNREACHABLE,
    Status.FAILED: EXIT_FAILED,
}
# the audit row's status (the seed's ENUM: running, success, partial_failure, failed)
AUDIT_STATUS = {
    Status.SUCCESS: "success",
    Status.CONFLICTS: "success",
    Status.PARTIAL_FAILURE: "partial_failure",
    Status.REFUSED: "failed",
    Status.INTERRUPTED: "failed",
    Status.UNREACHABLE: "failed",
    Status.FAILED: "failed",
}
SKIPPED = (Status.ALREADY_CURRENT, Status.LEASE_HELD)


@dataclass
class Outcome:
    status: Status
    message: str = ""  # one line saying why, for refusals, failures and skips
    report: SyncReport = field(default_factory=SyncReport)
    warnings: list[str] = field(default_factory=list)
    not_answering: tuple[str, ...] = ()  # the sides that stopped answering (unreachable), e.g. ("dell",)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    @property
    def skipped(self) -> bool:
        """Nothing was done and nothing went wrong: Dagster ends the run successfully, marked skipped."""
        return self.status in SKIPPED

    @property
    def ok(self) -> bool:
        return self.status in (Status.SUCCESS, Status.CONFLICTS, *SKIPPED)


class RunEnded(Exception):
    """A step ended the run early (refused, lease held, already current, failed, interrupted)."""

    def __init__(self, outcome: Outcome):
        super().__init__(outcome.message)
        self.outcome = outcome
