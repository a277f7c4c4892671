"""alerts_sent: when each alert key (a pair's failures, a stale pair, the database) was last sent, for the
rate limit of one alert per key per hour.  It was kept in the Dagster instance's key-value store through
non-public storage calls (run_storage.get_cursor_values), which any Dagster upgrade may change silently.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "alerts_sent" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "alerts_sent",
        sa.Column("alert_key", sa.String(255), primary_key=True),
        sa.Column(
            "sent_at",
            sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql").with_variant(mysql.DATETIME(fsp=3), "mariadb"),
            nullable=False,
        ),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mariadb_engine="InnoDB",
        mariadb_charset="utf8mb4",
    )


def downgrade() -> None:
    op.drop_table("alerts_sent")
