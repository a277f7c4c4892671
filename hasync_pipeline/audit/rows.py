"""Opslog operation records -> database rows, built while the opslog is parsed (one tuple per operation:
a 100k-operation run stays ~25 MB, where dicts took ~300 MB), inserted with the driver's executemany."""

from __future__ import annotations

from .opslog import cut_error, cut_path, parse_iso, utc_ms

OPERATION_COLUMNS = ("iteration_id", "dry_run", "operation", "filepath", "size_before", "size_after", "md5_before",
                     "md5_after", "started_at", "ended_at", "status", "error_message")


def db_time(text: str | None) -> str | None:
    """'2026-11-22T10:00:01.123Z' (what the opslog writes) -> '2026-11-22 10:00:01.123000': naive UTC, as both
    SQLAlchemy's SQLite DateTime and MySQL's DATETIME(3) take it."""
    if text is None:
        return None
    if len(text) == 24 and text[10] == "T" and text[-1] == "Z":
        return f"{text[:10]} {text[11:23]}000"
    return utc_ms(parse_iso(text)).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")


def operation_row(op: dict) -> tuple:
    """The row without its iteration_id (known only at insert time)."""
    return (op["dry_run"], op["operation"], cut_path(op["filepath"]), op["size_before"], op["size_after"],
            op["md5_before"], op["md5_after"], db_time(op["started_at"]), db_time(op["ended_at"]), op["status"],
            cut_error(op.get("error_message")))


def insert_sql(paramstyle: str) -> str:
    marks = ", ".join(["?" if paramstyle == "qmark" else "%s"] * len(OPERATION_COLUMNS))
    return f"INSERT INTO sync_operations ({', '.join(OPERATION_COLUMNS)}) VALUES ({marks})"
