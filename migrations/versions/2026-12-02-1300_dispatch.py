"""dispatch: runs.held (a sweep's trial waiting for its sweep), an index for the dispatcher

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 13:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("held", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.create_index("ix_runs_status_enqueued_at", ["status", "enqueued_at"])
    # Until now a sweep's waiting trial was told apart by a NULL enqueued_at.
    op.execute(
        "UPDATE runs SET held = true "
        "WHERE sweep_id IS NOT NULL AND status = 'queued' AND enqueued_at IS NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_status_enqueued_at")
        batch.drop_column("held")
