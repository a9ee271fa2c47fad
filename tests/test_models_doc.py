"""docs/models.md's plain-NumPy recipe, run as written against a live service.

The page's ``<!-- test: models -->`` blocks (the mechanism of ``tests/test_quickstarts.py``)
load a run's downloaded model (``.npz`` and JSON) and compute its outputs and labels with
NumPy alone. Here they run against real runs of a real stack (API, worker, SQLite, Redis):
a standardised iris classifier with string labels, an unstandardised regression and a binary
classifier with one sigmoid output, all in float64, and must give ``/predict``'s outputs to
1e-9 and its labels exactly. The reference is the service's ``/predict``, computed by the
engine in another process from the stored artifact; the recipe shares no code with it.
"""

from __future__ import annotations

import ast
import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.doc_blocks import blocks, markers_before_fences
from tests.e2e.stack import Stack, start_stack

ROOT = Path(__file__).resolve().parents[1]
MODELS_MD = ROOT / "docs" / "models.md"
EXAMPLES = ROOT / "examples"
VENV_PYTHON = Path(sys.prefix) / "bin" / "python"
SETOSA_ROW = [[5.1, 3.5, 1.4, 0.2]]  # the row the page's usage blocks predict


@dataclass
class TrainedRun:
    """A succeeded run, the rows to predict, and its downloaded model files."""

    run_id: str
    rows: list[list[float]]  # (n_samples, input_dim)
    folder: Path  # holds model.npz and model.json


def _csv_features(path: Path, target: str) -> list[list[float]]:
    with path.open(newline="") as fh:
        return [[float(v) for k, v in row.items() if k != target] for row in csv.DictReader(fh)]


def _train(stack: Stack, dataset_id: str, network: dict[str, Any], training: dict[str, Any]) -> str:
    run = stack.submit(dataset_id, network, training)
    done = stack.wait_done(run["id"], timeout=180)
    assert done["status"] == "succeeded", (done, stack.logs())
    return str(run["id"])


def _download(stack: Stack, run_id: str, folder: Path) -> Path:
    folder.mkdir()
    npz = stack.client.get(f"/api/v1/runs/{run_id}/weights", params={"format": "npz"})
    assert npz.status_code == 200, npz.text
    (folder / "model.npz").write_bytes(npz.content)
    document = stack.client.get(f"/api/v1/runs/{run_id}/weights")
    assert document.status_code == 200, document.text
    (folder / "model.json").write_bytes(document.content)
    return folder


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("models-doc")
    stack = start_stack(f"sqlite:///{workdir / 'backprop.db'}", workdir)
    yield stack
    stack.stop()


def _upload_csv(stack: Stack, path: Path, target: str) -> dict[str, Any]:
    with path.open("rb") as fh:
        resp = stack.client.post(
            "/api/v1/datasets", files={"file": (path.name, fh, "text/csv")}, data={"target": target}
        )
    assert resp.status_code in (200, 201), resp.text
    return dict(resp.json())


@pytest.fixture(scope="module")
def runs(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, TrainedRun]:
    """Three float64 runs: iris (standardised, string labels), diabetes (a regression,
    unstandardised) and a binary classifier with one sigmoid output (standardised)."""
    folder = tmp_path_factory.mktemp("models")
    iris_csv = EXAMPLES / "iris" / "iris.csv"
    iris_ds = _upload_csv(stack, iris_csv, "species")
    assert iris_ds["classes"] == ["setosa", "versicolor", "virginica"]
    iris_training = json.loads((EXAMPLES / "iris" / "training.json").read_text())
    assert iris_training["standardize"] is True
    iris = _train(
        stack,
        iris_ds["id"],
        json.loads((EXAMPLES / "iris" / "network.json").read_text()),
        {**iris_training, "epochs": 30, "dtype": "float64"},
    )

    diabetes_csv = EXAMPLES / "diabetes" / "diabetes.csv"
    diabetes_ds = _upload_csv(stack, diabetes_csv, "progression")
    assert diabetes_ds["task"] == "regression"
    diabetes = _train(
        stack,
        diabetes_ds["id"],
        json.loads((EXAMPLES / "diabetes" / "network.json").read_text()),
        {"loss": "mse", "optimizer": {"name": "adam", "learning_rate": 0.05},
         "epochs": 30, "batch_size": 32, "seed": 0, "dtype": "float64"},
    )  # fmt: skip

    rng = np.random.default_rng(7)
    X = rng.normal(size=(60, 3))
    y = (X @ [1.0, -2.0, 0.5] > 0).astype(int)
    binary_ds = stack.upload_json(X.tolist(), y.tolist(), task="classification")
    assert binary_ds["classes"] == [0, 1] and binary_ds["n_targets"] == 1
    binary = _train(
        stack,
        binary_ds["id"],
        {"input_dim": 3, "layers": [{"units": 1, "activation": "sigmoid"}]},
        {"loss": "binary_crossentropy", "optimizer": {"name": "adam", "learning_rate": 0.1},
         "epochs": 40, "batch_size": 16, "seed": 0, "standardize": True, "dtype": "float64"},
    )  # fmt: skip

    extremes = [[-3.0] * 4, [0.0] * 4, [12.0, 6.0, 9.0, 4.0]]
    return {
        "iris": TrainedRun(
            iris, _csv_features(iris_csv, "species") + extremes,
            _download(stack, iris, folder / "iris"),
        ),
        "diabetes": TrainedRun(
            diabetes, _csv_features(diabetes_csv, "progression"),
            _download(stack, diabetes, folder / "diabetes"),
        ),
        "binary": TrainedRun(
            binary, (X * 1.5).tolist(), _download(stack, binary, folder / "binary")
        ),
    }  # fmt: skip


def _recipe_namespace(folder: Path) -> dict[str, Any]:
    """Every ``models`` block of docs/models.md run in order, in ``folder``."""
    namespace: dict[str, Any] = {}
    cwd = Path.cwd()
    os.chdir(folder)
    try:
        for code in blocks(MODELS_MD, "models", "python"):
            exec(compile(code, str(MODELS_MD), "exec"), namespace)  # noqa: S102 - the doc's code
    finally:
        os.chdir(cwd)
    return namespace


def _predict(stack: Stack, run_id: str, rows: list[list[float]]) -> dict[str, Any]:
    resp = stack.client.post(f"/api/v1/runs/{run_id}/predict", json={"inputs": rows})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


# -- tests ------------------------------------------------------------------------------


def test_the_page_is_linked_and_its_blocks_are_marked() -> None:
    assert markers_before_fences(MODELS_MD), "a <!-- test: … --> marker is not before a fence"
    assert len(blocks(MODELS_MD, "models", "python")) == 3
    assert "docs/models.md" in (ROOT / "README.md").read_text()
    assert "(models.md)" in (ROOT / "docs" / "API.md").read_text()


def test_the_recipe_needs_numpy_and_the_standard_library_only() -> None:
    imported: set[str] = set()
    for code in blocks(MODELS_MD, "models", "python"):
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add(node.module or "")
    assert imported == {"json", "numpy"}


def test_the_usage_blocks_run_as_written(stack: Stack, runs: dict[str, TrainedRun]) -> None:
    """The page's code as one script, in a folder that holds only the iris run's model.npz and
    model.json: both print /predict's label for the row they use."""
    iris = runs["iris"]
    assert sorted(p.name for p in iris.folder.iterdir()) == ["model.json", "model.npz"]
    script = "\n".join(blocks(MODELS_MD, "models", "python"))
    proc = subprocess.run(
        [str(VENV_PYTHON), "-c", script], cwd=iris.folder, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    expected = _predict(stack, iris.run_id, SETOSA_ROW)["labels"]
    assert expected == ["setosa"]
    assert proc.stdout.splitlines() == [repr(expected)] * 2


@pytest.mark.parametrize("name", ["iris", "diabetes", "binary"])
def test_the_recipe_computes_what_predict_computes(
    stack: Stack, runs: dict[str, TrainedRun], name: str
) -> None:
    run = runs[name]
    recipe = _recipe_namespace(runs["iris"].folder)
    served = _predict(stack, run.run_id, run.rows)
    want = np.array(served["outputs"])
    assert want.shape == (len(run.rows), want.shape[1]) and want.dtype == np.float64

    meta, arrays = recipe["load"](run.folder / "model.npz")
    document, json_arrays = recipe["load_json"](run.folder / "model.json")
    assert meta["dtype"] == document["dtype"] == "float64"
    assert {k: document[k] for k in meta} == meta
    for got, labels in (
        recipe["predict"](meta, arrays, run.rows),
        recipe["predict"](document, json_arrays, run.rows),
    ):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
        assert labels == served.get("labels")

    standardised = name != "diabetes"
    assert ("x_mean" in arrays) is standardised
    assert (document["preprocessing"] is not None) is standardised
    if name == "diabetes":
        assert meta["classes"] is None and "labels" not in served
    else:
        assert len(set(served["labels"])) == len(meta["classes"])  # every class predicted
        # Without its standardisation the same weights compute something else (the bug of
        # weights that left it out).
        bare = {k: v for k, v in arrays.items() if not k.startswith("x_")}
        assert not np.allclose(recipe["predict"](meta, bare, run.rows)[0], want, atol=1e-3)
