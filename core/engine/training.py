"""The training loop: mini-batch backpropagation with metrics, early stopping and checkpoints.

``fit`` casts the data to the training dtype once, then per epoch: (seeded) shuffle of the
training indices, one optimiser step per mini-batch (each batch gathered into a preallocated
buffer, never a copy of the dataset), metrics, the callback, a checkpoint when due, the
early-stopping check and finally ``should_stop``. The epoch's ``loss`` is the mean of its
batch losses (no extra pass over the data); ``accuracy`` likewise comes from the batches'
outputs before each step. ``elapsed_s`` is the wall time since training started, summed over
resumed segments.

Randomness comes from one ``np.random.default_rng(training.seed)``: with a validation split, the
validation rows are the first ``max(1, int(split * n))`` entries of its ``permutation(n)`` (both
parts then kept in dataset order); afterwards it shuffles the training rows once per epoch.
Its state is part of every checkpoint.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from core.spec import TrainingConfig, check_compatible

from .checkpoint import dump_checkpoint, load_checkpoint
from .dtypes import as_dtype
from .errors import DivergenceError, EngineError
from .losses import get_loss
from .optimizers import make_optimizer

if TYPE_CHECKING:
    from .network import Network, Workspace

_CLASSIFICATION = ("binary_crossentropy", "categorical_crossentropy")
# Rows per chunk for the validation pass and the standardisation statistics.
_EVAL_CHUNK = 4096


def _check_finite(A: np.ndarray, name: str) -> None:
    # One cheap reduction first; locate the bad row only when it is not finite.
    with np.errstate(over="ignore", invalid="ignore"):
        if math.isfinite(float(np.sum(A, dtype=np.float64))):
            return
    for start in range(0, A.shape[0], _EVAL_CHUNK):
        bad = ~np.isfinite(A[start : start + _EVAL_CHUNK]).all(axis=1)
        if bad.any():
            row = start + int(np.argmax(bad))
            raise EngineError(f"{name} has a NaN or infinite value in row {row}")


def _standardization(X: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Feature means and standard deviations ``(n_in,)`` over rows ``idx``, in float64."""
    total = np.zeros(X.shape[1])
    for start in range(0, idx.size, _EVAL_CHUNK):
        total += X[idx[start : start + _EVAL_CHUNK]].sum(axis=0, dtype=np.float64)
    mean = total / idx.size
    sq = np.zeros(X.shape[1])
    for start in range(0, idx.size, _EVAL_CHUNK):
        diff = X[idx[start : start + _EVAL_CHUNK]].astype(np.float64) - mean
        sq += np.einsum("ij,ij->j", diff, diff)
    std = np.sqrt(sq / idx.size)
    # A constant feature is left centred but unscaled.
    std[std == 0] = 1.0
    return mean, std


def validation_size(n_samples: int, cfg: TrainingConfig) -> int:
    """How many of ``n_samples`` rows ``fit`` holds out for validation under ``cfg``: the
    one home of that rule (the service counts trained samples with it)."""
    if cfg.validation_fold is not None:
        k, index = cfg.validation_fold.k, cfg.validation_fold.index
        # np.array_split gives the first n % k folds one row more.
        return n_samples // k + (1 if index < n_samples % k else 0)
    if cfg.validation_split > 0:
        return max(1, int(cfg.validation_split * n_samples))
    return 0


def held_out_size(n_samples: int, cfg: TrainingConfig) -> int:
    """How many of ``n_samples`` rows ``cfg.test_split`` holds out of training and
    validation."""
    return max(1, int(cfg.test_split * n_samples)) if cfg.test_split > 0 else 0


# The test rows come from a random stream of their own, so that a config without a test
# split draws exactly what it drew before test splits existed.
_TEST_STREAM = 0x7E57


def held_out_rows(n_samples: int, cfg: TrainingConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, held_out)``: the sorted rows ``fit`` trains and validates on, and the sorted
    rows ``test_split`` holds out of both (seeded by ``cfg.seed``)."""
    n_test = held_out_size(n_samples, cfg)
    if n_test == 0:
        return np.arange(n_samples), np.empty(0, np.intp)
    if n_test >= n_samples:
        raise EngineError(
            f"test_split={cfg.test_split} leaves no samples to train on out of {n_samples}"
        )
    perm = np.random.default_rng([cfg.seed, _TEST_STREAM]).permutation(n_samples)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def validation_rows(
    n_samples: int, cfg: TrainingConfig, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)``: the sorted rows of ``n_samples`` (those ``held_out_rows`` kept)
    that ``fit`` trains on and validates on. ``rng`` is the fit's generator, fresh from
    ``cfg.seed`` (the split is its first draw); by default such a one."""
    rng = rng if rng is not None else np.random.default_rng(cfg.seed)
    n = n_samples
    if cfg.validation_fold is not None:
        k, index = cfg.validation_fold.k, cfg.validation_fold.index
        if k > n:
            raise EngineError(f"validation_fold.k={k} is more than the {n} samples")
        folds = np.array_split(rng.permutation(n), k)
        return np.sort(np.concatenate(folds[:index] + folds[index + 1 :])), np.sort(folds[index])
    if cfg.validation_split > 0:
        n_val = validation_size(n, cfg)
        if n_val >= n:
            raise EngineError(
                f"validation_split={cfg.validation_split} leaves no training samples out of {n}"
            )
        perm = rng.permutation(n)
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])
    return np.arange(n), np.empty(0, np.intp)


def _labels(Y: np.ndarray) -> np.ndarray:
    """True class per row of ``Y`` ``(n, k)``: argmax, or ``y > 0.5`` for one output."""
    if Y.shape[1] == 1:
        return (Y[:, 0] > 0.5).astype(np.intp)
    # NumPy's stubs type argmax with an axis as Any; it is an intp array here.
    labels: np.ndarray = np.argmax(Y, axis=1)
    return labels


def _count_correct(out: np.ndarray, labels: np.ndarray) -> int:
    pred = out[:, 0] > 0.5 if out.shape[1] == 1 else np.argmax(out, axis=1)
    return int(np.count_nonzero(pred == labels))


class _Trainer:
    """State of one ``fit`` call; exists so that checkpoints can capture all of it."""

    def __init__(self, net: Network, X: Any, Y: Any, cfg: TrainingConfig) -> None:
        self.net = net
        self.cfg = cfg
        dtype = as_dtype(cfg.dtype)
        net.astype(dtype)
        X = net._check_X(X)
        n = X.shape[0]
        if n == 0:
            raise EngineError("X has no samples")
        # The only cast/copy of the data: the training dtype, C order.
        # Class labels under a cross-entropy loss become one-hot rows and the net's classes.
        self.Y = np.ascontiguousarray(
            net.prepare_targets(Y, cfg.loss, n, record_classes=True), dtype=dtype
        )
        self.X = np.ascontiguousarray(X, dtype=dtype)
        _check_finite(self.X, "X")
        _check_finite(self.Y, "Y")
        self.n = n

        self.rng = np.random.default_rng(cfg.seed)
        self.train_idx, self.val_idx = validation_rows(n, cfg, self.rng)
        n_val = int(self.val_idx.size)
        self.n_val = n_val

        # A network that has a standardisation already (an earlier fit, a loaded model, a
        # warm start) keeps it: its weights were learned on inputs scaled that way.
        if cfg.standardize:
            if net.x_mean is None or net.x_std is None:
                net.x_mean, net.x_std = _standardization(self.X, self.train_idx)
            if net.x_mean.shape != (self.X.shape[1],):
                raise EngineError(
                    f"the network's standardisation is for {net.x_mean.shape[0]} features, "
                    f"the data has {self.X.shape[1]}"
                )
            # The standardisation in the training dtype (both or neither are None).
            self.mean: np.ndarray | None = net.x_mean.astype(dtype)
            self.std: np.ndarray | None = net.x_std.astype(dtype)
        else:
            net.x_mean = net.x_std = None
            self.mean = self.std = None

        self.loss = get_loss(cfg.loss)
        self.fused = net.is_fused(self.loss)
        self.classification = cfg.loss in _CLASSIFICATION
        self.labels = _labels(self.Y) if self.classification else None
        self.optimizer = make_optimizer(cfg.optimizer, net._params.size, dtype)

        es = cfg.early_stopping
        self.best = math.inf
        self.wait = 0
        self.best_epoch = 0
        self.best_params = np.empty_like(net._params) if es and es.restore_best else None
        self.history: list[dict[str, Any]] = []
        self.epoch = 0
        self.elapsed_before = 0.0

    # -- one epoch ----------------------------------------------------------------------

    def _gather(self, ws: Workspace, idx: np.ndarray) -> None:
        self.X.take(idx, axis=0, out=ws.x, mode="clip")
        self.Y.take(idx, axis=0, out=ws.y, mode="clip")
        if self.mean is not None:
            assert self.std is not None, "mean and std are set together"
            ws.x -= self.mean
            ws.x /= self.std

    def _train_epoch(self, order: np.ndarray) -> tuple[float, float | None]:
        """One pass over ``order`` (training row indices); returns (mean batch loss, accuracy)."""
        net, loss, fused, opt = self.net, self.loss, self.fused, self.optimizer
        params, grads = net._params, net._grads
        n_train = order.size
        bs = min(self.cfg.batch_size, n_train)
        ws_full = net.workspace(bs)
        total = 0.0
        correct = 0
        n_batches = 0
        labels = self.labels
        for start in range(0, n_train, bs):
            idx = order[start : start + bs]
            ws = ws_full if idx.size == bs else net.workspace(idx.size)
            self._gather(ws, idx)
            total += net._backprop(ws, loss, fused)
            if labels is not None:
                correct += _count_correct(ws.layers[-1].a, labels[idx])
            opt.step(params, grads)
            n_batches += 1
        accuracy = correct / n_train if labels is not None else None
        return total / n_batches, accuracy

    def _evaluate(self, idx: np.ndarray) -> tuple[float, float | None]:
        """Loss (and accuracy) on rows ``idx``, in chunks."""
        net, loss = self.net, self.loss
        total = 0.0
        correct = 0
        for start in range(0, idx.size, _EVAL_CHUNK):
            chunk = idx[start : start + _EVAL_CHUNK]
            ws = net.workspace(chunk.size)
            self._gather(ws, chunk)
            out = net._forward_ws(ws)
            last = ws.layers[-1]
            if self.fused:
                value = loss.fused_value(last.z, last.a, ws.y, last)
            else:
                value = loss.value(last.a, ws.y, last)
            # Every loss is a mean over rows (times a constant), so chunks weigh by rows.
            total += value * chunk.size
            if self.labels is not None:
                correct += _count_correct(out, self.labels[chunk])
        accuracy = correct / idx.size if self.labels is not None else None
        return total / idx.size, accuracy

    # -- early stopping and checkpoints -------------------------------------------------

    def _update_early_stopping(self, item: dict[str, Any]) -> None:
        es = self.cfg.early_stopping
        if es is None:
            return
        value = item["val_loss"] if self.n_val else item["loss"]
        if value < self.best - es.min_delta:
            self.best = value
            self.wait = 0
            self.best_epoch = item["epoch"]
            if self.best_params is not None:
                np.copyto(self.best_params, self.net._params)
        else:
            self.wait += 1

    def _early_stop_due(self) -> bool:
        es = self.cfg.early_stopping
        return es is not None and self.wait >= es.patience

    def _finish(self) -> None:
        """Training is over: restore the best weights if asked, and say which epoch's
        weights the network holds."""
        self.net.weights_epoch = self.epoch
        if self.best_params is not None and 0 < self.best_epoch < self.epoch:
            np.copyto(self.net._params, self.best_params)
            self.net.weights_epoch = self.best_epoch

    def checkpoint(self, elapsed: float) -> bytes:
        opt_state = self.optimizer.state_dict()
        arrays = {"params": self.net._params}
        arrays.update({f"opt_{k}": v for k, v in opt_state.items() if k != "t"})
        if self.best_params is not None:
            arrays["best_params"] = self.best_params
        if self.net.x_mean is not None:
            assert self.net.x_std is not None, "fit sets x_mean and x_std together"
            arrays["x_mean"] = self.net.x_mean
            arrays["x_std"] = self.net.x_std
        meta = {
            "epoch": self.epoch,
            "n_samples": self.n,
            "n_params": int(self.net._params.size),
            "dtype": self.cfg.dtype,
            "layers": [[layer.n_in, layer.units] for layer in self.net.layers],
            "optimizer": self.cfg.optimizer.name,
            "optimizer_t": opt_state["t"],
            "rng": self.rng.bit_generator.state,
            "early_stopping": {"best": self.best, "wait": self.wait, "best_epoch": self.best_epoch},
            # No history: its size would grow with the epochs, and so would the cost of every
            # checkpoint (the service keeps the history in its metrics table instead).
            "elapsed_s": elapsed,
        }
        return dump_checkpoint(meta, arrays)

    def restore(self, data: bytes) -> None:
        meta, arrays = load_checkpoint(data)
        expected = {
            "n_samples": self.n,
            "n_params": int(self.net._params.size),
            "dtype": self.cfg.dtype,
            "layers": [[layer.n_in, layer.units] for layer in self.net.layers],
            "optimizer": self.cfg.optimizer.name,
        }
        for key, value in expected.items():
            if meta.get(key) != value:
                raise EngineError(
                    f"checkpoint does not fit this fit(): {key} is {meta.get(key)!r}, "
                    f"expected {value!r}"
                )
        np.copyto(self.net._params, arrays["params"])
        opt_state = {k[4:]: v for k, v in arrays.items() if k.startswith("opt_")}
        self.optimizer.load_state_dict({"t": meta["optimizer_t"], **opt_state})
        if self.best_params is not None and "best_params" in arrays:
            np.copyto(self.best_params, arrays["best_params"])
        if "x_mean" in arrays and self.mean is not None:
            self.net.x_mean, self.net.x_std = arrays["x_mean"], arrays["x_std"]
            self.mean = self.net.x_mean.astype(self.net.dtype)
            self.std = self.net.x_std.astype(self.net.dtype)
        self.rng.bit_generator.state = meta["rng"]
        es = meta["early_stopping"]
        self.best, self.wait, self.best_epoch = float(es["best"]), es["wait"], es["best_epoch"]
        self.epoch = int(meta["epoch"])
        self.elapsed_before = float(meta["elapsed_s"])

    # -- the loop -----------------------------------------------------------------------

    def run(
        self,
        callback: Callable[[dict[str, Any]], None] | None,
        should_stop: Callable[[], bool] | None,
        checkpoint_due: Callable[[int], bool] | None,
        on_checkpoint: Callable[[int, bytes], None] | None,
    ) -> list[dict[str, Any]]:
        cfg = self.cfg
        if self._early_stop_due():
            self._finish()
            return self.history
        order = np.empty_like(self.train_idx)
        t_start = time.perf_counter()
        for epoch in range(self.epoch + 1, cfg.epochs + 1):
            order[...] = self.train_idx
            if cfg.shuffle:
                self.rng.shuffle(order)
            loss, accuracy = self._train_epoch(order)
            if not math.isfinite(loss):
                raise DivergenceError(epoch, loss)
            self.epoch = epoch
            item: dict[str, Any] = {"epoch": epoch, "loss": loss}
            if self.n_val:
                item["val_loss"], val_accuracy = self._evaluate(self.val_idx)
                if not math.isfinite(item["val_loss"]):
                    raise DivergenceError(epoch, item["val_loss"], "val_loss")
            if accuracy is not None:
                item["accuracy"] = accuracy
                if self.n_val:
                    item["val_accuracy"] = val_accuracy
            elapsed = self.elapsed_before + (time.perf_counter() - t_start)
            item["elapsed_s"] = elapsed
            self.history.append(item)
            if callback is not None:
                callback(dict(item))
            self._update_early_stopping(item)
            # Serialised only when due: a checkpoint costs as much as a few small epochs.
            if on_checkpoint is not None and checkpoint_due is not None and checkpoint_due(epoch):
                on_checkpoint(epoch, self.checkpoint(elapsed))
            if self._early_stop_due():
                break
            if should_stop is not None and should_stop():
                self.net.weights_epoch = epoch  # interrupted: the weights are this epoch's
                return self.history
        self._finish()
        return self.history


def _every(k: int) -> Callable[[int], bool]:
    """``checkpoint_due`` for a checkpoint every ``k`` epochs."""
    return lambda epoch: epoch % k == 0


def fit(
    net: Network,
    X: Any,
    Y: Any,
    training: dict[str, Any] | TrainingConfig,
    callback: Callable[[dict[str, Any]], None] | None = None,
    *,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_every: int = 0,
    checkpoint_due: Callable[[int], bool] | None = None,
    on_checkpoint: Callable[[int, bytes], None] | None = None,
    resume_from: bytes | None = None,
) -> list[dict[str, Any]]:
    """Train ``net`` on ``X`` ``(n, n_in)``, ``Y`` ``(n, units_last)``.

    Under a cross-entropy loss ``Y`` may also be one column ``(n,)`` or ``(n, 1)`` of class
    labels (integers or text), as scikit-learn takes ``y``: it is encoded by class and the
    labels become ``net.classes`` (``targets.py`` has the rule).

    ``on_checkpoint(epoch, data)`` receives a checkpoint every ``checkpoint_every`` epochs,
    or after each epoch for which ``checkpoint_due(epoch)`` is true (the two are exclusive);
    ``resume_from`` continues from such a checkpoint. A checkpoint's size does not depend
    on the epoch.

    Returns the history of this call: one item per epoch trained here (a resumed fit starts
    after its checkpoint's epoch).
    Raises ``DivergenceError`` when an epoch's loss is NaN or infinite, ``EngineError`` for
    unusable arrays or a checkpoint of another fit, and pydantic's ``ValidationError`` for an
    invalid ``training`` dict.
    """
    cfg = (
        training
        if isinstance(training, TrainingConfig)
        else TrainingConfig.model_validate(training)
    )
    try:
        check_compatible(net.spec, cfg)
    except ValueError as exc:
        raise EngineError(str(exc)) from None
    if checkpoint_every < 0:
        raise EngineError("checkpoint_every must be >= 0")
    if checkpoint_every and checkpoint_due is not None:
        raise EngineError("give checkpoint_every or checkpoint_due, not both")
    due = checkpoint_due
    if checkpoint_every:
        due = _every(checkpoint_every)
    if cfg.test_split > 0:  # the held-out rows never reach the trainer
        kept, _ = held_out_rows(len(X), cfg)
        X, Y = np.asarray(X)[kept], np.asarray(Y)[kept]
    trainer = _Trainer(net, X, Y, cfg)
    if resume_from is not None:
        trainer.restore(resume_from)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        return trainer.run(callback, should_stop, due, on_checkpoint)
