"""sync_checks: when a dry run last found its plan unchanged.  The seed's rule makes such a run write no
iteration, so without this a pair whose dry runs keep finding nothing new looked stale on the dashboard
(its last dry-run row only ages).  One row per pair and direction, replaced by each such run.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if "sync_checks" in sa.inspect(op.get_bind()).get_table_names():
        return
    op.create_table(
        "sync_checks",
        sa.Column("sync_pair", sa.String(255), primary_key=True),
        sa.Column("direction", sa.String(64), primary_key=True),
        sa.Column(
            "checked_at",
            sa.DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql").with_variant(mysql.DATETIME(fsp=3), "mariadb"),
            nullable=False,
        ),
        sa.Column(
            "iteration_id", sa.Integer().with_variant(mysql.BIGINT(), "mysql").with_variant(mysql.BIGINT(), "mariadb")
        ),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mariadb_engine="InnoDB",
        mariadb_charset="utf8mb4",
    )


def downgrade() -> None:
    op.drop_table("sync_checks")
