"""Weight initialisers. Each draws a ``(fan_in, fan_out)`` matrix from an injected Generator.

Draws are made in float64 and then cast, so a float32 and a float64 network built from the same
seed start from the same (rounded) weights. Biases always start at zero.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np


class Initializer:
    """Base class; subclasses register themselves under ``name``."""

    name: ClassVar[str]

    def __call__(self, rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
        raise NotImplementedError


class GlorotUniform(Initializer):
    """U(-l, l) with ``l = sqrt(6 / (fan_in + fan_out))`` (Glorot & Bengio 2010)."""

    name = "glorot_uniform"

    def __call__(self, rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, size=(fan_in, fan_out))


class GlorotNormal(Initializer):
    """N(0, 2 / (fan_in + fan_out)), not truncated."""

    name = "glorot_normal"

    def __call__(self, rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
        return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=(fan_in, fan_out))


class HeUniform(Initializer):
    """U(-l, l) with ``l = sqrt(6 / fan_in)`` (He et al. 2015)."""

    name = "he_uniform"

    def __call__(self, rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
        limit = math.sqrt(6.0 / fan_in)
        return rng.uniform(-limit, limit, size=(fan_in, fan_out))


class HeNormal(Initializer):
    """N(0, 2 / fan_in), not truncated."""

    name = "he_normal"

    def __call__(self, rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=(fan_in, fan_out))


class Zeros(Initializer):
    name = "zeros"

    def __call__(self, rng: np.random.Generator, fan_in: int, fan_out: int) -> np.ndarray:
        return np.zeros((fan_in, fan_out))


INITIALIZERS: dict[str, type[Initializer]] = {
    cls.name: cls for cls in (GlorotUniform, GlorotNormal, HeUniform, HeNormal, Zeros)
}


def get_initializer(name: str) -> Initializer:
    """Return the initialiser registered under ``name``."""
    try:
        return INITIALIZERS[name]()
    except KeyError:
        raise ValueError(
            f"unknown initializer {name!r}; choose from {sorted(INITIALIZERS)}"
        ) from None
