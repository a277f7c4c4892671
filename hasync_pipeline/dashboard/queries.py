"""The dashboard's reads.  Every query is answered from an index: sync_iterations by (sync_pair, dry_run,
started_at) or started_at, sync_operations by iteration_id (keyset pages on the primary key), so the page
stays fast with millions of operation rows."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.engine import Connection, Row

from ..audit.schema import sync_iterations as it_table
from ..audit.schema import sync_operations as op_table

it, op = it_table.c, op_table.c
ITERATION_COLUMNS = tuple(c for c in it_table.columns if c.name != "run_id")  # every column the page may show
OPERATION_COLUMNS = tuple(c for c in op_table.columns if c.name != "iteration_id")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="milliseconds") + "Z" if value else None


def iteration_json(row: Row) -> dict:
    d = row._asdict()
    d["started_at"], d["ended_at"] = _iso(d["started_at"]), _iso(d["ended_at"])
    d["dry_run"] = bool(d["dry_run"])
    return d


def last_iteration(conn: Connection, pair: str, dry_run: bool) -> dict | None:
    # two steps on purpose: the id alone is answered from idx_pair_dry_started (0.2 ms with 50k iterations);
    # asking for whole rows made MariaDB intersect two indexes and sort (15 ms, x12 per page)
    last_id = conn.execute(
        select(it.id)
        .where(it.sync_pair == pair, it.dry_run == int(dry_run))
        .order_by(it.started_at.desc(), it.id.desc())
        .limit(1)
    ).scalar()
    if last_id is None:
        return None
    return iteration_json(conn.execute(select(*ITERATION_COLUMNS).where(it.id == last_id)).one())


def known_pairs(conn: Connection, registry_pairs: list[str]) -> list[str]:
    """The registry's pairs first, then any other pair the audit tables mention."""
    in_db = conn.execute(select(it.sync_pair).distinct()).scalars().all()
    return registry_pairs + sorted(p for p in in_db if p not in registry_pairs)


def pairs_summary(conn: Connection, registry_pairs: list[str]) -> list[dict]:
    return [
        {"pair": pair, "last_real": last_iteration(conn, pair, False), "last_dry_run": last_iteration(conn, pair, True)}
        for pair in known_pairs(conn, registry_pairs)
    ]


def recent_iterations(conn: Connection, pair: str | None, limit: int) -> list[dict]:
    q = select(*ITERATION_COLUMNS).order_by(it.started_at.desc(), it.id.desc()).limit(limit)
    if pair:
        q = q.where(it.sync_pair == pair)
    return [iteration_json(r) for r in conn.execute(q)]


def operations_page(conn: Connection, iteration_id: int, after: int, size: int) -> dict:
    rows = conn.execute(
        select(*OPERATION_COLUMNS).where(op.iteration_id == iteration_id, op.id > after).order_by(op.id).limit(size + 1)
    ).all()
    items = []
    for r in rows[:size]:
        d = r._asdict()
        d["started_at"], d["ended_at"], d["dry_run"] = _iso(d["started_at"]), _iso(d["ended_at"]), bool(d["dry_run"])
        items.append(d)
    return {
        "iteration_id": iteration_id,
        "operations": items,
        "next_after": items[-1]["id"] if len(rows) > size else None,
    }


def iteration_exists(conn: Connection, iteration_id: int) -> bool:
    return conn.execute(select(it.id).where(it.id == iteration_id)).first() is not None
