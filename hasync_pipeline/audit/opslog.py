"""The opslog: one JSONL file per run, the audit trail's source of truth (the database is a copy of it).

    {"type": "header",  "run_id", "pair", "direction", "src", "dest", "started_at", "dry_run", ...}
    {"type": "op",      every sync_operations field, "bytes"}          one line per operation, as it happens
    {"type": "summary", "ended_at", "status", counts, "error_message"}  only if the run ended normally

Each line is written through to the OS as it happens, so a crash keeps what was done.  A live writer
holds a POSIX lock on its file (it works over NFS too): a flusher never touches a file that is still
being written.  Paths are stored with `encode_path`, a reversible text form of any bytes name.
"""

from __future__ import annotations

import fcntl
import json
import os
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


def op_record(result: OpResult, dry_run: bool) -> dict:
    op = result.op
    return {
        "type": "op", "dry_run": int(dry_run), "operation": op.operation, "filepath": encode_path(op.path),
        "size_before": _size(op.dest), "size_after": _size(op.src),
        "md5_before": op.md5_dest, "md5_after": op.md5_src,
        "started_at": iso(result.started_at), "ended_at": iso(result.ended_at or result.started_at),
        "status": "success" if result.ok else "fail", "error_message": result.error, "bytes": result.bytes,
    }


class OpslogWriter:
    def __init__(self, log_dir: str, header: dict):
        os.makedirs(log_dir, exist_ok=True)
        started = parse_iso(header["started_at"])
        self.path = os.path.join(log_dir, opslog_name(header["pair"], header["direction"], started))
        self._f = open(self.path, "x", encoding="utf-8", buffering=1)  # line-buffered: one write per line
        fcntl.lockf(self._f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "still being written" for flushers
        self.dry_run = bool(header.get("dry_run"))
        self._line({"type": "header", **header})

    def _line(self, obj: dict) -> None:
        self._f.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")

    def record(self, result: OpResult) -> None:
        self._line(op_record(result, self.dry_run))

    def close(self, summary: dict | None) -> None:
        """Write the summary (None: leave the file as a crashed run would, e.g. interrupted) and unlock."""
        if summary is not None:
            self._line({"type": "summary", **summary})
        self._f.close()


class OpslogCorrupt(Exception):
    """The file cannot be trusted (no header, or a broken line before the end)."""


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

    def add(self, op: dict) -> None:
        from .rows import operation_row
        self.rows.append(operation_row(op))
        if op["status"] == "success":
            self.done[op["operation"]] += 1
            self.bytes += op.get("bytes") or 0
        else:
            self.failed += 1
        self.last_ended = op["ended_at"]


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
