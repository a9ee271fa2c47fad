"""core.evaluation and Network.evaluate against scikit-learn's metrics on the same predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from core.engine import Network
from core.evaluation import (
    EvaluationError,
    class_codes,
    classification_metrics,
    probabilities,
    regression_metrics,
)

REL = 1e-12


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _check_classification(y_true: np.ndarray, outputs: np.ndarray, proba: np.ndarray) -> None:
    """Every figure of classification_metrics against scikit-learn, ``proba`` being the
    probabilities scikit-learn is given (``(n,)`` positive class, or ``(n, k)``)."""
    k = max(outputs.shape[1], 2)
    classes = [f"c{i}" for i in range(k)]
    got = classification_metrics(y_true, outputs, classes)
    y_pred = outputs[:, 0] > 0.5 if outputs.shape[1] == 1 else np.argmax(outputs, axis=1)
    labels = list(range(k))
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred), rel=REL)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    assert [c["label"] for c in got["per_class"]] == classes
    np.testing.assert_allclose([c["precision"] for c in got["per_class"]], p, rtol=REL)
    np.testing.assert_allclose([c["recall"] for c in got["per_class"]], r, rtol=REL)
    np.testing.assert_allclose([c["f1"] for c in got["per_class"]], f, rtol=REL)
    assert [c["support"] for c in got["per_class"]] == s.tolist()
    # scikit-learn's macro average runs over the labels present in y_true or y_pred.
    macro = skm.f1_score(y_true, y_pred, average="macro", zero_division=0)
    assert got["macro_f1"] == pytest.approx(macro, rel=REL)
    assert got["confusion_matrix"] == skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert got["log_loss"] == pytest.approx(skm.log_loss(y_true, proba, labels=labels), rel=REL)


def test_multiclass_figures_equal_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    y_true = rng.choice([0, 1, 3], size=200)  # class 2 never occurs: zero support
    outputs = _softmax(rng.normal(size=(200, 4)) + 2.0 * np.eye(4)[y_true])
    outputs[:3] = np.eye(4)[[2, 2, 0]]  # class 2 is predicted; one log-loss term is clipped
    _check_classification(y_true, outputs, outputs)


def test_a_class_neither_true_nor_predicted_is_left_out_of_macro_f1() -> None:
    y_true = np.array([0, 0, 1, 1, 1])
    outputs = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.3, 0.7, 0.0], [0.6, 0.4, 0.0],
                        [0.1, 0.9, 0.0]])  # fmt: skip
    got = classification_metrics(y_true, outputs, ["a", "b", "c"])
    # Derived: a: TP 1, FP 1, FN 1 -> F1 0.5; b: TP 2, FP 1, FN 1 -> F1 2/3; c absent.
    assert got["macro_f1"] == pytest.approx((0.5 + 2 / 3) / 2, rel=REL)
    assert got["per_class"][2] == {"label": "c", "precision": 0.0, "recall": 0.0, "f1": 0.0,
                                   "support": 0}  # fmt: skip
    _check_classification(y_true, outputs, outputs)


def test_one_sigmoid_output_figures_equal_scikit_learn() -> None:
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 2, 150)
    outputs = 1 / (1 + np.exp(-(rng.normal(size=(150, 1)) + 1.5 * (2 * y_true[:, None] - 1))))
    _check_classification(y_true, outputs, outputs[:, 0])


def test_one_vs_rest_sigmoids_are_normalised_for_the_log_loss() -> None:
    rng = np.random.default_rng(2)
    y_true = rng.integers(0, 3, 80)
    outputs = rng.uniform(0.01, 0.99, size=(80, 3))
    proba = outputs / outputs.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probabilities(outputs), proba, rtol=REL)
    _check_classification(y_true, outputs, proba)
    np.testing.assert_array_equal(probabilities(np.zeros((1, 4))), [[0.25] * 4])


def test_regression_figures_equal_scikit_learn_per_target_and_averaged() -> None:
    rng = np.random.default_rng(3)
    y_true = rng.normal(size=(60, 3)) * [1.0, 10.0, 0.1]
    y_pred = y_true + rng.normal(size=(60, 3)) * [0.5, 3.0, 0.05]
    got = regression_metrics(y_true, y_pred)
    for name, fn in (
        ("mse", skm.mean_squared_error),
        ("rmse", skm.root_mean_squared_error),
        ("mae", skm.mean_absolute_error),
        ("r2", skm.r2_score),
    ):
        raw = fn(y_true, y_pred, multioutput="raw_values")
        np.testing.assert_allclose([t[name] for t in got["per_target"]], raw, rtol=REL)
        averaged = fn(y_true, y_pred, multioutput="uniform_average")
        assert got[name] == pytest.approx(averaged, rel=REL), name
    assert [t["target"] for t in got["per_target"]] == [0, 1, 2]
    # The averaged RMSE is the mean of the per-target ones, not the root of the mean MSE.
    assert got["rmse"] != pytest.approx(np.sqrt(got["mse"]), rel=1e-3)


def test_r2_of_a_constant_target_and_of_one_row() -> None:
    y_true = np.array([[2.0, 2.0], [2.0, 3.0], [2.0, 4.0]])
    exact = y_true.copy()
    off = y_true + [[0.5, 0.0]]
    for y_pred in (exact, off):
        raw = skm.r2_score(y_true, y_pred, multioutput="raw_values")  # force_finite: 1 or 0
        got = regression_metrics(y_true, y_pred)
        assert [t["r2"] for t in got["per_target"]] == raw.tolist()
    assert regression_metrics(y_true, off)["per_target"][0]["r2"] == 0.0
    one = regression_metrics(np.array([[1.0]]), np.array([[1.5]]))
    assert one["r2"] is None and one["per_target"][0]["r2"] is None  # undefined for one row
    assert (one["mse"], one["rmse"], one["mae"]) == (0.25, 0.5, 0.5)


def test_class_codes_map_dataset_targets_onto_the_model_classes() -> None:
    model = ["setosa", "versicolor", "virginica"]
    # One-hot rows of a dataset whose classes are a subset, in its own order.
    Y = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    codes = class_codes(Y, ["versicolor", "setosa"], model)
    assert codes.tolist() == [0, 1, 0]
    # One column of numbers: the labels themselves (integral floats are integers).
    assert class_codes(np.array([[7.0], [3.0], [5.0]]), None, [3, 5, 7]).tolist() == [2, 0, 1]
    # A binary dataset's 0/1 column names its classes by index.
    assert class_codes(np.array([[1.0], [0.0]]), ["no", "yes"], ["no", "yes"]).tolist() == [1, 0]
    # One-hot rows without class names: the column index is the label.
    assert class_codes(np.eye(3)[[2, 0]], None, [0, 1, 2]).tolist() == [2, 0]


def test_class_codes_refuse_unknown_labels_and_rows_that_are_not_one_hot() -> None:
    with pytest.raises(EvaluationError) as info:
        class_codes(np.array([[3.0], [9.0], [11.0], [9.0]]), None, [3, 5, 7])
    assert str(info.value) == (
        "the targets hold labels the model was not trained on: 9, 11 (its classes are 3, 5, 7)"
    )
    with pytest.raises(EvaluationError, match="'daisy'.*its classes are 'rose', 'tulip'"):
        class_codes(np.eye(2), ["daisy", "rose"], ["rose", "tulip"])
    with pytest.raises(EvaluationError, match=r"row 1 \(counting from 0\) is not one-hot"):
        class_codes(np.array([[1.0, 0.0], [0.5, 0.5]]), None, [0, 1])


# -- Network.evaluate: the run's own cost function ------------------------------------------


def _fitted(units: int, activation: str, loss: str, Y: np.ndarray, X: np.ndarray) -> Network:
    hidden = {"units": 6, "activation": "tanh"}
    output = {"units": units, "activation": activation}
    net = Network.from_spec({"input_dim": X.shape[1], "layers": [hidden, output]}, seed=0)
    adam = {"name": "adam", "learning_rate": 0.05}
    training = {"loss": loss, "epochs": 5, "batch_size": 16, "standardize": True,
                "dtype": "float64", "optimizer": adam}  # fmt: skip
    net.fit(X, Y, training)
    return net


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    X = rng.normal(5, 3, size=(70, 3))
    return X, np.argmax(X @ rng.normal(size=(3, 3)), axis=1)


def test_evaluate_gives_predict_outputs_and_losses_equal_to_scikit_learn(data) -> None:
    X, y = data
    cce = _fitted(3, "softmax", "categorical_crossentropy", y, X)
    loss, outputs = cce.evaluate(X, np.eye(3)[y], "categorical_crossentropy")
    np.testing.assert_array_equal(outputs, cce.predict(X))
    assert loss == pytest.approx(skm.log_loss(y, outputs, labels=[0, 1, 2]), rel=1e-9)

    binary = (y == 1).astype(float)
    bce = _fitted(1, "sigmoid", "binary_crossentropy", binary, X)
    loss, outputs = bce.evaluate(X, binary[:, None], "binary_crossentropy")
    assert loss == pytest.approx(skm.log_loss(binary, outputs[:, 0]), rel=1e-9)

    Y = np.stack([X[:, 0] * 2.0, X[:, 1] - X[:, 2]], axis=1)
    for loss_name, fn in (("mse", skm.mean_squared_error), ("mae", skm.mean_absolute_error)):
        net = _fitted(2, "identity", loss_name, Y, X)
        loss, outputs = net.evaluate(X, Y, loss_name)
        assert loss == pytest.approx(fn(Y, outputs), rel=REL)


def test_evaluate_on_the_validation_rows_is_fits_val_loss(data) -> None:
    X, y = data
    net = Network.from_spec(
        {"input_dim": 3, "layers": [{"units": 5, "activation": "relu"},
                                    {"units": 3, "activation": "softmax"}]}, seed=1)  # fmt: skip
    training = {"loss": "categorical_crossentropy", "epochs": 4, "batch_size": 8, "seed": 9,
                "validation_split": 0.3, "standardize": True, "dtype": "float32"}  # fmt: skip
    history = net.fit(X, y, training)
    # fit's validation rows: the first int(0.3 * n) of default_rng(seed).permutation(n), sorted.
    val = np.sort(np.random.default_rng(9).permutation(len(y))[: int(0.3 * len(y))])
    loss, _ = net.evaluate(X[val], np.eye(3)[y[val]], "categorical_crossentropy")
    assert loss == history[-1]["val_loss"]
