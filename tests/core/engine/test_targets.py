"""The loss decides the task: one column of class labels under a cross-entropy loss is encoded
by class, as scikit-learn's ``LabelBinarizer`` (the reference here) encodes a classifier's y."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.preprocessing import LabelBinarizer

from core.engine import EngineError, Network
from core.engine.targets import encode_labels, label_classes

CCE = "categorical_crossentropy"
BCE = "binary_crossentropy"


def _spec(k: int, activation: str = "softmax", n_in: int = 3) -> dict:
    return {
        "input_dim": n_in,
        "layers": [{"units": 5, "activation": "tanh"}, {"units": k, "activation": activation}],
    }


def _data(labels: list, n: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.array(labels)[rng.permutation(np.arange(n) % len(labels))]
    return rng.normal(size=(n, 3)), y


@pytest.mark.parametrize(
    "labels",
    [[3, 5, 7], [-1, 0, 1, 2], [10.0, 20.0, 30.0], ["setosa", "versicolor", "virginica"]],
    ids=["ints", "negative ints", "integral floats", "text"],
)
@pytest.mark.parametrize("column", [False, True], ids=["1-D", "(n, 1)"])
def test_labels_are_one_hot_by_sorted_class_as_label_binarizer(labels: list, column: bool) -> None:
    _, y = _data(labels)
    k = len(labels)
    lb = LabelBinarizer().fit(y)
    net = Network.from_spec(_spec(k), seed=0)
    Y = net.prepare_targets(y.reshape(-1, 1) if column else y, CCE, y.size, record_classes=True)
    np.testing.assert_array_equal(Y, lb.transform(y))
    assert net.classes == lb.classes_.tolist()
    # Labels are recorded as JSON-able values; integral floats as the integers they are.
    expected_type = str if isinstance(labels[0], str) else int
    assert all(type(c) is expected_type for c in net.classes)


def test_two_labels_for_one_sigmoid_output_are_0_and_1_as_label_binarizer() -> None:
    for labels in ([1, 2], ["no", "yes"], [-1, 1]):
        _, y = _data(labels)
        lb = LabelBinarizer().fit(y)
        net = Network.from_spec(_spec(1, "sigmoid"), seed=0)
        Y = net.prepare_targets(y, BCE, y.size, record_classes=True)
        np.testing.assert_array_equal(Y, lb.transform(y))  # (n, 1): 1 for classes_[1]
        assert net.classes == lb.classes_.tolist()


def test_zero_one_targets_are_used_as_they_are_and_recorded_as_classes() -> None:
    _, y = _data([0, 1])
    net = Network.from_spec(_spec(1, "sigmoid"), seed=0)
    Y = net.prepare_targets(y.astype(float), BCE, y.size, record_classes=True)
    np.testing.assert_array_equal(Y[:, 0], y)
    assert net.classes == [0, 1]


def test_probabilities_for_one_sigmoid_output_are_soft_targets_without_classes() -> None:
    y = np.array([0.0, 0.25, 1.0, 0.5])
    assert encode_labels(y, BCE, 1) is None
    net = Network.from_spec(_spec(1, "sigmoid"), seed=0)
    np.testing.assert_array_equal(net.prepare_targets(y, BCE, 4, record_classes=True)[:, 0], y)
    assert net.classes is None


def test_class_indices_keep_their_meaning_even_when_a_class_is_absent() -> None:
    y = np.array([0, 2, 2, 0])  # class 1 never occurs: still three outputs, indices as given
    net = Network.from_spec(_spec(3), seed=0)
    np.testing.assert_array_equal(net.prepare_targets(y, CCE, 4, record_classes=True), np.eye(3)[y])
    assert net.classes == [0, 1, 2]
    named = Network.from_spec(_spec(3), seed=0)
    named.classes = ["cat", "dog", "eel"]  # the caller's names for the indices stay
    named.prepare_targets(y, CCE, 4, record_classes=True)
    assert named.classes == ["cat", "dog", "eel"]


def test_regression_losses_and_several_columns_use_targets_as_they_are() -> None:
    assert encode_labels(np.array([3, 5, 7]), "mse", 1) is None
    assert encode_labels(np.array([3, 5, 7]), "mae", 3) is None
    assert encode_labels(np.eye(3), CCE, 3) is None
    net = Network.from_spec(_spec(3), seed=0)
    with pytest.raises(EngineError, match=r"Y must have shape \(3, 3\), got \(3, 1\)"):
        net.prepare_targets(np.array([[3.0], [5.0], [7.0]]), "mse", 3)


@pytest.mark.parametrize(
    ("y", "loss", "k", "message"),
    [
        (
            [1, 2, 3, 1],
            BCE,
            1,
            r"holds 3 classes \(1, 2, 3\), but the output layer has 1 unit, which separates "
            r"two: give it 3 softmax units and train with categorical_crossentropy",
        ),
        (
            [4, 5, 6, 7, 4],
            CCE,
            3,
            r"holds 4 classes \(4, 5, 6, 7\), but the output layer has 3 units: a "
            r"cross-entropy output needs one unit per class \(or class indices 0 … 2\)",
        ),
        (["a", "b", "a"], CCE, 3, r"holds 2 classes \('a', 'b'\), but the output layer has 3"),
        ([7, 7, 7], BCE, 1, r"holds 1 class \(7\) only; a classifier needs two or more"),
        (
            [0.5, 1.5, 2.0],
            CCE,
            3,
            r"numbers that are not class labels \(e.g. 0.5\); categorical_crossentropy needs "
            r"class labels \(integers or text\), one-hot rows$",
        ),
        ([0.5, 1.5], BCE, 1, r"not class labels \(e.g. 0.5\).* or probabilities in \[0, 1\]"),
    ],
)
def test_labels_that_cannot_fit_the_output_layer_say_what_to_change(
    y: list, loss: str, k: int, message: str
) -> None:
    with pytest.raises(EngineError, match=message):
        label_classes(np.array(y), loss, k)
    activation = "softmax" if loss == CCE else "sigmoid"
    X = np.zeros((len(y), 3))
    with pytest.raises(EngineError, match=message):
        Network.from_spec(_spec(k, activation), seed=0).fit(X, np.array(y), {"loss": loss})


def test_many_classes_are_shown_in_part() -> None:
    shown = r"holds 20 classes \(0, 1, 2, 3, 4, 5, … \(20 in all\)\)"
    with pytest.raises(EngineError, match=shown):
        label_classes(np.arange(20), BCE, 1)


def test_fit_on_integer_labels_trains_as_on_their_one_hot_rows_and_predicts_labels() -> None:
    """scikit-learn style ``fit(X, y)``: the same weights as one-hot targets, labels out."""
    X, y = _data([3, 5, 7], n=90, seed=1)
    X += np.where(y == 5, 2.0, 0.0)[:, None] - np.where(y == 7, 2.0, 0.0)[:, None]
    training = {"loss": CCE, "epochs": 30, "batch_size": 8, "validation_split": 0.2,
                "optimizer": {"name": "adam", "learning_rate": 0.05}}  # fmt: skip
    by_label = Network.from_spec(_spec(3), seed=2)
    history = by_label.fit(X, y, training)
    by_row = Network.from_spec(_spec(3), seed=2)
    by_row.fit(X, LabelBinarizer().fit_transform(y), training)
    for a, b in zip(by_label.weights, by_row.weights, strict=True):
        np.testing.assert_array_equal(a["W"], b["W"])
    assert by_label.classes == [3, 5, 7] and by_row.classes is None
    assert "accuracy" in history[-1] and history[-1]["val_accuracy"] > 0.8
    labels = by_label.predict_labels(X)
    assert set(labels) <= {3, 5, 7}
    assert np.mean(np.array(labels) == y) > 0.8
    restored = Network.load(by_label.save())
    assert restored.classes == [3, 5, 7] and restored.predict_labels(X) == labels
