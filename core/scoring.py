"""A model scored on labelled rows: the figures of ``POST /runs/{id}/evaluate`` and of a run's
``test_split``, computed the same way for both.

The run's loss decides the task: a cross-entropy model is scored as a classifier, any other
as a regression. The loss is the engine's (as training computes ``val_loss``); the other
figures are :mod:`core.evaluation`'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.engine import Network
from core.engine.targets import CROSS_ENTROPY, one_hot
from core.evaluation import (
    EvaluationError,
    class_codes,
    classification_metrics,
    regression_metrics,
)


def score(
    net: Network,
    X: np.ndarray,
    y: np.ndarray,
    loss_name: str,
    dataset_classes: Sequence[Any] | None,
) -> tuple[dict[str, Any], np.ndarray]:
    """The figures of ``net`` on ``X`` ``(n, n_in)`` and a dataset's targets ``y`` ``(n, t)``
    (labels or one-hot rows of ``dataset_classes``), and its outputs ``(n, k)`` in float64.

    The figures: ``n_samples``, ``loss_name``, ``loss``, ``task`` and, for a classifier,
    ``classes`` and :func:`core.evaluation.classification_metrics`; for a regression,
    :func:`core.evaluation.regression_metrics`. Raises ``EvaluationError`` when the targets
    do not fit the model, ``EngineError`` when the engine refuses the arrays.
    """
    k = net.n_out
    figures: dict[str, Any] = {"n_samples": int(X.shape[0]), "loss_name": loss_name}
    if loss_name in CROSS_ENTROPY:
        classes = net.classes if net.classes is not None else list(range(max(k, 2)))
        codes = class_codes(y, dataset_classes, classes)
        targets = codes.reshape(-1, 1).astype(np.float64) if k == 1 else one_hot(codes, k)
        loss, outputs = net.evaluate(X, targets, loss_name)
        outputs = np.asarray(outputs, dtype=np.float64)
        figures.update(task="classification", classes=list(classes),
                       **classification_metrics(codes, outputs, classes))  # fmt: skip
    else:
        if y.shape[1] != k:
            raise EvaluationError(f"{y.shape[1]} target columns, but the model predicts {k}")
        loss, outputs = net.evaluate(X, y, loss_name)
        outputs = np.asarray(outputs, dtype=np.float64)
        figures.update(task="regression", **regression_metrics(y, outputs))
    figures["loss"] = float(loss)
    return figures, outputs
