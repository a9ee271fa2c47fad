"""Typed results of the Backprop Service client: datasets, runs, sweeps, metrics, events and
registered models.

These mirror the records of the public contract (API.md §4–§5), field for field (a test
compares them with the service's OpenAPI schema). Unknown extra fields that a newer server
sends are kept (``extra="allow"``), so an older client keeps working.
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
    tags: dict[str, str] = {}  # the owner's labels (update_dataset)
    notes: str | None = None


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
    callback_url: str | None = None
    webhook_status: str | None = None
    attempts: int = 0
    worker: str | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    queue: str | None = None
    priority: int = 0
    sweep_id: str | None = None
    trial: int | None = None
    fold: int | None = None
    sweep_params: dict[str, Any] | None = None
    stop_reason: str | None = None
    stop_details: dict[str, Any] | None = None  # a pruned trial's rung, value and cutoff
    best_epoch: int | None = None  # the model's epoch, when early stopping kept the best
    last_epoch_metrics: dict[str, float | None] | None = None
    test_metrics: dict[str, Any] | None = None
    parent_run_id: str | None = None
    tags: dict[str, str] = {}  # the owner's labels (update_run)
    notes: str | None = None
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
    waiting: int = 0  # waiting at an ASHA rung (counted in queued too)


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
    search: dict[str, Any] | None = None
    pruning: dict[str, Any] | None = None
    cross_validation: dict[str, Any] | None = None
    created_at: datetime
    finished_at: datetime | None = None
    refit_run_id: str | None = None  # the latest refit of its best setting
    tags: dict[str, str] = {}  # the owner's labels (update_sweep)
    notes: str | None = None

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


class Preprocessing(_Record):
    """The feature standardisation a model applies first: ``(x - x_mean) / x_std``."""

    x_mean: list[float]  # (input_dim,)
    x_std: list[float]  # (input_dim,)


class LayerWeights(_Record):
    """One dense layer, ``a_out = activation(a_in @ W + b)``."""

    W: list[list[float]]  # (inputs, units)
    b: list[float]  # (units,)


class ModelWeights(_Record):
    """A trained model as ``GET /api/v1/runs/{id}/weights`` returns it (docs/models.md):
    all a forward pass needs, without the service."""

    format: str  # "backprop-model"
    version: int
    dtype: Literal["float32", "float64"]
    spec: dict[str, Any]  # the network spec (API.md §2) without initial_weights
    classes: list[Any] | None = None  # label of each output column; None for regression
    preprocessing: Preprocessing | None = None
    layers: list[LayerWeights]
    epoch: int | None = None  # the epoch whose weights these are
    partial: bool = False  # a cancelled run's weights, from before its last epoch


class Prediction(_Record):
    """Outputs of ``predict``: one row per input row, plus class labels for classification."""

    outputs: list[list[float]]
    labels: list[Any] | None = None
    partial: bool | None = None  # True when a cancelled run's weights answered
    epoch: int | None = None  # with partial: their epoch


class ClassMetrics(_Record):
    """One class's figures in an :class:`Evaluation` (0 where a ratio's denominator is 0)."""

    label: Any
    precision: float
    recall: float
    f1: float
    support: int


class TargetMetrics(_Record):
    """One target column's figures in an :class:`Evaluation`."""

    target: int
    mse: float
    rmse: float
    mae: float
    r2: float | None = None


class Evaluation(_Record):
    """A run's model scored on a dataset (``POST /api/v1/runs/{id}/evaluate``).

    Every evaluation has ``n_samples`` and the run's own ``loss`` (``loss_name``). A
    classification (the run's loss is a cross-entropy) has ``accuracy``, ``macro_f1``,
    ``log_loss``, ``classes``, ``per_class`` and ``confusion_matrix`` (rows true classes,
    columns predicted ones, in ``classes`` order); a regression has ``mse``, ``rmse``, ``mae``
    and ``r2`` averaged over the targets, and ``per_target``.
    """

    run_id: str
    dataset_id: str
    task: Literal["classification", "regression"]
    n_samples: int
    loss_name: str
    loss: float
    accuracy: float | None = None
    macro_f1: float | None = None
    log_loss: float | None = None
    classes: list[Any] | None = None
    per_class: list[ClassMetrics] | None = None
    confusion_matrix: list[list[int]] | None = None
    mse: float | None = None
    rmse: float | None = None
    mae: float | None = None
    r2: float | None = None
    per_target: list[TargetMetrics] | None = None


class ModelVersion(_Record):
    """One version of a registered model: a succeeded run, numbered in the order it was
    registered; the same number always names the same run."""

    version: int
    run_id: str
    run_name: str | None = None
    current: bool  # the version predict_model uses by default
    created_at: datetime  # when it was registered
    trained_at: datetime | None = None  # when its run finished training
    metrics: dict[str, float | None]  # the run's metrics
    test_metrics: dict[str, Any] | None = None


class RegisteredModel(_Record):
    """A registered model as ``list_models`` gives it: a name and its current version."""

    name: str
    current_version: int
    run_id: str  # the current version's run
    latest_version: int  # the highest version number
    created_at: datetime
    updated_at: datetime  # when the current version last changed


class RegisteredModelDetail(RegisteredModel):
    """A registered model with every version, oldest first (``GET /api/v1/models/{name}``)."""

    versions: list[ModelVersion]

    @property
    def current(self) -> ModelVersion:
        """The version predictions use by default."""
        return next(v for v in self.versions if v.current)


class ModelPrediction(Prediction):
    """Outputs of ``predict_model``, and which ``version`` of the ``model`` (and which run)
    gave them."""

    model: str
    version: int
    run_id: str


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
