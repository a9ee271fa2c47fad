"""Weights and predictions of a run's stored model (a succeeded run's, or the partial model
of a cancelled one): the loaded-model cache, export (JSON, NPZ, ONNX) and
``POST /runs/{id}/predict``."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from threading import Lock
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import OwnerDep, ResourceId, SessionDep, get_owned, not_found
from api.schemas import PredictIn, PredictOut, WeightsOut, error_responses
from core.db.models import ModelArtifact, Run, RunStatus
from core.engine import Network, model_document

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])


@dataclass(frozen=True)
class StoredModel:
    """A run's stored model: artifact bytes, the epoch of its weights, and whether they are
    a cancelled run's (``partial``: it stopped before its last epoch)."""

    data: bytes
    epoch: int | None
    partial: bool


def stored_model(db: Session, run: Run) -> StoredModel:
    """The engine's model artifact of a run, as stored (``.npz`` bytes that
    ``core.engine.load_model`` reads): a succeeded run's, or the weights a cancelled run had
    when it stopped. 409 while it has none."""
    row = None
    if run.status in (RunStatus.succeeded.value, RunStatus.cancelled.value):
        row = db.execute(
            select(ModelArtifact.data, ModelArtifact.epoch, ModelArtifact.partial).where(
                ModelArtifact.run_id == run.id
            )
        ).first()
    if row is None:
        raise HTTPException(
            409, detail=f"run {run.id} is {run.status} and has no stored model: a succeeded "
            "run has one, a run cancelled after its first epoch the weights it stopped with",
        )  # fmt: skip
    return StoredModel(row.data, row.epoch, bool(row.partial))


@dataclass(frozen=True)
class LoadedModel:
    """A stored model, loaded: the network, and where its weights come from."""

    net: Network
    epoch: int | None
    partial: bool


class ModelCache:
    """Loaded models by run id; artifacts never change once written."""

    def __init__(self, size: int = 32) -> None:
        self._items: OrderedDict[str, LoadedModel] = OrderedDict()
        self._size = size
        self._lock = Lock()

    def get(self, db: Session, run: Run) -> Network:
        """The run's model, loaded once; 409 while it has none."""
        return self.get_loaded(db, run).net

    def get_loaded(self, db: Session, run: Run) -> LoadedModel:
        """The run's model with the epoch and partiality of its weights, loaded once."""
        with self._lock:
            if run.id in self._items:
                self._items.move_to_end(run.id)
                return self._items[run.id]
        stored = stored_model(db, run)
        loaded = LoadedModel(Network.load(stored.data), stored.epoch, stored.partial)
        with self._lock:
            self._items[run.id] = loaded
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return loaded

    def get_by_id(self, db: Session, run_id: str) -> LoadedModel:
        """The model of the run with this id, loaded once (its row is read only then): for
        callers that found the id elsewhere, as a registered model's version. 409 when the
        run has none (404 when it is gone)."""
        with self._lock:
            if run_id in self._items:
                self._items.move_to_end(run_id)
                return self._items[run_id]
        run = db.get(Run, run_id)
        if run is None:
            raise not_found(Run, run_id)
        return self.get_loaded(db, run)

    def drop(self, run_id: str) -> None:
        with self._lock:
            self._items.pop(run_id, None)


model_cache = ModelCache()

#: The 409 of the routes that need a trained model.
NOT_TRAINED = (
    409,
    "The run has no stored model (yet): a succeeded run has one, a run cancelled after its "
    "first epoch the weights it stopped with (`partial`).",
)


@router.get(
    "/{run_id}/weights",
    response_model=WeightsOut,
    summary="Download a trained run's weights (JSON, NPZ or ONNX)",
    responses={
        200: {"content": {"application/octet-stream": {}, "application/onnx": {}}},
        **error_responses(401, 404, NOT_TRAINED, 422, 503),
    },
)
def get_weights(
    run_id: ResourceId,
    db: SessionDep,
    owner: OwnerDep,
    format: Annotated[str, Query(pattern="^(json|npz|onnx)$")] = "json",
) -> Any:
    """A succeeded run's model: everything a forward pass needs, without this service.
    `W` is `(inputs, units)` as in API.md §2, so column j holds the weights into unit j.

    - `format=json` (default): `{"format": "backprop-model", "version": 1, "dtype",
      "spec", "classes", "preprocessing": {"x_mean", "x_std"} | null, "layers": [{"W",
      "b"}, ...]}`. `spec` is the network spec (without `initial_weights`), `classes` the
      labels of the output columns (null for regression), `preprocessing` the feature
      standardisation that `/predict` applies first (`(x - x_mean) / x_std`).
    - `format=npz`: the engine's model artifact as stored: arrays `W0, b0, W1, b1, ...`,
      `x_mean` and `x_std` when the run standardised, and `meta`, a JSON text with the
      same `format`, `version`, `dtype`, `spec` and `classes` (loads with
      `allow_pickle=False`; `core.engine.load_model` reads it back).
    - `format=onnx`: an ONNX model (input `input`, output `output`, float32) that computes
      what `/predict` computes, the stored standardisation included.

    docs/models.md shows the forward pass in plain NumPy.
    """
    run = get_owned(db, Run, owner, run_id)
    if format == "npz":
        stored = stored_model(db, run)
        return Response(
            stored.data,
            media_type="application/octet-stream",
            headers={
                "Content-Disposition": f'attachment; filename="run-{run_id}-weights.npz"',
                **_provenance_headers(stored.epoch, stored.partial),
            },
        )
    loaded = model_cache.get_loaded(db, run)
    net = loaded.net
    if format == "onnx":
        from api.onnx_export import network_to_onnx  # imports onnx only when asked for

        return Response(
            network_to_onnx(net),
            media_type="application/onnx",
            headers={
                "Content-Disposition": f'attachment; filename="run-{run_id}.onnx"',
                **_provenance_headers(loaded.epoch, loaded.partial),
            },
        )
    return {**model_document(net), "epoch": loaded.epoch, "partial": loaded.partial}


def _provenance_headers(epoch: int | None, partial: bool) -> dict[str, str]:
    """Where a downloaded file's weights come from, for the formats without a JSON body."""
    headers = {"X-Backprop-Partial": "true" if partial else "false"}
    if epoch is not None:
        headers["X-Backprop-Epoch"] = str(epoch)
    return headers


@router.post(
    "/{run_id}/predict", response_model=PredictOut, response_model_exclude_none=True,
    summary="Predict with a trained run",
    responses=error_responses(
        (400, "Malformed request: the body is not JSON, or nests deeper than "
         "BACKPROP_MAX_JSON_DEPTH."),
        401, 404, NOT_TRAINED, 413,
        (422, "Invalid request, e.g. `inputs` empty, not finite numbers, of the wrong "
         "width for the network, or so large that the outputs are not finite."),
        503,
    ),
)  # fmt: skip
def predict(run_id: ResourceId, body: PredictIn, db: SessionDep, owner: OwnerDep) -> dict[str, Any]:
    """The outputs of a succeeded run's network for `inputs` (one row per sample, as many
    values as the network's `input_dim`), with the run's feature standardisation applied
    first when it trained with one. A classification run also answers `labels`: the class
    of each row.
    """
    return predict_with(model_cache.get_loaded(db, get_owned(db, Run, owner, run_id)), body)


def predict_with(loaded: LoadedModel, body: PredictIn) -> dict[str, Any]:
    """The answer of a predict route (this one, and a registered model's): `outputs`, and
    `labels` for a classifier, and `partial` with `epoch` for a cancelled run's weights; 422
    for inputs of the wrong width or not finite."""
    net = loaded.net
    n_in = net.spec.input_dim
    for i, row in enumerate(body.inputs):
        if len(row) != n_in:
            raise HTTPException(
                422, detail=f"inputs[{i}] has {len(row)} values; the network takes {n_in}"
            )
    X = np.asarray(body.inputs, dtype=np.float64)
    if not np.all(np.isfinite(X)):
        raise HTTPException(422, detail="inputs: every value must be a finite number")
    outputs = np.asarray(net.predict(X), dtype=np.float64)
    if not np.all(np.isfinite(outputs)):
        raise HTTPException(422, detail="inputs: values too large; the outputs are not finite")
    result: dict[str, Any] = {"outputs": outputs.tolist()}
    if net.classes is not None:
        result["labels"] = net.labels_of(outputs)
    if loaded.partial:  # a cancelled run's weights: said, with their epoch
        result["partial"], result["epoch"] = True, loaded.epoch
    return result
