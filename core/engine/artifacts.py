"""Model artifacts: a trained network as ``.npz`` bytes and back.

The archive holds ``W0, b0, W1, b1, ...`` in the orientation of API.md §2, the feature
standardisation ``x_mean``/``x_std`` when the model has one, and a JSON document ``meta`` with
the format and version, the network spec (without ``initial_weights``), the class labels and
the dtype. Loading never unpickles anything (``allow_pickle=False``).

``model_document`` is the same model as one JSON-able dict (the service's
``GET /runs/{id}/weights``): the keys of ``meta``, ``preprocessing`` and ``layers``.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from core.spec import NetworkSpec

from .errors import EngineError

if TYPE_CHECKING:
    from .network import Network

FORMAT = "backprop-model"
VERSION = 1


def _meta_text(net: Network) -> str:
    """The artifact's ``meta`` as JSON text; ``EngineError`` if the class labels are not
    JSON-able."""
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "dtype": net.dtype.name,
        "spec": net.spec.model_dump(mode="json", exclude={"initial_weights"}),
        "classes": net.classes,
    }
    try:
        # NumPy scalars among the class labels become plain Python values.
        return json.dumps(meta, default=lambda o: o.item() if isinstance(o, np.generic) else o)
    except (TypeError, ValueError) as exc:
        raise EngineError(f"classes must be JSON-able labels: {exc}") from exc


def save_model(net: Network) -> bytes:
    """``net`` -> ``.npz`` bytes."""
    arrays: dict[str, np.ndarray] = {"meta": np.array(_meta_text(net))}
    for i, layer in enumerate(net.layers):
        arrays[f"W{i}"] = layer.W
        arrays[f"b{i}"] = layer.b
    if net.x_mean is not None and net.x_std is not None:
        arrays["x_mean"] = net.x_mean
        arrays["x_std"] = net.x_std
    buf = io.BytesIO()
    # mypy matches **arrays against savez's `allow_pickle: bool` too; no array has that name.
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def model_document(net: Network) -> dict[str, Any]:
    """``net`` as the JSON form of its artifact, plain Python values only::

        {"format": "backprop-model", "version": 1, "dtype": "float64",
         "spec": {...},                  # API.md §2 without initial_weights
         "classes": [...] | None,        # labels of the output columns
         "preprocessing": {"x_mean": [...], "x_std": [...]} | None,   # (n_in,) each
         "layers": [{"W": [[...]], "b": [...]}, ...]}                # (n_in, units), (units,)

    Floats are the stored values (float32 ones widened exactly), so a forward pass over
    this document computes what one over the ``.npz`` computes.
    """
    document: dict[str, Any] = json.loads(_meta_text(net))
    standardised = net.x_mean is not None and net.x_std is not None
    document["preprocessing"] = (
        {"x_mean": np.asarray(net.x_mean).tolist(), "x_std": np.asarray(net.x_std).tolist()}
        if standardised
        else None
    )
    document["layers"] = [{"W": layer.W.tolist(), "b": layer.b.tolist()} for layer in net.layers]
    return document


@dataclass
class ModelParts:
    """What a model artifact holds, before it becomes a ``Network``."""

    spec: NetworkSpec
    dtype: str
    weights: list[dict[str, np.ndarray]]  # [{"W": (n_in, units), "b": (units,)}, ...]
    classes: list[Any] | None
    x_mean: np.ndarray | None  # (n_in,) float64, with x_std, when the model standardises
    x_std: np.ndarray | None


def read_model(data: bytes) -> ModelParts:
    """``.npz`` bytes from ``save_model`` -> their parts; ``EngineError`` if they are not."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        meta = json.loads(str(arrays.pop("meta")))
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError("unknown format or version")
        spec = NetworkSpec.model_validate(meta["spec"])
        weights = [{"W": arrays[f"W{i}"], "b": arrays[f"b{i}"]} for i in range(len(spec.layers))]
        dtype = str(meta["dtype"])
    except Exception as exc:
        raise EngineError(f"not a model artifact: {exc}") from exc
    standardised = "x_mean" in arrays
    return ModelParts(
        spec=spec,
        dtype=dtype,
        weights=weights,
        classes=meta.get("classes"),
        x_mean=arrays["x_mean"].astype(np.float64) if standardised else None,
        x_std=arrays["x_std"].astype(np.float64) if standardised else None,
    )
