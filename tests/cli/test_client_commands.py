"""The ``backprop`` client commands, run as the real console script against the real service."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cli.processes import free_port
from tests.client.conftest import EXAMPLES, SEED_NETWORK, SEED_TRAINING, running_stack
from tests.e2e.stack import Stack

BACKPROP = str(Path(sys.executable).parent / "backprop")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from running_stack(tmp_path_factory)


def backprop(
    stack: Stack | None, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``backprop ARGS`` with ``BACKPROP_URL`` pointing at ``stack``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKPROP_")}
    if stack is not None:
        env["BACKPROP_URL"] = stack.base_url
    env["COLUMNS"] = "200"
    return subprocess.run(
        [BACKPROP, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return json.loads(done.stdout)


def example(name: str, data: str, *extra: str) -> list[str]:
    folder = EXAMPLES / name
    return [
        "submit",
        "--network",
        str(folder / "network.json"),
        "--training",
        str(folder / "training.json"),
        "--data",
        str(folder / data),
        *extra,
    ]


def test_submit_watch_on_the_seed_example_shows_progress_and_a_summary(stack: Stack) -> None:
    done = backprop(stack, *example("seed", "data.json"), "--name", "seed-cli", "--watch")
    assert done.returncode == 0, (done.stdout, done.stderr)
    epochs = json.loads((EXAMPLES / "seed" / "training.json").read_text())["epochs"]
    assert f"epoch {epochs}/{epochs}" in done.stdout  # the progress bar's last state
    assert "succeeded" in done.stdout and "seed-cli" in done.stdout and "loss" in done.stdout
    assert done.stderr == ""
    run = as_json(backprop(stack, "runs", "--json", "--limit", "1"))[0]
    assert run["name"] == "seed-cli" and run["status"] == "succeeded"
    # The seed example converges towards its targets (0.01, 0.99).
    assert run["metrics"]["loss"] < 1e-3


def test_json_submit_then_watch_runs_show_weights_and_predict(stack: Stack, tmp_path: Path) -> None:
    submitted = as_json(
        backprop(stack, *example("iris", "iris.csv", "--target", "species", "--json"))
    )
    assert submitted["status"] == "queued" and submitted["progress"]["epochs"] == 100
    run_id = submitted["id"]

    final = as_json(backprop(stack, "watch", run_id, "--json"))
    assert final["id"] == run_id and final["status"] == "succeeded"
    assert final["metrics"]["val_accuracy"] >= 0.85

    listed = as_json(backprop(stack, "runs", "--status", "succeeded", "--json"))
    assert run_id in [r["id"] for r in listed] and {r["status"] for r in listed} == {"succeeded"}
    human = backprop(stack, "runs")
    assert human.returncode == 0 and run_id in human.stdout

    shown = as_json(backprop(stack, "show", run_id, "--json"))
    assert [m["epoch"] for m in shown["history"]] == list(range(1, 101))
    human = backprop(stack, "show", run_id)
    assert human.returncode == 0 and "val_accuracy" in human.stdout and "100/100" in human.stdout

    model = tmp_path / "model.npz"
    wrote = as_json(backprop(stack, "weights", run_id, "-o", str(model), "--json"))
    assert wrote["path"] == str(model) and wrote["bytes"] == model.stat().st_size
    with np.load(model, allow_pickle=False) as arrays:
        assert arrays["W0"].shape == (4, 16) and arrays["W1"].shape == (16, 3)
        layers = as_json(backprop(stack, "weights", run_id))["layers"]
        np.testing.assert_array_equal(arrays["b1"], layers[1]["b"])

    # The example file itself, header included, minus its target column.
    pred = as_json(
        backprop(
            stack,
            "predict",
            run_id,
            "--input",
            str(EXAMPLES / "iris" / "iris.csv"),
            "--drop",
            "species",
            "--json",
        )
    )
    truth = [
        line.rsplit(",", 1)[1]
        for line in (EXAMPLES / "iris" / "iris.csv").read_text().splitlines()[1:]
    ]
    assert len(pred["labels"]) == 150 and np.shape(pred["outputs"]) == (150, 3)
    assert np.mean([p == t for p, t in zip(pred["labels"], truth, strict=True)]) >= 0.9

    rows = tmp_path / "rows.csv"
    rows.write_text("5.1,3.5,1.4,0.2\n6.7,3.0,5.2,2.3\n")  # no header
    human = backprop(stack, "predict", run_id, "--input", str(rows))
    assert human.returncode == 0, human.stderr
    lines = human.stdout.splitlines()
    assert any("setosa" in line for line in lines) and any("virginica" in line for line in lines)


def test_cancel_and_watching_a_cancelled_run_exits_1(stack: Stack, tmp_path: Path) -> None:
    long = tmp_path / "long.json"
    long.write_text(json.dumps({**SEED_TRAINING, "epochs": 500_000}))
    net = tmp_path / "net.json"
    net.write_text(json.dumps(SEED_NETWORK))
    args = [
        "submit",
        "--network",
        str(net),
        "--training",
        str(long),
        "--data",
        str(EXAMPLES / "seed" / "data.json"),
        "--json",
    ]
    run_id = as_json(backprop(stack, *args))["id"]
    cancelled = as_json(backprop(stack, "cancel", run_id, "--json"))
    assert cancelled["id"] == run_id
    watched = backprop(stack, "watch", run_id)
    assert watched.returncode == 1, (watched.stdout, watched.stderr)
    assert "cancelled" in watched.stdout
    again = backprop(stack, "cancel", run_id)
    assert again.returncode == 3 and "already ended" in again.stderr and again.stdout == ""


def test_a_failing_watched_run_exits_1_and_shows_the_error(stack: Stack, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 2)) * 100
    data = tmp_path / "diverge.npz"
    np.savez(data, X=X, y=X @ [[3.0], [2.0]])
    net = tmp_path / "net.json"
    net.write_text(
        json.dumps(
            {
                "input_dim": 2,
                "layers": [
                    {"units": 8, "activation": "relu"},
                    {"units": 1, "activation": "identity"},
                ],
            }
        )
    )
    training = tmp_path / "training.json"
    training.write_text(
        json.dumps(
            {
                "loss": "mse",
                "epochs": 50,
                "batch_size": 4,
                "optimizer": {"name": "sgd", "learning_rate": 10.0},
            }
        )
    )
    done = backprop(
        stack,
        "submit",
        "--network",
        str(net),
        "--training",
        str(training),
        "--data",
        str(data),
        "--watch",
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "failed" in done.stdout and "diverged" in done.stdout
    as_json_done = backprop(stack, "watch", done.stdout.split("run ", 1)[1].split()[0], "--json")
    assert as_json_done.returncode == 1 and json.loads(as_json_done.stdout)["status"] == "failed"


def test_refusals_exit_3_with_the_detail_on_stderr(stack: Stack, tmp_path: Path) -> None:
    missing = backprop(stack, "show", "no-such-run")
    assert missing.returncode == 3 and "no-such-run not found" in missing.stderr
    assert missing.stdout == ""
    wide = tmp_path / "wide.json"
    layers = SEED_NETWORK["layers"]
    wide.write_text(json.dumps({"input_dim": 3, "layers": layers}))
    bad = backprop(
        stack,
        "submit",
        "--network",
        str(wide),
        "--data",
        str(EXAMPLES / "seed" / "data.json"),
        "--json",
    )
    assert bad.returncode == 3 and "input_dim" in bad.stderr and bad.stdout == ""
    unknown = backprop(
        stack,
        "predict",
        "no-such-run",
        "--input",
        str(EXAMPLES / "iris" / "iris.csv"),
        "--drop",
        "species",
    )
    assert unknown.returncode == 3 and "not found" in unknown.stderr


def test_usage_errors_exit_2(stack: Stack, tmp_path: Path) -> None:
    no_target = backprop(stack, *example("iris", "iris.csv"))
    assert no_target.returncode == 2 and "--target" in no_target.stderr
    broken = tmp_path / "net.json"
    broken.write_text("{not json")
    bad_json = backprop(
        stack, "submit", "--network", str(broken), "--data", str(EXAMPLES / "seed" / "data.json")
    )
    assert bad_json.returncode == 2 and "not valid JSON" in bad_json.stderr
    assert backprop(stack, "show").returncode == 2  # missing argument (click)


def test_unreachable_server_exits_4() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["runs"], ["show", "abc", "--json"], ["watch", "abc"]):
        done = backprop(None, *args, "--url", url)
        assert done.returncode == 4, (args, done.stdout, done.stderr)
        assert "cannot reach" in done.stderr and done.stdout == ""


def test_show_names_the_best_epoch_and_why_the_run_ended(stack: Stack) -> None:
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(40, 4)), rng.normal(size=(40, 1))  # noise: val_loss soon rises
    ds = stack.upload_json(X.tolist(), y.tolist(), name="noise")
    network = {"input_dim": 4, "layers": [{"units": 32, "activation": "relu"},
                                          {"units": 1, "activation": "identity"}]}  # fmt: skip
    training = {"optimizer": {"name": "adam", "learning_rate": 0.05}, "epochs": 200,
                "batch_size": 8, "validation_split": 0.5, "seed": 0,
                "early_stopping": {"patience": 3, "restore_best": True}}  # fmt: skip
    run = stack.wait_done(stack.submit(ds["id"], network, training)["id"], timeout=60)
    best, last = run["best_epoch"], run["progress"]["epoch"]
    assert best is not None and best < last
    shown = backprop(stack, "show", run["id"])
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"best epoch\s*│\s*{best} \(the model's weights and metrics\)", shown.stdout)
    assert f"early stopped at epoch {last} of 200; kept the weights of epoch {best}" in shown.stdout
    assert f"{best} (best)" in shown.stdout  # its row in the epochs table, though not last
