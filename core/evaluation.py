"""Metrics of a trained model on labelled data: the figures of ``POST /runs/{id}/evaluate``.

Pure NumPy and the standard library. The definitions are scikit-learn's (its metrics are the
tests' reference), stated here so that nobody has to guess:

- Classification, from true class codes ``(n,)`` and the model's outputs ``(n, k)``:
  ``accuracy``; per class ``precision = TP / (TP + FP)``, ``recall = TP / (TP + FN)`` and
  ``f1 = 2 TP / (2 TP + FP + FN)``, each 0 where its denominator is 0 (scikit-learn's
  ``zero_division=0``); ``macro_f1``, the unweighted mean F1 over the classes that occur in
  the true or the predicted labels (scikit-learn's ``f1_score(average="macro")``); the
  confusion matrix, rows true classes and columns predicted ones; ``log_loss``, the mean of
  ``-log p(true class)`` with ``p`` clipped to ``[eps, 1 - eps]`` (float64 ``eps``).
  The predicted class is the output's argmax, or ``output > 0.5`` for one sigmoid output,
  whose probabilities are ``[1 - p, p]``. Several sigmoid outputs (one-vs-rest) are
  normalised to sum to 1 per row for the log-loss.
- Regression, from targets and outputs ``(n, t)``: per target ``mse``, ``rmse``, ``mae`` and
  ``r2 = 1 - SS_res / SS_tot`` (1 when a constant target is predicted exactly, 0 when not;
  undefined, None, for fewer than two rows); each averaged over the targets with equal
  weights (scikit-learn's ``multioutput="uniform_average"``, so the averaged ``rmse`` is the
  mean of the per-target ones, not the root of the averaged ``mse``).

Matching a dataset's targets to a model's classes is here too (:func:`class_codes`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "EvaluationError",
    "class_codes",
    "classification_metrics",
    "confusion_matrix",
    "predicted_codes",
    "probabilities",
    "regression_metrics",
]

_EPS = float(np.finfo(np.float64).eps)
_SHOWN = 6


class EvaluationError(ValueError):
    """Data that this model cannot be scored on; the message says why."""


def _listed(values: Sequence[Any]) -> str:
    shown = [repr(v) if isinstance(v, str) else str(v) for v in values[:_SHOWN]]
    return ", ".join(shown) + (f", … ({len(values)} in all)" if len(values) > _SHOWN else "")


def _label(value: Any) -> Any:
    """A stored target value as a class label: integral floats are the integers they are."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    return value.item() if isinstance(value, np.generic) else value


def class_codes(
    Y: np.ndarray, dataset_classes: Sequence[Any] | None, model_classes: Sequence[Any]
) -> np.ndarray:
    """Each row's true class as an index into ``model_classes``.

    Args:
        Y: a dataset's targets ``(n, t)``: one column of labels (``t == 1``; for a dataset
            with ``dataset_classes`` a value ``v`` is the label ``dataset_classes[v]``), or
            one-hot rows whose column ``j`` is the label ``dataset_classes[j]`` (or ``j``).
        dataset_classes: the dataset's class labels, or None.
        model_classes: the model's class labels, in output order.

    Returns:
        ``(n,)`` intp codes.

    Raises:
        EvaluationError: rows that are not one-hot, or labels the model does not know.
    """
    n, t = Y.shape
    if t == 1:
        values = Y[:, 0]
        if dataset_classes is not None:
            labels = [dataset_classes[int(v)] for v in values]
        else:
            labels = [_label(v) for v in values]
    else:
        bad = np.flatnonzero(~(np.isin(Y, (0.0, 1.0)).all(axis=1) & (Y.sum(axis=1) == 1.0)))
        if bad.size:
            raise EvaluationError(
                f"the targets have {t} columns but row {int(bad[0])} (counting from 0) is not "
                "one-hot, so its class is unknown"
            )
        names = list(dataset_classes) if dataset_classes is not None else list(range(t))
        labels = [names[j] for j in np.argmax(Y, axis=1)]
    index = {c: i for i, c in enumerate(model_classes)}
    codes = np.empty(n, np.intp)
    unknown: dict[Any, None] = {}
    for i, label in enumerate(labels):
        code = index.get(label)
        if code is None:
            unknown[label] = None
        else:
            codes[i] = code
    if unknown:
        raise EvaluationError(
            f"the targets hold labels the model was not trained on: {_listed(list(unknown))} "
            f"(its classes are {_listed(list(model_classes))})"
        )
    return codes


def predicted_codes(outputs: np.ndarray) -> np.ndarray:
    """Predicted class ``(n,)`` of outputs ``(n, k)``: argmax, or ``output > 0.5`` if ``k == 1``."""
    if outputs.shape[1] == 1:
        return (outputs[:, 0] > 0.5).astype(np.intp)
    codes: np.ndarray = np.argmax(outputs, axis=1)
    return codes


def probabilities(outputs: np.ndarray) -> np.ndarray:
    """Class probabilities ``(n, max(k, 2))`` of outputs ``(n, k)`` in ``[0, 1]``.

    One sigmoid output ``p`` gives ``[1 - p, p]``; rows of several outputs are divided by their
    sum (a softmax's rows already sum to 1; one-vs-rest sigmoids do not); a zero row is
    uniform.
    """
    p = np.asarray(outputs, dtype=np.float64)
    if p.shape[1] == 1:
        return np.concatenate([1.0 - p, p], axis=1)
    sums = p.sum(axis=1, keepdims=True)
    normalised = np.full_like(p, 1.0 / p.shape[1])  # a zero row stays uniform
    np.divide(p, sums, out=normalised, where=sums > 0)
    return normalised


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes, n_classes)`` int64 counts: row ``i`` true class ``i``, column ``j``
    predicted class ``j``; ``y_true`` and ``y_pred`` are ``(n,)`` codes."""
    cm = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.zeros(num.shape, np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def classification_metrics(
    y_true: np.ndarray, outputs: np.ndarray, classes: Sequence[Any]
) -> dict[str, Any]:
    """Classification figures (see the module docstring).

    Args:
        y_true: ``(n,)`` true class codes, indices into ``classes``.
        outputs: ``(n, k)`` model outputs in ``[0, 1]``: ``k == len(classes)``, or ``k == 1``
            (one sigmoid output) for two classes.
        classes: the class labels, in output order.

    Returns:
        ``accuracy``, ``macro_f1``, ``log_loss`` (floats), ``confusion_matrix`` (list of
        rows of ints, in ``classes`` order) and ``per_class``: one
        ``{"label", "precision", "recall", "f1", "support"}`` per class, in ``classes`` order.
    """
    k = len(classes)
    y_pred = predicted_codes(outputs)
    cm = confusion_matrix(y_true, y_pred, k)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    precision = _ratio(tp, predicted.astype(np.float64))
    recall = _ratio(tp, support.astype(np.float64))
    f1 = _ratio(2 * tp, (support + predicted).astype(np.float64))
    present = (support + predicted) > 0
    proba = np.clip(probabilities(outputs), _EPS, 1.0 - _EPS)
    log_loss = float(-np.mean(np.log(proba[np.arange(y_true.shape[0]), y_true])))
    return {
        "accuracy": float(np.mean(y_pred == y_true)),
        "macro_f1": float(np.mean(f1[present])),
        "log_loss": log_loss,
        "confusion_matrix": cm.tolist(),
        "per_class": [
            {
                "label": label,
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(classes)
        ],
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, Any]:
    """Regression figures (see the module docstring).

    Args:
        y_true: ``(n, t)`` targets.
        y_pred: ``(n, t)`` model outputs.

    Returns:
        ``mse``, ``rmse``, ``mae`` and ``r2`` averaged over the targets, and ``per_target``:
        one ``{"target", "mse", "rmse", "mae", "r2"}`` per target column ``target`` (from 0).
        ``r2`` is None for fewer than two rows.
    """
    y = np.asarray(y_true, dtype=np.float64)
    diff = np.asarray(y_pred, dtype=np.float64) - y
    mse = np.mean(diff * diff, axis=0)
    rmse = np.sqrt(mse)
    mae = np.mean(np.abs(diff), axis=0)
    r2: list[float] | None = None
    if y.shape[0] >= 2:
        ss_res = np.sum(diff * diff, axis=0)
        centred = y - y.mean(axis=0)
        ss_tot = np.sum(centred * centred, axis=0)
        r2 = [
            (1.0 if res == 0 else 0.0) if tot == 0 else 1.0 - float(res) / float(tot)
            for res, tot in zip(ss_res, ss_tot, strict=True)
        ]
    return {
        "mse": float(np.mean(mse)),
        "rmse": float(np.mean(rmse)),
        "mae": float(np.mean(mae)),
        "r2": None if r2 is None else float(np.mean(r2)),
        "per_target": [
            {
                "target": j,
                "mse": float(mse[j]),
                "rmse": float(rmse[j]),
                "mae": float(mae[j]),
                "r2": None if r2 is None else r2[j],
            }
            for j in range(y.shape[1])
        ],
    }
