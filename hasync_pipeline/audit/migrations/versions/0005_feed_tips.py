"""feed_tips: how far each server's change log has got, per pair, published by `ha-sync watch --server`.
The Dagster daemon's change-feed sensor reads it instead of the shares (a daemon that mounted twelve NFS
volumes would hang at the first dead server, and every sensor and schedule with it).  One row per server
and pair, replaced as the tip moves (and once a minute, so a silent watcher shows), with pending_since: when
the oldest change the other side does not have yet was seen (NULL: none waiting), the replication lag.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _datetime3() -> sa.types.TypeEngine:
    return sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql").with_variant(mysql.DATETIME(fsp=3), "mariadb")


def upgrade() -> None:
    if "feed_tips" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "feed_tips",
        sa.Column("server", sa.String(64), primary_key=True),
        sa.Column("sync_pair", sa.String(255), primary_key=True),
        sa.Column("epoch", sa.String(32), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", _datetime3(), nullable=False),
        sa.Column("pending_since", _datetime3(), nullable=True),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mariadb_engine="InnoDB",
        mariadb_charset="utf8mb4",
    )


def downgrade() -> None:
    op.drop_table("feed_tips")
