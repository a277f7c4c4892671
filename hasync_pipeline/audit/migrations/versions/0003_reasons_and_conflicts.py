"""Why an operation was not a plain propagation (sync_operations.reason: conflict, restored, moved,
metadata) and how many conflicts a run found (sync_iterations.files_conflicted): the two-way journal's
reports.  Both nullable; rows written before stay NULL.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    if "reason" not in {c["name"] for c in inspector.get_columns("sync_operations")}:
        with op.batch_alter_table("sync_operations") as table:
            table.add_column(sa.Column("reason", sa.String(1024), nullable=True))
    if "files_conflicted" not in {c["name"] for c in inspector.get_columns("sync_iterations")}:
        with op.batch_alter_table("sync_iterations") as table:
            table.add_column(sa.Column("files_conflicted", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sync_iterations") as table:
        table.drop_column("files_conflicted")
    with op.batch_alter_table("sync_operations") as table:
        table.drop_column("reason")
