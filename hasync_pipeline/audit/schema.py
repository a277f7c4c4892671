"""The audit tables, exactly as the seed's DDL on MySQL/MariaDB (and their nearest form on SQLite).

Extra columns, all nullable (the seed allows nothing else), each added by a migration (migrations/):
  sync_iterations.run_id           VARCHAR(64) UNIQUE - one id per run, so flushing an opslog twice never
                                   duplicates an iteration (the opslog header carries it).          [0002]
  sync_iterations.dagster_run_id   VARCHAR(64)        - the Dagster run, for links from the dashboard. [0002]
  sync_iterations.files_conflicted INT                - paths changed on both sides (both kept).       [0003]
  sync_operations.reason           VARCHAR(1024)      - why it is not a plain propagation: "conflict: ...",
                                   "restored: ...", "moved: ...", "metadata: ..."                   [0003]
And one extra table, sync_checks (sync_pair, direction, checked_at, iteration_id): when a dry run last found
its plan unchanged (it writes no iteration, by the seed's rule), so the dashboard can say "still current". [0004]
And feed_tips (server, sync_pair, epoch, seq, updated_at, pending_since): how far each server's change log has
got, per pair, and since when a change has waited for the other side (the replication lag), published by
`ha-sync watch --server` for the change-feed sensor and the dashboard, which must not read a share.      [0005]
And alerts_sent (alert_key, sent_at): when each alert was last sent, the sensors' rate limit (one per key per
hour), kept here because Dagster has no public store for a sensor's state beside its cursor.             [0006]
And one extra index, idx_pair_dry_started (sync_pair, dry_run, started_at): "the last real / dry-run
iteration of each pair" (dashboard, dry-run idempotency) is then one index lookup, not a sort.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Enum,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine


def _mysql(generic: TypeEngine[Any], mysql_type: TypeEngine[Any]) -> TypeEngine[Any]:
    return generic.with_variant(mysql_type, "mysql").with_variant(mysql_type, "mariadb")


# SQLite only auto-increments an INTEGER PRIMARY KEY
ID = _mysql(Integer(), mysql.BIGINT())
DATETIME3 = _mysql(DateTime(), mysql.DATETIME(fsp=3))
FLAG = _mysql(Integer(), mysql.TINYINT(display_width=1))
ITERATION_STATUS = ("running", "success", "partial_failure", "failed")
OPERATIONS = ("create", "update", "delete")
OPERATION_STATUS = ("success", "fail")
TABLE_OPTIONS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mariadb_engine": "InnoDB",
    "mariadb_charset": "utf8mb4",
}

metadata = MetaData()

sync_iterations = Table(
    "sync_iterations",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("sync_pair", String(255), nullable=False),
    Column("direction", String(64), nullable=False),
    Column("src", String(512), nullable=False),
    Column("dest", String(512), nullable=False),
    Column("started_at", DATETIME3, nullable=False),
    Column("ended_at", DATETIME3),
    Column(
        "status",
        Enum(*ITERATION_STATUS, name="iteration_status", native_enum=True),
        nullable=False,
        server_default="running",
    ),
    Column("dry_run", FLAG, nullable=False, server_default=text("0")),
    Column("files_created", Integer, server_default=text("0")),
    Column("files_updated", Integer, server_default=text("0")),
    Column("files_deleted", Integer, server_default=text("0")),
    Column("files_skipped", Integer, server_default=text("0")),
    Column("files_failed", Integer, server_default=text("0")),
    Column("total_bytes_transferred", BigInteger, server_default=text("0")),
    Column("error_message", Text),
    Column("run_id", String(64), nullable=True),
    Column("dagster_run_id", String(64), nullable=True),
    Column("files_conflicted", Integer, nullable=True),
    Index("idx_pair", "sync_pair"),
    Index("idx_started", "started_at"),
    Index("idx_dry_run", "dry_run"),
    Index("uq_run_id", "run_id", unique=True),
    Index("idx_pair_dry_started", "sync_pair", "dry_run", "started_at"),
    **TABLE_OPTIONS,
)

sync_operations = Table(
    "sync_operations",
    metadata,
    Column("id", ID, primary_key=True, autoincrement=True),
    Column("iteration_id", _mysql(Integer(), mysql.BIGINT()), nullable=False),
    Column("dry_run", FLAG, nullable=False, server_default=text("0")),
    Column("operation", Enum(*OPERATIONS, name="operation", native_enum=True), nullable=False),
    Column("filepath", String(4096), nullable=False),
    Column("size_before", BigInteger),
    Column("size_after", BigInteger),
    Column("md5_before", String(32)),
    Column("md5_after", String(32)),
    Column("started_at", DATETIME3, nullable=False),
    Column("ended_at", DATETIME3),
    Column("status", Enum(*OPERATION_STATUS, name="operation_status", native_enum=True), nullable=False),
    Column("error_message", String(4096)),
    Column("reason", String(1024), nullable=True),
    Index("idx_iteration", "iteration_id"),
    ForeignKeyConstraint(["iteration_id"], ["sync_iterations.id"], name="fk_iteration"),
    **TABLE_OPTIONS,
)

feed_tips = Table(
    "feed_tips",
    metadata,
    Column("server", String(64), primary_key=True),
    Column("sync_pair", String(255), primary_key=True),
    Column("epoch", String(32), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("updated_at", DATETIME3, nullable=False),
    Column("pending_since", DATETIME3, nullable=True),
    **TABLE_OPTIONS,
)

alerts_sent = Table(
    "alerts_sent",
    metadata,
    Column("alert_key", String(255), primary_key=True),
    Column("sent_at", DATETIME3, nullable=False),
    **TABLE_OPTIONS,
)

sync_checks = Table(
    "sync_checks",
    metadata,
    Column("sync_pair", String(255), primary_key=True),
    Column("direction", String(64), primary_key=True),
    Column("checked_at", DATETIME3, nullable=False),
    Column("iteration_id", ID),  # the dry-run iteration whose plan is still current
    **TABLE_OPTIONS,
)
