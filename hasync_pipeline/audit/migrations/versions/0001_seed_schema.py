"""The seed's DDL: sync_iterations and sync_operations exactly as the Go tool made them.

Revision ID: 0001
Created only where missing, so a database the Go tool made is simply stamped.
"""

import sqlalchemy as sa
from alembic import op

from hasync_pipeline.audit.schema import DATETIME3, FLAG, ID, TABLE_OPTIONS

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    existing = set(sa.inspect(op.get_bind()).get_table_names())
    if "sync_iterations" not in existing:
        op.create_table(
            "sync_iterations",
            sa.Column("id", ID, primary_key=True, autoincrement=True),
            sa.Column("sync_pair", sa.String(255), nullable=False),
            sa.Column("direction", sa.String(64), nullable=False),
            sa.Column("src", sa.String(512), nullable=False),
            sa.Column("dest", sa.String(512), nullable=False),
            sa.Column("started_at", DATETIME3, nullable=False),
            sa.Column("ended_at", DATETIME3),
            sa.Column(
                "status",
                sa.Enum("running", "success", "partial_failure", "failed", name="iteration_status"),
                nullable=False,
                server_default="running",
            ),
            sa.Column("dry_run", FLAG, nullable=False, server_default=sa.text("0")),
            *(
                sa.Column(name, sa.Integer, server_default=sa.text("0"))
                for name in ("files_created", "files_updated", "files_deleted", "files_skipped", "files_failed")
            ),
            sa.Column("total_bytes_transferred", sa.BigInteger, server_default=sa.text("0")),
            sa.Column("error_message", sa.Text),
            **TABLE_OPTIONS,
        )
        op.create_index("idx_pair", "sync_iterations", ["sync_pair"])
        op.create_index("idx_started", "sync_iterations", ["started_at"])
        op.create_index("idx_dry_run", "sync_iterations", ["dry_run"])
    if "sync_operations" not in existing:
        op.create_table(
            "sync_operations",
            sa.Column("id", ID, primary_key=True, autoincrement=True),
            sa.Column("iteration_id", ID, nullable=False),
            sa.Column("dry_run", FLAG, nullable=False, server_default=sa.text("0")),
            sa.Column("operation", sa.Enum("create", "update", "delete", name="operation"), nullable=False),
            sa.Column("filepath", sa.String(4096), nullable=False),
            sa.Column("size_before", sa.BigInteger),
            sa.Column("size_after", sa.BigInteger),
            sa.Column("md5_before", sa.String(32)),
            sa.Column("md5_after", sa.String(32)),
            sa.Column("started_at", DATETIME3, nullable=False),
            sa.Column("ended_at", DATETIME3),
            sa.Column("status", sa.Enum("success", "fail", name="operation_status"), nullable=False),
            sa.Column("error_message", sa.String(4096)),
            sa.ForeignKeyConstraint(["iteration_id"], ["sync_iterations.id"], name="fk_iteration"),
            **TABLE_OPTIONS,
        )
        op.create_index("idx_iteration", "sync_operations", ["iteration_id"])


def downgrade() -> None:
    op.drop_table("sync_operations")
    op.drop_table("sync_iterations")
