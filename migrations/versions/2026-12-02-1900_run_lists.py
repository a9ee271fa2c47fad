"""run lists: sortable metric columns on runs, with a backfill; the indexes of GET /runs

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 19:00:00+00:00

- ``runs.loss``, ``val_loss``, ``accuracy``, ``val_accuracy``: the run's ``metrics`` values
  as columns (finite numbers, else NULL), filled here from ``metrics`` for the runs stored
  before; core/runs/lifecycle.py writes them with ``metrics`` from now on.
- One index per order the run list sorts by: ``(owner, created_at, id)`` and
  ``(owner, <key>, created_at, id)`` for each metric and ``best_epoch`` (api/listing.py's
  keyset). The first covers every look-up by owner, so ``ix_runs_owner`` goes.
- PostgreSQL: ``tags`` of runs, sweeps and datasets become JSONB, and a GIN index
  (``jsonb_path_ops``) on ``runs.tags`` answers ``tags @> '{"k": "v"}'``.

On PostgreSQL the indexes are built in the migration's transaction (not CONCURRENTLY): the
runs table takes no writes while they build, a few seconds per million runs.
"""

import math
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the application's rule (core.db.models.metric_columns), as a migration
# must not change when the application does.
_METRICS = ("loss", "val_loss", "accuracy", "val_accuracy")
_SORT_KEYS = (*_METRICS, "best_epoch")
_TAGGED = ("runs", "sweeps", "datasets")
_BATCH = 1000


def _column_value(metrics: Any, key: str) -> float | None:
    value = metrics.get(key) if isinstance(metrics, dict) else None
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if ok and math.isfinite(value) else None


def _backfill(conn: sa.Connection) -> None:
    """Each run's metric columns from its ``metrics``, a batch of runs at a time in id
    order."""
    runs = sa.table(
        "runs", sa.column("id", sa.String), sa.column("metrics", sa.JSON),
        *(sa.column(key, sa.Float) for key in _METRICS),
    )  # fmt: skip
    update = (
        sa.update(runs)
        .where(runs.c.id == sa.bindparam("run_id"))
        .values({key: sa.bindparam(f"m_{key}") for key in _METRICS})
    )
    last = ""
    while True:
        rows = conn.execute(
            sa.select(runs.c.id, runs.c.metrics)
            .where(runs.c.id > last)
            .order_by(runs.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        conn.execute(update, [
            {"run_id": row.id, **{f"m_{key}": _column_value(row.metrics, key) for key in _METRICS}}
            for row in rows
        ])  # fmt: skip
        last = rows[-1].id


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("runs") as batch:
        for key in _METRICS:
            batch.add_column(sa.Column(key, sa.Float(), nullable=True))
    _backfill(op.get_bind())
    if postgres:
        for table in _TAGGED:
            op.alter_column(
                table, "tags", type_=postgresql.JSONB(), existing_type=sa.JSON(),
                existing_nullable=True, postgresql_using="tags::jsonb",
            )  # fmt: skip
    op.drop_index("ix_runs_owner", table_name="runs")
    op.create_index("ix_runs_owner_created_at", "runs", ["owner", "created_at", "id"])
    for key in _SORT_KEYS:
        op.create_index(f"ix_runs_owner_{key}", "runs", ["owner", key, "created_at", "id"])
    if postgres:
        op.create_index(
            "ix_runs_tags", "runs", ["tags"], postgresql_using="gin",
            postgresql_ops={"tags": "jsonb_path_ops"},
        )  # fmt: skip


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.drop_index("ix_runs_tags", table_name="runs")
    for key in reversed(_SORT_KEYS):
        op.drop_index(f"ix_runs_owner_{key}", table_name="runs")
    op.drop_index("ix_runs_owner_created_at", table_name="runs")
    op.create_index("ix_runs_owner", "runs", ["owner"])
    if postgres:
        for table in _TAGGED:
            op.alter_column(
                table, "tags", type_=sa.JSON(), existing_type=postgresql.JSONB(),
                existing_nullable=True, postgresql_using="tags::json",
            )  # fmt: skip
    with op.batch_alter_table("runs") as batch:
        for key in reversed(_METRICS):
            batch.drop_column(key)
