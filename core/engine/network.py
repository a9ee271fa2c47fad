"""The ``Network``: a stack of dense layers over one flat parameter vector.

This module builds a network from a spec, runs it forward, and computes the loss and its
gradient by backpropagation. Training (``fit``) lives in ``training.py``, checkpoints in
``checkpoint.py`` and model files in ``artifacts.py``; ``Network`` only forwards to them.

Orientation (API.md §2): inputs are rows, ``X`` is ``(n_samples, n_in)``, a layer's ``W`` is
``(n_in, units)`` and its ``b`` is ``(units,)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from core.spec import NetworkSpec, TrainingConfig

from .activations import Activation, get_activation
from .artifacts import read_model, save_model
from .dtypes import as_dtype
from .errors import EngineError
from .initializers import get_initializer
from .layers import Dense, LayerWorkspace
from .losses import Loss, get_loss
from .targets import encode_labels, one_hot
from .training import fit

# Rows per chunk when running forward over many samples outside training.
_CHUNK = 4096


class Workspace:
    """Everything one pass over a batch of ``n`` samples writes to, allocated once."""

    def __init__(self, n: int, net: Network) -> None:
        dtype = net.dtype
        self.n = n
        self.x = np.empty((n, net.n_in), dtype)
        self.y = np.empty((n, net.n_out), dtype)
        self.labels = np.empty(n, np.intp)
        self.layers = [LayerWorkspace(n, layer, dtype) for layer in net.layers]
        # Per layer, in backward order: (layer, its workspace, its input, the buffer that
        # receives dL/d(input) or None for the first layer, the previous activation).
        self.backward_plan: list[
            tuple[Dense, LayerWorkspace, np.ndarray, LayerWorkspace | None, Activation | None]
        ] = []
        for i in range(len(net.layers) - 1, -1, -1):
            x_in = self.x if i == 0 else self.layers[i - 1].a
            prev = self.layers[i - 1] if i else None
            prev_act = net.layers[i - 1].activation if i else None
            self.backward_plan.append((net.layers[i], self.layers[i], x_in, prev, prev_act))


class Network:
    """A feed-forward network of dense layers (see the module docstring for shapes)."""

    def __init__(self, spec: NetworkSpec, dtype: Any = "float64") -> None:
        self.spec = spec
        self._dtype = as_dtype(dtype)
        self.layers: list[Dense] = []
        n_in = spec.input_dim
        for layer_spec in spec.layers:
            act = get_activation(layer_spec.activation)
            self.layers.append(Dense(n_in, layer_spec.units, act))
            n_in = layer_spec.units
        total = sum(layer.flat_size() for layer in self.layers)
        self._params = np.zeros(total, self._dtype)
        self._grads = np.zeros(total, self._dtype)
        self._bind()
        #: Class labels of the outputs (JSON-able), set by the caller; used by predict_labels.
        self.classes: list[Any] | None = None
        #: Feature standardisation ``(n_in,)`` float64 arrays, set by fit when asked to.
        self.x_mean: np.ndarray | None = None
        self.x_std: np.ndarray | None = None
        #: After fit: the epoch whose weights the network holds — the last one trained, or
        #: the best one when early stopping restored it.
        self.weights_epoch: int | None = None

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_spec(
        cls, spec: dict[str, Any] | NetworkSpec, *, seed: int = 0, dtype: str = "float64"
    ) -> Network:
        """Validate ``spec`` (API.md §2) and initialise weights from ``default_rng(seed)``."""
        if not isinstance(spec, NetworkSpec):
            spec = NetworkSpec.model_validate(spec)
        net = cls(spec, dtype)
        if spec.initial_weights is not None:
            for layer, given in zip(net.layers, spec.initial_weights, strict=True):
                layer.W[...] = np.asarray(given.W, dtype=np.float64)
                if given.b is not None:
                    layer.b[...] = np.asarray(given.b, dtype=np.float64)
        else:
            init = get_initializer(spec.init)
            rng = np.random.default_rng(seed)
            for layer in net.layers:
                layer.W[...] = init(rng, layer.n_in, layer.units)
        return net

    def _bind(self) -> None:
        offset = 0
        for layer in self.layers:
            offset = layer.bind(self._params, self._grads, offset)
        self._workspaces: dict[int, Workspace] = {}

    def workspace(self, n: int) -> Workspace:
        """The cached workspace for batches of ``n`` samples (training only: not thread-safe)."""
        ws = self._workspaces.get(n)
        if ws is None:
            if len(self._workspaces) >= 8:
                self._workspaces.clear()
            ws = self._workspaces[n] = Workspace(n, self)
        return ws

    # -- properties ---------------------------------------------------------------------

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    def astype(self, dtype: Any) -> Network:
        """Convert the parameters to ``dtype`` in place; returns ``self``."""
        dtype = as_dtype(dtype)
        if dtype != self._dtype:
            self._dtype = dtype
            self._params = self._params.astype(dtype)
            self._grads = np.zeros_like(self._params)
            self._bind()
        return self

    @property
    def n_in(self) -> int:
        return self.spec.input_dim

    @property
    def n_out(self) -> int:
        return self.layers[-1].units

    @property
    def n_parameters(self) -> int:
        return sum(layer.size for layer in self.layers)

    @property
    def weights(self) -> list[dict[str, np.ndarray]]:
        """Copies of every layer's ``{"W": (n_in, units), "b": (units,)}``."""
        return [{"W": layer.W.copy(), "b": layer.b.copy()} for layer in self.layers]

    @weights.setter
    def weights(self, values: list[dict[str, Any]]) -> None:
        if len(values) != len(self.layers):
            raise EngineError(f"expected weights for {len(self.layers)} layers, got {len(values)}")
        for i, (layer, given) in enumerate(zip(self.layers, values, strict=True)):
            for key, target in (("W", layer.W), ("b", layer.b)):
                arr = np.asarray(given[key])
                if arr.shape != target.shape:
                    raise EngineError(
                        f"weights[{i}].{key}: expected shape {target.shape}, got {arr.shape}"
                    )
                target[...] = arr

    # -- forward ------------------------------------------------------------------------

    def _check_X(self, X: Any) -> np.ndarray:
        x = np.asarray(X)
        if x.ndim == 1 and self.n_in == 1:
            x = x.reshape(-1, 1)
        elif x.ndim == 1 and x.shape[0] == self.n_in:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise EngineError(f"X must have shape (n_samples, {self.n_in}), got {x.shape}")
        if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
            raise EngineError(f"X must be numeric, got dtype {x.dtype}")
        return x

    def _forward_ws(self, ws: Workspace) -> np.ndarray:
        x = ws.x
        for layer, lw in zip(self.layers, ws.layers, strict=True):
            x = layer.forward(x, lw)
        return x

    def _run(self, X: np.ndarray, standardize: bool) -> np.ndarray:
        X = self._check_X(X)
        n = X.shape[0]
        out = np.empty((n, self.n_out), self._dtype)
        if n == 0:
            return out
        mean = std = None
        if standardize and self.x_mean is not None:
            assert self.x_std is not None, "fit sets x_mean and x_std together"
            mean = self.x_mean.astype(self._dtype)
            std = self.x_std.astype(self._dtype)
        with np.errstate(over="ignore", under="ignore"):
            for start in range(0, n, _CHUNK):
                stop = min(start + _CHUNK, n)
                # A private workspace, so that threads may predict with one shared model.
                ws = Workspace(stop - start, self)
                ws.x[...] = X[start:stop]
                if mean is not None:
                    ws.x -= mean
                    ws.x /= std
                out[start:stop] = self._forward_ws(ws)
        return out

    def forward(self, X: np.ndarray) -> np.ndarray:
        """Raw network output ``(n_samples, units_last)`` for ``X`` ``(n_samples, n_in)``."""
        return self._run(X, standardize=False)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Like ``forward``, after applying the standardisation stored by ``fit`` (if any)."""
        return self._run(X, standardize=True)

    def predict_labels(self, X: np.ndarray) -> list[Any]:
        """Class label per sample: argmax of the outputs, or ``output > 0.5`` for one output.

        Labels come from ``self.classes`` when set (for one output, ``classes[1]`` is the
        positive class), else they are the integer class indices.
        """
        return self.labels_of(self.predict(X))

    def labels_of(self, outputs: np.ndarray) -> list[Any]:
        """Class labels of already computed ``outputs`` ``(n_samples, n_out)``."""
        out = outputs
        idx = (out[:, 0] > 0.5).astype(np.intp) if self.n_out == 1 else np.argmax(out, axis=1)
        indices: list[int] = idx.tolist()
        if self.classes is None:
            return indices
        return [self.classes[i] for i in indices]

    def evaluate(self, X: Any, Y: Any, loss: str) -> tuple[float, np.ndarray]:
        """The mean ``loss`` on ``(X, Y)`` and the outputs ``(n_samples, units_last)``.

        Computed as ``fit`` computes ``val_loss``: the stored standardisation applied, in the
        model dtype, in chunks, cross-entropy in its fused form after its matching output
        activation. ``Y`` is ``(n_samples, units_last)`` (or taken as ``fit`` takes it); the
        outputs are those of ``predict``.
        """
        X = self._check_X(X)
        n = X.shape[0]
        if n == 0:
            raise EngineError("X has no samples")
        targets = self.prepare_targets(Y, loss, n)
        loss_obj = get_loss(loss)
        fused = self.is_fused(loss_obj)
        out = np.empty((n, self.n_out), self._dtype)
        mean = std = None
        if self.x_mean is not None:
            assert self.x_std is not None, "fit sets x_mean and x_std together"
            mean, std = self.x_mean.astype(self._dtype), self.x_std.astype(self._dtype)
        total = 0.0
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            for start in range(0, n, _CHUNK):
                stop = min(start + _CHUNK, n)
                ws = Workspace(stop - start, self)  # private: threads may share the model
                ws.x[...] = X[start:stop]
                if mean is not None:
                    ws.x -= mean
                    ws.x /= std
                ws.y[...] = targets[start:stop]
                out[start:stop] = self._forward_ws(ws)
                last = ws.layers[-1]
                if fused:
                    value = loss_obj.fused_value(last.z, last.a, ws.y, last)
                else:
                    value = loss_obj.value(last.a, ws.y, last)
                # Every loss is a mean over rows (times a constant), so chunks weigh by rows.
                total += value * (stop - start)
        return total / n, out

    # -- loss and gradients -------------------------------------------------------------

    def is_fused(self, loss: Loss) -> bool:
        """True when the loss is computed from the logits of its matching output activation."""
        return loss.fused_with is not None and loss.fused_with == self.layers[-1].activation.name

    def _backprop(self, ws: Workspace, loss: Loss, fused: bool) -> float:
        """Forward ``ws.x``, compare with ``ws.y``, backpropagate into the flat gradient."""
        self._forward_ws(ws)
        last = ws.layers[-1]
        if fused:
            value = loss.fused_delta(last.z, last.a, ws.y, last.d, last)
        else:
            value = loss.delta(last.a, ws.y, last.d, last)
            self.layers[-1].activation.backward(last.z, last.a, last.d, last)
        for layer, lw, x_in, prev, prev_act in ws.backward_plan:
            if prev is None:
                layer.backward(x_in, lw, None)
            else:
                layer.backward(x_in, lw, prev.d)
                assert prev_act is not None, "set together with prev"
                prev_act.backward(prev.z, prev.a, prev.d, prev)
        return value

    def prepare_targets(
        self, Y: Any, loss: str, n: int, *, record_classes: bool = False
    ) -> np.ndarray:
        """Targets as ``(n, units_last)`` in the model dtype.

        With a cross-entropy loss, one column of class labels is encoded by class (one-hot,
        or 0/1 for one sigmoid output; the rule is in ``targets.py``). ``record_classes``
        makes the labels this network's ``classes``; class indices ``0 … k-1`` keep the
        names the caller gave them in ``classes``, if any.
        """
        k = self.n_out
        encoding = encode_labels(Y, loss, k)
        if encoding is None:
            y = np.asarray(Y)
        elif k == 1:
            y = encoding.codes.astype(self._dtype).reshape(-1, 1)
        else:
            y = one_hot(encoding.codes, k, self._dtype)
        if record_classes and encoding is not None:
            named = encoding.indices and self.classes is not None and len(self.classes) == k
            if not named:
                self.classes = encoding.classes
        if y.ndim == 1 and k == 1:
            y = y.reshape(-1, 1)
        if y.ndim != 2 or y.shape != (n, k):
            raise EngineError(f"Y must have shape ({n}, {k}), got {y.shape}")
        if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
            raise EngineError(f"Y must be numeric, got dtype {y.dtype}")
        return y.astype(self._dtype, copy=False)

    def gradients(
        self, X: np.ndarray, Y: np.ndarray, loss: str = "mse"
    ) -> tuple[float, list[dict[str, np.ndarray]]]:
        """Loss on ``(X, Y)`` and its gradient ``[{"W": dW, "b": db}, ...]`` (shapes of weights).

        No standardisation is applied. Cross-entropy after its matching output activation is
        computed in the fused form; otherwise its plain (clipped) form.
        """
        X = self._check_X(X)
        n = X.shape[0]
        if n == 0:
            raise EngineError("X has no samples")
        loss_obj = get_loss(loss)
        ws = Workspace(n, self)
        ws.x[...] = X
        ws.y[...] = self.prepare_targets(Y, loss, n)
        with np.errstate(over="ignore", under="ignore"):
            value = self._backprop(ws, loss_obj, self.is_fused(loss_obj))
        return value, [{"W": layer.dW.copy(), "b": layer.db.copy()} for layer in self.layers]

    # -- training and persistence (implemented in sibling modules) ----------------------

    def fit(
        self,
        X: np.ndarray,
        Y: np.ndarray,
        training: dict[str, Any] | TrainingConfig,
        callback: Callable[[dict[str, Any]], None] | None = None,
        *,
        should_stop: Callable[[], bool] | None = None,
        checkpoint_every: int = 0,
        checkpoint_due: Callable[[int], bool] | None = None,
        on_checkpoint: Callable[[int, bytes], None] | None = None,
        resume_from: bytes | None = None,
    ) -> list[dict[str, Any]]:
        """Train on ``X`` ``(n, n_in)`` and ``Y`` ``(n, units_last)``, or one column of class
        labels under a cross-entropy loss (which then sets ``classes``); see ``training.fit``."""
        return fit(
            self,
            X,
            Y,
            training,
            callback,
            should_stop=should_stop,
            checkpoint_every=checkpoint_every,
            checkpoint_due=checkpoint_due,
            on_checkpoint=on_checkpoint,
            resume_from=resume_from,
        )

    def save(self) -> bytes:
        """The model as ``.npz`` bytes: weights, standardisation, classes and spec."""
        return save_model(self)

    @classmethod
    def load(cls, data: bytes) -> Network:
        """Inverse of ``save`` (loaded with ``allow_pickle=False``); ``EngineError`` for bytes
        that are not a model artifact."""
        return load_model(data)


def load_model(data: bytes) -> Network:
    """A ``Network`` from the ``.npz`` bytes of ``Network.save``."""
    parts = read_model(data)
    net = Network(parts.spec, parts.dtype)
    net.weights = parts.weights
    net.classes = parts.classes
    net.x_mean, net.x_std = parts.x_mean, parts.x_std
    return net
