"""Request and response bodies of the REST API (API.md §4–§5)."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    WithJsonSchema,
    computed_field,
    field_validator,
)
from pydantic.config import JsonDict
from sqlalchemy import Row, inspect

from core import organise
from core.runs.requests import RunRequest
from core.spec import DTypeName, Hinted, InitName, LayerSpec
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


# -- the owner's organisation: name, tags, notes (core/organise.py has the rule) -------------


def _checked(check: Any) -> Any:
    """A pydantic validator of ``check`` (core/organise.py): its message on failure."""

    def validate(value: str) -> str:
        try:
            return str(check(value))
        except organise.EditError as exc:
            raise ValueError(str(exc)) from None

    return AfterValidator(validate)


TagKey = Annotated[
    str,
    _checked(organise.check_tag_key),
    WithJsonSchema({"type": "string", "pattern": organise.TAG_KEY_PATTERN}),
]
TagValue = Annotated[
    str,
    _checked(organise.check_tag_value),
    WithJsonSchema({"type": "string", "pattern": organise.TAG_VALUE_PATTERN}),
]
TAGS_DESCRIPTION = "The owner's labels, key → value (`PATCH` changes them)."
NOTES_DESCRIPTION = "The owner's free text (`PATCH` changes it)."


class OrganiseEdit(BaseModel):
    """What a `PATCH` of a run, sweep or dataset changes; a field left out stays as it is.

    `tags` is a JSON merge patch (RFC 7396) of the tags: a key with a string sets that tag,
    a key with `null` removes it, the keys not named stay; `"tags": null` removes them all.
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"name": "iris baseline", "tags": {"project": "iris", "stale": None},
                 "notes": "lr 0.05 is the best so far"}
            ]
        },
    )  # fmt: skip

    name: str | None = Field(
        default=None, min_length=1, max_length=organise.NAME_MAX, pattern=organise.TEXT_PATTERN,
        description="A new name; `null` removes a run's or a sweep's name.",
    )  # fmt: skip
    tags: dict[TagKey, TagValue | None] | None = Field(
        default=None, max_length=organise.MAX_TAGS,
        description=f"Tags to set (`key: value`) or remove (`key: null`). Keys: 1-"
        f"{organise.TAG_KEY_MAX} characters of `A-Z a-z 0-9 _ . - /`; values: up to "
        f"{organise.TAG_VALUE_MAX} characters, no control characters; at most "
        f"{organise.MAX_TAGS} tags.",
    )  # fmt: skip
    notes: str | None = Field(
        default=None, max_length=organise.NOTES_MAX, pattern=organise.TEXT_PATTERN,
        description=f"New notes (up to {organise.NOTES_MAX} characters); `null` removes them.",
    )  # fmt: skip

    def edit(self) -> organise.Edit:
        """The edit this body asks for (the fields it leaves out are UNSET)."""
        given = self.model_fields_set
        return organise.Edit(**{name: getattr(self, name) for name in given})


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
    tags: dict[str, str] = Field(default_factory=dict, description=TAGS_DESCRIPTION)
    notes: str | None = Field(default=None, description=NOTES_DESCRIPTION)


class DatasetList(BaseModel):
    items: list[DatasetRecord]
    next_cursor: str | None


class RunCreate(RunRequest):
    """A run request (core.runs.requests.RunRequest), with its OpenAPI example."""

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
    """A run's public record, made by :meth:`of` from a ``runs`` row and its timeline."""

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
    sweep_id: str | None = Field(
        default=None,
        description="The sweep this run is a trial of (or the refit of: then `trial` is null).",
    )
    trial: int | None = None
    fold: int | None = Field(default=None, description="Cross-validation fold of the trial.")
    sweep_params: dict[str, Any] | None = None
    stop_reason: str | None = Field(
        default=None,
        description="Why it stopped before its last epoch: 'early_stopped', 'pruned', "
        "'sweep_cancelled'.",
    )
    stop_details: dict[str, Any] | None = Field(
        default=None,
        description="Why it stopped early, in figures: a pruned trial's (or one waiting at "
        "an ASHA rung) `rung`, `epoch`, `metric`, `value`, `cutoff`, `kept`, "
        "`trials_at_rung`, `eta`.",
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
    tags: dict[str, str] = Field(default_factory=dict, description=TAGS_DESCRIPTION)
    notes: str | None = Field(default=None, description=NOTES_DESCRIPTION)
    transitions: list[TransitionOut] = Field(
        default_factory=list,
        description="Every change of its status, oldest first, with the reason.",
    )

    @classmethod
    def of(cls, row: Any, transitions: Sequence[Mapping[str, Any]]) -> RunRecord:
        """The record of ``row`` (an ORM ``Run``, a Core row of ``runs``, or a mapping of
        its columns) with ``transitions``, its timeline (core/runs/timeline.py).

        Validated from a mapping of the row's columns: pydantic reads a mapping about three
        times as fast as it reads attributes, and records are read on every poll and 50 to
        a list page."""
        if isinstance(row, Mapping):
            columns: Mapping[Any, Any] = row
        elif isinstance(row, Row):
            columns = row._mapping
        else:
            attrs = inspect(row).mapper.column_attrs
            columns = {attr.key: getattr(row, attr.key) for attr in attrs}
        return cls.model_validate({**columns, "transitions": transitions})

    @classmethod
    def column_names(cls) -> frozenset[str]:
        """The columns of ``runs`` a record reads: its fields' names and aliases. A query
        for records selects only these (each column more costs every read)."""
        names = set(cls.model_fields)
        for info in cls.model_fields.values():
            if isinstance(info.validation_alias, AliasChoices):
                names.update(a for a in info.validation_alias.choices if isinstance(a, str))
        return frozenset(names)

    @field_validator("metrics", mode="before")
    @classmethod
    def _no_metrics_yet(cls, value: Any) -> Any:
        return value or {"loss": None}

    @field_validator("tags", mode="before")
    @classmethod
    def _no_tags(cls, value: Any) -> Any:
        return value or {}

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
    """One dense layer: `a_out = activation(a_in @ W + b)`."""

    W: list[list[float]] = Field(description="Shape (inputs, units): column j feeds unit j.")
    b: list[float] = Field(description="Shape (units,).")


class ModelSpec(BaseModel):
    """The network spec of API.md §2 as the model was built (`initial_weights` left out)."""

    model_config = ConfigDict(extra="allow")

    input_dim: int = Field(description="Features per input row.")
    layers: list[LayerSpec] = Field(description="Units and activation of each dense layer.")
    init: InitName = Field(description="The initialiser it started from (before training).")


class Preprocessing(BaseModel):
    """The feature standardisation applied before the first layer: `(x - x_mean) / x_std`."""

    x_mean: list[float] = Field(description="Shape (input_dim,): the training part's means.")
    x_std: list[float] = Field(description="Shape (input_dim,): its standard deviations.")


class WeightsOut(BaseModel):
    """A trained model, self-contained: what a forward pass needs without the service.

    The `.npz` form (`?format=npz`) holds the same: arrays `W0, b0, …`, `x_mean`/`x_std`,
    and `meta` (JSON text with `format`, `version`, `dtype`, `spec` and `classes`).
    """

    format: Literal["backprop-model"] = Field(description="What this document is.")
    version: int = Field(description="Version of the format (1).")
    dtype: DTypeName = Field(
        description="The float type it trained and predicts in; the values below are exact."
    )
    spec: ModelSpec
    classes: list[Any] | None = Field(
        description="Class label of each output column (for one sigmoid output: `[negative, "
        "positive]`, the positive one when the output is above 0.5); null for regression."
    )
    preprocessing: Preprocessing | None = Field(
        description="The feature standardisation, null when the run trained without one."
    )
    layers: list[LayerWeights] = Field(description="The dense layers, input to output.")
    epoch: int | None = Field(
        default=None,
        description="The epoch whose weights these are (the best one when early stopping "
        "kept it); null for models stored before this was recorded.",
    )
    partial: bool = Field(
        default=False,
        description="True for a cancelled run: the weights it had when it stopped, before "
        "its last epoch.",
    )


class PredictIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"inputs": [[0.05, 0.10]]}]}
    )

    inputs: list[list[StrictFloat]] = Field(min_length=1)


class PredictOut(BaseModel):
    outputs: list[list[float]]
    labels: list[Any] | None = None
    partial: bool | None = Field(
        default=None, description="Present (true) when the model is a cancelled run's."
    )
    epoch: int | None = Field(
        default=None, description="With `partial`: the epoch whose weights answered."
    )


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
        default=None,
        description='The limits involved, e.g. `{"le": "9"}`; for a near-miss name, '
        "`did_you_mean` (also in `msg`: \"…; did you mean 'tanh'?\").",
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


class SweepCreate(Hinted):
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
    waiting: int = Field(
        default=0, description="Trials waiting at an ASHA rung (queued; counted in `queued`)."
    )


class SweepExtend(BaseModel):
    """``POST /sweeps/{id}/extend``: how many configurations to add."""

    model_config = ConfigDict(extra="forbid")

    trials: StrictInt = Field(ge=1, le=1000, description="Configurations to add.")


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
    refit_run_id: str | None = Field(
        default=None, description="The latest refit of the best setting (POST .../refit)."
    )
    tags: dict[str, str] = Field(default_factory=dict, description=TAGS_DESCRIPTION)
    notes: str | None = Field(default=None, description=NOTES_DESCRIPTION)


class SweepList(BaseModel):
    items: list[SweepRecord]
    next_cursor: str | None


class EvaluateIn(BaseModel):
    """What to evaluate a run on (``POST /runs/{id}/evaluate``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"dataset_id": "3f0b8c6e-0000-4000-8000-000000000000"}]},
    )

    dataset_id: str = Field(
        min_length=1,
        max_length=64,
        description="A dataset of yours with the columns of the run's training data.",
    )


class ClassMetrics(BaseModel):
    """One class's figures; 0 where a ratio's denominator is 0."""

    label: Any = Field(description="The class label, as in `classes`.")
    precision: float = Field(description="TP / (TP + FP).")
    recall: float = Field(description="TP / (TP + FN).")
    f1: float = Field(description="2 TP / (2 TP + FP + FN).")
    support: int = Field(description="Rows whose true class this is.")


class TargetMetrics(BaseModel):
    """One target column's figures."""

    target: int = Field(description="The target column, counting from 0.")
    mse: float
    rmse: float
    mae: float
    r2: float | None = Field(description="1 - SS_res / SS_tot; null for fewer than two rows.")


class _EvaluationBase(BaseModel):
    run_id: str
    dataset_id: str
    n_samples: int = Field(description="Rows evaluated: all the dataset's rows.")
    loss_name: str = Field(description="The run's loss function (`training.loss`).")
    loss: float = Field(description="The mean loss, computed as training computes `val_loss`.")


class ClassificationEvaluation(_EvaluationBase):
    """A classifier's figures (the run's loss is a cross-entropy)."""

    task: Literal["classification"]
    accuracy: float
    macro_f1: float = Field(
        description="Mean F1 over the classes that occur in the true or the predicted labels."
    )
    log_loss: float = Field(
        description="Mean -log p(true class), p clipped to [eps, 1 - eps] (float64 eps)."
    )
    classes: list[Any] = Field(description="The run's classes: the order of the rows below.")
    per_class: list[ClassMetrics]
    confusion_matrix: list[list[int]] = Field(
        description="Row i: rows of true class `classes[i]`; column j: predicted `classes[j]`."
    )


class RegressionEvaluation(_EvaluationBase):
    """A regression's figures, averaged over the targets with equal weights (each figure
    separately, so `rmse` is the mean of the per-target RMSEs), then per target."""

    task: Literal["regression"]
    mse: float
    rmse: float
    mae: float
    r2: float | None = Field(description="Mean R² over the targets; null for fewer than two rows.")
    per_target: list[TargetMetrics]


# -- the model registry (api/routes/registry.py) ----------------------------------------------


class ModelRegisterIn(BaseModel):
    """The run to register under a model name (``PUT /models/{name}``)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"run_id": "3f0b8c6e-0000-4000-8000-000000000000"}]},
    )

    run_id: str = Field(
        min_length=1,
        max_length=64,
        pattern=NO_NUL,
        description="A succeeded run of yours (its whole id). A run that is already a "
        "version of this model becomes current again (a rollback); any other becomes the "
        "next version.",
    )


class ModelRecord(BaseModel):
    """A registered model as listed: its name and the version it answers with."""

    name: str = Field(description="The name other services call; unique per owner.")
    current_version: int = Field(description="The version `predict` uses by default.")
    run_id: str = Field(description="The run of the current version.")
    latest_version: int = Field(description="The highest version number (= how many).")
    created_at: datetime = Field(description="When the name was first registered.")
    updated_at: datetime = Field(
        description="When the current version last changed (a registration or a rollback)."
    )


class ModelVersionRecord(BaseModel):
    """One version of a registered model: a succeeded run, numbered 1, 2, … in the order
    they were registered. A version always names the same run."""

    version: int
    run_id: str
    run_name: str | None = Field(description="The run's name, if it has one.")
    current: bool = Field(description="True for the version `predict` uses by default.")
    created_at: datetime = Field(description="When this version was registered.")
    trained_at: datetime | None = Field(description="When its run finished training.")
    metrics: dict[str, float | None] = Field(
        description="The run's metrics (those of the stored model; see the run record)."
    )
    test_metrics: dict[str, Any] | None = Field(
        default=None, description="The run's scores on its `test_split` rows, if any."
    )


class ModelDetailRecord(ModelRecord):
    """A registered model with all its versions, oldest first."""

    versions: list[ModelVersionRecord]


class ModelList(BaseModel):
    items: list[ModelRecord]
    next_cursor: str | None


class ModelPredictOut(PredictOut):
    """A prediction through the registry: the run's `/predict` answer, and which version
    and run gave it."""

    model: str = Field(description="The model's name.")
    version: int = Field(description="The version that answered.")
    run_id: str = Field(description="That version's run.")
