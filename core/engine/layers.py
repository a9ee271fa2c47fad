"""The dense layer and its per-batch-size workspace.

A ``Dense`` layer owns no memory of its own: its parameters ``W`` ``(n_in, units)`` and ``b``
``(units,)`` and their gradients ``dW``, ``db`` are views into the network's flat parameter and
gradient vectors (so one optimiser call updates every layer). ``params``/``grads`` expose them
as dicts keyed ``"W"``, ``"b"`` (numpy-ml style).

A ``LayerWorkspace`` holds the preallocated arrays one forward/backward pass of ``n`` samples
needs: ``z`` (pre-activation), ``a`` (output; the same array as ``z`` for identity), ``d``
(dL/da, turned in place into dL/dz) and scratch space for the activation and the loss.
"""

from __future__ import annotations

import numpy as np

from .activations import Activation

# Parameter blocks start at multiples of this many elements (64 bytes in float32).
_ALIGN = 16


def _aligned(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


class Dense:
    """Fully connected layer ``a_out = activation(a_in @ W + b)``."""

    def __init__(self, n_in: int, units: int, activation: Activation) -> None:
        self.n_in = n_in
        self.units = units
        self.activation = activation
        self.W = self.b = self.dW = self.db = np.empty(0)

    @property
    def size(self) -> int:
        """Number of parameters (``n_in * units + units``)."""
        return self.n_in * self.units + self.units

    def flat_size(self) -> int:
        """Length this layer occupies in the flat vectors, padding included."""
        return _aligned(self.n_in * self.units) + _aligned(self.units)

    def bind(self, params: np.ndarray, grads: np.ndarray, offset: int) -> int:
        """Point W, b, dW, db into the flat vectors at ``offset``; return the end offset."""
        w_end = offset + self.n_in * self.units
        b_start = offset + _aligned(self.n_in * self.units)
        shape = (self.n_in, self.units)
        self.W = params[offset:w_end].reshape(shape)
        self.dW = grads[offset:w_end].reshape(shape)
        self.b = params[b_start : b_start + self.units]
        self.db = grads[b_start : b_start + self.units]
        return b_start + _aligned(self.units)

    @property
    def params(self) -> dict[str, np.ndarray]:
        return {"W": self.W, "b": self.b}

    @property
    def grads(self) -> dict[str, np.ndarray]:
        return {"W": self.dW, "b": self.db}

    def forward(self, x: np.ndarray, ws: LayerWorkspace) -> np.ndarray:
        """``x`` ``(n, n_in)`` -> ``ws.a`` ``(n, units)``."""
        np.matmul(x, self.W, out=ws.z)
        ws.z += self.b
        self.activation.forward(ws.z, ws.a, ws)
        return ws.a

    def backward(self, x: np.ndarray, ws: LayerWorkspace, dx: np.ndarray | None) -> None:
        """Given dL/dz in ``ws.d``, fill ``dW``, ``db`` and, unless ``dx`` is None, dL/dx."""
        np.matmul(x.T, ws.d, out=self.dW)
        if ws.d_row is not None:
            # One sample: the column sum is that row; a copy costs a third of a reduce.
            np.copyto(self.db, ws.d_row)
        else:
            np.add.reduce(ws.d, axis=0, out=self.db)
        if dx is not None:
            np.matmul(ws.d, self.W.T, out=dx)


class LayerWorkspace:
    """Preallocated arrays for one layer and a batch of ``n`` samples."""

    def __init__(self, n: int, layer: Dense, dtype: np.dtype) -> None:
        shape = (n, layer.units)
        self.z = np.empty(shape, dtype)
        self.a = self.z if layer.activation.aliases_input else np.empty(shape, dtype)
        self.d = np.empty(shape, dtype)
        self.d_row = self.d[0] if n == 1 else None
        self.tmp = np.empty(shape, dtype)
        self.row = np.empty((n, 1), dtype)
        self.row2 = np.empty((n, 1), dtype)
