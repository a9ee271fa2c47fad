"""End to end: ``POST /runs/{id}/evaluate`` on SQLite and PostgreSQL.

Every figure is compared with scikit-learn's metric on the same predictions (the outputs of
``POST /predict`` on the evaluated rows), and the loss with the engine's own loss of a model
trained here with the same request (bit-identical training, float64).
"""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np
import pytest
from sklearn import metrics as skm

from core.engine import Network
from tests.e2e.stack import Stack
from tests.seed import EXAMPLES

IRIS_NETWORK = {
    "input_dim": 4,
    "layers": [{"units": 16, "activation": "tanh"}, {"units": 3, "activation": "softmax"}],
}
IRIS_TRAINING: dict[str, Any] = {
    "loss": "categorical_crossentropy",
    "optimizer": {"name": "adam", "learning_rate": 0.01},
    "epochs": 40,
    "batch_size": 16,
    "shuffle": True,
    "seed": 0,
    "standardize": True,
    "dtype": "float64",
}
REL = 1e-12


def _iris_rows() -> tuple[list[str], list[list[str]]]:
    with (EXAMPLES / "iris" / "iris.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    order = np.random.default_rng(5).permutation(len(body))
    return header, [body[i] for i in order]


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([header, *rows])
    return buf.getvalue().encode()


def _upload_csv(stack: Stack, name: str, data: bytes, target: str = "species") -> dict:
    resp = stack.client.post(
        "/api/v1/datasets",
        files={"file": (name, data, "text/csv")},
        data={"target": target, "name": name},
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


def _evaluate(stack: Stack, run_id: str, dataset_id: str) -> Any:
    return stack.client.post(f"/api/v1/runs/{run_id}/evaluate", json={"dataset_id": dataset_id})


def _predict(stack: Stack, run_id: str, X: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    resp = stack.client.post(f"/api/v1/runs/{run_id}/predict", json={"inputs": X.tolist()})
    assert resp.status_code == 200, resp.text
    return np.array(resp.json()["outputs"]), resp.json().get("labels")


def _check_classification(got: dict, y_true: list, outputs: np.ndarray, y_pred: list) -> None:
    """Every classification figure of ``got`` against scikit-learn on the same predictions."""
    classes = got["classes"]
    assert got["task"] == "classification" and got["n_samples"] == len(y_true)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred), rel=REL)
    p, r, f, s = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0
    )
    assert [c["label"] for c in got["per_class"]] == classes
    np.testing.assert_allclose([c["precision"] for c in got["per_class"]], p, rtol=REL)
    np.testing.assert_allclose([c["recall"] for c in got["per_class"]], r, rtol=REL)
    np.testing.assert_allclose([c["f1"] for c in got["per_class"]], f, rtol=REL)
    assert [c["support"] for c in got["per_class"]] == s.tolist()
    macro = skm.f1_score(y_true, y_pred, average="macro", zero_division=0)
    assert got["macro_f1"] == pytest.approx(macro, rel=REL)
    cm = skm.confusion_matrix(y_true, y_pred, labels=classes)
    assert got["confusion_matrix"] == cm.tolist()
    proba = outputs[:, 0] if outputs.shape[1] == 1 else outputs
    assert got["log_loss"] == pytest.approx(skm.log_loss(y_true, proba, labels=classes), rel=REL)


@pytest.fixture(scope="module")
def iris(stack: Stack) -> dict[str, Any]:
    """A classifier trained on 100 iris rows, and datasets of the 50 others."""
    header, rows = _iris_rows()
    train = _upload_csv(stack, "iris-train.csv", _csv(header, rows[:100]))
    test = _upload_csv(stack, "iris-test.csv", _csv(header, rows[100:]))
    run = stack.submit(train["id"], IRIS_NETWORK, IRIS_TRAINING)
    done = stack.wait_done(run["id"])
    assert done["status"] == "succeeded", (done, stack.logs())
    X_train = np.array([[float(v) for v in row[:4]] for row in rows[:100]])
    labels = ["setosa", "versicolor", "virginica"]
    Y_train = np.array([[float(row[4] == c) for c in labels] for row in rows[:100]])
    reference = Network.from_spec(IRIS_NETWORK, seed=IRIS_TRAINING["seed"])
    reference.fit(X_train, Y_train, IRIS_TRAINING)
    return {"header": header, "rows": rows, "train": train, "test": test, "run": run["id"],
            "reference": reference}  # fmt: skip


def test_a_classifier_is_scored_on_held_out_rows_as_scikit_learn_scores_it(
    stack: Stack, iris: dict[str, Any]
) -> None:
    resp = _evaluate(stack, iris["run"], iris["test"]["id"])
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert (got["run_id"], got["dataset_id"]) == (iris["run"], iris["test"]["id"])
    assert got["classes"] == ["setosa", "versicolor", "virginica"]
    assert got["loss_name"] == "categorical_crossentropy"

    rows = iris["rows"][100:]
    X = np.array([[float(v) for v in row[:4]] for row in rows])
    y_true = [row[4] for row in rows]
    outputs, y_pred = _predict(stack, iris["run"], X)
    _check_classification(got, y_true, outputs, y_pred)
    assert got["accuracy"] > 0.8
    # The run's own loss: as the engine computes it on these rows, and ~ the log-loss.
    onehot = np.array([[float(t == c) for c in got["classes"]] for t in y_true])
    loss, _ = iris["reference"].evaluate(X, onehot, "categorical_crossentropy")
    assert got["loss"] == loss
    assert got["loss"] == pytest.approx(got["log_loss"], rel=1e-9)


def test_integer_labels_are_scored_against_the_run_classes_even_when_one_is_absent(
    stack: Stack,
) -> None:
    rng = np.random.default_rng(11)
    labels = np.array([3, 5, 7])[rng.integers(0, 3, 120)]
    X = np.stack([labels * 1.0, -labels * 0.5], axis=1) + rng.normal(0, 1.2, (120, 2))
    train = stack.upload_json(X[:80].tolist(), labels[:80].tolist())
    no_seven = labels[80:] != 7
    test = stack.upload_json(X[80:][no_seven].tolist(), labels[80:][no_seven].tolist())
    network = {**IRIS_NETWORK, "input_dim": 2}
    run = stack.submit(train["id"], network, {**IRIS_TRAINING, "standardize": True})
    assert stack.wait_done(run["id"])["status"] == "succeeded", stack.logs()

    resp = _evaluate(stack, run["id"], test["id"])
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert got["classes"] == [3, 5, 7] and got["per_class"][2]["support"] == 0
    outputs, y_pred = _predict(stack, run["id"], X[80:][no_seven])
    _check_classification(got, labels[80:][no_seven].tolist(), outputs, y_pred)

    # A label the run never saw is named.
    unseen = stack.upload_json([[0.0, 0.0], [1.0, 1.0]], [3, 9])
    resp = _evaluate(stack, run["id"], unseen["id"])
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"] == (
        f"dataset {unseen['id']}: the targets hold labels the model was not trained on: 9 "
        "(its classes are 3, 5, 7)"
    )


def test_a_binary_classifier_with_one_sigmoid_output(stack: Stack) -> None:
    rng = np.random.default_rng(12)
    X = rng.normal(size=(100, 3))
    y = (X[:, 0] - X[:, 2] + rng.normal(0, 0.5, 100) > 0).astype(int)
    train = stack.upload_json(X[:70].tolist(), y[:70].tolist(), task="classification")
    test = stack.upload_json(X[70:].tolist(), y[70:].tolist())  # numbers: labels by value
    network = {"input_dim": 3, "layers": [{"units": 1, "activation": "sigmoid"}]}
    training = {**IRIS_TRAINING, "loss": "binary_crossentropy"}
    run = stack.submit(train["id"], network, training)
    assert stack.wait_done(run["id"])["status"] == "succeeded", stack.logs()
    got = _evaluate(stack, run["id"], test["id"]).json()
    assert got["classes"] == [0, 1]
    outputs, y_pred = _predict(stack, run["id"], X[70:])
    _check_classification(got, y[70:].tolist(), outputs, y_pred)
    assert got["loss"] == pytest.approx(got["log_loss"], rel=1e-9)


def test_a_regression_is_scored_per_target_and_averaged_as_scikit_learn_scores_it(
    stack: Stack,
) -> None:
    rng = np.random.default_rng(13)
    X = rng.normal(size=(150, 3))
    Y = np.stack([X @ [1.0, -2.0, 0.5], 10.0 * np.tanh(X[:, 1]) + 3.0], axis=1)
    Y += rng.normal(0, 0.3, Y.shape)
    train = stack.upload_json(X[:100].tolist(), Y[:100].tolist())
    test = stack.upload_json(X[100:].tolist(), Y[100:].tolist())
    network = {"input_dim": 3, "layers": [{"units": 16, "activation": "tanh"},
                                          {"units": 2, "activation": "identity"}]}  # fmt: skip
    training = {**IRIS_TRAINING, "loss": "mae", "epochs": 60}
    run = stack.submit(train["id"], network, training)
    assert stack.wait_done(run["id"])["status"] == "succeeded", stack.logs()

    resp = _evaluate(stack, run["id"], test["id"])
    assert resp.status_code == 200, resp.text
    got = resp.json()
    assert (got["task"], got["n_samples"], got["loss_name"]) == ("regression", 50, "mae")
    outputs, labels = _predict(stack, run["id"], X[100:])
    assert labels is None
    y_true = Y[100:]
    for name, fn in (
        ("mse", skm.mean_squared_error),
        ("rmse", skm.root_mean_squared_error),
        ("mae", skm.mean_absolute_error),
        ("r2", skm.r2_score),
    ):
        raw = fn(y_true, outputs, multioutput="raw_values")
        np.testing.assert_allclose([t[name] for t in got["per_target"]], raw, rtol=REL)
        assert got[name] == pytest.approx(fn(y_true, outputs), rel=REL), name
    assert [t["target"] for t in got["per_target"]] == [0, 1]
    assert got["loss"] == pytest.approx(got["mae"], rel=REL)  # the run's loss is MAE
    assert "accuracy" not in got and "classes" not in got


def test_what_does_not_fit_is_a_clear_4xx(stack: Stack, iris: dict[str, Any]) -> None:
    run, test = iris["run"], iris["test"]["id"]
    missing = "00000000-0000-4000-8000-000000000000"
    resp = _evaluate(stack, missing, test)
    assert (resp.status_code, resp.json()["detail"]) == (404, f"run {missing} not found")
    resp = _evaluate(stack, run, missing)
    assert (resp.status_code, resp.json()["detail"]) == (404, f"dataset {missing} not found")

    # Features: another number of them, or the same in another order.
    header, rows = iris["header"], iris["rows"][100:]
    narrow = _upload_csv(stack, "narrow.csv", _csv(header[1:], [r[1:] for r in rows]))
    resp = _evaluate(stack, run, narrow["id"])
    assert resp.status_code == 422
    assert resp.json()["detail"] == (
        f"dataset {narrow['id']} has 3 feature columns but run {run}'s network takes 4 "
        "(network.input_dim)"
    )
    swap = [1, 0, 2, 3, 4]
    swapped_csv = _csv([header[j] for j in swap], [[r[j] for j in swap] for r in rows])
    swapped = _upload_csv(stack, "swapped.csv", swapped_csv)
    resp = _evaluate(stack, run, swapped["id"])
    assert resp.status_code == 422
    assert resp.json()["detail"] == (
        f"dataset {swapped['id']}'s feature columns are sepal_width, sepal_length, "
        f"petal_length, petal_width but run {run} trained on sepal_length, sepal_width, "
        "petal_length, petal_width: the same columns, in the same order, are needed"
    )
    # Targets: labels the classifier does not know; another number of regression targets.
    renamed = [[*r[:4], "iris-" + r[4]] for r in rows]
    other = _upload_csv(stack, "other.csv", _csv(header, renamed))
    resp = _evaluate(stack, run, other["id"])
    assert resp.status_code == 422
    assert "labels the model was not trained on: 'iris-" in resp.json()["detail"]
    assert "(its classes are 'setosa', 'versicolor', 'virginica')" in resp.json()["detail"]

    # The body is checked like any other.
    resp = stack.client.post(f"/api/v1/runs/{run}/evaluate", json={"dataset": test})
    assert resp.status_code == 422 and isinstance(resp.json()["detail"], list)


def test_a_run_without_a_model_yet_is_409_and_a_regression_checks_its_targets(
    stack: Stack,
) -> None:
    rng = np.random.default_rng(14)
    X = rng.normal(size=(40, 2))
    two = stack.upload_json(X.tolist(), np.stack([X[:, 0], X[:, 1]], axis=1).tolist())
    one = stack.upload_json(X.tolist(), X[:, :1].tolist())
    network = {"input_dim": 2, "layers": [{"units": 2, "activation": "identity"}]}
    slow = stack.submit(two["id"], network, {**IRIS_TRAINING, "loss": "mse", "epochs": 1_000_000,
                                             "batch_size": 1})  # fmt: skip
    resp = _evaluate(stack, slow["id"], two["id"])
    assert resp.status_code == 409
    assert resp.json()["detail"].startswith(f"run {slow['id']} is ")
    assert "has no stored model" in resp.json()["detail"]
    stack.client.post(f"/api/v1/runs/{slow['id']}/cancel")

    run = stack.submit(two["id"], network, {**IRIS_TRAINING, "loss": "mse", "epochs": 3})
    assert stack.wait_done(run["id"])["status"] == "succeeded", stack.logs()
    resp = _evaluate(stack, run["id"], one["id"])
    assert resp.status_code == 422
    assert resp.json()["detail"] == (
        f"dataset {one['id']} has 1 target column but run {run['id']} predicts 2"
    )
    # One row: R² is undefined (null), the other figures are not.
    single = stack.upload_json(X[:1].tolist(), X[:1].tolist())
    got = _evaluate(stack, run["id"], single["id"]).json()
    assert got["r2"] is None and all(t["r2"] is None for t in got["per_target"])
    outputs, _ = _predict(stack, run["id"], X[:1])
    assert got["mse"] == pytest.approx(skm.mean_squared_error(X[:1], outputs), rel=REL)
