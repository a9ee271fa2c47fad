"""Training targets when the loss is a cross-entropy: class labels become one-hot rows.

The loss decides the task, as a scikit-learn classifier treats ``y``: one column of class
labels (integers, integral floats or text) trained with ``categorical_crossentropy`` or
``binary_crossentropy`` is encoded by class, and the sorted distinct labels become the model's
``classes``. Any other targets are used as they are. This module is the one home of that rule:
``fit`` applies it, and the service calls :func:`label_classes` to refuse a run whose labels
cannot fit its output layer before the run is queued.

The rule, for one column ``y`` of ``n`` labels and an output layer of ``k`` units:

- ``k > 1``: integer labels all in ``0 … k-1`` are class indices (``classes = [0, …, k-1]``,
  unless the caller named them); any other labels must be exactly ``k`` distinct values,
  encoded in sorted order. The result is one-hot ``(n, k)``.
- ``k == 1`` (one sigmoid output, ``binary_crossentropy``): labels in ``{0, 1}`` are used as
  they are (``classes = [0, 1]``); two other distinct labels become 0 and 1 in sorted order
  (the second is the positive class, as in scikit-learn). Non-integer numbers in ``[0, 1]``
  are probabilities (soft targets) and are used as they are, with no classes.

Imports NumPy and the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import EngineError

CROSS_ENTROPY = frozenset({"binary_crossentropy", "categorical_crossentropy"})

# Labels shown in a message, at most.
_SHOWN = 6


@dataclass
class LabelEncoding:
    """One column of class labels, encoded.

    Attributes:
        classes: the labels, JSON-able (int, float or str), in output-column order; for one
            sigmoid output ``[negative, positive]``.
        codes: ``(n_samples,)`` intp, the index of each row's label in ``classes``.
        indices: True when the labels were class indices ``0 … k-1`` (the caller's names for
            them, if any, still apply).
    """

    classes: list[Any]
    codes: np.ndarray
    indices: bool = False


def _classes(values: np.ndarray) -> str:
    """``"3 classes (a, b, c)"``."""
    n = values.size
    return f"{n} class{'es' if n != 1 else ''} ({_shown(values)})"


def _shown(values: np.ndarray) -> str:
    items = [repr(v) if isinstance(v, str) else str(v) for v in _plain(values[:_SHOWN])]
    more = f", … ({values.size} in all)" if values.size > _SHOWN else ""
    return ", ".join(items) + more


def _plain(values: np.ndarray) -> list[Any]:
    """NumPy labels as JSON-able Python values: integral floats become ints."""
    if values.dtype.kind in "US":
        return [str(v) for v in values]
    if values.dtype.kind == "f":
        return [int(v) if float(v).is_integer() else float(v) for v in values]
    return [int(v) for v in values]


def _column(Y: Any) -> np.ndarray | None:
    """``Y`` as one column ``(n,)`` when it is 1-D or ``(n, 1)``, else None."""
    y = np.asarray(Y)
    if y.ndim == 1:
        return y
    if y.ndim == 2 and y.shape[1] == 1:
        return y[:, 0]
    return None


def encode_labels(Y: Any, loss: str, n_out: int) -> LabelEncoding | None:
    """The classes and codes of ``Y`` when it is one column of class labels for ``loss``.

    Args:
        Y: targets, ``(n_samples,)`` or ``(n_samples, n_targets)``.
        loss: the training loss's name.
        n_out: units of the output layer.

    Returns:
        None when ``Y`` is used as it is: the loss is not a cross-entropy, ``Y`` has several
        columns, or it holds probabilities for one sigmoid output.

    Raises:
        EngineError: a column of labels that cannot fit ``n_out`` outputs, or numbers that are
            neither labels nor probabilities; the message says what to change.
    """
    if loss not in CROSS_ENTROPY:
        return None
    y = _column(Y)
    if y is None or y.size == 0:
        return None
    kind = y.dtype.kind
    if kind == "b":
        y = y.astype(np.intp)
    elif kind == "O":
        if not all(isinstance(v, str) for v in y):
            raise EngineError("class labels must be all numbers or all text")
        y = y.astype(np.str_)
    elif kind == "S":
        y = np.char.decode(y, "utf-8")
    elif kind not in "iuUf":
        raise EngineError(f"targets must be numbers or text labels, not dtype {y.dtype}")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)):
            return None  # the caller's finiteness check names the row
        if not np.all(y == np.round(y)):
            if n_out == 1 and float(y.min()) >= 0.0 and float(y.max()) <= 1.0:
                return None  # probabilities for one sigmoid output
            example = float(y[np.flatnonzero(y != np.round(y))[0]])
            raise EngineError(
                f"the target column holds numbers that are not class labels (e.g. {example}); "
                f"{loss} needs class labels (integers or text), one-hot rows"
                + (" or probabilities in [0, 1]" if n_out == 1 else "")
            )
    labels, codes = np.unique(y, return_inverse=True)
    codes = codes.reshape(-1).astype(np.intp)
    numeric = labels.dtype.kind != "U"
    if n_out == 1:
        if numeric and set(_plain(labels)) <= {0, 1}:
            return LabelEncoding([0, 1], y.astype(np.intp), indices=True)
        if labels.size == 2:
            return LabelEncoding(_plain(labels), codes)
        if labels.size == 1:
            raise EngineError(
                f"the target column holds {_classes(labels)} only; a classifier needs two or more"
            )
        raise EngineError(
            f"the target column holds {_classes(labels)}, but the output "
            f"layer has 1 unit, which separates two: give it {labels.size} softmax units and "
            "train with categorical_crossentropy"
        )
    if numeric and float(labels[0]) >= 0 and float(labels[-1]) <= n_out - 1:
        return LabelEncoding(list(range(n_out)), y.astype(np.intp), indices=True)
    if labels.size != n_out:
        raise EngineError(
            f"the target column holds {_classes(labels)}, but the output "
            f"layer has {n_out} units: a cross-entropy output needs one unit per class"
            + (f" (or class indices 0 … {n_out - 1})" if numeric else "")
        )
    return LabelEncoding(_plain(labels), codes)


def label_classes(Y: Any, loss: str, n_out: int) -> list[Any] | None:
    """The classes a model trained on ``Y`` with ``loss`` records (see :func:`encode_labels`).

    None when ``Y`` is used as it is. Raises ``EngineError`` as :func:`encode_labels` does.
    """
    encoding = encode_labels(Y, loss, n_out)
    return None if encoding is None else encoding.classes


def one_hot(codes: np.ndarray, k: int, dtype: Any = np.float64) -> np.ndarray:
    """``(n,)`` class codes in ``0 … k-1`` → ``(n, k)`` one-hot rows of ``dtype``."""
    out = np.zeros((codes.shape[0], k), dtype)
    out[np.arange(codes.shape[0]), codes] = 1
    return out
