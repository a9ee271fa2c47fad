"""Request and response bodies of the REST API (API.md §4–§5)."""

from __future__ import annotations

import copy
from datetime import datetime
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    computed_field,
    field_validator,
)
from pydantic.config import JsonDict

from core.spec import NetworkSpec, TrainingConfig
from core.sweeps import CrossValidation, MetricName, Pruning, SearchSpace

SEED_NETWORK_EXAMPLE: JsonDict = {
    "input_dim": 2,
    "layers": [
        {"units": 2, "activation": "sigmoid"},
        {"units": 2, "activation": "sigmoid"},
    ],
    "initial_weights": [
        {"W": [[0.15, 0.25], [0.20, 0.30]], "b": [0.35, 0.35]},
        {"W": [[0.40, 0.50], [0.45, 0.55]], "b": [0.60, 0.60]},
    ],
}
SEED_TRAINING_EXAMPLE: JsonDict = {
    "loss": "mse",
    "optimizer": {"name": "sgd", "learning_rate": 0.5, "momentum": 0.0},
    "epochs": 1,
    "batch_size": 1,
    "shuffle": False,
    "seed": 0,
}


# Text that PostgreSQL can store: no NUL characters.
NO_NUL = r"^[^\x00]*$"


class DatasetCreateJSON(BaseModel):
    """A dataset sent inline as JSON."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "seed", "X": [[0.05, 0.10]], "y": [[0.01, 0.99]]}]
        },
    )

    name: str | None = Field(default=None, max_length=200)
    X: list[list[Any]]
    y: list[Any]
    task: Literal["classification", "regression"] | None = None


class DatasetRecord(BaseModel):
    id: str
    name: str
    n_samples: int
    n_features: int
    n_targets: int
    task: Literal["regression", "classification"]
    classes: list[Any] | None
    sha256: str
    size_bytes: int
    created_at: datetime


class DatasetList(BaseModel):
    items: list[DatasetRecord]
    next_cursor: str | None


class RunCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "seed 2-2-2",
                    "dataset_id": "3f0b8c6e-0000-4000-8000-000000000000",
                    "network": SEED_NETWORK_EXAMPLE,
                    "training": SEED_TRAINING_EXAMPLE,
                }
            ]
        },
    )

    name: str | None = Field(default=None, max_length=200, pattern=NO_NUL)
    dataset_id: str = Field(max_length=64)
    network: NetworkSpec
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    callback_url: str | None = Field(
        default=None,
        max_length=2000,
        description="POSTed once when the run ends, signed with X-Backprop-Signature.",
    )
    priority: StrictInt = Field(
        default=0, ge=0, le=9, description="0-9: among queued runs, higher ones start first."
    )


class Progress(BaseModel):
    epoch: int
    epochs: int


RunStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class TransitionOut(BaseModel):
    """One change of a run's status (core/runs/timeline.py)."""

    status: RunStatusName
    at: datetime
    reason: str = Field(description='Why, for people: "claimed by worker w-1 (attempt 2)".')
    attempt: int = Field(description="The run's attempt count after the change.")
    worker: str | None = Field(description="The worker involved (host:pid), if any.")


class RunRecord(BaseModel):
    """A run's public record, read from the ``runs`` row's attributes (an ORM ``Run`` or
    a Core row); the routes add ``transitions``."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str | None
    status: RunStatusName
    dataset_id: str
    network: dict[str, Any]
    training: dict[str, Any]
    # Stored as two columns, shown as `progress`.
    epoch: int = Field(exclude=True)
    epochs: int = Field(exclude=True)
    metrics: dict[str, float | None] = Field(
        description="The latest epoch's metrics (`loss`: null before the first epoch)."
    )
    error: str | None
    callback_url: str | None = None
    webhook_status: str | None = Field(
        default=None, description="pending, delivered or failed when a callback_url is set."
    )
    attempts: int = Field(description="How many times a worker took this run up.")
    worker: str | None = Field(
        default=None,
        validation_alias=AliasChoices("worker", "lease_owner"),
        description="host:pid of the worker process training it now.",
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    queue: str | None = Field(
        default=None, description="small or large: parameters x samples x epochs vs the threshold."
    )
    priority: int = 0
    sweep_id: str | None = Field(default=None, description="The sweep this run is a trial of.")
    trial: int | None = None
    fold: int | None = Field(default=None, description="Cross-validation fold of the trial.")
    sweep_params: dict[str, Any] | None = None
    stop_reason: str | None = Field(
        default=None,
        description="Why it stopped before its last epoch: 'early_stopped', 'pruned', "
        "'sweep_cancelled'.",
    )
    best_epoch: int | None = Field(
        default=None,
        description="With early stopping's `restore_best`: the epoch whose weights the model "
        "holds. `metrics` are then that epoch's.",
    )
    last_epoch_metrics: dict[str, float | None] | None = Field(
        default=None,
        description="The last epoch's metrics, when they are not those of the model "
        "(`best_epoch` set).",
    )
    test_metrics: dict[str, Any] | None = Field(
        default=None, description="Scores on the rows held out by `training.test_split`."
    )
    parent_run_id: str | None = Field(
        default=None, description="The run whose weights it started from (`warm_start`)."
    )
    transitions: list[TransitionOut] = Field(
        default_factory=list,
        description="Every change of its status, oldest first, with the reason.",
    )

    @field_validator("metrics", mode="before")
    @classmethod
    def _no_metrics_yet(cls, value: Any) -> Any:
        return value or {"loss": None}

    @field_validator("priority", mode="before")
    @classmethod
    def _default_priority(cls, value: Any) -> Any:
        return value or 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def progress(self) -> Progress:
        return Progress(epoch=self.epoch, epochs=self.epochs)


class RunList(BaseModel):
    items: list[RunRecord]
    next_cursor: str | None


class MetricItem(BaseModel):
    model_config = ConfigDict(extra="allow")

    epoch: int
    loss: float
    val_loss: float | None = None
    accuracy: float | None = None
    val_accuracy: float | None = None
    elapsed_s: float


class MetricsOut(BaseModel):
    run_id: str
    items: list[MetricItem]


class LayerWeights(BaseModel):
    W: list[list[float]]
    b: list[float]


class WeightsOut(BaseModel):
    layers: list[LayerWeights]


class PredictIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"inputs": [[0.05, 0.10]]}]}
    )

    inputs: list[list[StrictFloat]] = Field(min_length=1)


class PredictOut(BaseModel):
    outputs: list[list[float]]
    labels: list[Any] | None = None


class ValidationIssue(BaseModel):
    """One invalid value of a request, as pydantic reports it (FastAPI's 422 item)."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(description="The kind of error, e.g. `missing`, `greater_than`.")
    loc: list[str | int] = Field(
        description="Where: `body`, `query`, `path` or `header`, then the keys and indices "
        "down to the value."
    )
    msg: str = Field(description="What is wrong, for people.")
    ctx: dict[str, str] | None = Field(
        default=None, description='The limits involved, e.g. `{"le": "9"}`.'
    )


class ErrorOut(BaseModel):
    """The body of every error answer (4xx and 503)."""

    detail: str | list[ValidationIssue] = Field(
        description="A sentence naming the field, row, limit or state at fault; for a 422 "
        "from request validation, one item per invalid value."
    )


#: What each error status means in this API (the default description of
#: :func:`error_responses`; a route may say more for its own case).
ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed request: the body is not JSON, nests deeper than BACKPROP_MAX_JSON_DEPTH, "
    "or the Idempotency-Key header is empty or over 200 characters.",
    401: "Missing, invalid or revoked API key (send `Authorization: Bearer <key>`); only when "
    "authentication is on.",
    404: "No such resource, or it belongs to another owner.",
    409: "The resource's state does not allow this now.",
    413: "The request body is larger than BACKPROP_MAX_REQUEST_BYTES.",
    415: "Unsupported content type or file format.",
    422: "Invalid request: `detail` names the field (or lists the invalid values) and why.",
    429: "Too many active runs: your queued and running runs would exceed "
    "BACKPROP_MAX_ACTIVE_RUNS.",
    503: "The database is unavailable; retry after `Retry-After` seconds.",
}

#: The 400 of a list route.
BAD_CURSOR = "`cursor` is not one this API issued."

_ERROR_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {"description": "The scheme: `Bearer`.", "schema": {"type": "string"}}
    },
    503: {"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}},
}


def error_responses(*codes: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route for the error statuses it can answer, each with the
    :class:`ErrorOut` body and the meaning of :data:`ERROR_DESCRIPTIONS`, or a route's own
    description given as ``(status, description)``."""
    responses: dict[int | str, dict[str, Any]] = {}
    for item in codes:
        code, description = item if isinstance(item, tuple) else (item, ERROR_DESCRIPTIONS[item])
        responses[code] = {"model": ErrorOut, "description": description}
        if code in _ERROR_HEADERS:
            responses[code]["headers"] = copy.deepcopy(_ERROR_HEADERS[code])
    return responses


class HealthOut(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class SweepCreate(BaseModel):
    """A hyperparameter sweep (docs/sweeps.md)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "lr x units",
                    "base": {
                        "dataset_id": "3f0b8c6e-0000-4000-8000-000000000000",
                        "network": {
                            "input_dim": 4,
                            "layers": [
                                {"units": 16, "activation": "tanh"},
                                {"units": 3, "activation": "softmax"},
                            ],
                        },
                        "training": {
                            "loss": "categorical_crossentropy",
                            "epochs": 30,
                            "validation_split": 0.2,
                        },
                    },
                    "search": {
                        "type": "grid",
                        "parameters": {
                            "training.optimizer.learning_rate": [0.01, 0.1],
                            "network.layers.0.units": [8, 32],
                        },
                    },
                    "metric": "val_loss",
                    "max_concurrent": 2,
                }
            ]
        },
    )

    name: str | None = Field(default=None, max_length=200)
    base: RunCreate
    search: SearchSpace
    metric: MetricName = "val_loss"
    max_concurrent: StrictInt = Field(default=2, ge=1, le=1000)
    pruning: Pruning | None = None
    cross_validation: CrossValidation | None = None


class SweepProgress(BaseModel):
    finished: int
    total: int
    running: int = 0
    queued: int = 0
    pruned: int = 0


class SweepRecord(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    name: str | None
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    metric: str
    mode: Literal["min", "max"]
    n_trials: int
    max_concurrent: int
    progress: SweepProgress
    leaderboard: list[dict[str, Any]]
    best: dict[str, Any] | None = None
    search: dict[str, Any]
    pruning: dict[str, Any] | None = None
    cross_validation: dict[str, Any] | None = None
    created_at: datetime
    finished_at: datetime | None


class SweepList(BaseModel):
    items: list[SweepRecord]
    next_cursor: str | None
