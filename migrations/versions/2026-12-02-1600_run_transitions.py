"""run_transitions: every run's timeline of status changes

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 16:00:00+00:00

Runs stored before this revision get the timeline their columns can tell: submitted at
``created_at``, started at ``started_at``, ended at ``finished_at``.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "run_transitions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_run_transitions_run_id_runs", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_run_transitions"),
    )
    op.create_index("ix_run_transitions_run_id", "run_transitions", ["run_id"])
    # The timeline of runs that existed before: what their columns record, in order.
    copy = (
        "INSERT INTO run_transitions (run_id, status, at, reason, attempt, worker) "
        "SELECT id, {status}, {at}, {reason}, {attempt}, NULL FROM runs WHERE {where} "
        "ORDER BY created_at"
    )
    op.execute(copy.format(
        status="'queued'", at="created_at", attempt="0", where="1 = 1",
        reason="'submitted (recorded before run timelines existed)'",
    ))  # fmt: skip
    op.execute(copy.format(
        status="'running'", at="started_at", attempt="attempts", where="started_at IS NOT NULL",
        reason="'started (recorded before run timelines existed)'",
    ))  # fmt: skip
    op.execute(copy.format(
        status="status", at="finished_at", attempt="attempts",
        where="finished_at IS NOT NULL AND status IN ('succeeded', 'failed', 'cancelled')",
        reason="status || ' (recorded before run timelines existed)'",
    ))  # fmt: skip


def downgrade() -> None:
    op.drop_index("ix_run_transitions_run_id", table_name="run_transitions")
    op.drop_table("run_transitions")
