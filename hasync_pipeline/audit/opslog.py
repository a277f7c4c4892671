"""The opslog: one JSONL file per run, the audit trail's source of truth (the database is a copy of it).

    {"type": "header",  "run_id", "pair", "direction", "src", "dest", "started_at", "dry_run", ...}
    {"type": "op",      every sync_operations field, "bytes"}          one line per operation, as it happens
    {"type": "summary", "ended_at", "status", counts, "error_message"}  only if the run ended normally

Lines reach the OS in bursts, at most 256 lines or one second after they happen (one write() per line
was ~0.4 s of a 100k-file run's serial part; a worker reports its operations in messages of up to 256
anyway), so a crash loses at most the last burst of records, never a file.  A live writer
holds a POSIX lock on its file (it works over NFS too): a flusher never touches a file that is still
being written.  Paths are stored with `encode_path`, a reversible text form of any bytes name.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone

from ..engine.walk import DIR
from ..engine.workers import OpResult

OPSLOG_GLOB_PREFIX = "opslog-"
PATH_PREFIX = "hasync-pct:"
_SAFE = "/ !$&'()*+,;=:@~-._"


def encode_path(rel: bytes) -> str:
    """Text for a path: itself when it is valid UTF-8, else `hasync-pct:` + percent-encoded bytes.

    Reversible (`decode_path`) and unambiguous: a valid UTF-8 name that happens to start with the prefix
    is percent-encoded too."""
    try:
        text = rel.decode("utf-8")
        if not text.startswith(PATH_PREFIX):
            return text
    except UnicodeDecodeError:
        pass
    return PATH_PREFIX + urllib.parse.quote_from_bytes(rel, safe=_SAFE)


def decode_path(text: str) -> bytes:
    if text.startswith(PATH_PREFIX):
        return urllib.parse.unquote_to_bytes(text[len(PATH_PREFIX):])
    return text.encode("utf-8")


def utc_ms(dt: datetime | None) -> datetime | None:
    """UTC, truncated to milliseconds: what DATETIME(3) keeps (MariaDB truncates, MySQL rounds)."""
    if dt is None:
        return None
    dt = dt.astimezone(timezone.utc) if dt.tzinfo else dt.replace(tzinfo=timezone.utc)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def iso(dt: datetime | None) -> str | None:
    return utc_ms(dt).isoformat(timespec="milliseconds").replace("+00:00", "Z") if dt else None


def parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def opslog_name(pair: str, direction: str, started_at: datetime) -> str:
    return f"{OPSLOG_GLOB_PREFIX}{pair}-{direction}-{iso(started_at)}.jsonl"


def _size(entry) -> int | None:
    return entry.size if entry is not None and entry.kind != DIR else None


FILEPATH_MAX = 4096  # sync_operations.filepath is a VARCHAR(4096)


@functools.lru_cache(maxsize=16)
def _day_time(second: int) -> str:
    """Most operations of a run share their second (and start and end in one of a few)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _stamp(t: float) -> tuple[str, str]:
    """Epoch seconds -> (opslog ISO text, database DATETIME text), both UTC to the millisecond."""
    second = int(t)
    ms = f"{int((t - second) * 1000):03d}"
    day_time = _day_time(second)
    return f"{day_time}.{ms}Z", f"{day_time[:10]} {day_time[11:]}.{ms}000"


_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]').search


def _text(value) -> str:
    """A JSON string (json.dumps with ensure_ascii=False), without its cost for the plain names most are."""
    if value is None:
        return "null"
    return f'"{value}"' if _NEEDS_ESCAPE(value) is None else json.dumps(value, ensure_ascii=False)


def _hex(value: str | None) -> str:
    """An MD5 digest (hex: nothing to escape) as JSON."""
    return "null" if value is None else f'"{value}"'


def _num(value) -> str:
    return "null" if value is None else str(int(value))


def cut_path(path: str) -> str:
    """VARCHAR(4096): keep the head and say it was cut."""
    return path if len(path) <= FILEPATH_MAX else path[:FILEPATH_MAX - 3] + "..."


def cut_error(error: str | None) -> str | None:
    return error[:4096] if error else None


@dataclass
class ParsedOpslog:
    path: str
    header: dict
    rows: list[tuple] = field(default_factory=list)   # database rows of the operations (see rows.py)
    summary: dict | None = None
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

    def add(self, op: dict) -> None:
        """One parsed op line (reading a file)."""
        from .rows import operation_row
        self.rows.append(operation_row(op))
        self.count(op["operation"], op["status"] == "success", op.get("bytes") or 0, op["ended_at"])


def prepare_op(result: OpResult, dry_run: int) -> tuple:
    """An operation's opslog line and database row (and what the counts need), formatted by hand: json.dumps
    of a dict per operation was most of the audit trail's cost on a 100k-file run.  Pure, so it can run in
    the worker process that did the operation (ApplyContext.prepare).  ~3 us an operation."""
    op = result.op
    started_iso, started_db = _stamp(result.started)
    ended = result.ended
    ended_iso, ended_db = (started_iso, started_db) if ended is None or ended == result.started else _stamp(ended)
    path, operation = encode_path(op.path), op.operation
    size_before, size_after = _size(op.dest), _size(op.src)
    status = "success" if result.ok else "fail"
    md5_before, md5_after, error = op.md5_dest, op.md5_src, result.error
    line = (f'{{"type":"op","dry_run":{dry_run},"operation":"{operation}","filepath":{_text(path)},'
            f'"size_before":{_num(size_before)},"size_after":{_num(size_after)},'
            f'"md5_before":{_hex(md5_before)},"md5_after":{_hex(md5_after)},'
            f'"started_at":"{started_iso}","ended_at":"{ended_iso}",'
            f'"status":"{status}","error_message":{_text(error)},"bytes":{result.bytes}}}\n')
    row = (dry_run, operation, cut_path(path), size_before, size_after, md5_before, md5_after, started_db,
           ended_db, status, cut_error(error))
    return line, row, operation, result.ok, result.bytes, ended_iso


_BURST_LINES, _BURST_SECONDS = 256, 1.0


class OpslogWriter:
    """Writes the file, and keeps the database rows of what it wrote, so the run's own flush need not read
    the file back (the file stays the source of truth for any other flusher)."""

    def __init__(self, log_dir: str, header: dict):
        os.makedirs(log_dir, exist_ok=True)
        started = parse_iso(header["started_at"])
        self.path = os.path.join(log_dir, opslog_name(header["pair"], header["direction"], started))
        self._f = open(self.path, "x", encoding="utf-8", buffering=_BURST_LINES * 512)
        fcntl.lockf(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "still being written" for flushers
        self.dry_run = int(bool(header.get("dry_run")))
        self.parsed = ParsedOpslog(self.path, header)
        self._unwritten, self._burst_started = 0, time.monotonic()
        self._line({"type": "header", **header})

    def _line(self, obj: dict) -> None:
        self._f.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
        self.write_out()

    def record(self, result: OpResult) -> None:
        line, row, operation, ok, nbytes, ended = result.prepared or prepare_op(result, self.dry_run)
        self._f.write(line)
        self.parsed.rows.append(row)
        self.parsed.count(operation, ok, nbytes, ended)
        self._unwritten += 1
        if self._unwritten >= _BURST_LINES or time.monotonic() - self._burst_started >= _BURST_SECONDS:
            self.write_out()

    def write_out(self) -> None:
        """Hand the buffered lines to the OS (one write())."""
        self._f.flush()
        self._unwritten, self._burst_started = 0, time.monotonic()

    def close(self, summary: dict | None) -> None:
        """Write the summary (None: leave the file as a crashed run would, e.g. interrupted) and unlock."""
        if summary is not None:
            self._line({"type": "summary", **summary})
            self.parsed.summary = summary
        self._f.close()


class OpslogCorrupt(Exception):
    """The file cannot be trusted (no header, or a broken line before the end)."""


def read_opslog(path: str, f=None) -> ParsedOpslog:
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
            parsed = ParsedOpslog(path, obj)
        elif kind == "op":
            try:
                parsed.add(obj)
            except (KeyError, TypeError) as exc:
                raise OpslogCorrupt(f"{os.path.basename(path)} line {n}: bad operation record ({exc})") from None
        elif kind == "summary":
            parsed.summary = obj
        else:
            raise OpslogCorrupt(f"{os.path.basename(path)} line {n}: unknown record type {kind!r}")
    if parsed is None:
        raise OpslogCorrupt(f"{os.path.basename(path)}: empty (no header)")
    return parsed


def try_lock(path: str):
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
