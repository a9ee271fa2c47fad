"""End to end: every dataset format trains, and classification labels come back."""

from __future__ import annotations

import io
import json
import os

import numpy as np

from core.engine import load_model
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

    # The downloaded model is the whole model: the engine reads the .npz back and predicts
    # what /predict answered, standardisation and labels included; the JSON holds the same.
    npz = stack.client.get(f"/api/v1/runs/{run['id']}/weights", params={"format": "npz"})
    assert npz.status_code == 200 and npz.headers["content-type"] == "application/octet-stream"
    model = load_model(npz.content)
    assert model.classes == ["blue", "green", "red"] and model.x_mean is not None
    inputs = np.array([[0, 5], [5, 0], [-5, -5]], dtype=np.float64)
    np.testing.assert_array_equal(model.predict(inputs).astype(np.float64), outputs)
    assert model.predict_labels(inputs) == pred["labels"]
    document = stack.client.get(f"/api/v1/runs/{run['id']}/weights").json()
    assert set(document) == {"format", "version", "dtype", "spec", "classes", "preprocessing",
                             "layers", "epoch", "partial"}  # fmt: skip
    assert document["partial"] is False
    assert (document["format"], document["version"], document["dtype"]) == (
        "backprop-model", 1, "float32",
    )  # fmt: skip
    assert document["spec"] == {**CLASSIFIER, "init": "glorot_uniform"}
    assert document["classes"] == ds["classes"]
    np.testing.assert_array_equal(document["preprocessing"]["x_mean"], model.x_mean)
    np.testing.assert_array_equal(document["preprocessing"]["x_std"], model.x_std)
    for layer, stored in zip(document["layers"], model.weights, strict=True):
        np.testing.assert_array_equal(layer["W"], stored["W"])
        np.testing.assert_array_equal(layer["b"], stored["b"])


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
    document = stack.client.get(f"/api/v1/runs/{run['id']}/weights").json()
    layers = document["layers"]
    np.testing.assert_allclose(np.array(layers[0]["W"])[:, 0], [1.5, -2.0, 0.5], atol=1e-3)
    np.testing.assert_allclose(layers[0]["b"], [0.3], atol=1e-3)
    # a regression without standardisation says so
    assert document["classes"] is None and document["preprocessing"] is None
    npz = stack.client.get(f"/api/v1/runs/{run['id']}/weights", params={"format": "npz"})
    with np.load(io.BytesIO(npz.content), allow_pickle=False) as arrays:
        assert sorted(arrays.files) == ["W0", "b0", "meta"]
        assert json.loads(str(arrays["meta"]))["classes"] is None


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


def _unique_rows(n: int = 12) -> tuple[list[list[float]], list[float]]:
    """Data no other test uploads (the PostgreSQL database is shared by the test modules)."""
    rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
    X = rng.normal(size=(n, 2))
    return X.tolist(), (X @ [0.5, -1.0]).tolist()


def _datasets_with(stack: Stack, sha256: str) -> list[dict]:
    items = stack.client.get("/api/v1/datasets", params={"limit": 500}).json()["items"]
    return [d for d in items if d["sha256"] == sha256]


def test_the_same_content_again_is_the_same_dataset(stack: Stack) -> None:
    X, y = _unique_rows()
    first = stack.client.post("/api/v1/datasets", json={"name": "first", "X": X, "y": y})
    assert first.status_code == 201, first.text
    ds = first.json()

    # The same content under another name: 200, nothing stored, the first record.
    again = stack.client.post("/api/v1/datasets", json={"name": "second", "X": X, "y": y})
    assert again.status_code == 200, again.text
    assert again.json() == ds and again.json()["name"] == "first"
    assert again.headers["location"] == f"/api/v1/datasets/{ds['id']}"
    assert [d["id"] for d in _datasets_with(stack, ds["sha256"])] == [ds["id"]]

    # Other content is another dataset.
    changed = stack.client.post("/api/v1/datasets", json={"X": X, "y": [v + 1 for v in y]})
    assert changed.status_code == 201 and changed.json()["sha256"] != ds["sha256"]

    # ?dedupe=false stores a copy; a later upload still answers the first one.
    copy = stack.client.post("/api/v1/datasets", params={"dedupe": "false"}, json={"X": X, "y": y})
    assert copy.status_code == 201, copy.text
    assert copy.json()["id"] != ds["id"] and copy.json()["sha256"] == ds["sha256"]
    later = stack.client.post("/api/v1/datasets", params={"dedupe": "true"}, json={"X": X, "y": y})
    assert later.status_code == 200 and later.json()["id"] == ds["id"]
    assert {d["id"] for d in _datasets_with(stack, ds["sha256"])} == {ds["id"], copy.json()["id"]}
    bad = stack.client.post("/api/v1/datasets", params={"dedupe": "maybe"}, json={"X": X, "y": y})
    assert bad.status_code == 422

    # Deleted, the content is new again.
    for dataset_id in (ds["id"], copy.json()["id"]):
        assert stack.client.delete(f"/api/v1/datasets/{dataset_id}").status_code == 204
    anew = stack.client.post("/api/v1/datasets", json={"X": X, "y": y})
    assert anew.status_code == 201 and anew.json()["id"] not in (ds["id"], copy.json()["id"])


def test_a_csv_uploaded_again_is_the_same_dataset_and_its_runs_train(stack: Stack) -> None:
    X, y = _unique_rows(20)
    rows = "\n".join(f"{a!r},{b!r},{t!r}" for (a, b), t in zip(X, y, strict=True))

    def upload(header: str, filename: str, **params: str):  # type: ignore[no-untyped-def]
        return stack.client.post(
            "/api/v1/datasets", params=params, data={"target": "t"},
            files={"file": (filename, f"{header}\n{rows}\n".encode(), "text/csv")},
        )  # fmt: skip

    first = upload("a,b,t", "one.csv")
    assert first.status_code == 201, first.text
    # The file's name does not count; the same numbers with other column names do.
    assert upload("a,b,t", "two.csv").json() == first.json()
    assert upload("a,b,t", "two.csv").status_code == 200
    renamed = upload("p,q,t", "one.csv")
    assert renamed.status_code == 201 and renamed.json()["id"] != first.json()["id"]
    # The same rows sent as JSON have no column names: another dataset too.
    as_json = stack.client.post("/api/v1/datasets", json={"X": X, "y": y})
    assert as_json.status_code == 201 and as_json.json()["id"] != first.json()["id"]

    network = {"input_dim": 2, "layers": [{"units": 1, "activation": "identity"}]}
    training = {"loss": "mse", "optimizer": {"name": "sgd", "learning_rate": 0.1},
                "epochs": 50, "batch_size": 20, "dtype": "float64"}  # fmt: skip
    run = stack.submit(upload("a,b,t", "three.csv").json()["id"], network, training)
    assert run["dataset_id"] == first.json()["id"]
    assert stack.wait_done(run["id"], timeout=120)["status"] == "succeeded"
