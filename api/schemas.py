"""Request and response bodies of the REST API (API.md §4–§5)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.spec import NetworkSpec, TrainingConfig

SEED_NETWORK_EXAMPLE = {
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
SEED_TRAINING_EXAMPLE = {
    "loss": "mse",
    "optimizer": {"name": "sgd", "learning_rate": 0.5, "momentum": 0.0},
    "epochs": 1,
    "batch_size": 1,
    "shuffle": False,
    "seed": 0,
}


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

    name: str | None = Field(default=None, max_length=200)
    dataset_id: str = Field(max_length=64)
    network: NetworkSpec
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    callback_url: str | None = Field(
        default=None,
        max_length=2000,
        description="POSTed once when the run ends, signed with X-Backprop-Signature.",
    )


class Progress(BaseModel):
    epoch: int
    epochs: int


class RunRecord(BaseModel):
    id: str
    name: str | None
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    dataset_id: str
    network: dict[str, Any]
    training: dict[str, Any]
    progress: Progress
    metrics: dict[str, float | None]
    error: str | None
    callback_url: str | None = None
    webhook_status: str | None = Field(
        default=None, description="pending, delivered or failed when a callback_url is set."
    )
    attempts: int = Field(description="How many times a worker took this run up.")
    worker: str | None = Field(
        default=None, description="host:pid of the worker process training it now."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


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

    inputs: list[list[float]] = Field(min_length=1)


class PredictOut(BaseModel):
    outputs: list[list[float]]
    labels: list[Any] | None = None


class ErrorOut(BaseModel):
    detail: Any


class HealthOut(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
