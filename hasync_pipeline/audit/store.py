"""The audit database: MySQL/MariaDB through PyMySQL in production, SQLite embedded by default.

Every failure to reach or use the database becomes `AuditUnavailable`, whose message names the database
without its password.  Callers treat it as "try again next run": the opslog keeps the record meanwhile.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import create_engine, delete, event, func, insert, select, update
from sqlalchemy.engine import Connection, CursorResult, Engine
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError

from ..feed.lag import Lag, lag_of
from .dsn import DsnError, redact, scrub, to_url
from .migrate import MigrationError, upgrade
from .records import header_values, insert_sql, naive_utc
from .schema import alerts_sent, feed_tips, sync_checks, sync_iterations, sync_operations

INSERT_CHUNK = 5000
MIGRATION_TIMEOUT = 600  # seconds a schema migration may take (it waits for GET_LOCK 60 s, then ALTERs)


class FeedTip(NamedTuple):
    """What a watcher publishes for one pair: its change log's tip, and when the oldest change the other side
    does not have yet was seen (None: none waits)."""

    epoch: str
    seq: int
    pending_since: datetime | None = None


class AuditUnavailable(Exception):
    """The audit database could not be reached or used; the message is safe to show."""


def _sqlite_immediate(engine: Engine, timeout: float) -> None:
    """SQLite: take the write lock at BEGIN, so two flushers serialise instead of both reading 'absent'."""

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        dbapi_conn.execute("PRAGMA foreign_keys=ON")
        dbapi_conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class AuditStore:
    def __init__(self, dsn: str | None = None, timeout: float = 10):
        """`timeout`: seconds any one database call may take (connect, read, write; SQLite: waiting for its
        lock) before it fails as AuditUnavailable.  Schema migrations, which may rebuild a big table, get
        MIGRATION_TIMEOUT instead, on a connection of their own."""
        self.url = to_url(dsn)
        self.name = redact(self.url)
        self.timeout = timeout
        kwargs = self._engine_args(timeout)
        if self.url.get_backend_name() == "sqlite" and self.url.database not in (None, "", ":memory:"):
            os.makedirs(os.path.dirname(os.path.abspath(self.url.database)), exist_ok=True)
        try:
            self.engine = create_engine(self.url, **kwargs)
        except (ImportError, ArgumentError) as exc:  # e.g. mysql+mysqldb:// without the MySQLdb driver
            raise DsnError(f"cannot use {self.url.drivername!r}: {exc}; mysql+pymysql:// comes with ha-sync") from None
        if self.url.get_backend_name() == "sqlite":
            _sqlite_immediate(self.engine, timeout)
        self._schema_ready = False

    def _engine_args(self, timeout: float) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"pool_pre_ping": True}
        if self.url.get_backend_name() == "mysql":
            seconds = max(1, math.ceil(timeout))
            kwargs["connect_args"] = {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}
        return kwargs

    def _migration_engine(self) -> Engine:
        """A connection for schema changes: an ALTER on a big table may rightly take minutes."""
        if self.url.get_backend_name() != "mysql":
            return self.engine
        return create_engine(self.url, **self._engine_args(max(self.timeout, MIGRATION_TIMEOUT)))

    def _unavailable(self, exc: BaseException) -> AuditUnavailable:
        detail = getattr(exc, "orig", None) or exc
        # only the driver's words are scrubbed: our own redacted name has no password to hide, and scrubbing
        # it too turned a password like "p" into "mysql+***ymysql"
        return AuditUnavailable(f"audit database {self.name} unavailable: {scrub(str(detail), self.url)}")

    def ensure_schema(self) -> None:
        """Create or upgrade the tables (Alembic migrations, migrate.py) before their first use."""
        if self._schema_ready:
            return
        try:
            upgrade(self.engine, self._migration_engine)
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from None
        except MigrationError as exc:
            raise AuditUnavailable(
                f"audit database {self.name}: its schema could not be upgraded "
                f"({scrub(str(exc), self.url)}); fix that (e.g. grant ALTER) and the waiting "
                "opslogs are flushed by the next run"
            ) from None
        self._schema_ready = True

    # ---- writing -------------------------------------------------------------------------------
    def start_iteration(self, header: Mapping[str, Any]) -> int:
        """Insert the `running` row a dashboard shows while the run goes on."""
        self.ensure_schema()
        try:
            with self.engine.begin() as conn:
                return _new_id(conn.execute(insert(sync_iterations).values(**header_values(header), status="running")))
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from None

    def write_run(
        self,
        header: Mapping[str, Any],
        rows: list[tuple[Any, ...]],
        final: Mapping[str, Any],
    ) -> tuple[int, bool]:
        """Iteration + operations of one opslog in ONE transaction; (iteration id, newly written).

        Idempotent by run_id: a run already written (status no longer 'running') is left as it is."""
        self.ensure_schema()
        try:
            with self.engine.begin() as conn:
                row = conn.execute(
                    select(sync_iterations.c.id, sync_iterations.c.status)
                    .where(sync_iterations.c.run_id == header["run_id"])
                    .with_for_update()
                ).first()
                if row is not None and row.status != "running":
                    return row.id, False
                if row is None:
                    iteration_id = _new_id(
                        conn.execute(insert(sync_iterations).values(**header_values(header), **final))
                    )
                else:
                    iteration_id = row.id
                    conn.execute(update(sync_iterations).where(sync_iterations.c.id == iteration_id).values(**final))
                sql = insert_sql(self.engine.dialect.paramstyle)
                for i in range(0, len(rows), INSERT_CHUNK):  # the driver's executemany: no per-row ORM work
                    conn.exec_driver_sql(sql, [(iteration_id, *row) for row in rows[i : i + INSERT_CHUNK]])
                return iteration_id, True
        except IntegrityError:
            # another flusher inserted the same run_id between our read and insert: it is written
            return self._iteration_id_of(header["run_id"]), False
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from None

    def _iteration_id_of(self, run_id: str) -> int:
        with self.engine.connect() as conn:
            found = conn.execute(select(sync_iterations.c.id).where(sync_iterations.c.run_id == run_id)).scalar_one()
            return int(found)

    # ---- reading -------------------------------------------------------------------------------
    def last_dry_run(self, pair: str, direction: str) -> tuple[datetime, set[tuple[str, str, int | None]], int] | None:
        """The seed's rule: the last *successful* dry-run of this pair and direction, as (started_at, its set
        of (filepath, operation, size_before), its iteration id)."""
        self.ensure_schema()
        it = sync_iterations.c
        try:
            with self.engine.connect() as conn:
                last = conn.execute(
                    select(it.id, it.started_at)
                    .where(it.sync_pair == pair, it.direction == direction, it.dry_run == 1, it.status == "success")
                    .order_by(it.started_at.desc(), it.id.desc())
                    .limit(1)
                ).first()
                if last is None:
                    return None
                op = sync_operations.c
                rows = conn.execute(select(op.filepath, op.operation, op.size_before).where(op.iteration_id == last.id))
                return last.started_at, {(r.filepath, r.operation, r.size_before) for r in rows}, last.id
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from None

    def last_successes(self) -> dict[str, dict[str, datetime | None]]:
        """Per pair: when its last successful real sync and its last successful run of any kind started."""
        self.ensure_schema()
        it = sync_iterations.c
        try:
            with self.engine.connect() as conn:
                result: dict[str, dict[str, datetime | None]] = {}
                q = (
                    select(it.sync_pair, it.dry_run, func.max(it.started_at))
                    .where(it.status == "success")
                    .group_by(it.sync_pair, it.dry_run)
                )
                for pair, dry_run, last in conn.execute(q):
                    entry = result.setdefault(pair, {"real": None, "any": None})
                    if not dry_run:
                        entry["real"] = last
                    entry["any"] = max(filter(None, (entry["any"], last)))
                return result
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from None

    def count_operations(self, iteration_id: int | None = None) -> int:
        with self.engine.connect() as conn:
            q = select(func.count()).select_from(sync_operations)
            if iteration_id is not None:
                q = q.where(sync_operations.c.iteration_id == iteration_id)
            return conn.execute(q).scalar_one()

    def note_still_current(self, pair: str, direction: str, iteration_id: int, when: datetime) -> None:
        """A dry run found the plan of iteration `iteration_id` unchanged at `when` (sync_checks; it writes no
        iteration of its own)."""
        self.ensure_schema()
        c = sync_checks.c
        row = {
            "sync_pair": pair,
            "direction": direction,
            "checked_at": when.replace(tzinfo=None),
            "iteration_id": iteration_id,
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(sync_checks).where(c.sync_pair == pair, c.direction == direction))
                conn.execute(insert(sync_checks).values(**row))
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from None

    # ---- the change feed's tips ------------------------------------------------------------------
    def publish_tips(self, server: str, tips: Mapping[str, FeedTip], when: datetime) -> None:
        """Each pair's change-log tip on `server`, and since when a change has waited for the other side,
        replacing the last ones."""
        self.ensure_schema()
        c = feed_tips.c
        try:
            with self.engine.begin() as conn:
                for pair, tip in tips.items():
                    conn.execute(delete(feed_tips).where(c.server == server, c.sync_pair == pair))
                    conn.execute(
                        insert(feed_tips).values(
                            server=server,
                            sync_pair=pair,
                            epoch=tip.epoch,
                            seq=tip.seq,
                            updated_at=naive_utc(when),
                            pending_since=naive_utc(tip.pending_since) if tip.pending_since else None,
                        )
                    )
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from None

    def lags(self, now: datetime) -> list[Lag]:
        """Each published side's replication lag at `now` (feed/lag.py)."""
        self.ensure_schema()
        try:
            with self.engine.connect() as conn:
                return read_lags(conn, now)
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from None

    def tips(self) -> dict[tuple[str, str], FeedTip]:
        """(server, pair) -> the tip and since when a change has waited (naive UTC), as the watchers published them."""
        self.ensure_schema()
        c = feed_tips.c
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(c.server, c.sync_pair, c.epoch, c.seq, c.pending_since))
                return {(r.server, r.sync_pair): FeedTip(r.epoch, int(r.seq), r.pending_since) for r in rows}
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from None

    def alert_sent_at(self, key: str) -> datetime | None:
        """When the alert `key` was last sent (UTC), or None."""
        self.ensure_schema()
        try:
            with self.engine.connect() as conn:
                when = conn.execute(select(alerts_sent.c.sent_at).where(alerts_sent.c.alert_key == key)).scalar()
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from None
        return when.replace(tzinfo=UTC) if when is not None else None

    def record_alert(self, key: str, when: datetime) -> None:
        """The alert `key` was sent at `when`."""
        self.ensure_schema()
        c = alerts_sent.c
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(alerts_sent).where(c.alert_key == key))
                conn.execute(insert(alerts_sent).values(alert_key=key, sent_at=naive_utc(when)))
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from None

    # ---- housekeeping --------------------------------------------------------------------------
    def purge_operations(self, older_than_days: float = 30, batch: int = 10_000, now: datetime | None = None) -> int:
        """Delete sync_operations rows started more than N days ago, a batch per transaction (short locks
        on a busy table).  Returns how many were deleted."""
        self.ensure_schema()
        cutoff = naive_utc((now or datetime.now(UTC)) - timedelta(days=older_than_days))
        op = sync_operations.c
        total = 0
        try:
            while True:
                with self.engine.begin() as conn:
                    ids = (
                        conn.execute(select(op.id).where(op.started_at < cutoff).order_by(op.id).limit(batch))
                        .scalars()
                        .all()
                    )
                    if not ids:
                        return total
                    conn.execute(delete(sync_operations).where(op.id.in_(ids)))
                    total += len(ids)
        except SQLAlchemyError as exc:
            raise self._unavailable(exc) from None

    def dispose(self) -> None:
        self.engine.dispose()


def read_lags(conn: Connection, now: datetime) -> list[Lag]:
    """Every (server, pair) a watcher publishes, as lags at `now`, by pair then server (the dashboard's and
    the sensor's one query)."""
    c = feed_tips.c
    rows = conn.execute(select(c.server, c.sync_pair, c.pending_since, c.updated_at).order_by(c.sync_pair, c.server))
    return [lag_of(r.server, r.sync_pair, r.pending_since, r.updated_at, now) for r in rows]


def _new_id(result: CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])
