"""End to end: every dataset format trains, and classification labels come back."""

from __future__ import annotations

import io

import numpy as np

from tests.e2e.stack import Stack

CLASSIFIER = {
    "input_dim": 2,
    "layers": [{"units": 8, "activation": "tanh"}, {"units": 3, "activation": "softmax"}],
}
CLASSIFIER_TRAINING = {
    "loss": "categorical_crossentropy",
    "optimizer": {"name": "adam", "learning_rate": 0.05},
    "epochs": 60,
    "batch_size": 16,
    "seed": 1,
    "standardize": True,
}


def _blobs(n: int = 90) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    centres = {"red": (0.0, 5.0), "green": (5.0, 0.0), "blue": (-5.0, -5.0)}
    names = list(centres)
    labels = [names[i % 3] for i in range(n)]
    X = np.array([centres[lab] for lab in labels]) + rng.normal(0, 0.7, size=(n, 2))
    return X, labels


def test_csv_with_a_label_column_trains_a_classifier(stack: Stack) -> None:
    X, labels = _blobs()
    lines = ["x1,x2,colour"] + [
        f"{a:.6f},{b:.6f},{lab}" for (a, b), lab in zip(X, labels, strict=True)
    ]
    resp = stack.client.post(
        "/api/v1/datasets",
        files={"file": ("blobs.csv", "\n".join(lines).encode(), "text/csv")},
        data={"target": "colour", "name": "blobs"},
    )
    assert resp.status_code == 201, resp.text
    ds = resp.json()
    assert resp.headers["location"] == f"/api/v1/datasets/{ds['id']}"
    assert ds["name"] == "blobs" and ds["task"] == "classification"
    assert (ds["n_samples"], ds["n_features"], ds["n_targets"]) == (90, 2, 3)
    assert ds["classes"] == ["blue", "green", "red"]
    assert len(ds["sha256"]) == 64 and ds["size_bytes"] > 0
    assert stack.client.get(f"/api/v1/datasets/{ds['id']}").json() == ds
    listed = stack.client.get("/api/v1/datasets").json()
    assert ds["id"] in [d["id"] for d in listed["items"]]

    run = stack.submit(ds["id"], CLASSIFIER, CLASSIFIER_TRAINING)
    done = stack.wait_done(run["id"], timeout=120)
    assert done["status"] == "succeeded", (done, stack.logs())
    assert done["metrics"]["accuracy"] >= 0.95
    pred = stack.client.post(
        f"/api/v1/runs/{run['id']}/predict", json={"inputs": [[0, 5], [5, 0], [-5, -5]]}
    ).json()
    assert pred["labels"] == ["red", "green", "blue"]
    outputs = np.array(pred["outputs"])
    np.testing.assert_allclose(outputs.sum(axis=1), 1.0, rtol=1e-5)


def test_npz_upload_trains_a_regression(stack: Stack) -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(64, 3))
    y = X @ np.array([1.5, -2.0, 0.5]) + 0.3
    buf = io.BytesIO()
    np.savez(buf, X=X, y=y)
    resp = stack.client.post(
        "/api/v1/datasets",
        files={"file": ("lin.npz", buf.getvalue(), "application/octet-stream")},
    )
    assert resp.status_code == 201, resp.text
    ds = resp.json()
    assert (ds["task"], ds["n_features"], ds["n_targets"], ds["classes"]) == (
        "regression", 3, 1, None,
    )  # fmt: skip
    network = {"input_dim": 3, "layers": [{"units": 1, "activation": "identity"}]}
    training = {"loss": "mse", "optimizer": {"name": "sgd", "learning_rate": 0.05},
                "epochs": 200, "batch_size": 16, "dtype": "float64"}  # fmt: skip
    run = stack.submit(ds["id"], network, training)
    assert stack.wait_done(run["id"], timeout=120)["status"] == "succeeded"
    layers = stack.client.get(f"/api/v1/runs/{run['id']}/weights").json()["layers"]
    np.testing.assert_allclose(np.array(layers[0]["W"])[:, 0], [1.5, -2.0, 0.5], atol=1e-3)
    np.testing.assert_allclose(layers[0]["b"], [0.3], atol=1e-3)


def test_json_upload_with_one_dimensional_y(stack: Stack) -> None:
    ds = stack.upload_json([[0, 0], [0, 1], [1, 0], [1, 1]], [0, 1, 1, 0], name="xor",
                           task="classification")  # fmt: skip
    assert (ds["name"], ds["task"], ds["n_targets"], ds["classes"]) == (
        "xor", "classification", 1, [0, 1],
    )  # fmt: skip
    network = {"input_dim": 2, "layers": [{"units": 4, "activation": "tanh"},
                                          {"units": 1, "activation": "sigmoid"}]}  # fmt: skip
    training = {"loss": "binary_crossentropy", "optimizer": {"name": "adam", "learning_rate": 0.1},
                "epochs": 300, "batch_size": 4, "seed": 0}  # fmt: skip
    run = stack.submit(ds["id"], network, training)
    assert stack.wait_done(run["id"], timeout=120)["status"] == "succeeded"
    pred = stack.client.post(
        f"/api/v1/runs/{run['id']}/predict", json={"inputs": [[0, 0], [0, 1], [1, 0], [1, 1]]}
    ).json()
    assert pred["labels"] == [0, 1, 1, 0]
