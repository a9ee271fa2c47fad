"""models you can trust: best epoch, last epoch's and test metrics, warm-start parent,
partial models of cancelled runs, the model registry

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 17:00:00+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("best_epoch", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("last_epoch_metrics", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("test_metrics", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("parent_run_id", sa.String(36), nullable=True))
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("epoch", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("partial", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "registered_models",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_registered_models"),
        sa.UniqueConstraint("owner", "name", name="uq_registered_models_owner"),
    )
    op.create_index("ix_registered_models_owner", "registered_models", ["owner"])
    op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("model_id", sa.String(36), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["registered_models.id"],
                                name="fk_model_versions_model_id_registered_models",
                                ondelete="CASCADE"),  # fmt: skip
        sa.PrimaryKeyConstraint("id", name="pk_model_versions"),
        sa.UniqueConstraint("model_id", "version", name="uq_model_versions_model_id"),
    )
    op.create_index("ix_model_versions_model_id", "model_versions", ["model_id"])
    op.create_index("ix_model_versions_run_id", "model_versions", ["run_id"])


def downgrade() -> None:
    op.drop_table("model_versions")
    op.drop_table("registered_models")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("partial")
        batch.drop_column("epoch")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("parent_run_id")
        batch.drop_column("test_metrics")
        batch.drop_column("last_epoch_metrics")
        batch.drop_column("best_epoch")
