"""What a run request must satisfy before it is stored, and the columns of its new row:
shared by ``POST /runs`` and by sweeps, which create runs too.

The loss decides the task (API.md §3): a cross-entropy loss on a dataset of one target column
trains on its class labels, so the output layer must fit the labels (the engine's rule,
``core.engine.targets``, asked here before the run is queued); a regression loss on one-hot
classes needs ``training.regression_on_classes``. Both need more of the dataset than its
shape; what they find is cached by dataset id (datasets never change).
"""

from __future__ import annotations

from collections import OrderedDict
from threading import Lock
from typing import Any

from fastapi import HTTPException
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from api.schemas import RunCreate
from core.data import DatasetError, targets_from_npz_bytes
from core.db.models import Dataset, ModelArtifact, Run
from core.engine import EngineError
from core.engine.targets import CROSS_ENTROPY, label_classes
from core.keys import Principal
from core.queues import count_parameters
from core.runs.requests import queue_of as core_queue_of
from core.runs.requests import run_values
from core.settings import Settings
from core.spec import check_compatible, regression_on_classes_problem


def queue_of(body: RunCreate, dataset: Dataset | Any, settings: Any) -> str:
    """``small`` or ``large``: the run's parameters x samples x epochs vs the threshold."""
    return core_queue_of(body, dataset.n_samples, settings)


def new_run_values(
    body: RunCreate,
    dataset: Dataset | Any,
    principal: Principal,
    settings: Settings,
    *,
    name: str | None,
) -> dict[str, Any]:
    """The columns of a new, queued run of ``body`` on ``dataset`` (core.runs.requests
    builds them, for ``POST /runs`` and for a sweep's trials alike)."""
    return run_values(
        body, dataset_id=dataset.id, n_samples=dataset.n_samples, owner=principal.owner,
        api_key_id=principal.key_id, settings=settings, name=name,
    )  # fmt: skip


class _Cache:
    """A small LRU of what was learnt about datasets, by key; thread-safe."""

    def __init__(self, size: int = 256) -> None:
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._size = size
        self._lock = Lock()

    def get(self, key: Any) -> tuple[bool, Any]:
        with self._lock:
            if key not in self._items:
                return False, None
            self._items.move_to_end(key)
            return True, self._items[key]

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._size:
                self._items.popitem(last=False)


_label_problems = _Cache()  # (dataset id, loss, units) -> the problem, or None
_tasks = _Cache()  # dataset id -> "regression" | "classification"


def _dataset_column(dataset: Dataset | Any, column: Any, conn: Connection | None) -> Any:
    """``column`` of ``dataset``: an attribute of its row when it has it (an ORM row's
    session loads a deferred one), else read by id on ``conn``, the caller's connection,
    whose transaction has the row locked against deletion."""
    if isinstance(dataset, Dataset) or hasattr(dataset, column.key):
        return getattr(dataset, column.key)
    assert conn is not None, "a dataset row without the column needs the caller's connection"
    return conn.execute(select(column).where(Dataset.id == dataset.id)).scalar_one()


def _label_problem(
    dataset: Dataset | Any, loss: str, units: int, conn: Connection | None
) -> str | None:
    """Why the class labels of ``dataset``'s one target column cannot train ``units`` outputs
    under ``loss`` (the engine's words), or None when they can."""
    key = (dataset.id, loss, units)
    known, problem = _label_problems.get(key)
    if known:
        return problem
    try:
        y = targets_from_npz_bytes(_dataset_column(dataset, Dataset.data, conn))
        label_classes(y, loss, units)
        problem = None
    except (EngineError, DatasetError) as exc:
        problem = str(exc)
    _label_problems.put(key, problem)
    return problem


def _task_of(dataset: Dataset | Any, conn: Connection | None) -> str:
    known, task = _tasks.get(dataset.id)
    if not known:
        task = _dataset_column(dataset, Dataset.task, conn)
        _tasks.put(dataset.id, task)
    return str(task)


def validate_against(
    body: RunCreate, dataset: Dataset | Any, settings: Any, conn: Connection | None = None
) -> None:
    """422 listing every way ``body`` does not fit ``dataset`` or the service's limits.

    ``dataset`` is a ``Dataset`` row, or any row with its ``id``, ``n_features``,
    ``n_targets`` (and ``task``); what else the rules need is read by id on ``conn``, the
    caller's connection.
    """
    net, cfg = body.network, body.training
    problems: list[str] = []
    last, units = len(net.layers) - 1, net.layers[-1].units
    if net.input_dim != dataset.n_features:
        problems.append(
            f"network.input_dim is {net.input_dim} but dataset {dataset.id} has "
            f"{dataset.n_features} features"
        )
    if cfg.loss in CROSS_ENTROPY and dataset.n_targets == 1:
        # One target column under a cross-entropy loss: its labels decide the outputs.
        problem = _label_problem(dataset, cfg.loss, units, conn)
        if problem is not None:
            problems.append(
                f"dataset {dataset.id}: {problem} (network.layers[{last}].units is {units}, "
                f"training.loss is {cfg.loss})"
            )
    elif units != dataset.n_targets:
        hint = ""
        if dataset.n_targets == 1 and units > 1:
            hint = (
                "; a column of class labels trains one unit per class under a cross-entropy "
                "loss (categorical_crossentropy with a softmax output)"
            )
        problems.append(
            f"network.layers[{last}].units is {units} but dataset "
            f"{dataset.id} has {dataset.n_targets} targets{hint}"
        )
    try:
        check_compatible(net, cfg)
    except ValueError as exc:
        problems.append(str(exc))
    if dataset.n_targets > 1 and net.layers[last].activation != "softmax":  # (else said above)
        problem = regression_on_classes_problem(
            cfg, f"dataset {dataset.id} holds {dataset.n_targets} classes (one-hot targets)"
        )
        if problem is not None and _task_of(dataset, conn) == "classification":
            problems.append(problem)
    n_params = count_parameters(net)
    if n_params > settings.max_parameters:
        problems.append(
            f"network has {n_params} parameters; the limit is {settings.max_parameters} "
            "(BACKPROP_MAX_PARAMETERS)"
        )
    if cfg.epochs > settings.max_epochs:
        problems.append(
            f"training.epochs is {cfg.epochs}; the limit is {settings.max_epochs} "
            "(BACKPROP_MAX_EPOCHS)"
        )
    if cfg.batch_size > settings.max_batch_size:
        problems.append(
            f"training.batch_size is {cfg.batch_size}; the limit is {settings.max_batch_size} "
            "(BACKPROP_MAX_BATCH_SIZE)"
        )
    if cfg.max_runtime_s is not None and cfg.max_runtime_s > settings.max_runtime_s:
        problems.append(
            f"training.max_runtime_s is {cfg.max_runtime_s}; the limit is "
            f"{settings.max_runtime_s} (BACKPROP_MAX_RUNTIME_S)"
        )
    if problems:
        raise HTTPException(422, detail="; ".join(problems))


def check_warm_start(db: Session | Connection, body: RunCreate, owner: str) -> None:
    """422 unless ``training.warm_start`` (if any) names a run of ``owner`` with a stored
    model (succeeded, or cancelled with the weights it had) whose layers have the shapes of
    ``body.network`` and whose standardisation setting is the same."""
    warm = body.training.warm_start
    if warm is None:
        return
    where = "training.warm_start.run_id"
    parent = db.execute(
        select(
            Run.owner, Run.network, Run.training, Run.status, ModelArtifact.run_id.label("model")
        )  # fmt: skip
        .outerjoin(ModelArtifact, ModelArtifact.run_id == Run.id)
        .where(Run.id == warm.run_id)
    ).first()
    if parent is None or parent.owner != owner:
        raise HTTPException(422, detail=f"{where}: no run with id {warm.run_id}")
    if parent.model is None:
        raise HTTPException(
            422, detail=f"{where}: run {warm.run_id} is {parent.status} and has no stored "
            "model to start from (a succeeded run has one, a cancelled one the weights it "
            "had when it stopped)",
        )  # fmt: skip
    theirs = parent.network
    ours = body.network
    if theirs["input_dim"] != ours.input_dim:
        raise HTTPException(
            422, detail=f"{where}: network.input_dim is {ours.input_dim} but run "
            f"{warm.run_id} takes {theirs['input_dim']} inputs",
        )  # fmt: skip
    if len(theirs["layers"]) != len(ours.layers):
        raise HTTPException(
            422, detail=f"{where}: the network has {len(ours.layers)} layers but run "
            f"{warm.run_id} has {len(theirs['layers'])}",
        )  # fmt: skip
    for i, (their_layer, our_layer) in enumerate(zip(theirs["layers"], ours.layers, strict=True)):
        if their_layer["units"] != our_layer.units:
            raise HTTPException(
                422, detail=f"{where}: network.layers[{i}] has {our_layer.units} units but "
                f"layer {i} of run {warm.run_id} has {their_layer['units']}",
            )  # fmt: skip
    standardized = bool(parent.training.get("standardize"))
    if standardized != body.training.standardize:
        raise HTTPException(
            422, detail=f"training.standardize: run {warm.run_id} was trained with "
            f"standardize={str(standardized).lower()}; a warm start must use the same, as its "
            "weights were learned on inputs scaled that way",
        )  # fmt: skip
