"""ORM models. Tables are plural snake_case; constraint names follow one convention so
that Alembic migrations are the same on SQLite and PostgreSQL."""

from __future__ import annotations

import enum
import math
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql import false
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def as_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class RunStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled})
ACTIVE_STATUSES = frozenset({RunStatus.queued, RunStatus.running})


class TZDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend.

    PostgreSQL keeps them as ``timestamptz``; SQLite has no time zones, so they are stored
    as naive UTC and given back aware.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return as_utc(value)


#: A resource's tags (string key -> string value): JSONB on PostgreSQL, where a GIN index
#: answers "has these tags" (``tags @> '{"k": "v"}'``); JSON text elsewhere. No tags is SQL
#: NULL, not JSON ``null``: the index of runs' tags holds only rows that have some.
TagsType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")

#: The metrics a run is sorted by, kept in columns of their own next to ``metrics``
#: (core/runs/lifecycle.py writes both): the model's values, NULL when absent or not finite.
SORTABLE_METRICS = ("loss", "val_loss", "accuracy", "val_accuracy")


def metric_columns(metrics: Mapping[str, Any] | None) -> dict[str, float | None]:
    """The values of the SORTABLE_METRICS columns for a run whose ``metrics`` these are:
    each a finite number, else None (absent, null, NaN or infinite: such runs sort last)."""
    columns: dict[str, float | None] = {}
    for key in SORTABLE_METRICS:
        value = (metrics or {}).get(key)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        columns[key] = float(value) if number and math.isfinite(value) else None  # type: ignore[arg-type]
    return columns


def _where_set(column: str) -> dict[str, Any]:
    """A partial index's condition, on both dialects: rows whose ``column`` is not NULL."""
    condition = text(f"{column} IS NOT NULL")
    return {"postgresql_where": condition, "sqlite_where": condition}


class Dataset(Base):
    """An uploaded dataset: parsed arrays as compressed ``.npz`` plus their metadata."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(200), index=True, default="default")
    name: Mapped[str] = mapped_column(String(200))
    n_samples: Mapped[int] = mapped_column(Integer)
    n_features: Mapped[int] = mapped_column(Integer)
    n_targets: Mapped[int] = mapped_column(Integer)
    task: Mapped[str] = mapped_column(String(20))  # "regression" | "classification"
    classes: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow, index=True)
    # The owner's own organisation (PATCH): string → string labels and free text.
    tags: Mapped[dict[str, str] | None] = mapped_column(TagsType, nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)


class Run(Base):
    """One training job: its request, its lifecycle and its latest progress."""

    __tablename__ = "runs"
    __table_args__ = (
        # The dispatcher's question: which queued runs have not been sent yet.
        Index("ix_runs_status_enqueued_at", "status", "enqueued_at"),
        # GET /runs: an owner's runs in each order the list sorts by, ties broken by
        # (created_at, id), so that a page starts where its keyset cursor points
        # (api/pagination.py). The first also serves every other look-up by owner.
        Index("ix_runs_owner_created_at", "owner", "created_at", "id"),
        # The indexes of columns that are NULL for most of a run's writes are partial: a row
        # without a value has no entry, so its INSERT and status changes do not write one
        # (migration 0010). A query that uses one says ``column IS NOT NULL`` or compares
        # the column, which implies it.
        *(
            Index(
                f"ix_runs_owner_{column}", "owner", column, "created_at", "id", **_where_set(column)
            )
            for column in (*SORTABLE_METRICS, "best_epoch")
        ),
        Index("ix_runs_sweep_id", "sweep_id", **_where_set("sweep_id")),
        # ?tag=k:v (ANDed): one containment test, tags @> '{"k": "v", ...}'.
        Index(
            "ix_runs_tags",
            "tags",
            postgresql_using="gin",
            postgresql_ops={"tags": "jsonb_path_ops"},
            postgresql_where=text("tags IS NOT NULL"),  # a PostgreSQL index only
        ).ddl_if(dialect="postgresql"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(200), default="default")
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # No foreign key: a dataset may be deleted once no active run uses it, and the
    # finished runs that trained on it keep its id and their models.
    dataset_id: Mapped[str] = mapped_column(String(36), index=True)
    network: Mapped[dict[str, Any]] = mapped_column(JSON)
    training: Mapped[dict[str, Any]] = mapped_column(JSON)
    # No index of its own: ix_runs_status_enqueued_at begins with it (migration 0009).
    status: Mapped[str] = mapped_column(String(20), default=RunStatus.queued.value)
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    epochs: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # ``metrics``' values as columns (SORTABLE_METRICS), for sorting the list: written
    # with ``metrics`` in the same statement (core/runs/lifecycle.py).
    loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    val_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    val_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # When the task message was sent (NULL: not sent, or sent again soon). Queued runs wait
    # in the database and are sent as workers have room (core/dispatch.py); a message
    # lost with Redis is noticed and sent again.
    enqueued_at: Mapped[datetime | None] = mapped_column(TZDateTime(), nullable=True)
    # A sweep's trial waiting for a free slot of its sweep (max_concurrent): not sent yet.
    held: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    api_key_id: Mapped[str | None] = mapped_column(String(36), nullable=True)  # signs webhooks
    webhook_status: Mapped[str | None] = mapped_column(String(20), nullable=True)
    sweep_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # A sweep's trial: its number in the sweep, its parameters (dotted path → value), its
    # cross-validation fold, and why it stopped early ("pruned", "sweep_cancelled").
    trial: Mapped[int | None] = mapped_column(Integer, nullable=True)
    fold: Mapped[int | None] = mapped_column(Integer, nullable=True)
    sweep_params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    stop_reason: Mapped[str | None] = mapped_column(String(50), nullable=True)
    # The stored model's epoch when early stopping kept an earlier one than the last
    # (``metrics`` are then that epoch's; the last epoch's are in last_epoch_metrics).
    best_epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_epoch_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Scores on the rows held out by training.test_split, computed once at the end.
    test_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # The run whose weights this one started from (training.warm_start).
    parent_run_id: Mapped[str | None] = mapped_column(String(36), nullable=True)
    # Why it stopped early, in figures (a pruned trial: its rung, value and the cutoff).
    stop_details: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # The owner's own organisation (PATCH): string → string labels and free text.
    tags: Mapped[dict[str, str] | None] = mapped_column(TagsType, nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    queue: Mapped[str | None] = mapped_column(String(100), nullable=True)
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Lease: the worker that trains the run renews lease_expires_at; an expired lease
    # means the worker died and the run may be reclaimed.
    lease_owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(TZDateTime(), nullable=True)
    # Indexed after the owner only (ix_runs_owner_created_at and the sort indexes).
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(TZDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(TZDateTime(), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow, onupdate=utcnow)


class RunTransition(Base):
    """One change of a run's status, for its timeline: when, why, on which attempt and
    worker. Written only by core/runs/lifecycle.py, in the transaction of the change."""

    __tablename__ = "run_transitions"

    # Ordered by id: a run's transitions are written one after another.
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(20))
    at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    reason: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)


class RegisteredModel(Base):
    """A name other services call (``/api/v1/models/{name}``); its versions are runs."""

    __tablename__ = "registered_models"
    __table_args__ = (UniqueConstraint("owner", "name"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    name: Mapped[str] = mapped_column(String(200))
    current_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow, onupdate=utcnow)


class ModelVersion(Base):
    """Version ``version`` (1, 2, …) of a registered model: a succeeded run."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_id: Mapped[str] = mapped_column(
        ForeignKey("registered_models.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    # No foreign key to runs: a version's run cannot be deleted (the API refuses, 409).
    run_id: Mapped[str] = mapped_column(String(36), index=True)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class SweepStatus(enum.StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


SWEEP_ACTIVE = frozenset({SweepStatus.queued, SweepStatus.running})


class Sweep(Base):
    """A hyperparameter search: its request, and its trials as runs with its ``sweep_id``."""

    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(200), index=True, default="default")
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    status: Mapped[str] = mapped_column(String(20), index=True, default=SweepStatus.queued.value)
    metric: Mapped[str] = mapped_column(String(20))
    # The request as given (base, search, pruning, cross_validation), for the record.
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    n_trials: Mapped[int] = mapped_column(Integer)  # configurations
    n_runs: Mapped[int] = mapped_column(Integer)  # trials x folds
    max_concurrent: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow, index=True)
    finished_at: Mapped[datetime | None] = mapped_column(TZDateTime(), nullable=True)
    # Touched by every dispatch: that UPDATE serialises dispatching per sweep.
    updated_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow, onupdate=utcnow)
    # The owner's own organisation (PATCH): string → string labels and free text.
    tags: Mapped[dict[str, str] | None] = mapped_column(TagsType, nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)


class MetricRow(Base):
    """One finished epoch of a run. ``(run_id, epoch)`` is unique: no duplicates."""

    __tablename__ = "metrics"
    __table_args__ = (UniqueConstraint("run_id", "epoch"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    loss: Mapped[float] = mapped_column(Float)
    val_loss: Mapped[float | None] = mapped_column(Float, nullable=True)
    accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    val_accuracy: Mapped[float | None] = mapped_column(Float, nullable=True)
    elapsed_s: Mapped[float] = mapped_column(Float)

    def as_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {"epoch": self.epoch, "loss": self.loss}
        for key in ("val_loss", "accuracy", "val_accuracy"):
            value = getattr(self, key)
            if value is not None:
                item[key] = value
        item["elapsed_s"] = self.elapsed_s
        return item


class Checkpoint(Base):
    """The latest training checkpoint of a run (engine checkpoint bytes)."""

    __tablename__ = "checkpoints"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class ModelArtifact(Base):
    """The trained model of a run (engine ``.npz`` artifact bytes): a succeeded run's, or
    the weights a cancelled run had when it stopped (``partial``)."""

    __tablename__ = "models"

    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    # The epoch whose weights these are (NULL: stored before this was recorded).
    epoch: Mapped[int | None] = mapped_column(Integer, nullable=True)
    partial: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)


class ApiKey(Base):
    """An API key: only its SHA-256 is stored. Its owner owns every resource made with it."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    owner: Mapped[str] = mapped_column(String(200), index=True)
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings to tell keys apart
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Signs this owner's webhooks (HMAC-SHA256); shown once, at creation, with the key.
    webhook_secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(TZDateTime(), nullable=True)


class IdempotencyRecord(Base):
    """The first response to a POST sent with an ``Idempotency-Key`` header."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("owner", "endpoint", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(100))
    key: Mapped[str] = mapped_column(String(200))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    location: Mapped[str | None] = mapped_column(String(300), nullable=True)
    created_at: Mapped[datetime] = mapped_column(TZDateTime(), default=utcnow, index=True)
