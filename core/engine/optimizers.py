"""Optimisers, following PyTorch's update rules (``torch.optim.SGD``, ``Adam``, ``RMSprop``).

An optimiser updates one flat parameter vector ``(n_params,)`` in place from the flat gradient
vector of the same shape, so a step costs a handful of NumPy calls however many layers the
network has. ``step`` may overwrite the gradient vector. Per-parameter state lives in
``state``, a dict of arrays keyed by name, plus the step counter ``t``; ``state_dict`` /
``load_state_dict`` carry both through checkpoints.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np


class Optimizer:
    """Base class; subclasses register themselves under ``name``."""

    name: ClassVar[str]
    # Not a ClassVar: SGD's depends on its config (velocity only with momentum).
    state_names: tuple[str, ...] = ()

    def __init__(self, config: Any, n_params: int, dtype: np.dtype) -> None:
        self.config = config
        self.lr = float(config.learning_rate)
        self.weight_decay = float(config.weight_decay)
        self.t = 0
        self.state = {k: np.zeros(n_params, dtype) for k in self.state_names}
        self._tmp = np.empty(n_params, dtype)

    def step(self, params: np.ndarray, grads: np.ndarray) -> None:
        raise NotImplementedError

    def _decay(self, params: np.ndarray, grads: np.ndarray) -> None:
        # L2 weight decay added to the gradient (coupled, as in PyTorch), on weights and biases.
        if self.weight_decay:
            np.multiply(params, self.weight_decay, out=self._tmp)
            grads += self._tmp

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, **{k: v.copy() for k, v in self.state.items()}}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.t = int(saved["t"])
        for k, v in self.state.items():
            if saved[k].shape != v.shape:
                raise ValueError(f"optimizer state {k!r} has shape {saved[k].shape}, not {v.shape}")
            v[...] = saved[k]


class SGD(Optimizer):
    """``v = momentum * v + g``; ``p -= lr * (g + momentum * v if nesterov else v)``."""

    name = "sgd"

    def __init__(self, config: Any, n_params: int, dtype: np.dtype) -> None:
        self.momentum = float(config.momentum)
        self.nesterov = bool(config.nesterov)
        self.state_names = ("velocity",) if self.momentum else ()
        super().__init__(config, n_params, dtype)

    def step(self, params: np.ndarray, grads: np.ndarray) -> None:
        self.t += 1
        if self.weight_decay:
            self._decay(params, grads)
        update = grads
        if self.momentum:
            v = self.state["velocity"]
            v *= self.momentum
            v += grads
            if self.nesterov:
                np.multiply(v, self.momentum, out=self._tmp)
                grads += self._tmp
            else:
                update = v
        np.multiply(update, self.lr, out=self._tmp)
        params -= self._tmp


class Adam(Optimizer):
    """Adam with bias correction; ``p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)``."""

    name = "adam"
    state_names = ("m", "v")

    def step(self, params: np.ndarray, grads: np.ndarray) -> None:
        c = self.config
        self.t += 1
        if self.weight_decay:
            self._decay(params, grads)
        m, v, tmp = self.state["m"], self.state["v"], self._tmp
        m *= c.beta1
        np.multiply(grads, 1.0 - c.beta1, out=tmp)
        m += tmp
        v *= c.beta2
        np.multiply(grads, grads, out=tmp)
        tmp *= 1.0 - c.beta2
        v += tmp
        bc1 = 1.0 - c.beta1**self.t
        bc2 = 1.0 - c.beta2**self.t
        np.sqrt(v, out=tmp)
        tmp *= 1.0 / math.sqrt(bc2)
        tmp += c.eps
        np.divide(m, tmp, out=tmp)
        tmp *= self.lr / bc1
        params -= tmp


class RMSProp(Optimizer):
    """``v = rho*v + (1-rho)*g^2``; step ``g / (sqrt(v) + eps)``, optionally with momentum."""

    name = "rmsprop"
    state_names = ("square_avg", "momentum_buffer")

    def step(self, params: np.ndarray, grads: np.ndarray) -> None:
        c = self.config
        self.t += 1
        if self.weight_decay:
            self._decay(params, grads)
        v, tmp = self.state["square_avg"], self._tmp
        v *= c.rho
        np.multiply(grads, grads, out=tmp)
        tmp *= 1.0 - c.rho
        v += tmp
        np.sqrt(v, out=tmp)
        tmp += c.eps
        np.divide(grads, tmp, out=tmp)
        if c.momentum:
            buf = self.state["momentum_buffer"]
            buf *= c.momentum
            buf += tmp
            np.multiply(buf, self.lr, out=tmp)
        else:
            tmp *= self.lr
        params -= tmp


OPTIMIZERS: dict[str, type[Optimizer]] = {cls.name: cls for cls in (SGD, Adam, RMSProp)}


def make_optimizer(config: Any, n_params: int, dtype: np.dtype) -> Optimizer:
    """Build the optimiser named by ``config.name`` for a flat vector of ``n_params``."""
    try:
        cls = OPTIMIZERS[config.name]
    except KeyError:
        raise ValueError(
            f"unknown optimizer {config.name!r}; choose from {sorted(OPTIMIZERS)}"
        ) from None
    return cls(config, n_params, dtype)
