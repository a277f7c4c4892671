"""Audit records, as the tables declare them (schema.py): an operation's opslog line and database row, a run's
summary, and the checks a record read back from an opslog must pass.  Field names, their order and their
kinds come from the table declarations, never from a second list.

Paths are stored with `encode_path`, a reversible text form of any bytes name; times as UTC to the millisecond.
"""

from __future__ import annotations

import functools
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import Column, DateTime, Enum, Integer, String

from ..engine.walk import DIR, Entry
from ..engine.workers import OpResult
from .schema import sync_iterations, sync_operations

PATH_PREFIX = "hasync-pct:"
_SAFE = "/ !$&'()*+,;=:@~-._"
# what one operation writes, in the table's column order (its id and iteration_id are the database's)
OPERATION_FIELDS = tuple(c.name for c in sync_operations.columns if c.name not in ("id", "iteration_id"))
# what a run's summary sets on its iteration row: every column but the run's identity, set at its start
IDENTITY_FIELDS = ("id", "sync_pair", "direction", "src", "dest", "started_at", "dry_run", "run_id", "dagster_run_id")
SUMMARY_FIELDS = tuple(c.name for c in sync_iterations.columns if c.name not in IDENTITY_FIELDS)
FILEPATH_MAX: int = sync_operations.c.filepath.type.length  # type: ignore[attr-defined]
ERROR_MAX: int = sync_operations.c.error_message.type.length  # type: ignore[attr-defined]
REASON_MAX: int = sync_operations.c.reason.type.length  # type: ignore[attr-defined]


class RecordInvalid(ValueError):
    """A record read back from an opslog does not fit its table (wrong type, unknown value, missing)."""


# ---- paths and times -------------------------------------------------------------------------------------


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
        return urllib.parse.unquote_to_bytes(text[len(PATH_PREFIX) :])
    return text.encode("utf-8")


def cut_path(path: str) -> str:
    """VARCHAR(4096): keep the head and say it was cut."""
    return path if len(path) <= FILEPATH_MAX else path[: FILEPATH_MAX - 3] + "..."


def cut_error(error: str | None) -> str | None:
    return error[:ERROR_MAX] if error else None


def utc_ms(dt: datetime) -> datetime:
    """UTC, truncated to milliseconds: what DATETIME(3) keeps (MariaDB truncates, MySQL rounds)."""
    dt = dt.astimezone(UTC) if dt.tzinfo else dt.replace(tzinfo=UTC)
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def naive_utc(dt: datetime | None) -> datetime | None:
    """DATETIME columns hold naive UTC, to the millisecond."""
    return utc_ms(dt).replace(tzinfo=None) if dt else None


def iso(dt: datetime) -> str:
    return utc_ms(dt).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def db_time(text: str | None) -> str | None:
    """'2026-11-22T10:00:01.123Z' (what the opslog writes) -> '2026-11-22 10:00:01.123000': naive UTC, as both
    SQLAlchemy's SQLite DateTime and MySQL's DATETIME(3) take it."""
    if text is None:
        return None
    if len(text) == 24 and text[10] == "T" and text[-1] == "Z":
        return f"{text[:10]} {text[11:23]}000"
    return utc_ms(parse_iso(text)).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


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


# ---- an operation, as it happens -------------------------------------------------------------------------

_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]').search


def _json_text(value: str | None) -> str:
    """A JSON string (json.dumps with ensure_ascii=False), without its cost for the plain names most are."""
    if value is None:
        return "null"
    return f'"{value}"' if _NEEDS_ESCAPE(value) is None else json.dumps(value, ensure_ascii=False)


def _json_num(value: int | None) -> str:
    return "null" if value is None else str(int(value))


def size_of(entry: Entry | None) -> int | None:
    return entry.size if entry is not None and entry.kind != DIR else None


_LINE = '{{"type":"op",' + ",".join(f'"{name}":{{{name}}}' for name in OPERATION_FIELDS) + ',"bytes":{bytes}}}\n'
_ROW = itemgetter(*OPERATION_FIELDS)


# an operation's (opslog line, database row, operation, ok, bytes, ended ISO)
Prepared = tuple[str, tuple[Any, ...], str, bool, int, str]


def prepare_op(result: OpResult, dry_run: int) -> Prepared:
    """An operation's opslog line and database row (and what the counts need): (line, row, operation, ok, bytes,
    ended ISO).  Formatted by hand: json.dumps of a dict per operation was most of the audit trail's cost on a
    100k-file run.  Pure, so it can run in the worker process that did the operation (ApplyContext.prepare)."""
    op = result.op
    started_iso, started_db = _stamp(result.started)
    ended = result.ended
    ended_iso, ended_db = (started_iso, started_db) if ended is None or ended == result.started else _stamp(ended)
    path, operation = encode_path(op.path), op.operation
    size_before, size_after = size_of(op.dest), size_of(op.src)
    status = "success" if result.ok else "fail"
    md5_before, md5_after, error = op.md5_dest, op.md5_src, result.error
    reason = f"{op.reason}: {op.detail}"[:REASON_MAX] if op.reason else None
    line = _LINE.format(
        dry_run=dry_run,
        operation=f'"{operation}"',
        filepath=_json_text(path),
        size_before=_json_num(size_before),
        size_after=_json_num(size_after),
        md5_before=_json_text(md5_before),
        md5_after=_json_text(md5_after),
        started_at=f'"{started_iso}"',
        ended_at=f'"{ended_iso}"',
        status=f'"{status}"',
        error_message=_json_text(error),
        reason=_json_text(reason),
        bytes=result.bytes,
    )
    row = _ROW(
        {
            "dry_run": dry_run,
            "operation": operation,
            "filepath": cut_path(path),
            "size_before": size_before,
            "size_after": size_after,
            "md5_before": md5_before,
            "md5_after": md5_after,
            "started_at": started_db,
            "ended_at": ended_db,
            "status": status,
            "error_message": cut_error(error),
            "reason": reason,
        }
    )
    return line, row, operation, result.ok, result.bytes, ended_iso


# ---- records read back ------------------------------------------------------------------------------------


def _checker(column: Column[Any], raw_driver: bool) -> Callable[[Any], Any]:
    """How a value read from an opslog becomes the column's value, refusing what does not fit it.  Times
    become text for the driver's executemany (`raw_driver`), datetimes for SQLAlchemy statements."""
    kind, name, nullable = column.type, column.name, column.nullable

    def fits(value: Any) -> Any:
        if value is None:
            if not nullable:
                raise RecordInvalid(f"{name} is missing")
            return None
        if isinstance(kind, Enum):
            if value not in kind.enums:
                raise RecordInvalid(f"{name} {value!r} is not one of {', '.join(kind.enums)}")
            return value
        if isinstance(kind, DateTime):
            if not isinstance(value, str):
                raise RecordInvalid(f"{name} {value!r} is not a time")
            try:
                return db_time(value) if raw_driver else naive_utc(parse_iso(value))
            except ValueError:
                raise RecordInvalid(f"{name} {value!r} is not a time") from None
        if isinstance(kind, Integer):
            if isinstance(value, bool) or not isinstance(value, int):
                raise RecordInvalid(f"{name} {value!r} is not a whole number")
            return value
        if isinstance(kind, String):
            if not isinstance(value, str):
                raise RecordInvalid(f"{name} {value!r} is not text")
            if name == "filepath":
                return cut_path(value)
            return value[: kind.length] if kind.length else value
        return value

    return fits


_OPERATION_CHECKS = tuple(_checker(sync_operations.c[name], raw_driver=True) for name in OPERATION_FIELDS)
_SUMMARY_CHECKS = {name: _checker(sync_iterations.c[name], raw_driver=False) for name in SUMMARY_FIELDS}


def operation_row(op: Mapping[str, Any]) -> tuple[Any, ...]:
    """An op line read back -> its row (without iteration_id), each value checked against its column."""
    return tuple(check(op.get(name)) for name, check in zip(OPERATION_FIELDS, _OPERATION_CHECKS, strict=True))


def summary_values(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A summary read back -> the iteration row's closing values, each checked against its column."""
    values = {name: check(summary.get(name)) for name, check in _SUMMARY_CHECKS.items()}
    if values["ended_at"] is None:
        raise RecordInvalid("ended_at is missing")
    if values["status"] == "running":
        raise RecordInvalid("a finished run cannot be 'running'")
    return values


def header_values(header: Mapping[str, Any]) -> dict[str, Any]:
    """A header -> the iteration row's identity (its id is the database's), checked."""
    for name in ("run_id", "pair", "direction", "src", "dest", "started_at"):
        if not isinstance(header.get(name), str) or not header[name]:
            raise RecordInvalid(f"the header's {name} is missing")
    try:
        started = parse_iso(header["started_at"])
    except ValueError:
        raise RecordInvalid(f"the header's started_at {header['started_at']!r} is not a time") from None
    return {
        "run_id": header["run_id"],
        "sync_pair": header["pair"],
        "direction": header["direction"],
        "src": header["src"][:512],
        "dest": header["dest"][:512],
        "started_at": naive_utc(started),
        "dry_run": int(bool(header.get("dry_run"))),
        "dagster_run_id": header.get("dagster_run_id"),
    }


def insert_sql(paramstyle: str) -> str:
    """The driver-level INSERT of operation rows (executemany: no per-row ORM work)."""
    columns = ("iteration_id", *OPERATION_FIELDS)
    marks = ", ".join(["?" if paramstyle == "qmark" else "%s"] * len(columns))
    return f"INSERT INTO sync_operations ({', '.join(columns)}) VALUES ({marks})"
