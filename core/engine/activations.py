"""Activation functions: each forward sits next to its derivative (micrograd style).

Every method works in place on preallocated arrays of shape ``(n_samples, units)`` so that the
training loop allocates nothing per step. ``forward(z, a, s)`` writes ``f(z)`` into ``a``;
``backward(z, a, d, s)`` turns ``d`` from dL/da into dL/dz in place, given both the
pre-activation ``z`` and the output ``a``. ``s`` is the layer's scratch space (``s.tmp`` has the
shape of ``z``; ``s.row`` and ``s.row2`` are ``(n_samples, 1)``).
"""

from __future__ import annotations

from typing import ClassVar, Protocol

import numpy as np


class Scratch(Protocol):
    """The scratch space of a layer (``LayerWorkspace``, or ``_Scratch`` below)."""

    @property
    def tmp(self) -> np.ndarray: ...  # the shape of ``z``

    @property
    def row(self) -> np.ndarray: ...  # (n_samples, 1)

    @property
    def row2(self) -> np.ndarray: ...  # (n_samples, 1)


class Activation:
    """Base class; subclasses register themselves under ``name``."""

    name: ClassVar[str]
    #: True when ``a`` may simply be ``z`` (no separate output buffer).
    aliases_input: ClassVar[bool] = False

    def forward(self, z: np.ndarray, a: np.ndarray, s: Scratch) -> None:
        raise NotImplementedError

    def backward(self, z: np.ndarray, a: np.ndarray, d: np.ndarray, s: Scratch) -> None:
        raise NotImplementedError

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """Allocating convenience form of ``forward`` for a ``(n_samples, units)`` array."""
        z = np.asarray(z)
        if self.aliases_input:
            return z.copy()
        a = np.empty_like(z)
        self.forward(z, a, _Scratch(z))
        return a


class _Scratch:
    def __init__(self, z: np.ndarray) -> None:
        self.tmp = np.empty_like(z)
        self.row = np.empty((z.shape[0], 1), dtype=z.dtype)
        self.row2 = np.empty((z.shape[0], 1), dtype=z.dtype)


class Identity(Activation):
    name = "identity"
    aliases_input = True

    def forward(self, z: np.ndarray, a: np.ndarray, s: Scratch) -> None:
        pass

    def backward(self, z: np.ndarray, a: np.ndarray, d: np.ndarray, s: Scratch) -> None:
        pass


class Sigmoid(Activation):
    """``1 / (1 + exp(-z))``; exp overflows to inf for very negative z, giving exactly 0."""

    name = "sigmoid"

    def forward(self, z: np.ndarray, a: np.ndarray, s: Scratch) -> None:
        np.negative(z, out=a)
        np.exp(a, out=a)
        a += 1.0
        np.reciprocal(a, out=a)

    def backward(self, z: np.ndarray, a: np.ndarray, d: np.ndarray, s: Scratch) -> None:
        t = s.tmp
        np.subtract(1.0, a, out=t)
        t *= a
        d *= t


class Tanh(Activation):
    name = "tanh"

    def forward(self, z: np.ndarray, a: np.ndarray, s: Scratch) -> None:
        np.tanh(z, out=a)

    def backward(self, z: np.ndarray, a: np.ndarray, d: np.ndarray, s: Scratch) -> None:
        t = s.tmp
        np.multiply(a, a, out=t)
        np.subtract(1.0, t, out=t)
        d *= t


class ReLU(Activation):
    name = "relu"

    def forward(self, z: np.ndarray, a: np.ndarray, s: Scratch) -> None:
        np.maximum(z, 0.0, out=a)

    def backward(self, z: np.ndarray, a: np.ndarray, d: np.ndarray, s: Scratch) -> None:
        # The derivative at exactly 0 is taken as 0 (as in PyTorch).
        t = s.tmp
        np.greater(z, 0.0, out=t)
        d *= t


class LeakyReLU(Activation):
    """``z`` for z > 0, ``alpha * z`` otherwise, with PyTorch's default ``alpha = 0.01``."""

    name = "leaky_relu"
    alpha: ClassVar[float] = 0.01

    def forward(self, z: np.ndarray, a: np.ndarray, s: Scratch) -> None:
        np.multiply(z, self.alpha, out=a)
        np.maximum(z, a, out=a)

    def backward(self, z: np.ndarray, a: np.ndarray, d: np.ndarray, s: Scratch) -> None:
        t = s.tmp
        np.greater(z, 0.0, out=t)
        t *= 1.0 - self.alpha
        t += self.alpha
        d *= t


class ELU(Activation):
    """``z`` for z > 0, ``exp(z) - 1`` otherwise (alpha = 1)."""

    name = "elu"

    def forward(self, z: np.ndarray, a: np.ndarray, s: Scratch) -> None:
        np.minimum(z, 0.0, out=a)
        np.expm1(a, out=a)
        # For z <= 0, expm1(z) >= z, so the maximum picks the right branch on both sides.
        np.maximum(z, a, out=a)

    def backward(self, z: np.ndarray, a: np.ndarray, d: np.ndarray, s: Scratch) -> None:
        t = s.tmp
        np.minimum(a, 0.0, out=t)
        t += 1.0
        d *= t


class Softplus(Activation):
    """``log(1 + exp(z))``, computed as ``logaddexp(0, z)`` so it never overflows."""

    name = "softplus"

    def forward(self, z: np.ndarray, a: np.ndarray, s: Scratch) -> None:
        np.logaddexp(0.0, z, out=a)

    def backward(self, z: np.ndarray, a: np.ndarray, d: np.ndarray, s: Scratch) -> None:
        # softplus'(z) = sigmoid(z) = 1 - exp(-softplus(z)) = -expm1(-a).
        t = s.tmp
        np.negative(a, out=t)
        np.expm1(t, out=t)
        d *= t
        np.negative(d, out=d)


class Softmax(Activation):
    """Row-wise softmax with the row maximum subtracted first."""

    name = "softmax"

    def forward(self, z: np.ndarray, a: np.ndarray, s: Scratch) -> None:
        np.maximum.reduce(z, axis=1, keepdims=True, out=s.row)
        np.subtract(z, s.row, out=a)
        np.exp(a, out=a)
        np.add.reduce(a, axis=1, keepdims=True, out=s.row2)
        a /= s.row2

    def backward(self, z: np.ndarray, a: np.ndarray, d: np.ndarray, s: Scratch) -> None:
        # dz = a * (d - sum(d * a)) per row: the Jacobian-vector product of softmax.
        t = s.tmp
        np.multiply(d, a, out=t)
        np.add.reduce(t, axis=1, keepdims=True, out=s.row)
        d -= s.row
        d *= a


ACTIVATIONS: dict[str, type[Activation]] = {
    cls.name: cls for cls in (Identity, Sigmoid, Tanh, ReLU, LeakyReLU, ELU, Softplus, Softmax)
}


def get_activation(name: str) -> Activation:
    """Return a new activation object for ``name`` (a key of ``ACTIVATIONS``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose from {sorted(ACTIVATIONS)}"
        ) from None
