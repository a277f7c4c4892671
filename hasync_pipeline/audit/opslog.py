"""The opslog: one JSONL file per run, the audit trail's source of truth (the database is a copy of it).

    {"type": "header",  "run_id", "pair", "direction", "src", "dest", "started_at", "dry_run", ...}
    {"type": "op",      every sync_operations field, "bytes"}          one line per operation, as it happens
    {"type": "summary", "ended_at", "status", counts, "error_message"}  only if the run ended normally

Lines reach the OS in bursts, at most 256 lines or one second after they happen (one write() per line
was ~0.4 s of a 100k-file run's serial part; a worker reports its operations in messages of up to 256
anyway), so a crash loses at most the last burst of records, never a file.  A live writer
holds a POSIX lock on its file (it works over NFS too): a flusher never touches a file that is still
being written.  Paths are stored with `encode_path`, a reversible text form of any bytes name.  Every call
on the file goes through its LogFolder (logfolder.py): a folder whose server died raises LogFolderStalled
instead of hanging the run, and the trail goes on in its spool (`OpslogWriter.continuing`).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from ..engine.ports import AuditUnwritable
from ..engine.workers import OpResult
from .logfolder import LogFolder, LogFolderStalled
from .records import (
    OPERATION_FIELDS,
    Prepared,
    RecordInvalid,
    header_values,
    iso,
    operation_row,
    parse_iso,
    prepare_op,
    summary_values,
)

OPSLOG_GLOB_PREFIX = "opslog-"


def opslog_name(pair: str, direction: str, started_at: datetime) -> str:
    return f"{OPSLOG_GLOB_PREFIX}{pair}-{direction}-{iso(started_at)}.jsonl"


@dataclass
class ParsedOpslog:
    path: str
    header: dict[str, Any]
    rows: list[tuple[Any, ...]] = field(default_factory=list)  # database rows of the operations (records.py)
    summary: dict[str, Any] | None = None
    torn_tail: bool = False
    done: dict[str, int] = field(default_factory=lambda: {"create": 0, "update": 0, "delete": 0})
    failed: int = 0
    bytes: int = 0
    last_ended: str | None = None

    def count(self, operation: str, ok: bool, nbytes: int, ended: str) -> None:
        if ok:
            self.done[operation] += 1
            self.bytes += nbytes
        else:
            self.failed += 1
        self.last_ended = ended

    def add(self, op: dict[str, Any]) -> None:
        """One parsed op line (reading a file); raises RecordInvalid when it does not fit the table."""
        row = operation_row(op)
        nbytes = op.get("bytes") or 0
        if isinstance(nbytes, bool) or not isinstance(nbytes, int):
            raise RecordInvalid(f"bytes {nbytes!r} is not a whole number")
        self.rows.append(row)
        self.count(op["operation"], op["status"] == "success", nbytes, op["ended_at"])


_BURST_LINES, _BURST_SECONDS = 256, 1.0


class OpslogWriter:
    """Writes the file, and keeps the database rows of what it wrote, so the run's own flush need not read
    the file back (the file stays the source of truth for any other flusher)."""

    def __init__(self, log_dir: str, header: dict[str, Any], folder: LogFolder | None = None):
        started = parse_iso(header["started_at"])
        self.path = os.path.join(log_dir, opslog_name(header["pair"], header["direction"], started))
        self.folder = folder or LogFolder(log_dir)
        with self._writing():
            self._f = self.folder.call(_open_locked, log_dir, self.path)
        self.dry_run = int(bool(header.get("dry_run")))
        self.parsed = ParsedOpslog(self.path, header)
        self._pending: list[str] = []  # lines not yet written: they go in bursts
        self._burst_started = time.monotonic()
        self._line({"type": "header", **header})

    @classmethod
    def continuing(cls, log_dir: str, old: OpslogWriter) -> OpslogWriter:
        """A writer in `log_dir` (the spool) that goes on with `old`'s run, whose folder stopped answering:
        the same header, then every operation `old` recorded (rewritten from its rows), then what comes."""
        new = cls(log_dir, old.parsed.header)
        new._pending += [_op_line(row) for row in old.parsed.rows]
        new.parsed = old.parsed
        new.parsed.path = new.path
        new.write_out()
        return new

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A write that fails (a full disk, a folder gone) is AuditUnwritable, naming the file; a folder that
        does not answer raises LogFolderStalled (the trail then goes on in its spool)."""
        try:
            yield
        except LogFolderStalled:
            raise
        except OSError as exc:
            raise AuditUnwritable(f"cannot write the opslog {self.path}: {exc.strerror or exc}") from None

    def _line(self, obj: dict[str, Any]) -> None:
        self._pending.append(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.write_out()

    def record(self, result: OpResult) -> None:
        prepared: Prepared = result.prepared or prepare_op(result, self.dry_run)  # type: ignore[assignment]
        line, row, operation, ok, nbytes, ended = prepared
        self._pending.append(line)
        self.parsed.rows.append(row)
        self.parsed.count(operation, ok, nbytes, ended)
        if len(self._pending) >= _BURST_LINES or time.monotonic() - self._burst_started >= _BURST_SECONDS:
            self.write_out()

    def write_out(self) -> None:
        """Hand the lines not yet written to the OS (one write(), on the folder's thread)."""
        text = "".join(self._pending)
        self._pending.clear()  # a folder that stalls now loses them here: the trail rewrites them from the rows
        self._burst_started = time.monotonic()
        if text:
            with self._writing():
                self.folder.call(_write, self._f, text)

    def close(self, summary: dict[str, Any] | None) -> None:
        """Write the summary (None: leave the file as a crashed run would, e.g. interrupted) and unlock."""
        try:
            if summary is not None:
                self._line({"type": "summary", **summary})
                self.parsed.summary = summary
            else:
                self.write_out()
        finally:
            try:
                self.folder.call(self._f.close)
            except OSError:
                pass  # what could not be written was said by the _line above


def _open_locked(log_dir: str, path: str) -> IO[str]:
    os.makedirs(log_dir, exist_ok=True)
    f = open(path, "x", encoding="utf-8")
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "still being written" for flushers
    except BaseException:
        f.close()
        raise
    return f


def _write(f: IO[str], text: str) -> None:
    f.write(text)
    f.flush()


def _op_line(row: tuple[Any, ...]) -> str:
    """An operation line again, from its database row (the spool's copy of a run whose folder died): times
    back to the opslog's ISO form; the bytes of each are not in the row (the summary keeps the total)."""
    op = dict(zip(OPERATION_FIELDS, row, strict=True))
    for name in ("started_at", "ended_at"):
        text = op[name]
        if isinstance(text, str) and len(text) == 26 and text[10] == " ":
            op[name] = f"{text[:10]}T{text[11:23]}Z"
    return json.dumps({"type": "op", **op, "bytes": 0}, ensure_ascii=False, separators=(",", ":")) + "\n"


class OpslogCorrupt(Exception):
    """The file cannot be trusted (no header, or a broken line before the end)."""


def read_opslog(path: str, f: IO[bytes] | None = None) -> ParsedOpslog:
    """Parse an opslog.  Pass the already locked file object `f` when holding its lock: opening the file
    again and closing it would drop every POSIX lock this process holds on it."""
    if f is None:
        with open(path, "rb") as f:
            data = f.read()
    else:
        f.seek(0)
        data = f.read()
    lines = data.split(b"\n")
    last_complete = data.endswith(b"\n")
    if last_complete:
        lines.pop()
    parsed: ParsedOpslog | None = None
    for n, raw in enumerate(lines, 1):
        try:
            obj = json.loads(raw)
            kind = obj["type"]
        except (ValueError, KeyError, TypeError) as exc:
            if n == len(lines) and not last_complete and parsed is not None:
                parsed.torn_tail = True  # the writer died mid-line: what came before is good
                break
            raise OpslogCorrupt(f"{os.path.basename(path)} line {n}: {exc}") from None
        if parsed is None:
            if kind != "header":
                raise OpslogCorrupt(f"{os.path.basename(path)}: first line is not a header")
            try:
                header_values(obj)
            except RecordInvalid as exc:
                raise OpslogCorrupt(f"{os.path.basename(path)}: bad header ({exc})") from None
            parsed = ParsedOpslog(path, obj)
        elif kind == "op":
            try:
                parsed.add(obj)
            except (RecordInvalid, AttributeError) as exc:
                raise OpslogCorrupt(f"{os.path.basename(path)} line {n}: bad operation record ({exc})") from None
        elif kind == "summary":
            try:
                summary_values(obj)
            except RecordInvalid as exc:
                raise OpslogCorrupt(f"{os.path.basename(path)} line {n}: bad summary ({exc})") from None
            parsed.summary = obj
        else:
            raise OpslogCorrupt(f"{os.path.basename(path)} line {n}: unknown record type {kind!r}")
    if parsed is None:
        raise OpslogCorrupt(f"{os.path.basename(path)}: empty (no header)")
    return parsed


def try_lock(path: str) -> IO[bytes] | None:
    """An open, exclusively locked file object, or None when a live writer (or flusher) holds it.
    Read through this object only (see read_opslog)."""
    try:
        f = open(path, "r+b")
    except FileNotFoundError:
        return None
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f
