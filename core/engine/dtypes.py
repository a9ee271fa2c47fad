"""The two floating-point types the engine computes in."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import EngineError

_DTYPES: dict[str, np.dtype] = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


def as_dtype(dtype: Any) -> np.dtype:
    """``"float32"``/``"float64"`` (or the numpy dtypes) -> ``np.dtype``."""
    key = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if key not in _DTYPES:
        raise EngineError(f"dtype must be 'float32' or 'float64', not {dtype!r}")
    return _DTYPES[key]
