"""run_id (unique: flushing an opslog twice never duplicates a run), dagster_run_id (links from the
dashboard), and idx_pair_dry_started ("the last real / dry-run iteration of a pair" in one index lookup).

Revision ID: 0002
Revises: 0001
Each piece is added only where missing: the first wave's create_all() already made them.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    columns = {c["name"] for c in inspector.get_columns("sync_iterations")}
    indexes = {i["name"] for i in inspector.get_indexes("sync_iterations")}
    with op.batch_alter_table("sync_iterations") as table:
        for name in ("run_id", "dagster_run_id"):
            if name not in columns:
                table.add_column(sa.Column(name, sa.String(64), nullable=True))
    if "uq_run_id" not in indexes:
        op.create_index("uq_run_id", "sync_iterations", ["run_id"], unique=True)
    if "idx_pair_dry_started" not in indexes:
        op.create_index("idx_pair_dry_started", "sync_iterations", ["sync_pair", "dry_run", "started_at"])


def downgrade() -> None:
    op.drop_index("idx_pair_dry_started", "sync_iterations")
    op.drop_index("uq_run_id", "sync_iterations")
    with op.batch_alter_table("sync_iterations") as table:
        table.drop_column("dagster_run_id")
        table.drop_column("run_id")
