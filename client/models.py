"""Typed results of the Backprop Service client: datasets, runs, sweeps, metrics and events.

These mirror the records of the public contract (API.md §4–§5). Unknown extra fields that a
newer server sends are kept (``extra="allow"``), so an older client keeps working.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

TERMINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow")


class Dataset(_Record):
    """A stored dataset (``GET /api/v1/datasets/{id}``)."""

    id: str
    name: str
    n_samples: int
    n_features: int
    n_targets: int
    task: Literal["regression", "classification"]
    classes: list[Any] | None = None
    sha256: str
    size_bytes: int
    created_at: datetime


class Progress(_Record):
    """How far a run is: ``epoch`` of ``epochs`` finished."""

    epoch: int
    epochs: int


class Transition(_Record):
    """One change of a run's status: when, why, on which attempt and worker."""

    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    at: datetime
    reason: str
    attempt: int
    worker: str | None = None


class Run(_Record):
    """A training run (``GET /api/v1/runs/{id}``)."""

    id: str
    name: str | None = None
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    dataset_id: str
    network: dict[str, Any]
    training: dict[str, Any]
    progress: Progress
    metrics: dict[str, float | None]
    error: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    queue: str | None = None
    priority: int = 0
    sweep_id: str | None = None
    sweep_params: dict[str, Any] | None = None
    stop_reason: str | None = None
    best_epoch: int | None = None  # the model's epoch, when early stopping kept the best
    last_epoch_metrics: dict[str, float | None] | None = None
    test_metrics: dict[str, Any] | None = None
    parent_run_id: str | None = None
    transitions: list[Transition] = []  # the run's timeline, oldest first

    @property
    def done(self) -> bool:
        """True once the run has ended (succeeded, failed or cancelled)."""
        return self.status in TERMINAL_STATUSES


class SweepProgress(_Record):
    """How many of a sweep's runs have ended (``finished`` of ``total``)."""

    finished: int
    total: int
    running: int = 0
    queued: int = 0
    pruned: int = 0


class Sweep(_Record):
    """A hyperparameter sweep (``GET /api/v1/sweeps/{id}``); ``leaderboard`` is best first.

    Each leaderboard entry is ``{"run_id", "params", "<metric>": value, "status", ...}``.
    """

    id: str
    name: str | None = None
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    metric: str
    mode: Literal["min", "max"] = "min"
    n_trials: int
    max_concurrent: int
    progress: SweepProgress
    leaderboard: list[dict[str, Any]]
    best: dict[str, Any] | None = None
    created_at: datetime
    finished_at: datetime | None = None

    @property
    def done(self) -> bool:
        """True once the sweep has ended."""
        return self.status in TERMINAL_STATUSES


class MetricItem(_Record):
    """One finished epoch's metrics."""

    epoch: int
    loss: float
    val_loss: float | None = None
    accuracy: float | None = None
    val_accuracy: float | None = None
    elapsed_s: float


class Prediction(_Record):
    """Outputs of ``predict``: one row per input row, plus class labels for classification."""

    outputs: list[list[float]]
    labels: list[Any] | None = None


class Event(BaseModel):
    """One Server-Sent Event of a run's stream.

    ``event`` is ``"metric"`` (``data`` is a :class:`MetricItem`'s fields) or ``"status"``
    (``data`` is ``{"status": ..., "error"?: ...}``); ``id`` is the server's opaque event id.
    """

    event: str
    id: str | None = None
    data: dict[str, Any]

    @property
    def metric(self) -> MetricItem | None:
        """The epoch's metrics for a ``metric`` event, else None."""
        return MetricItem.model_validate(self.data) if self.event == "metric" else None

    @property
    def status(self) -> str | None:
        """The new status for a ``status`` event, else None."""
        return self.data.get("status") if self.event == "status" else None

    @property
    def terminal(self) -> bool:
        """True for the status event that ends the stream."""
        return self.status in TERMINAL_STATUSES
