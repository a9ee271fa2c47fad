"""What a run request must satisfy before it is stored, and the columns of its new row:
shared by ``POST /runs`` and by sweeps, which create runs too."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from api.schemas import RunCreate
from core.db.models import Dataset, ModelArtifact, Run, RunStatus
from core.keys import Principal
from core.queues import count_parameters, job_size, queue_kind
from core.settings import Settings
from core.spec import check_compatible


def queue_of(body: RunCreate, dataset: Dataset | Any, settings: Any) -> str:
    """``small`` or ``large``: the run's parameters x samples x epochs vs the threshold."""
    size = job_size(count_parameters(body.network), dataset.n_samples, body.training.epochs)
    return queue_kind(size, settings.small_job_threshold)


def new_run_values(
    body: RunCreate,
    dataset: Dataset | Any,
    principal: Principal,
    settings: Settings,
    *,
    name: str | None,
) -> dict[str, Any]:
    """The columns of a new, queued run of ``body`` on ``dataset``: the one place they are
    built, for ``POST /runs`` and for a sweep's trials alike."""
    training = body.training.model_dump(mode="json")
    if training.get("max_runtime_s") is None:
        training["max_runtime_s"] = settings.max_runtime_s
    return {
        "owner": principal.owner,
        "name": name,
        "dataset_id": dataset.id,
        "network": body.network.model_dump(mode="json", exclude_none=True),
        "training": training,
        "status": RunStatus.queued.value,
        "epochs": body.training.epochs,
        "metrics": {"loss": None},
        "callback_url": body.callback_url,
        "webhook_status": "pending" if body.callback_url else None,
        "api_key_id": principal.key_id,
        "enqueued_at": None,  # sent by the dispatcher when a worker has room
        "queue": queue_of(body, dataset, settings),
        "priority": body.priority,
        "parent_run_id": body.training.warm_start.run_id if body.training.warm_start else None,
    }


def validate_against(body: RunCreate, dataset: Dataset | Any, settings: Any) -> None:
    """422 listing every way ``body`` does not fit ``dataset`` or the service's limits."""
    net, cfg = body.network, body.training
    problems: list[str] = []
    if net.input_dim != dataset.n_features:
        problems.append(
            f"network.input_dim is {net.input_dim} but dataset {dataset.id} has "
            f"{dataset.n_features} features"
        )
    if net.layers[-1].units != dataset.n_targets:
        problems.append(
            f"network.layers[{len(net.layers) - 1}].units is {net.layers[-1].units} but dataset "
            f"{dataset.id} has {dataset.n_targets} targets"
        )
    try:
        check_compatible(net, cfg)
    except ValueError as exc:
        problems.append(str(exc))
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
