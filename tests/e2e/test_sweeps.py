"""End to end: hyperparameter sweeps on the real API and two real worker processes.

Trials are ordinary runs; at most ``max_concurrent`` train at once; ASHA prunes the
hopeless ones; cancel stops them all; the leaderboard is the trials' own metrics, best first.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.engine import Network
from tests.e2e.conftest import E2E_ENV
from tests.e2e.sse import read_events
from tests.e2e.stack import PYTHON, Stack, start_stack, wait_for
from tests.e2e.test_runs import SEED_NETWORK, SEED_TRAINING, SEED_X, SEED_Y

LINEAR = {"input_dim": 2, "layers": [{"units": 1, "activation": "identity"}]}


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:  # fmt: skip
    """Two worker processes (one each) so that two trials can train at the same time."""
    workdir: Path = tmp_path_factory.mktemp("stack-sweeps")
    stack = start_stack(request.getfixturevalue("e2e_pg_url"), workdir, workers=2,
                        concurrency=1, **E2E_ENV)  # fmt: skip
    yield stack
    stack.stop()


@pytest.fixture(autouse=True)
def _no_sweeps_left_behind(stack: Stack) -> Iterator[None]:
    yield
    for sweep in stack.client.get("/api/v1/sweeps", params={"limit": 200}).json()["items"]:
        if sweep["status"] in ("queued", "running"):
            stack.client.post(f"/api/v1/sweeps/{sweep['id']}/cancel")


def _linear_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    X = rng.uniform(-1, 1, size=(64, 2))
    return X, X @ np.array([[2.0], [-1.0]]) + 0.05 * rng.normal(size=(64, 1))


def _training(**extra: Any) -> dict[str, Any]:
    return {"loss": "mse", "optimizer": {"name": "sgd", "learning_rate": 0.1}, "epochs": 8,
            "batch_size": 8, "shuffle": True, "seed": 1, "validation_split": 0.25,
            "dtype": "float64", **extra}  # fmt: skip


def _create(stack: Stack, body: dict[str, Any], status: int = 202) -> dict[str, Any]:
    resp = stack.client.post("/api/v1/sweeps", json=body)
    assert resp.status_code == status, resp.text
    return resp.json()


def _wait_sweep(stack: Stack, sweep_id: str, timeout: float = 120) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        sweep = stack.client.get(f"/api/v1/sweeps/{sweep_id}").json()
        done = sweep["progress"]["finished"] == sweep["progress"]["total"]
        return sweep if done and sweep["status"] not in ("queued", "running") else None

    try:
        return wait_for(ended, timeout, f"sweep {sweep_id} to end", interval=0.2)
    except TimeoutError:
        raise AssertionError(stack.logs()) from None


def _run(stack: Stack, run_id: str) -> dict[str, Any]:
    return stack.client.get(f"/api/v1/runs/{run_id}").json()


def test_grid_sweep_runs_every_trial_and_ranks_them_by_their_own_metrics(stack: Stack) -> None:
    X, Y = _linear_data()
    ds = stack.upload_json(X.tolist(), Y.tolist())
    body = {
        "name": "grid",
        "base": {"dataset_id": ds["id"], "network": LINEAR, "training": _training()},
        "search": {"type": "grid", "parameters": {
            "training.optimizer.learning_rate": [0.1, 0.003],
            "training.batch_size": [8, 48]}},
        "metric": "val_loss",
        "max_concurrent": 2,
    }  # fmt: skip
    created = _create(stack, body)
    assert created["status"] in ("queued", "running") and created["n_trials"] == 4
    assert created["progress"]["total"] == 4 and created["metric"] == "val_loss"
    sweep = _wait_sweep(stack, created["id"])
    assert sweep["status"] == "succeeded", sweep
    assert sweep["progress"]["finished"] == 4
    board = sweep["leaderboard"]
    assert len(board) == 4 and all(e["status"] == "succeeded" for e in board)
    values = [e["val_loss"] for e in board]
    assert values == sorted(values) and len(set(values)) == 4
    expected_params = [{"training.optimizer.learning_rate": lr, "training.batch_size": bs}
                       for lr in (0.1, 0.003) for bs in (8, 48)]  # fmt: skip
    assert sorted(map(json.dumps, (e["params"] for e in board))) == sorted(
        map(json.dumps, expected_params)
    )
    for entry in board:
        run = _run(stack, entry["run_id"])
        assert run["sweep_id"] == sweep["id"] and run["status"] == "succeeded"
        assert run["metrics"]["val_loss"] == entry["val_loss"]
        assert run["sweep_params"] == entry["params"]
        assert run["training"]["optimizer"]["learning_rate"] == entry["params"][
            "training.optimizer.learning_rate"]  # fmt: skip
        assert run["training"]["batch_size"] == entry["params"]["training.batch_size"]
        # The service trained exactly what the engine trains for that request.
        net = Network.from_spec(LINEAR, seed=1)
        history = net.fit(X, Y, {**_training(), "optimizer": {"name": "sgd",
                          "learning_rate": entry["params"]["training.optimizer.learning_rate"]},
                          "batch_size": entry["params"]["training.batch_size"]})  # fmt: skip
        assert history[-1]["val_loss"] == entry["val_loss"]
    assert sweep["best"]["run_id"] == board[0]["run_id"]
    assert board[0]["params"] == {"training.optimizer.learning_rate": 0.1,
                                  "training.batch_size": 8}  # fmt: skip
    # Trials are ordinary runs, listed in /runs with their sweep_id.
    listed = stack.client.get("/api/v1/runs", params={"limit": 500}).json()["items"]
    assert {r["id"] for r in listed if r["sweep_id"] == sweep["id"]} == {e["run_id"] for e in board}
    listed_sweeps = stack.client.get("/api/v1/sweeps").json()["items"]
    assert sweep["id"] in [s["id"] for s in listed_sweeps]

    # The event stream: one trial event per trial, then the final status; resumable.
    events = read_events(stack.client, f"/api/v1/sweeps/{sweep['id']}/events", timeout=30)
    trials = [e for e in events if e.event == "trial"]
    assert sorted(e.data["run_id"] for e in trials) == sorted(e["run_id"] for e in board)
    for event in trials:
        assert event.data["val_loss"] == _run(stack, event.data["run_id"])["metrics"]["val_loss"]
    assert events[-1].event == "status" and events[-1].data["status"] == "succeeded"
    assert events[-1].data["best"]["run_id"] == board[0]["run_id"]
    rest = read_events(stack.client, f"/api/v1/sweeps/{sweep['id']}/events",
                       last_event_id=trials[1].id, timeout=30)  # fmt: skip
    assert [e.data["run_id"] for e in rest if e.event == "trial"] == [
        e.data["run_id"] for e in trials[2:]
    ]


def test_two_workers_train_two_trials_at_the_same_time(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    body = {
        "base": {"dataset_id": ds["id"], "network": SEED_NETWORK,
                 "training": {**SEED_TRAINING, "epochs": 250}},
        "search": {"type": "grid", "parameters": {
            "training.optimizer.learning_rate": [0.1, 0.2, 0.3, 0.4]}},
        "metric": "loss",
        "max_concurrent": 2,
    }  # fmt: skip
    sweep = _create(stack, body)
    seen_pairs: list[tuple[str, str]] = []
    most_running = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        runs = stack.client.get("/api/v1/runs", params={"status": "running"}).json()["items"]
        mine = [r for r in runs if r["sweep_id"] == sweep["id"]]
        most_running = max(most_running, len(mine))
        workers = {r["worker"] for r in mine if r["worker"]}
        if len(mine) == 2 and len(workers) == 2:
            seen_pairs.append((mine[0]["id"], mine[1]["id"]))
        record = stack.client.get(f"/api/v1/sweeps/{sweep['id']}").json()
        if record["progress"]["finished"] == 4:
            break
        time.sleep(0.05)
    final = _wait_sweep(stack, sweep["id"])
    assert final["status"] == "succeeded"
    assert seen_pairs, "never saw two trials running at once on two worker processes"
    assert most_running <= 2, f"max_concurrent=2 but {most_running} trials ran at once"
    # Their time intervals overlap too, as recorded by the runs themselves.
    a, b = (_run(stack, run_id) for run_id in seen_pairs[0])
    assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]


def test_random_sweep_is_reproducible_from_its_seed(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    space = {"type": "random", "n_trials": 3, "seed": 42, "parameters": {
        "training.optimizer.learning_rate": {"distribution": "log_uniform",
                                             "low": 1e-3, "high": 1.0},
        "network.layers.0.activation": ["sigmoid", "tanh"]}}  # fmt: skip
    base = {"dataset_id": ds["id"], "network": {k: v for k, v in SEED_NETWORK.items()
            if k != "initial_weights"}, "training": {**SEED_TRAINING, "epochs": 2}}  # fmt: skip

    def params_of(seed: int) -> list[dict[str, Any]]:
        sweep = _create(stack, {"base": base, "search": {**space, "seed": seed},
                                "metric": "loss", "max_concurrent": 3})  # fmt: skip
        done = _wait_sweep(stack, sweep["id"])
        assert done["status"] == "succeeded"
        by_trial = sorted(done["leaderboard"], key=lambda e: e["trial"])
        for entry in by_trial:
            run = _run(stack, entry["run_id"])
            assert run["training"]["optimizer"]["learning_rate"] == entry["params"][
                "training.optimizer.learning_rate"]  # fmt: skip
            assert run["network"]["layers"][0]["activation"] == entry["params"][
                "network.layers.0.activation"]  # fmt: skip
        return [e["params"] for e in by_trial]

    first, again, other = params_of(42), params_of(42), params_of(43)
    assert first == again
    assert first != other
    assert all(1e-3 <= p["training.optimizer.learning_rate"] <= 1.0 for p in first + other)


def test_asha_prunes_the_hopeless_half_and_still_finds_the_best(stack: Stack) -> None:
    X, Y = _linear_data()
    ds = stack.upload_json(X.tolist(), Y.tolist())
    epochs = 24
    lrs, batches = [0.1, 0.01, 1e-7, 2e-7], [8, 16]
    training = _training(epochs=epochs)
    # What the engine says each configuration reaches, epoch by epoch.
    curves: dict[tuple[float, int], list[float]] = {}
    for lr in lrs:
        for bs in batches:
            net = Network.from_spec(LINEAR, seed=1)
            cfg = {**training, "optimizer": {"name": "sgd", "learning_rate": lr},
                   "batch_size": bs}  # fmt: skip
            curves[(lr, bs)] = [h["val_loss"] for h in net.fit(X, Y, cfg)]
    best = min(curves, key=lambda c: curves[c][-1])
    # The problem is one where the best configuration leads at every rung (2, 4, 8, 16).
    for rung in (2, 4, 8, 16):
        assert min(curves, key=lambda c: curves[c][rung - 1]) == best

    body = {
        "base": {"dataset_id": ds["id"], "network": LINEAR, "training": training},
        "search": {"type": "grid", "parameters": {
            "training.optimizer.learning_rate": lrs, "training.batch_size": batches}},
        "metric": "val_loss",
        "max_concurrent": 2,
        "pruning": {"type": "asha", "min_epochs": 2, "eta": 2},
    }  # fmt: skip
    sweep = _wait_sweep(stack, _create(stack, body)["id"])
    assert sweep["status"] == "succeeded", sweep
    board = sweep["leaderboard"]
    winner = board[0]
    assert winner["status"] == "succeeded" and winner["epoch"] == epochs
    assert (winner["params"]["training.optimizer.learning_rate"],
            winner["params"]["training.batch_size"]) == best  # fmt: skip
    assert winner["val_loss"] == curves[best][-1]

    hopeless = [e for e in board if e["params"]["training.optimizer.learning_rate"] < 1e-6]
    assert len(hopeless) == 4
    for entry in hopeless:
        run = _run(stack, entry["run_id"])
        assert run["status"] == "cancelled" and run["stop_reason"] == "pruned", run
        assert entry["stop_reason"] == "pruned"
        assert run["progress"]["epoch"] < epochs
        # It stopped at a rung, with its metrics so far kept, and says where and why.
        assert run["progress"]["epoch"] in (2, 4, 8, 16)
        items = stack.client.get(f"/api/v1/runs/{run['id']}/metrics").json()["items"]
        assert len(items) == run["progress"]["epoch"]
        verdict = re.fullmatch(
            r"pruned at rung (\d) \(epoch (\d+)\): val_loss (\S+) above the cutoff (\S+), "
            r"the best 1/2 of the (\d+) trials there",
            run["error"],
        )
        assert verdict, run["error"]
        assert int(verdict[2]) == run["progress"]["epoch"] == (2, 4, 8, 16)[int(verdict[1]) - 1]
        assert verdict[3] == f"{items[-1]['val_loss']:.4g}"
        assert float(verdict[3]) > float(verdict[4]) and int(verdict[5]) >= 2
        assert run["transitions"][-1]["reason"] == run["error"]
    assert sweep["progress"]["pruned"] >= 4
    assert [e["status"] for e in board].index("cancelled") >= 1


def test_cancel_stops_every_trial(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    body = {
        "base": {"dataset_id": ds["id"], "network": SEED_NETWORK,
                 "training": {**SEED_TRAINING, "epochs": 200_000}},
        "search": {"type": "grid", "parameters": {
            "training.optimizer.learning_rate": [0.1, 0.2, 0.3, 0.4, 0.5]}},
        "metric": "loss",
        "max_concurrent": 2,
    }  # fmt: skip
    sweep = _create(stack, body)

    def two_training() -> list[dict[str, Any]] | None:
        runs = stack.client.get("/api/v1/runs", params={"status": "running"}).json()["items"]
        mine = [r for r in runs if r["sweep_id"] == sweep["id"] and r["progress"]["epoch"] > 0]
        return mine if len(mine) == 2 else None

    running = wait_for(two_training, 60, "two trials to train", interval=0.1)
    resp = stack.client.post(f"/api/v1/sweeps/{sweep['id']}/cancel")
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "cancelled"
    t0 = time.monotonic()
    final = _wait_sweep(stack, sweep["id"], timeout=30)
    assert time.monotonic() - t0 < 15
    assert final["status"] == "cancelled" and final["progress"]["finished"] == 5
    runs = [_run(stack, e["run_id"]) for e in final["leaderboard"]]
    assert all(r["status"] == "cancelled" for r in runs)
    assert all(r["stop_reason"] == "sweep_cancelled" for r in runs)
    started = [r for r in runs if r["started_at"] is not None]
    assert {r["id"] for r in started} == {r["id"] for r in running}
    assert all(r["progress"]["epoch"] > 0 for r in started)  # kept their metrics so far
    # Nothing starts later, and a second cancel is a conflict.
    time.sleep(1.5)
    assert all(_run(stack, r["id"])["started_at"] is None for r in runs if r not in started)
    assert stack.client.post(f"/api/v1/sweeps/{sweep['id']}/cancel").status_code == 409


def test_cross_validation_reports_mean_and_std_over_folds(stack: Stack) -> None:
    X, Y = _linear_data()
    ds = stack.upload_json(X.tolist(), Y.tolist())
    body = {
        "base": {"dataset_id": ds["id"], "network": LINEAR,
                 "training": _training(validation_split=0.0, epochs=5)},
        "search": {"type": "grid", "parameters": {
            "training.optimizer.learning_rate": [1e-7, 0.1]}},
        "cross_validation": {"k": 3},
        "max_concurrent": 2,
    }  # fmt: skip
    created = _create(stack, body)
    assert created["n_trials"] == 2 and created["progress"]["total"] == 6
    sweep = _wait_sweep(stack, created["id"])
    assert sweep["status"] == "succeeded"
    board = sweep["leaderboard"]
    assert len(board) == 2
    assert board[0]["params"] == {"training.optimizer.learning_rate": 0.1}
    for entry in board:
        assert entry["folds"] == 3 and len(entry["run_ids"]) == 3
        runs = [_run(stack, run_id) for run_id in entry["run_ids"]]
        assert [r["fold"] for r in runs] == [0, 1, 2]
        assert [r["training"]["validation_fold"] for r in runs] == [
            {"k": 3, "index": i} for i in range(3)
        ]
        values = [r["metrics"]["val_loss"] for r in runs]
        assert len(set(values)) == 3  # three different held-out folds
        assert entry["val_loss"] == pytest.approx(statistics.fmean(values))
        assert entry["val_loss_std"] == pytest.approx(statistics.stdev(values))
    assert board[0]["val_loss"] < board[1]["val_loss"]


def test_an_invalid_space_is_rejected_naming_the_trial_and_nothing_is_created(
    stack: Stack,
) -> None:
    X, Y = _linear_data()
    ds = stack.upload_json(X.tolist(), Y.tolist())
    base = {"dataset_id": ds["id"], "network": LINEAR, "training": _training()}
    before = len(stack.client.get("/api/v1/runs", params={"limit": 500}).json()["items"])
    n_sweeps = len(stack.client.get("/api/v1/sweeps", params={"limit": 200}).json()["items"])

    def rejected(body: dict[str, Any], *needles: str) -> None:
        resp = stack.client.post("/api/v1/sweeps", json=body)
        assert resp.status_code == 422, resp.text
        text = json.dumps(resp.json()["detail"])
        for needle in needles:
            assert needle in text, (needle, text)

    grid = {"type": "grid"}
    rejected({"base": base, "search": {**grid, "parameters": {"network.layers.3.units": [2]}}},
             "trial 0", "network.layers.3")  # fmt: skip
    rejected({"base": base, "search": {**grid, "parameters": {
        "training.optimizer.learning_rate": [0.1, -1.0]}}},
        "trial 1", "training.optimizer.learning_rate")  # fmt: skip
    rejected({"base": base, "search": {**grid, "parameters": {"network.layers.0.units": [1, 3]}}},
             "trial 1", "units is 3", "1 targets")  # fmt: skip
    rejected(
        {
            "base": {**base, "training": _training(validation_split=0.0)},
            "search": {**grid, "parameters": {"training.epochs": [1]}},
        },
        "needs validation",
    )
    rejected(
        {
            "base": base,
            "metric": "val_accuracy",
            "search": {**grid, "parameters": {"training.epochs": [1]}},
        },
        "classification loss",
    )
    rejected({"base": base, "search": {"type": "random", "parameters": {
        "training.optimizer.learning_rate": {"distribution": "log_uniform", "low": 1.0,
                                             "high": 0.1}}}}, "high must be >= low")  # fmt: skip
    assert len(stack.client.get("/api/v1/runs", params={"limit": 500}).json()["items"]) == before
    assert len(stack.client.get("/api/v1/sweeps", params={"limit": 200}).json()["items"]) == (
        n_sweeps
    )
    assert stack.client.get("/api/v1/sweeps/nope").status_code == 404


def test_cli_creates_watches_shows_and_cancels_a_sweep(stack: Stack, tmp_path: Path) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    spec = tmp_path / "sweep.json"
    spec.write_text(json.dumps({
        "base": {"dataset_id": ds["id"], "network": SEED_NETWORK,
                 "training": {**SEED_TRAINING, "epochs": 3}},
        "search": {"type": "grid", "parameters": {"training.optimizer.learning_rate": [0.5, 1.0]}},
        "metric": "loss",
    }))  # fmt: skip
    env = {**stack.env, "BACKPROP_URL": stack.base_url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PYTHON, "-m", "cli", "sweep", *args], env=env, text=True,
                              capture_output=True, timeout=120)  # fmt: skip

    created = cli("create", "--spec", str(spec), "--watch", "--json")
    assert created.returncode == 0, created.stderr
    sweep = json.loads(created.stdout)
    assert sweep["status"] == "succeeded" and sweep["progress"]["finished"] == 2
    shown = cli("show", sweep["id"])
    assert shown.returncode == 0 and sweep["leaderboard"][0]["run_id"] in shown.stdout
    assert "best: run" in shown.stdout
    again = cli("cancel", sweep["id"])
    assert again.returncode == 3 and "409" in again.stderr
