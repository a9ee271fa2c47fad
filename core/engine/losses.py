"""Loss functions (API.md §3), each with its gradient next to it.

Conventions: ``a`` is the network output ``(n_samples, n_out)``, ``y`` the target of the same
shape (one-hot for categorical cross-entropy), ``z`` the output layer's pre-activation.
``mse``, ``mae`` and ``binary_crossentropy`` average over every element (batch and outputs);
``categorical_crossentropy`` averages ``-sum(y * log a)`` over samples.

``delta`` returns the loss and writes dL/da into ``out``. When the output activation is
``fused_with`` (sigmoid for binary, softmax for categorical cross-entropy) the network calls
``fused_delta`` instead, which writes dL/dz = (a - y) / N directly and computes the loss from the
logits, so that neither log nor exp can overflow. ``s`` is the output layer's scratch space.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .activations import Scratch

# Clipping for the unfused cross-entropies, used only when gradients() is asked for a
# cross-entropy on an output that is not the matching sigmoid/softmax.
_EPS = 1e-12


class Loss:
    """Base class; subclasses register themselves under ``name``."""

    name: ClassVar[str]
    fused_with: ClassVar[str | None] = None

    def value(self, a: np.ndarray, y: np.ndarray, s: Scratch) -> float:
        raise NotImplementedError

    def delta(self, a: np.ndarray, y: np.ndarray, out: np.ndarray, s: Scratch) -> float:
        raise NotImplementedError

    def fused_value(self, z: np.ndarray, a: np.ndarray, y: np.ndarray, s: Scratch) -> float:
        raise NotImplementedError

    def fused_delta(
        self, z: np.ndarray, a: np.ndarray, y: np.ndarray, out: np.ndarray, s: Scratch
    ) -> float:
        loss = self.fused_value(z, a, y, s)
        np.subtract(a, y, out=out)
        out *= 1.0 / self._count(y)
        return loss

    @staticmethod
    def _count(y: np.ndarray) -> int:
        return y.size


class MSE(Loss):
    name = "mse"

    def value(self, a: np.ndarray, y: np.ndarray, s: Scratch) -> float:
        t = s.tmp
        np.subtract(a, y, out=t)
        return float(np.vdot(t, t)) / t.size

    def delta(self, a: np.ndarray, y: np.ndarray, out: np.ndarray, s: Scratch) -> float:
        np.subtract(a, y, out=out)
        loss = float(np.vdot(out, out)) / out.size
        out *= 2.0 / out.size
        return loss


class MAE(Loss):
    name = "mae"

    def value(self, a: np.ndarray, y: np.ndarray, s: Scratch) -> float:
        t = s.tmp
        np.subtract(a, y, out=t)
        np.abs(t, out=t)
        return float(t.sum()) / t.size

    def delta(self, a: np.ndarray, y: np.ndarray, out: np.ndarray, s: Scratch) -> float:
        # The subgradient at a == y is taken as 0 (np.sign), as in PyTorch's L1Loss.
        t = s.tmp
        np.subtract(a, y, out=out)
        np.abs(out, out=t)
        loss = float(t.sum()) / t.size
        np.sign(out, out=out)
        out *= 1.0 / out.size
        return loss


class BinaryCrossEntropy(Loss):
    name = "binary_crossentropy"
    fused_with = "sigmoid"

    def value(self, a: np.ndarray, y: np.ndarray, s: Scratch) -> float:
        p = np.clip(a, _EPS, 1.0 - _EPS)
        return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))

    def delta(self, a: np.ndarray, y: np.ndarray, out: np.ndarray, s: Scratch) -> float:
        p = np.clip(a, _EPS, 1.0 - _EPS)
        out[...] = (p - y) / (p * (1.0 - p) * y.size)
        return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))

    def fused_value(self, z: np.ndarray, a: np.ndarray, y: np.ndarray, s: Scratch) -> float:
        # -[y log sigmoid(z) + (1-y) log(1 - sigmoid(z))] = softplus(z) - y*z
        t = s.tmp
        np.logaddexp(0.0, z, out=t)
        return (float(t.sum()) - float(np.vdot(y, z))) / y.size


class CategoricalCrossEntropy(Loss):
    name = "categorical_crossentropy"
    fused_with = "softmax"

    @staticmethod
    def _count(y: np.ndarray) -> int:
        return int(y.shape[0])

    def value(self, a: np.ndarray, y: np.ndarray, s: Scratch) -> float:
        return float(-np.sum(y * np.log(np.clip(a, _EPS, None)))) / self._count(y)

    def delta(self, a: np.ndarray, y: np.ndarray, out: np.ndarray, s: Scratch) -> float:
        p = np.clip(a, _EPS, None)
        out[...] = -y / (p * y.shape[0])
        return float(-np.sum(y * np.log(p))) / self._count(y)

    def fused_value(self, z: np.ndarray, a: np.ndarray, y: np.ndarray, s: Scratch) -> float:
        # log a = z - (max + log(sum exp(z - max))). Softmax.forward has just left the row
        # maximum in s.row and the row sum of exp(z - max) (>= 1) in s.row2.
        t = s.tmp
        np.log(s.row2, out=s.row2)
        np.add(s.row2, s.row, out=s.row2)
        np.subtract(z, s.row2, out=t)
        return -float(np.vdot(y, t)) / self._count(y)


LOSSES: dict[str, type[Loss]] = {
    cls.name: cls for cls in (MSE, MAE, BinaryCrossEntropy, CategoricalCrossEntropy)
}


def get_loss(name: str) -> Loss:
    """Return a new loss object for ``name`` (a key of ``LOSSES``)."""
    try:
        return LOSSES[name]()
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}") from None
