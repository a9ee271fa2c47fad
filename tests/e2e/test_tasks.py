"""End to end: the loss decides the task (API.md §3).

Integer labels trained with a cross-entropy loss are classes, encoded as scikit-learn's
``LabelBinarizer`` encodes a classifier's ``y`` (the reference: the engine trained here on its
one-hot rows must give the worker's weights bit for bit); labels that cannot fit the output
layer, and a regression loss on classes, are refused with a 422 that says what to change.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.preprocessing import LabelBinarizer

from core.engine import Network
from tests.e2e.stack import Stack

CLASSIFIER = {
    "input_dim": 2,
    "layers": [{"units": 8, "activation": "tanh"}, {"units": 3, "activation": "softmax"}],
}
TRAINING: dict[str, Any] = {
    "loss": "categorical_crossentropy",
    "optimizer": {"name": "adam", "learning_rate": 0.05},
    "epochs": 15,
    "batch_size": 8,
    "shuffle": True,
    "seed": 2,
    "validation_split": 0.2,
    "dtype": "float64",
}


def _output(units: int, activation: str) -> dict[str, Any]:
    """CLASSIFIER with another output layer."""
    return {
        **CLASSIFIER,
        "layers": [CLASSIFIER["layers"][0], {"units": units, "activation": activation}],
    }


def _blobs(labels: list[Any], n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Separable blobs, one per label."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, len(labels), n)
    centres = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0], [3.0, 3.0]])[: len(labels)]
    return centres[codes] + rng.normal(0, 0.5, (n, 2)), np.array(labels)[codes]


def _post_run(stack: Stack, dataset_id: str, network: dict, training: dict) -> Any:
    body = {"dataset_id": dataset_id, "network": network, "training": training}
    return stack.client.post("/api/v1/runs", json=body)


def _refused(stack: Stack, dataset_id: str, network: dict, training: dict) -> str:
    resp = _post_run(stack, dataset_id, network, training)
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert isinstance(detail, str), detail
    return detail


def test_integer_labels_under_cross_entropy_train_a_classifier_of_those_labels(
    stack: Stack,
) -> None:
    X, y = _blobs([3, 5, 7])
    ds = stack.upload_json(X.tolist(), y.tolist(), name="int labels")
    # The dataset is stored as uploaded: numbers mean regression until a loss says otherwise.
    assert (ds["task"], ds["n_targets"], ds["classes"]) == ("regression", 1, None)
    run = stack.submit(ds["id"], CLASSIFIER, TRAINING)
    done = stack.wait_done(run["id"])
    assert done["status"] == "succeeded", (done, stack.logs())

    lb = LabelBinarizer().fit(y)
    reference = Network.from_spec(CLASSIFIER, seed=TRAINING["seed"])
    history = reference.fit(X, lb.transform(y), TRAINING)
    weights = stack.client.get(f"/api/v1/runs/{run['id']}/weights").json()["layers"]
    for got, want in zip(weights, reference.weights, strict=True):
        np.testing.assert_array_equal(np.array(got["W"]), want["W"])
        np.testing.assert_array_equal(np.array(got["b"]), want["b"])
    metrics = stack.client.get(f"/api/v1/runs/{run['id']}/metrics").json()["items"]
    assert [m["val_accuracy"] for m in metrics] == [h["val_accuracy"] for h in history]
    assert metrics[-1]["val_accuracy"] > 0.9

    pred = stack.client.post(f"/api/v1/runs/{run['id']}/predict", json={"inputs": X.tolist()})
    assert pred.status_code == 200, pred.text
    outputs = np.array(pred.json()["outputs"])
    np.testing.assert_array_equal(outputs, reference.predict(X))
    # The run's classes are the labels: predictions answer 3, 5 and 7, not column indices.
    assert pred.json()["labels"] == lb.classes_[np.argmax(outputs, axis=1)].tolist()
    assert set(pred.json()["labels"]) == {3, 5, 7}


def test_two_labels_train_one_sigmoid_output_with_the_second_as_positive(stack: Stack) -> None:
    X, y = _blobs([1, 2], seed=3)
    ds = stack.upload_json(X.tolist(), y.tolist())
    network = _output(1, "sigmoid")
    training = {**TRAINING, "loss": "binary_crossentropy"}
    run = stack.submit(ds["id"], network, training)
    assert stack.wait_done(run["id"])["status"] == "succeeded", stack.logs()
    reference = Network.from_spec(network, seed=TRAINING["seed"])
    reference.fit(X, LabelBinarizer().fit_transform(y), training)  # (n, 1): 1 for label 2
    pred = stack.client.post(f"/api/v1/runs/{run['id']}/predict", json={"inputs": X.tolist()})
    outputs = np.array(pred.json()["outputs"])
    np.testing.assert_array_equal(outputs, reference.predict(X))
    assert pred.json()["labels"] == np.where(outputs[:, 0] > 0.5, 2, 1).tolist()


def test_labels_that_do_not_fit_the_output_layer_are_422_saying_what_to_change(
    stack: Stack,
) -> None:
    X, y = _blobs([0, 1, 2, 3], seed=5)
    ds = stack.upload_json(X.tolist(), y.tolist())
    # 0..3 are not class indices of 3 outputs, nor 3 classes.
    detail = _refused(stack, ds["id"], CLASSIFIER, TRAINING)
    assert detail == (
        f"dataset {ds['id']}: the target column holds 4 classes (0, 1, 2, 3), but the output "
        "layer has 3 units: a cross-entropy output needs one unit per class (or class indices "
        "0 … 2) (network.layers[1].units is 3, training.loss is categorical_crossentropy)"
    )
    one = _output(1, "sigmoid")
    detail = _refused(stack, ds["id"], one, {**TRAINING, "loss": "binary_crossentropy"})
    assert (
        "holds 4 classes (0, 1, 2, 3), but the output layer has 1 unit, which separates two: "
        "give it 4 softmax units and train with categorical_crossentropy"
    ) in detail

    noise = stack.upload_json(X.tolist(), (X[:, 0] * 0.37).tolist())
    detail = _refused(stack, noise["id"], CLASSIFIER, TRAINING)
    assert "numbers that are not class labels" in detail and "one-hot rows" in detail

    # A regression loss on a label column with several outputs: the hint names the loss.
    detail = _refused(stack, ds["id"], _output(4, "identity"), {"loss": "mse"})
    assert detail.endswith(
        "has 1 targets; a column of class labels trains one unit per class under a "
        "cross-entropy loss (categorical_crossentropy with a softmax output)"
    )
    # Nothing was queued by the refusals.
    assert stack.client.get("/api/v1/runs", params={"status": "queued"}).json()["items"] == []


def test_a_regression_loss_on_classes_is_422_unless_asked_for_explicitly(stack: Stack) -> None:
    X, y = _blobs(["amber", "blue", "cyan"], seed=6)
    ds = stack.upload_json(X.tolist(), y.tolist())
    assert ds["task"] == "classification" and ds["n_targets"] == 3
    mse = {**TRAINING, "loss": "mse", "epochs": 3}

    detail = _refused(stack, ds["id"], CLASSIFIER, mse)
    assert detail == (
        "training.loss: mse is a regression loss, but network.layers[1] is a softmax, whose "
        "outputs are class probabilities; train classes with categorical_crossentropy "
        "(softmax output) or binary_crossentropy (sigmoid output), which report accuracy, or "
        "set training.regression_on_classes: true to fit them with mse anyway"
    )
    sigmoids = _output(3, "sigmoid")
    detail = _refused(stack, ds["id"], sigmoids, {**mse, "loss": "mae"})
    assert detail.startswith(
        f"training.loss: mae is a regression loss, but dataset {ds['id']} holds 3 classes "
        "(one-hot targets); "
    ) and detail.endswith("set training.regression_on_classes: true to fit them with mae anyway")

    # Asked for by name, both train, as regressions (no accuracy).
    for network in (CLASSIFIER, sigmoids):
        resp = _post_run(stack, ds["id"], network, {**mse, "regression_on_classes": True})
        assert resp.status_code == 202, resp.text
        assert resp.json()["training"]["regression_on_classes"] is True
        done = stack.wait_done(resp.json()["id"])
        assert done["status"] == "succeeded", (done, stack.logs())
        assert "accuracy" not in done["metrics"]
    # A regression loss on numbers needs no opt-in.
    numbers = stack.upload_json(X.tolist(), X[:, :1].tolist())
    regression = {**CLASSIFIER, "layers": [{"units": 1, "activation": "identity"}]}
    assert _post_run(stack, numbers["id"], regression, mse).status_code == 202


def test_a_sweep_validates_its_trials_by_the_same_rule(stack: Stack) -> None:
    X, y = _blobs([3, 5, 7], seed=8)
    ds = stack.upload_json(X.tolist(), y.tolist())
    base = {"dataset_id": ds["id"], "network": CLASSIFIER, "training": {**TRAINING, "epochs": 2}}
    resp = stack.client.post("/api/v1/sweeps", json={
        "base": base, "metric": "val_accuracy",
        "search": {"type": "grid", "parameters": {"network.layers.1.units": [3, 2]}},
    })  # fmt: skip
    assert resp.status_code == 422, resp.text
    assert "trial 1" in resp.json()["detail"]
    assert "holds 3 classes (3, 5, 7), but the output layer has 2 units" in resp.json()["detail"]
    resp = stack.client.post("/api/v1/sweeps", json={
        "base": base, "metric": "val_accuracy", "max_concurrent": 2,
        "search": {"type": "grid", "parameters": {"training.optimizer.learning_rate": [0.05, 0.1]}},
    })  # fmt: skip
    assert resp.status_code == 202, resp.text
