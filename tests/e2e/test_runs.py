"""End to end: the real API (uvicorn) and a real celery worker, driven over HTTP."""

from __future__ import annotations

import io
import time

import numpy as np

from core.engine import Network
from tests.e2e.sse import read_events
from tests.e2e.stack import Stack, wait_for
from tests.seed import SEED_NETWORK, SEED_TRAINING, SEED_X, SEED_Y

__all__ = ["SEED_NETWORK", "SEED_TRAINING", "SEED_X", "SEED_Y", "long_training"]


def long_training(epochs: int = 200_000) -> dict:
    return {**SEED_TRAINING, "epochs": epochs}


def test_seed_network_through_the_api_matches_the_engine(stack: Stack) -> None:
    rng = np.random.default_rng(7)
    X = rng.uniform(-1, 1, size=(40, 2))
    Y = 1 / (1 + np.exp(-np.stack([X[:, 0] - X[:, 1], X[:, 0] * X[:, 1]], axis=1)))
    training = {
        **SEED_TRAINING,
        "epochs": 6,
        "batch_size": 8,
        "shuffle": True,
        "seed": 3,
        "validation_split": 0.25,
        "dtype": "float64",
    }
    ds = stack.upload_json(X.tolist(), Y.tolist())
    resp = stack.client.post(
        "/api/v1/runs", json={"dataset_id": ds["id"], "network": SEED_NETWORK, "training": training}
    )
    assert resp.status_code == 202, resp.text
    run = resp.json()
    assert resp.headers["location"] == f"/api/v1/runs/{run['id']}"
    assert run["status"] == "queued" and run["progress"] == {"epoch": 0, "epochs": 6}
    assert run["metrics"] == {"loss": None}

    done = stack.wait_done(run["id"])
    assert done["status"] == "succeeded", (done, stack.logs())
    assert done["progress"] == {"epoch": 6, "epochs": 6}
    assert done["started_at"] and done["finished_at"]

    reference = Network.from_spec(SEED_NETWORK, seed=training["seed"])
    history = reference.fit(X, Y, training)

    model = stack.client.get(f"/api/v1/runs/{run['id']}/weights").json()
    assert (model["partial"], model["epoch"]) == (False, 6)
    weights = model["layers"]
    assert len(weights) == 2
    answer = stack.client.post(f"/api/v1/runs/{run['id']}/predict", json={"inputs": SEED_X})
    assert "partial" not in answer.json() and "epoch" not in answer.json()
    for got, want in zip(weights, reference.weights, strict=True):
        np.testing.assert_array_equal(np.array(got["W"]), want["W"])
        np.testing.assert_array_equal(np.array(got["b"]), want["b"])

    npz = stack.client.get(f"/api/v1/runs/{run['id']}/weights", params={"format": "npz"})
    assert npz.status_code == 200
    arrays = np.load(io.BytesIO(npz.content), allow_pickle=False)
    assert sorted(arrays.files) == ["W0", "W1", "b0", "b1", "meta"]  # no standardisation
    np.testing.assert_array_equal(arrays["W1"], reference.weights[1]["W"])

    metrics = stack.client.get(f"/api/v1/runs/{run['id']}/metrics").json()
    assert metrics["run_id"] == run["id"]
    assert [m["epoch"] for m in metrics["items"]] == [1, 2, 3, 4, 5, 6]
    # Optional keys are absent when they do not apply (regression: no accuracy).
    assert all("accuracy" not in m and "val_accuracy" not in m for m in metrics["items"])
    for got, want in zip(metrics["items"], history, strict=True):
        assert got["loss"] == want["loss"]
        assert got["val_loss"] == want["val_loss"]
    assert done["metrics"]["loss"] == history[-1]["loss"]

    inputs = [[0.05, 0.10], [0.3, -0.7]]
    pred = stack.client.post(f"/api/v1/runs/{run['id']}/predict", json={"inputs": inputs})
    assert pred.status_code == 200, pred.text
    np.testing.assert_allclose(pred.json()["outputs"], reference.predict(np.array(inputs)))
    assert "labels" not in pred.json() or pred.json()["labels"] is None


def test_sse_streams_every_epoch_then_the_terminal_status(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    run = stack.submit(ds["id"], SEED_NETWORK, {**SEED_TRAINING, "epochs": 300})
    events = read_events(stack.client, f"/api/v1/runs/{run['id']}/events")
    metric_epochs = [e.data["epoch"] for e in events if e.event == "metric"]
    assert metric_epochs == list(range(1, 301))
    assert events[-1].event == "status" and events[-1].data["status"] == "succeeded"
    ids = [e.id for e in events]
    assert all(ids) and len(set(ids)) == len(ids)
    # The live losses are the stored ones.
    stored = stack.client.get(f"/api/v1/runs/{run['id']}/metrics").json()["items"]
    assert [e.data["loss"] for e in events if e.event == "metric"] == [m["loss"] for m in stored]


def test_reconnect_with_last_event_id_misses_and_repeats_nothing(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    run = stack.submit(ds["id"], SEED_NETWORK, {**SEED_TRAINING, "epochs": 400})
    url = f"/api/v1/runs/{run['id']}/events"
    seen = read_events(stack.client, url, max_events=25)
    while seen[-1].event != "status" or seen[-1].data["status"] not in ("succeeded", "failed"):
        seen += read_events(stack.client, url, last_event_id=seen[-1].id, max_events=37)
    metric_epochs = [e.data["epoch"] for e in seen if e.event == "metric"]
    assert metric_epochs == list(range(1, 401))
    assert seen[-1].data["status"] == "succeeded"
    statuses = [e.data["status"] for e in seen if e.event == "status"]
    assert len(statuses) == len(set(statuses)), statuses


def test_late_subscriber_gets_the_full_history(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    run = stack.submit(ds["id"], SEED_NETWORK, {**SEED_TRAINING, "epochs": 50})
    assert stack.wait_done(run["id"])["status"] == "succeeded"
    events = read_events(stack.client, f"/api/v1/runs/{run['id']}/events", timeout=10)
    assert [e.data["epoch"] for e in events if e.event == "metric"] == list(range(1, 51))
    assert events[-1].event == "status"
    assert events[-1].data == {"status": "succeeded", "reason": "trained all 50 epochs"}
    # After the end, resuming from the last id gives nothing more and closes at once.
    assert read_events(stack.client, f"/api/v1/runs/{run['id']}/events",
                       last_event_id=events[-1].id, timeout=10) == []  # fmt: skip


def _wait_running_with_epochs(stack: Stack, run_id: str) -> dict:
    return wait_for(
        lambda: (
            (r := stack.client.get(f"/api/v1/runs/{run_id}").json())["status"] == "running"
            and r["progress"]["epoch"] > 0
            and r
        ),
        60,
        f"run {run_id} to be running",
    )


def test_cancel_a_running_run_keeps_its_metrics(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    run = stack.submit(ds["id"], SEED_NETWORK, long_training())
    _wait_running_with_epochs(stack, run["id"])
    t0 = time.monotonic()
    resp = stack.client.post(f"/api/v1/runs/{run['id']}/cancel")
    assert resp.status_code == 202, resp.text
    done = stack.wait_done(run["id"], timeout=10)
    assert time.monotonic() - t0 < 5
    assert done["status"] == "cancelled"
    items = stack.client.get(f"/api/v1/runs/{run['id']}/metrics").json()["items"]
    assert len(items) >= 1 and [m["epoch"] for m in items] == list(range(1, len(items) + 1))
    assert stack.client.post(f"/api/v1/runs/{run['id']}/cancel").status_code == 409
    # It keeps what it learned: the weights of the epoch it stopped at, marked partial —
    # bit for bit an uninterrupted fit of that many epochs.
    stopped = done["progress"]["epoch"]
    assert stopped == len(items)
    reference = Network.from_spec(SEED_NETWORK, seed=SEED_TRAINING["seed"])
    reference.fit(np.array(SEED_X), np.array(SEED_Y), long_training(stopped))
    model = stack.client.get(f"/api/v1/runs/{run['id']}/weights").json()
    assert (model["partial"], model["epoch"]) == (True, stopped)
    for got, want in zip(model["layers"], reference.weights, strict=True):
        np.testing.assert_array_equal(np.array(got["W"]), want["W"])
        np.testing.assert_array_equal(np.array(got["b"]), want["b"])
    npz = stack.client.get(f"/api/v1/runs/{run['id']}/weights", params={"format": "npz"})
    assert npz.headers["x-backprop-partial"] == "true"
    assert npz.headers["x-backprop-epoch"] == str(stopped)
    answer = stack.client.post(f"/api/v1/runs/{run['id']}/predict", json={"inputs": SEED_X})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["partial"], answer.json()["epoch"]) == (True, stopped)
    np.testing.assert_array_equal(np.array(answer.json()["outputs"]), reference.predict(SEED_X))


def test_cancel_a_queued_run_never_starts_it(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    # Occupy both worker processes so the third run waits in the queue.
    busy = [stack.submit(ds["id"], SEED_NETWORK, long_training()) for _ in range(2)]
    for run in busy:
        _wait_running_with_epochs(stack, run["id"])
    queued = stack.submit(ds["id"], SEED_NETWORK, {**SEED_TRAINING, "epochs": 5})
    resp = stack.client.post(f"/api/v1/runs/{queued['id']}/cancel")
    assert resp.status_code == 202 and resp.json()["status"] == "cancelled"
    for run in busy:
        stack.client.post(f"/api/v1/runs/{run['id']}/cancel")
        done = stack.wait_done(run["id"], timeout=10)
        assert done["status"] == "cancelled"
        # Its timeline: submitted, claimed, then stopped at the epoch it had reached.
        steps = stack.client.get(f"/api/v1/runs/{run['id']}").json()["transitions"]
        assert [t["status"] for t in steps] == ["queued", "running", "cancelled"]
        assert steps[1]["reason"] == f"claimed by worker {steps[1]['worker']} (attempt 1)"
        assert steps[2]["reason"] == (
            f"cancelled by its owner; stopped after epoch {done['progress']['epoch']}"
        )
    # Give the worker time to pick the queued task up: it must do nothing with it.
    time.sleep(1.0)
    final = stack.client.get(f"/api/v1/runs/{queued['id']}").json()
    assert final["status"] == "cancelled" and final["started_at"] is None
    assert stack.client.get(f"/api/v1/runs/{queued['id']}/metrics").json()["items"] == []
    events = read_events(stack.client, f"/api/v1/runs/{queued['id']}/events", timeout=10)
    assert [e.data for e in events] == [{"status": "cancelled", "reason": "cancelled by its owner"}]
    assert [
        (t["status"], t["reason"], t["attempt"], t["worker"]) for t in final["transitions"]
    ] == [
        ("queued", "submitted by its owner", 0, None),
        ("cancelled", "cancelled by its owner", 0, None),
    ]


def test_two_runs_train_at_the_same_time(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    runs = [stack.submit(ds["id"], SEED_NETWORK, long_training(1500)) for _ in range(2)]

    def both_running() -> bool:
        states = [stack.client.get(f"/api/v1/runs/{r['id']}").json()["status"] for r in runs]
        return states == ["running", "running"]

    wait_for(both_running, 30, "both runs to be running at once")
    for run in runs:
        assert stack.wait_done(run["id"], timeout=120)["status"] == "succeeded"
    a, b = (stack.client.get(f"/api/v1/runs/{r['id']}/weights").json() for r in runs)
    assert a == b  # same request, same weights


def test_list_runs_newest_first_with_cursor_and_status_filter(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    ids = [
        stack.submit(ds["id"], SEED_NETWORK, SEED_TRAINING, name=f"r{i}")["id"] for i in range(5)
    ]
    for run_id in ids:
        stack.wait_done(run_id)
    collected: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = stack.client.get("/api/v1/runs", params=params).json()
        assert len(body["items"]) <= 2
        collected += [r["id"] for r in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    mine = [i for i in collected if i in ids]
    assert mine == list(reversed(ids))
    assert len(collected) == len(set(collected))
    succeeded = stack.client.get("/api/v1/runs", params={"status": "succeeded", "limit": 500})
    assert all(r["status"] == "succeeded" for r in succeeded.json()["items"])
    assert stack.client.get("/api/v1/runs", params={"status": "bogus"}).status_code == 422


def test_delete_run_and_dataset(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    run = stack.submit(ds["id"], SEED_NETWORK, long_training())
    _wait_running_with_epochs(stack, run["id"])
    assert stack.client.delete(f"/api/v1/runs/{run['id']}").status_code == 409
    assert stack.client.delete(f"/api/v1/datasets/{ds['id']}").status_code == 409
    stack.client.post(f"/api/v1/runs/{run['id']}/cancel")
    stack.wait_done(run["id"], timeout=10)
    assert stack.client.delete(f"/api/v1/runs/{run['id']}").status_code == 204
    assert stack.client.get(f"/api/v1/runs/{run['id']}").status_code == 404
    assert stack.client.get(f"/api/v1/runs/{run['id']}/metrics").status_code == 404
    assert stack.client.delete(f"/api/v1/datasets/{ds['id']}").status_code == 204
    assert stack.client.get(f"/api/v1/datasets/{ds['id']}").status_code == 404


def test_health_and_openapi(stack: Stack) -> None:
    assert stack.client.get("/healthz").status_code == 200
    ready = stack.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": "ok", "redis": "ok"}
    spec = stack.client.get("/openapi.json").json()
    for path in ("/api/v1/runs", "/api/v1/runs/{run_id}/events", "/api/v1/datasets"):
        assert path in spec["paths"]
    assert stack.client.get("/docs").status_code == 200
