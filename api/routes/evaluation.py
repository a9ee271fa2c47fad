"""``POST /runs/{id}/evaluate``: a succeeded run's model scored on a dataset of its owner.

The model comes from the loaded-model cache of :mod:`api.routes.predictions`; the figures
from :mod:`core.evaluation` (their definitions are written there) and the loss from the
engine, computed as training computes ``val_loss``. The run's loss decides the task: a
cross-entropy run is scored as a classifier, any other as a regression.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from threading import Lock
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException
from pydantic import Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import OwnerDep, ResourceId, SessionDep, get_owned
from api.routes.predictions import NOT_TRAINED, model_cache
from api.schemas import (
    ClassificationEvaluation,
    EvaluateIn,
    RegressionEvaluation,
    error_responses,
)
from core.data import feature_names_from_npz_bytes, from_npz_bytes
from core.db.models import Dataset, Run
from core.engine import EngineError, Network
from core.engine.targets import CROSS_ENTROPY
from core.evaluation import EvaluationError
from core.scoring import score

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])

EvaluationOut = Annotated[
    ClassificationEvaluation | RegressionEvaluation, Field(discriminator="task")
]

# The feature names of training datasets, by id (datasets never change): a few entries.
_feature_names: OrderedDict[str, list[str] | None] = OrderedDict()
_feature_names_lock = Lock()
_FEATURE_NAMES_SIZE = 64


def _training_feature_names(db: Session, run: Run) -> list[str] | None:
    """The CSV header names of the features the run trained on; None when its dataset has
    none (not a CSV) or is gone."""
    with _feature_names_lock:
        if run.dataset_id in _feature_names:
            _feature_names.move_to_end(run.dataset_id)
            return _feature_names[run.dataset_id]
    blob = db.scalar(
        select(Dataset.data).where(Dataset.id == run.dataset_id, Dataset.owner == run.owner)
    )
    names = None if blob is None else feature_names_from_npz_bytes(blob)
    with _feature_names_lock:  # a deleted dataset stays deleted: ids are never reused
        _feature_names[run.dataset_id] = names
        while len(_feature_names) > _FEATURE_NAMES_SIZE:
            _feature_names.popitem(last=False)
    return names


def _columns(n: int, what: str) -> str:
    return f"{n} {what} column{'' if n == 1 else 's'}"


def _unprocessable(message: str) -> HTTPException:
    return HTTPException(422, detail=message)


def _check_columns(
    db: Session, run: Run, dataset: Dataset, net: Network, feature_names: list[str] | None
) -> None:
    """422 when the dataset's features are not those the run trained on."""
    if dataset.n_features != net.n_in:
        raise _unprocessable(
            f"dataset {dataset.id} has {_columns(dataset.n_features, 'feature')} but "
            f"run {run.id}'s network takes {net.n_in} (network.input_dim)"
        )
    if feature_names is None:
        return
    trained = _training_feature_names(db, run)
    if trained is not None and trained != feature_names:
        raise _unprocessable(
            f"dataset {dataset.id}'s feature columns are {', '.join(feature_names)} but run "
            f"{run.id} trained on {', '.join(trained)}: the same columns, in the same order, "
            "are needed"
        )


def _finite(figures: dict[str, Any], outputs: np.ndarray, dataset_id: str) -> None:
    """422 when the outputs or a figure overflowed (JSON cannot carry them)."""

    def floats(value: Any) -> list[float]:
        if isinstance(value, float):
            return [value]
        if isinstance(value, dict):
            return [f for v in value.values() for f in floats(v)]
        if isinstance(value, list):
            return [f for v in value for f in floats(v)]
        return []

    if not (np.all(np.isfinite(outputs)) and all(math.isfinite(f) for f in floats(figures))):
        raise _unprocessable(
            f"dataset {dataset_id}: values too large; the run's outputs or figures on it are not "
            "finite"
        )


@router.post(
    "/{run_id}/evaluate", response_model=EvaluationOut,
    summary="Evaluate a trained run on a dataset",
    responses=error_responses(
        (400, "Malformed request: the body is not JSON, or nests deeper than "
         "BACKPROP_MAX_JSON_DEPTH."),
        401,
        (404, "No such run or dataset, or it belongs to another owner."),
        NOT_TRAINED, 413,
        (422, "Invalid request, or a dataset that does not fit the run: another number of "
         "features, other feature names, other targets, labels the run was not trained on, "
         "or values so large that the figures are not finite."),
        503,
    ),
)  # fmt: skip
def evaluate(run_id: ResourceId, body: EvaluateIn, db: SessionDep, owner: OwnerDep) -> Any:
    """Score a succeeded run's model on every row of a dataset of yours that has the columns
    of its training data (the same features, in the same order; the same targets).

    The answer holds `n_samples`, the run's own `loss` (`loss_name`, computed as training
    computes `val_loss`) and, by the run's loss:

    - a cross-entropy (`task: "classification"`): `accuracy`, `per_class` precision,
      recall, F1 and support, `macro_f1`, `confusion_matrix` (rows true, columns predicted,
      in the order of `classes`) and `log_loss`;
    - any other loss (`task: "regression"`): `mse`, `rmse`, `mae` and `r2` averaged over the
      targets with equal weights, and the same `per_target`.

    The definitions are scikit-learn's (docs/API.md §5). 404 for an unknown run or dataset,
    409 while the run has no model, 422 naming what does not fit.
    """
    run = get_owned(db, Run, owner, run_id)
    dataset = get_owned(db, Dataset, owner, body.dataset_id)
    net = model_cache.get(db, run)
    data = from_npz_bytes(dataset.data)
    _check_columns(db, run, dataset, net, data.feature_names)
    loss_name = str(run.training.get("loss", "mse"))
    if loss_name not in CROSS_ENTROPY and data.n_targets != net.n_out:
        raise _unprocessable(
            f"dataset {dataset.id} has {_columns(data.n_targets, 'target')} but run {run.id} "
            f"predicts {net.n_out}"
        )
    try:
        figures, outputs = score(net, data.X, data.y, loss_name, dataset.classes)
    except (EvaluationError, EngineError) as exc:
        raise _unprocessable(f"dataset {dataset.id}: {exc}") from None
    result: dict[str, Any] = {"run_id": run.id, "dataset_id": dataset.id, **figures}
    _finite(result, outputs, dataset.id)
    return result
