"""organise: tags and notes on runs, sweeps and datasets; a run's stop details

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 18:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ORGANISED = ("runs", "sweeps", "datasets")


def upgrade() -> None:
    for table in _ORGANISED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("tags", sa.JSON(), nullable=True))
            batch.add_column(sa.Column("notes", sa.Text(), nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("stop_details", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("stop_details")
    for table in _ORGANISED:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("notes")
            batch.drop_column("tags")
