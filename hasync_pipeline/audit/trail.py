"""One run's audit trail: the opslog as it happens, the database row when the database answers.  The
engine's `Trail` (engine/ports.py): the session calls it at each step.

The log folder is reached only through its LogFolder (logfolder.py): one that stops answering (its server
died) is handled like a dead database - the run goes on, its opslog continues in the local spool
(`<state dir>/opslog-spool`), and the record reaches the database at the end of the run or, the database
down too, from the spool at a later run on this machine.  Never a hang."""

from __future__ import annotations

import errno
import os
from datetime import UTC, datetime
from typing import Any

from ..engine.latency import mount_source
from ..engine.plan import Plan
from ..engine.ports import AuditUnwritable
from ..engine.report import SyncReport
from ..engine.workers import OpResult
from .flush import FlushOutcome, expire_old_and_warn, flush_file, flush_pending, pending_files
from .logfolder import LogFolder, LogFolderStalled
from .opslog import OpslogWriter
from .records import Prepared, encode_path, iso, prepare_op, size_of
from .store import AuditStore, AuditUnavailable

_MIN_FREE = 1 << 20  # bytes the opslog folder needs free to start a run
ALREADY_CURRENT = "Dry-run already current as of {started_at}. Nothing has changed."


def plan_signature(plan: Plan) -> set[tuple[str, str, int | None]]:
    """What a dry-run writes, as the seed compares it: (filepath, operation, size_before) of every row."""
    return {(encode_path(op.path), op.operation, size_of(op.dest)) for op in plan.ops}


class AuditTrail:
    def __init__(
        self,
        store: AuditStore | None,
        log_dir: str,
        *,
        run_id: str,
        pair: str,
        direction: str,
        src: str,
        dest: str,
        dry_run: bool,
        dagster_run_id: str | None = None,
        log_retain_days: float = 10.0,
        spool_dir: str | None = None,
        stall_timeout: float | None = None,
        probe_timeout: float | None = None,
    ):
        """`spool_dir`: a local folder for the record when the log folder stops answering for `stall_timeout`
        seconds (None: no deadline, no spool: tools and tests); `probe_timeout`: what check() waits."""
        self.store, self.log_dir, self.log_retain_days = store, log_dir, log_retain_days
        self.folder = LogFolder(log_dir, stall_timeout if spool_dir else None, mount_source(log_dir))
        self.spool_dir, self.probe_timeout = spool_dir, probe_timeout
        self.pair, self.direction = pair, direction
        self.header: dict[str, Any] = {
            "run_id": run_id,
            "pair": pair,
            "direction": direction,
            "src": src,
            "dest": dest,
            "started_at": iso(datetime.now(UTC)),
            "dry_run": int(dry_run),
            "dagster_run_id": dagster_run_id,
        }
        self.writer: OpslogWriter | None = None
        self.iteration_id: int | None = None
        self.warnings: list[str] = []
        self.db_down = False  # the database failed once this run: not asked again (a hung one costs seconds once)

    def _database(self) -> AuditStore | None:
        return None if self.db_down else self.store

    def _down(self, message: str) -> None:
        self.db_down = True
        self.warnings.append(message)

    def _stalled(self, exc: LogFolderStalled) -> None:
        """The log folder stopped answering: say so once; the record goes to the spool from now on."""
        if self.spool_dir is None:
            raise AuditUnwritable(str(exc)) from None
        message = f"{exc}; the run goes on, its opslog in {self.spool_dir} (flushed from there)"
        if message not in self.warnings:
            self.warnings.append(message)

    def check(self) -> None:
        """The opslog folder exists (made if need be), is a writable folder and has room: else nothing is
        changed (a run must not change files it cannot record).  One that does not answer within the probe's
        seconds is not waited for: the spool keeps the record."""
        try:
            self.folder.call(_check_folder, self.log_dir, timeout=self.probe_timeout)
        except LogFolderStalled as exc:
            self._stalled(exc)
        except OSError as exc:
            raise AuditUnwritable(f"opslog folder {self.log_dir} unusable: {exc.strerror or exc}") from None

    def _folders(self) -> list[tuple[str, LogFolder]]:
        """Where opslogs wait: the spool first (its records are whole; a copy in a folder that died may not
        be), then the log folder."""
        spool = [(self.spool_dir, LogFolder(self.spool_dir))] if self.spool_dir else []
        return [*spool, (self.log_dir, self.folder)]

    def flush_leftovers(self) -> None:
        """Flush the opslogs earlier runs left (a dead database, a killed run); a dead database leaves them."""
        for folder, runner in self._folders():
            store = self._database()
            if store is None:
                return
            try:
                outcomes, db_error = runner.call(_flush_folder, store, folder)
            except LogFolderStalled as exc:
                self._stalled(exc)
                continue
            self.warnings += [outcome.error for outcome in outcomes if outcome.error]
            if db_error:
                self._down(f"{db_error}; earlier opslogs stay in {folder} for the next run")

    def expire_old(self) -> None:
        """Delete opslogs older than the retention; say so when that drops records never flushed."""
        for folder, runner in self._folders():
            try:
                message = runner.call(_expire_folder, folder, self.log_retain_days)
            except LogFolderStalled as exc:
                self._stalled(exc)
                continue
            if message:
                self.warnings.append(message)

    def hurry(self) -> None:
        """The run is being interrupted: no wait on the log folder is long from now on."""
        self.folder.hurry()

    def already_current(self, plan: Plan) -> str | None:
        """For a dry-run: the seed's message when the last successful dry-run had the same plan, else None
        (also None when the database cannot tell: then the dry-run is simply recorded again)."""
        store = self._database()
        if store is None:
            return None
        try:
            last = store.last_dry_run(self.pair, self.direction)
        except AuditUnavailable as exc:
            self._down(str(exc))
            return None
        if last is None or last[1] != plan_signature(plan):
            return None
        try:  # what the dashboard shows as "still current"
            store.note_still_current(self.pair, self.direction, last[2], datetime.now(UTC))
        except AuditUnavailable as exc:
            self._down(str(exc))
        return ALREADY_CURRENT.format(started_at=last[0].isoformat(sep=" ", timespec="milliseconds"))

    def begin(self) -> None:
        try:
            self.writer = OpslogWriter(self.log_dir, self.header, self.folder)
        except LogFolderStalled as exc:
            self._stalled(exc)
            assert self.spool_dir is not None
            self.writer = OpslogWriter(self.spool_dir, self.header)
        store = self._database()
        if store is not None:
            try:
                self.iteration_id = store.start_iteration(self.header)
            except AuditUnavailable as exc:
                self._down(f"{exc}; the opslog keeps the record until the next run flushes it")

    def prepare(self, result: OpResult) -> Prepared:
        """Format one operation's record; safe to call in a worker process (see ApplyContext.prepare)."""
        return prepare_op(result, int(bool(self.header["dry_run"])))

    def record(self, result: OpResult) -> None:
        assert self.writer is not None, "begin() first"
        try:
            self.writer.record(result)
        except LogFolderStalled as exc:
            self._to_spool(exc)

    def write_out(self) -> None:
        """Hand the opslog lines still buffered to the OS (they otherwise go in bursts, see opslog.py)."""
        if self.writer is not None:
            try:
                self.writer.write_out()
            except LogFolderStalled as exc:
                self._to_spool(exc)

    def _to_spool(self, exc: LogFolderStalled) -> None:
        """Go on in the spool with everything recorded so far (the file in the dead folder is left as it is;
        if it is ever flushed, the run id makes the second copy harmless)."""
        self._stalled(exc)
        assert self.writer is not None and self.spool_dir is not None
        self.writer = OpslogWriter.continuing(self.spool_dir, self.writer)

    def finish(self, report: SyncReport | None, status: str, error: str | None = None) -> FlushOutcome | None:
        """Close the opslog with its summary and flush it (a dead database leaves it for the next run)."""
        if self.writer is None:
            self.begin()  # may raise AuditUnwritable: the caller says so
        report = report or SyncReport()
        errors = ([error] if error else []) + report.errors
        summary = {
            "ended_at": iso(datetime.now(UTC)),
            "status": status,
            "files_created": report.created,
            "files_updated": report.updated,
            "files_deleted": report.deleted,
            "files_skipped": report.skipped,
            "files_failed": report.failed,
            "total_bytes_transferred": report.bytes,
            "files_conflicted": report.conflicts,
            "error_message": "\n".join(errors)[:60000] or None,
        }
        assert self.writer is not None
        try:
            self.writer.close(summary)
        except LogFolderStalled as exc:
            self._to_spool(exc)
            self.writer.close(summary)
        writer = self.writer
        store = self._database()
        if store is None:
            if self.db_down:
                self.warnings.append(f"opslog {writer.path} kept for the next run")
            return None
        try:
            return writer.folder.call(flush_file, store, writer.path, writer.parsed)
        except AuditUnavailable as exc:
            self._down(f"{exc}; opslog {writer.path} kept for the next run")
        except LogFolderStalled as exc:  # written to the database or not, the file stays where it is
            self._stalled(exc)
        return None


def _check_folder(log_dir: str) -> None:
    os.makedirs(log_dir, exist_ok=True)
    if not os.access(log_dir, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "not writable by this user")
    st = os.statvfs(log_dir)
    if st.f_bavail * st.f_frsize < _MIN_FREE:
        raise OSError(errno.ENOSPC, "its disk is full")


def _flush_folder(store: AuditStore, folder: str) -> tuple[list[FlushOutcome], str | None]:
    if not pending_files(folder):
        return [], None
    return flush_pending(store, folder)


def _expire_folder(folder: str, retain_days: float) -> str | None:
    return expire_old_and_warn(folder, retain_days) if os.path.isdir(folder) else None
