"""Training checkpoints: the full state of an interrupted ``fit`` to bytes and back.

A checkpoint is an ``.npz`` archive (read with ``allow_pickle=False``) holding the flat
parameter vector, the optimiser state arrays, the early-stopping snapshot, the feature
standardisation, and one JSON document (``meta``) with everything scalar: epoch, optimiser
step count, RNG state, early-stopping counters and elapsed time. It holds no history, so its
size is the same at every epoch. ``fit`` resumed from the checkpoint of epoch k finishes with
bit-identical weights to an uninterrupted fit.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np

from .errors import EngineError

FORMAT = "backprop-checkpoint"
VERSION = 1


def dump_checkpoint(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise JSON-able ``meta`` and named ``arrays`` into ``.npz`` bytes."""
    doc = {"format": FORMAT, "version": VERSION, **meta}
    buf = io.BytesIO()
    # mypy matches **arrays against savez's `allow_pickle: bool` too; no array has that name.
    np.savez(buf, meta=np.array(json.dumps(doc)), **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def load_checkpoint(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Inverse of ``dump_checkpoint``; raises ``EngineError`` for anything else."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
        meta = json.loads(str(arrays.pop("meta")))
    except Exception as exc:  # zipfile, ValueError, KeyError, JSON errors alike
        raise EngineError(f"not a training checkpoint: {exc}") from exc
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise EngineError("not a training checkpoint of this engine version")
    return meta, arrays
