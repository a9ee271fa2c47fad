"""partial run indexes: no entry for a run whose indexed column is NULL

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 03:00:00+00:00

A run's sort values (``loss``, ``val_loss``, ``accuracy``, ``val_accuracy``, ``best_epoch``),
its ``sweep_id`` and its ``tags`` are NULL for most of its writes: while it is queued, sent
and claimed, for good when it is not a sweep's trial or has no tags, and ``accuracy`` for
every regression. A full index still gets an entry for each such write that is not a HOT
update (an INSERT, a status change). These indexes become partial, ``WHERE column IS NOT
NULL``, which every query that reads them implies: the lists' sorted half says so
(api/pagination.py), and ``sweep_id = …`` and ``tags @> …`` hold only for a value.

No tags was stored as JSON ``null`` by an edit (PATCH) until now; it becomes SQL NULL here,
as the models write it from now on, so that such rows have no entry either.

docs/benchmarks.md (issue #10) has what this saves a job.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SORT_KEYS = ("loss", "val_loss", "accuracy", "val_accuracy", "best_epoch")


def _set(column: str) -> dict[str, sa.TextClause]:
    condition = sa.text(f"{column} IS NOT NULL")
    return {"postgresql_where": condition, "sqlite_where": condition}


_TAGGED = ("runs", "datasets", "sweeps")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    json_null = "jsonb_typeof(tags) = 'null'" if postgres else "tags = 'null'"
    for table in _TAGGED:
        op.execute(f"UPDATE {table} SET tags = NULL WHERE {json_null}")
    for key in _SORT_KEYS:
        op.drop_index(f"ix_runs_owner_{key}", table_name="runs")
        op.create_index(
            f"ix_runs_owner_{key}", "runs", ["owner", key, "created_at", "id"], **_set(key)
        )
    op.drop_index("ix_runs_sweep_id", table_name="runs")
    op.create_index("ix_runs_sweep_id", "runs", ["sweep_id"], **_set("sweep_id"))
    if postgres:
        op.drop_index("ix_runs_tags", table_name="runs")
        op.create_index(
            "ix_runs_tags", "runs", ["tags"], postgresql_using="gin",
            postgresql_ops={"tags": "jsonb_path_ops"}, **_set("tags"),
        )  # fmt: skip


def downgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.drop_index("ix_runs_tags", table_name="runs")
        op.create_index(
            "ix_runs_tags", "runs", ["tags"], postgresql_using="gin",
            postgresql_ops={"tags": "jsonb_path_ops"},
        )  # fmt: skip
    op.drop_index("ix_runs_sweep_id", table_name="runs")
    op.create_index("ix_runs_sweep_id", "runs", ["sweep_id"])
    for key in reversed(_SORT_KEYS):
        op.drop_index(f"ix_runs_owner_{key}", table_name="runs")
        op.create_index(f"ix_runs_owner_{key}", "runs", ["owner", key, "created_at", "id"])
