"""fewer run indexes: drop the two that no query needs

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 01:00:00+00:00

Each write of a run that is not a HOT update (its INSERT, a status change, an epoch with its
sort values) puts an entry in every index of ``runs``; a tiny job makes five such writes.
Two of the thirteen indexes answer nothing the others do not:

- ``ix_runs_status``: every look-up by status is answered by ``ix_runs_status_enqueued_at``,
  whose first column is the status.
- ``ix_runs_created_at``: no query orders or filters all runs by creation time; the lists
  read an owner's runs through ``ix_runs_owner_created_at`` and the other
  ``(owner, …, created_at, id)`` indexes.

docs/benchmarks.md (issue #10) has what they cost each job.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_runs_status", table_name="runs")
    op.drop_index("ix_runs_created_at", table_name="runs")


def downgrade() -> None:
    op.create_index("ix_runs_created_at", "runs", ["created_at"])
    op.create_index("ix_runs_status", "runs", ["status"])
