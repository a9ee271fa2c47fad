"""End to end, for the people who run it: Prometheus metrics, JSON logs, API drain on SIGTERM."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.sse import Event, read_events
from tests.e2e.stack import Stack, wait_for
from tests.e2e.test_runs import SEED_NETWORK, SEED_TRAINING, SEED_X, SEED_Y, long_training


def scrape(stack: Stack) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    resp = stack.client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(resp.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_prometheus_metrics_cover_runs_training_and_http(stack: Stack) -> None:
    before = scrape(stack)
    ds = stack.upload_json(SEED_X * 4, SEED_Y * 4)
    run = stack.submit(ds["id"], SEED_NETWORK, {**SEED_TRAINING, "epochs": 30})
    assert stack.wait_done(run["id"])["status"] == "succeeded"
    stack.client.get(f"/api/v1/runs/{run['id']}")
    after = scrape(stack)

    assert value(after, "backprop_runs", status="succeeded") >= 1
    assert ("backprop_queue_depth", (("queue", stack.env["BACKPROP_TASK_QUEUE"]),)) in after
    epochs = value(after, "backprop_epoch_duration_seconds_count") - value(
        before, "backprop_epoch_duration_seconds_count"
    )
    assert epochs >= 30
    trained = value(after, "backprop_samples_trained_total") - value(
        before, "backprop_samples_trained_total"
    )
    assert trained >= 30 * 4
    assert value(after, "backprop_epoch_duration_seconds_bucket", le="+Inf") == value(
        after, "backprop_epoch_duration_seconds_count"
    )
    assert value(after, "backprop_run_duration_seconds_count") >= 1
    assert value(after, "backprop_runs_ended_total", status="succeeded") >= 1
    reads = value(after, "backprop_http_requests_total", method="GET",
                  route="/api/v1/runs/{run_id}", status="200")  # fmt: skip
    assert reads >= 1
    assert value(after, "backprop_http_request_duration_seconds_count", method="GET",
                 route="/api/v1/runs/{run_id}") >= reads  # fmt: skip


def test_worker_logs_are_json_with_run_id_and_at_most_a_line_per_epoch(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    run = stack.submit(ds["id"], SEED_NETWORK, {**SEED_TRAINING, "epochs": 200})
    assert stack.wait_done(run["id"])["status"] == "succeeded"
    time.sleep(0.3)
    lines = [line for w in stack.workers for line in w.log.read_text().splitlines()]
    entries = []
    for line in lines:
        if line.startswith("{"):
            entries.append(json.loads(line))
    assert entries, "no JSON log lines"
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys()
    about_run = [e for e in entries if run["id"] in e["message"]]
    # Every line about the run carries its id: ours, and Celery's own ("received", …).
    assert any(e["logger"].startswith("celery") for e in about_run)
    assert about_run and all(e.get("run_id") == run["id"] for e in about_run)
    tagged = [e for e in entries if e.get("run_id") == run["id"]]
    assert 1 <= len(tagged) <= 200


def test_sigterm_to_the_api_drains_event_streams_and_clients_resume(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    run = stack.submit(ds["id"], SEED_NETWORK, long_training(3000))
    url = f"/api/v1/runs/{run['id']}/events"
    first: list[Event] = []
    errors: list[BaseException] = []

    def watch() -> None:
        try:
            with httpx.Client(base_url=stack.base_url, timeout=30) as client:
                read_events(client, url, sink=first)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    reader = threading.Thread(target=watch, daemon=True)
    reader.start()
    wait_for(lambda: len(first) >= 20, 30, "events to flow")
    assert stack.api is not None
    stack.api.send_signal(signal.SIGTERM)
    reader.join(15)
    assert not reader.is_alive(), "the stream stayed open after SIGTERM"
    assert not errors, errors  # closed cleanly by the server, not broken
    assert stack.api.wait(20) in (0, -signal.SIGTERM)
    assert first[-1].event == "metric"  # the run goes on; only the API stopped

    stack.start_api()
    rest = read_events(stack.client, url, last_event_id=first[-1].id, max_events=50)
    epochs = [e.data["epoch"] for e in first + rest if e.event == "metric"]
    assert epochs == list(range(1, len(epochs) + 1))
    stack.client.post(f"/api/v1/runs/{run['id']}/cancel")
    stack.wait_done(run["id"], timeout=20)


def test_samples_trained_of_a_k_fold_run_leave_out_its_fold(stack: Stack) -> None:
    # 10 rows in 4 folds (3, 3, 2, 2): fold 0 holds 3 out, so each epoch trains 7 samples.
    ds = stack.upload_json(SEED_X * 10, SEED_Y * 10)
    before = scrape(stack)
    training = {**SEED_TRAINING, "epochs": 7, "validation_fold": {"k": 4, "index": 0}}
    run = stack.submit(ds["id"], SEED_NETWORK, training)
    assert stack.wait_done(run["id"])["status"] == "succeeded"

    def trained() -> float:
        return value(scrape(stack), "backprop_samples_trained_total") - value(
            before, "backprop_samples_trained_total"
        )

    wait_for(lambda: trained() >= 7 * 7, 10, "the run's telemetry")
    time.sleep(0.5)  # anything more would have arrived by now
    assert trained() == 7 * 7
