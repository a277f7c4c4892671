"""The dashboard's reads.  Every query is answered from an index: sync_iterations by (sync_pair, dry_run,
started_at) or started_at, sync_operations by iteration_id (keyset pages on the primary key), so the page
stays fast with millions of operation rows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Row

from ..audit.schema import sync_checks
from ..audit.schema import sync_iterations as it_table
from ..audit.schema import sync_operations as op_table
from ..audit.store import read_lags
from ..feed.lag import Lag

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


def pairs_summary(conn: Connection, registry_pairs: list[str], now: datetime | None = None) -> list[dict]:
    lags: dict[str, list[dict]] = {}
    for lag in read_lags(conn, now or datetime.now(UTC)):
        lags.setdefault(lag.pair, []).append(lag_json(lag))
    return [
        {
            "pair": pair,
            "last_real": last_iteration(conn, pair, False),
            "last_dry_run": last_iteration(conn, pair, True),
            "dry_run_current": still_current(conn, pair),
            "feed": lags.get(pair, []),
        }
        for pair in known_pairs(conn, registry_pairs)
    ]


def lag_json(lag: Lag) -> dict:
    """One copy's replication lag (feed/lag.py): `seconds` None when its watcher is silent."""
    return {
        "server": lag.server,
        "seconds": None if lag.seconds is None else round(lag.seconds, 1),
        "pending_since": _iso(lag.pending_since.replace(tzinfo=None)) if lag.pending_since else None,
        "heard_at": _iso(lag.heard_at.replace(tzinfo=None)),
        "silent": lag.silent,
        "ok": lag.ok,
        "text": lag.describe(),
    }


def still_current(conn: Connection, pair: str) -> dict | None:
    """The latest dry run of the pair that found its plan unchanged (it wrote no iteration): when, which
    direction, and the iteration whose plan it confirmed."""
    c = sync_checks.c
    row = conn.execute(
        select(c.checked_at, c.direction, c.iteration_id)
        .where(c.sync_pair == pair)
        .order_by(c.checked_at.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return {"checked_at": _iso(row.checked_at), "direction": row.direction, "iteration_id": row.iteration_id}


def recent_iterations(conn: Connection, pair: str | None, limit: int) -> list[dict]:
    q = select(*ITERATION_COLUMNS).order_by(it.started_at.desc(), it.id.desc()).limit(limit)
    if pair:
        q = q.where(it.sync_pair == pair)
    return [iteration_json(r) for r in conn.execute(q)]


# ---- per pair and direction (GET /metrics) -----------------------------------------------------------------


def totals_by_direction(conn: Connection) -> list[Row]:
    """Per (pair, direction, status): the real runs that ended, their files by kind and bytes, summed over
    every iteration ever recorded (sync_iterations is never purged, and a run still `running` is left out
    until it ends: the sums only grow, as counters must).  One grouped scan of sync_iterations (~1k rows a
    day), never sync_operations."""
    return list(
        conn.execute(
            select(
                it.sync_pair,
                it.direction,
                it.status,
                func.count().label("runs"),
                func.coalesce(func.sum(it.files_created), 0).label("created"),
                func.coalesce(func.sum(it.files_updated), 0).label("updated"),
                func.coalesce(func.sum(it.files_deleted), 0).label("deleted"),
                func.coalesce(func.sum(it.files_failed), 0).label("failed"),
                func.coalesce(func.sum(it.files_conflicted), 0).label("conflicted"),
                func.coalesce(func.sum(it.total_bytes_transferred), 0).label("bytes"),
            )
            .where(it.dry_run == 0, it.status != "running")
            .group_by(it.sync_pair, it.direction, it.status)
        )
    )


def failed_messages(conn: Connection) -> list[Row]:
    """Per (pair, direction, message): how many real runs ended failed with it (the reason is read from the
    message's first words: engine/outcome.failure_reason)."""
    return list(
        conn.execute(
            select(it.sync_pair, it.direction, it.error_message, func.count().label("runs"))
            .where(it.dry_run == 0, it.status == "failed")
            .group_by(it.sync_pair, it.direction, it.error_message)
        )
    )


def last_by_direction(conn: Connection, status: str | None = None) -> list[Row]:
    """Per (pair, direction): the last real iteration (of `status`, if given), one row each."""
    latest = select(it.sync_pair, it.direction, func.max(it.started_at).label("started_at")).where(it.dry_run == 0)
    if status is not None:
        latest = latest.where(it.status == status)
    last = latest.group_by(it.sync_pair, it.direction).subquery()
    q = select(*ITERATION_COLUMNS).join(
        last,
        (it.sync_pair == last.c.sync_pair) & (it.direction == last.c.direction) & (it.started_at == last.c.started_at),
    )
    if status is not None:
        q = q.where(it.status == status)
    rows: dict[tuple[str, str], Row] = {}
    for row in conn.execute(q.where(it.dry_run == 0).order_by(it.id)):
        rows[(row.sync_pair, row.direction)] = row  # two in the same millisecond: the later id
    return list(rows.values())


# ---- one iteration, one pair ----------------------------------------------------------------------------

OPERATION_FILTERS = {"operation": ("create", "update", "delete"), "status": ("success", "fail")}


def iteration(conn: Connection, iteration_id: int) -> dict | None:
    row = conn.execute(select(*ITERATION_COLUMNS, it.run_id).where(it.id == iteration_id)).first()
    return iteration_json(row) if row is not None else None


def _operation_json(r: Row) -> dict:
    d = r._asdict()
    d["started_at"], d["ended_at"], d["dry_run"] = _iso(d["started_at"]), _iso(d["ended_at"]), bool(d["dry_run"])
    return d


def filtered_operations(
    conn: Connection,
    iteration_id: int,
    after: int,
    size: int,
    operation: str | None = None,
    status: str | None = None,
    prefix: str | None = None,
) -> dict:
    """A keyset page of one iteration's operations, filtered (answered from idx_iteration: the filters only
    narrow that iteration's rows)."""
    q = select(*OPERATION_COLUMNS).where(op.iteration_id == iteration_id, op.id > after)
    if operation:
        q = q.where(op.operation == operation)
    if status:
        q = q.where(op.status == status)
    if prefix:
        q = q.where(op.filepath.startswith(prefix, autoescape=True))
    rows = conn.execute(q.order_by(op.id).limit(size + 1)).all()
    items = [_operation_json(r) for r in rows[:size]]
    return {
        "iteration_id": iteration_id,
        "operations": items,
        "next_after": items[-1]["id"] if len(rows) > size else None,
    }


def _pair_iterations(
    conn: Connection, pair: str, since: datetime, *columns: Any, extra: Any = None, limit: int = 2000
) -> list[Row]:
    """The pair's real iterations since `since`, newest first (idx_pair_dry_started), just `columns`."""
    q = select(it.id, *columns).where(it.sync_pair == pair, it.dry_run == 0, it.started_at >= since)
    if extra is not None:
        q = q.where(extra)
    return list(conn.execute(q.order_by(it.started_at.desc(), it.id.desc()).limit(limit)))


def _ops_of(conn: Connection, iterations: list[Row], where: Any, limit: int, chunk: int = 50) -> list[dict]:
    """Operations of these iterations (newest first) matching `where`, up to `limit`: one indexed query per
    `chunk` iterations, stopping as soon as there are enough."""
    out: list[dict] = []
    for start in range(0, len(iterations), chunk):
        runs = {row.id: row for row in iterations[start : start + chunk]}
        rows = conn.execute(
            select(*OPERATION_COLUMNS, op.iteration_id)
            .where(op.iteration_id.in_(runs), where)
            .order_by(op.iteration_id.desc(), op.id.desc())
            .limit(limit - len(out))
        ).all()
        for r in rows:
            d = _operation_json(r)
            run = runs[d.pop("iteration_id")]
            d["iteration"] = {"id": run.id, "direction": run.direction, "src": run.src, "dest": run.dest}
            out.append(d)
        if len(out) >= limit:
            break
    return out


def conflicts(conn: Connection, pair: str, since: datetime, limit: int = 100) -> list[dict]:
    """The pair's conflicts since `since`: the rows of runs that kept two versions, newest first."""
    runs = _pair_iterations(
        conn, pair, since, it.direction, it.src, it.dest, extra=it.files_conflicted > 0, limit=limit
    )
    return _ops_of(conn, runs, op.reason.startswith("conflict:"), limit)


def trashed(conn: Connection, pair: str, since: datetime, limit: int = 200) -> list[dict]:
    """What the pair's runs replaced or deleted since `since` (kept in the destination's trash), newest first."""
    changed = (it.files_updated > 0) | (it.files_deleted > 0)
    runs = _pair_iterations(conn, pair, since, it.direction, it.src, it.dest, extra=changed)
    # a replaced or deleted file goes to the trash; a conflict's rename, a move, a metadata change, a folder
    # removed empty, and an mtime-only touch (same bytes: same md5 before and after) do not
    plain = op.reason.is_(None) | op.reason.startswith("restored:")
    a_file = op.size_before.is_not(None)
    new_bytes = op.md5_before.is_(None) | op.md5_after.is_(None) | (op.md5_before != op.md5_after)
    kept = op.operation.in_(("update", "delete")) & (op.status == "success") & plain & a_file & new_bytes
    return _ops_of(conn, runs, kept, limit)


def activity(conn: Connection, pair: str, since: datetime) -> list[dict]:
    """Per real run since `since`, oldest first: when, direction, files changed, bytes (the pair's chart)."""
    rows = _pair_iterations(
        conn,
        pair,
        since,
        it.started_at,
        it.direction,
        it.status,
        it.files_created,
        it.files_updated,
        it.files_deleted,
        it.total_bytes_transferred,
        limit=5000,
    )
    return [
        {
            "started_at": r.started_at,
            "direction": r.direction,
            "status": r.status,
            "files": (r.files_created or 0) + (r.files_updated or 0) + (r.files_deleted or 0),
            "bytes": r.total_bytes_transferred or 0,
        }
        for r in reversed(rows)
    ]
