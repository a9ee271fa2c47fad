"""sweeps: the sweeps table; trial, fold, sweep_params and stop_reason on runs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 17:20:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("metric", sa.String(length=20), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("n_trials", sa.Integer(), nullable=False),
        sa.Column("n_runs", sa.Integer(), nullable=False),
        sa.Column("max_concurrent", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sweeps")),
    )
    op.create_index(op.f("ix_sweeps_created_at"), "sweeps", ["created_at"])
    op.create_index(op.f("ix_sweeps_owner"), "sweeps", ["owner"])
    op.create_index(op.f("ix_sweeps_status"), "sweeps", ["status"])

    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("trial", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("fold", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("sweep_params", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("stop_reason", sa.String(length=50), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        for column in ("stop_reason", "sweep_params", "fold", "trial"):
            batch.drop_column(column)
    for column in ("status", "owner", "created_at"):
        op.drop_index(op.f(f"ix_sweeps_{column}"), table_name="sweeps")
    op.drop_table("sweeps")
