"""End to end: learning-curve images of a run, and its ONNX export against /predict.

A real API and worker (``stack`` fixture, SQLite and PostgreSQL) train a small classifier
with ``standardize: true``; its ``plot.svg`` must hold one vertex per epoch per curve, its
``plot.png`` must decode, and onnxruntime on ``weights?format=onnx`` must give the outputs of
``POST /predict``.
"""

from __future__ import annotations

import io
import re
import struct
import xml.etree.ElementTree as ET

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from tests.e2e.stack import Stack, early_stopped_run
from tests.e2e.test_runs import SEED_NETWORK, SEED_X, SEED_Y, long_training

SVG = "{http://www.w3.org/2000/svg}"
EPOCHS = 12
CLASSIFIER = {
    "input_dim": 3,
    "layers": [
        {"units": 8, "activation": "tanh"},
        {"units": 3, "activation": "softmax"},
    ],
}
TRAINING = {
    "loss": "categorical_crossentropy",
    "optimizer": {"name": "adam", "learning_rate": 0.05},
    "epochs": EPOCHS,
    "batch_size": 16,
    "shuffle": True,
    "seed": 1,
    "validation_split": 0.25,
    "standardize": True,
}


def _blobs(n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """Three classes in features of very different location and scale."""
    rng = np.random.default_rng(seed)
    names = ["amber", "blue", "cyan"]
    labels = rng.integers(0, 3, size=n)
    centres = np.array([[0.0, 0.0, 0.0], [3.0, -2.0, 1.0], [-2.0, 3.0, -1.0]])
    X = centres[labels] + rng.normal(0, 0.8, size=(n, 3))
    X = X * np.array([1.0, 40.0, 0.05]) + np.array([100.0, -500.0, 2.0])
    return X, [names[i] for i in labels]


@pytest.fixture(scope="module")
def trained(stack: Stack) -> dict:
    X, labels = _blobs(160, seed=4)
    ds = stack.upload_json(X.tolist(), labels, name="blobs3", task="classification")
    assert ds["n_targets"] == 3 and ds["classes"] == ["amber", "blue", "cyan"]
    run = stack.submit(ds["id"], CLASSIFIER, TRAINING, name="plots-and-onnx")
    done = stack.wait_done(run["id"], timeout=120)
    assert done["status"] == "succeeded", (done, stack.logs())
    return done


def _curves(svg_bytes: bytes) -> dict[str, list[tuple[float, float]]]:
    """``{metric: [(x, y), ...]}`` from the ``<g id="curve-<metric>">`` groups of the SVG."""
    root = ET.fromstring(svg_bytes)
    assert root.tag == SVG + "svg"
    curves: dict[str, list[tuple[float, float]]] = {}
    for group in root.iter(SVG + "g"):
        gid = group.get("id", "")
        if not gid.startswith("curve-") and gid != "best-epoch":
            continue
        paths = list(group.iter(SVG + "path"))
        assert len(paths) == 1, gid
        d = paths[0].get("d", "")
        commands = re.findall(r"([ML])\s*(-?[\d.]+)\s+(-?[\d.]+)", d)
        assert len(commands) == len(re.findall(r"[A-Za-z]", d)), d  # only moves and lines
        curves[gid.removeprefix("curve-")] = [(float(x), float(y)) for _, x, y in commands]
    return curves


def test_svg_plot_has_one_vertex_per_epoch_and_curve(stack: Stack, trained: dict) -> None:
    resp = stack.client.get(f"/api/v1/runs/{trained['id']}/plot.svg")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("image/svg+xml")
    items = stack.client.get(f"/api/v1/runs/{trained['id']}/metrics").json()["items"]
    assert len(items) == EPOCHS
    assert resp.headers["x-plot-epochs"] == resp.headers["x-plot-points"] == str(EPOCHS)

    curves = _curves(resp.content)
    assert set(curves) == {"loss", "val_loss", "accuracy", "val_accuracy"}
    for name, points in curves.items():
        assert len(points) == EPOCHS, name
        xs = [x for x, _ in points]
        assert all(b > a for a, b in zip(xs, xs[1:], strict=False)), (name, xs)
    # Same epochs, same x positions: the curves share the epoch axis.
    assert [x for x, _ in curves["loss"]] == [x for x, _ in curves["accuracy"]]
    # The loss falls, so its last vertex is drawn lower (larger SVG y) than its first.
    assert items[-1]["loss"] < items[0]["loss"]
    assert curves["loss"][-1][1] > curves["loss"][0][1]
    text = resp.text
    assert "plots-and-onnx" in text and "succeeded" in text


def test_the_plot_marks_the_epoch_early_stopping_kept(stack: Stack) -> None:
    done = early_stopped_run(stack)
    best = done["best_epoch"]
    items = stack.client.get(f"/api/v1/runs/{done['id']}/metrics").json()["items"]
    assert best is not None and best < len(items)
    curves = _curves(stack.client.get(f"/api/v1/runs/{done['id']}/plot.svg").content)
    # A vertical line at the best epoch's x, where the loss curve has that epoch's vertex.
    (x0, _), (x1, _) = curves["best-epoch"]
    assert x0 == x1 == curves["loss"][best - 1][0]


def test_png_plot_decodes(stack: Stack, trained: dict) -> None:
    resp = stack.client.get(f"/api/v1/runs/{trained['id']}/plot.png")
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "image/png"
    data = resp.content
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (800, 450)
    image = Image.open(io.BytesIO(data))
    image.load()  # decodes every row: a truncated or corrupt file raises here
    assert image.size == (800, 450)
    # Not a blank canvas: the curves bring colours other than white, black and greys.
    rgb = np.asarray(image.convert("RGB"), dtype=np.int16)
    assert np.count_nonzero(rgb.max(axis=2) - rgb.min(axis=2) > 80) > 500


def test_plot_of_a_run_without_epochs_and_of_an_unknown_run(stack: Stack) -> None:
    for suffix in ("plot.png", "plot.svg"):
        resp = stack.client.get(f"/api/v1/runs/no-such-run/{suffix}")
        assert resp.status_code == 404, resp.text
        assert "not found" in resp.json()["detail"]

    # Occupy both worker processes, so that a third run stays queued; cancel it there.
    ds = stack.upload_json(SEED_X, SEED_Y)
    busy = [stack.submit(ds["id"], SEED_NETWORK, long_training()) for _ in range(2)]
    for run in busy:
        stack.wait_status(run["id"], {"running"})
    idle = stack.submit(ds["id"], SEED_NETWORK, long_training(), name="never-started")
    cancelled = stack.client.post(f"/api/v1/runs/{idle['id']}/cancel").json()
    for run in busy:
        stack.client.post(f"/api/v1/runs/{run['id']}/cancel")
    assert cancelled["status"] == "cancelled" and cancelled["started_at"] is None
    assert stack.client.get(f"/api/v1/runs/{idle['id']}/metrics").json()["items"] == []

    svg = stack.client.get(f"/api/v1/runs/{idle['id']}/plot.svg")
    assert svg.status_code == 200 and svg.headers["x-plot-epochs"] == "0"
    assert _curves(svg.content) == {}
    texts = [el.text for el in ET.fromstring(svg.content).iter(SVG + "text")]
    assert "no epochs yet" in texts
    png = stack.client.get(f"/api/v1/runs/{idle['id']}/plot.png")
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    Image.open(io.BytesIO(png.content)).load()
    # No weights to export either.
    onnx_resp = stack.client.get(f"/api/v1/runs/{idle['id']}/weights", params={"format": "onnx"})
    assert onnx_resp.status_code == 409, onnx_resp.text
    for run in busy:
        stack.wait_done(run["id"], timeout=30)


def test_onnx_export_matches_predict(stack: Stack, trained: dict) -> None:
    resp = stack.client.get(f"/api/v1/runs/{trained['id']}/weights", params={"format": "onnx"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"] == "application/onnx"
    assert f"run-{trained['id']}.onnx" in resp.headers["content-disposition"]
    session = ort.InferenceSession(resp.content, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input"]
    assert [o.name for o in session.get_outputs()] == ["output"]

    X, labels = _blobs(64, seed=99)  # unseen rows, in the raw (unstandardised) feature scale
    (got,) = session.run(["output"], {"input": X.astype(np.float32)})
    pred = stack.client.post(
        f"/api/v1/runs/{trained['id']}/predict", json={"inputs": X.tolist()}
    ).json()
    want = np.array(pred["outputs"])
    assert got.shape == want.shape == (64, 3)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    classes = ["amber", "blue", "cyan"]
    assert [classes[i] for i in np.argmax(got, axis=1)] == pred["labels"]
    assert np.mean(np.array(pred["labels"]) == np.array(labels)) > 0.8  # it did learn

    # The standardisation is inside the model: the raw network on raw inputs differs.
    weights = stack.client.get(f"/api/v1/runs/{trained['id']}/weights").json()["layers"]
    h = np.tanh(X @ np.array(weights[0]["W"]) + np.array(weights[0]["b"]))
    z = h @ np.array(weights[1]["W"]) + np.array(weights[1]["b"])
    raw = np.exp(z - z.max(axis=1, keepdims=True))
    raw /= raw.sum(axis=1, keepdims=True)
    assert np.max(np.abs(raw - want)) > 1e-2

    bad = stack.client.get(f"/api/v1/runs/{trained['id']}/weights", params={"format": "pkl"})
    assert bad.status_code == 422


def test_a_deleted_run_has_no_plot(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    run = stack.submit(ds["id"], SEED_NETWORK, long_training(3))
    assert stack.wait_done(run["id"])["status"] == "succeeded"
    svg = stack.client.get(f"/api/v1/runs/{run['id']}/plot.svg")
    assert svg.status_code == 200
    assert {name: len(points) for name, points in _curves(svg.content).items()} == {"loss": 3}
    assert stack.client.delete(f"/api/v1/runs/{run['id']}").status_code == 204
    assert stack.client.get(f"/api/v1/runs/{run['id']}/plot.svg").status_code == 404
    assert stack.client.get(f"/api/v1/runs/{run['id']}/plot.png").status_code == 404
