"""End to end: queue routing by job size, split workers, and run priority.

One worker process takes only the ``large`` queue, another only ``small`` (and the default
queue); ``BACKPROP_SMALL_JOB_THRESHOLD`` is low so that a long run of the seed network is a
large job and a few epochs are a small one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import E2E_ENV
from tests.e2e.stack import Stack, start_stack, wait_for
from tests.e2e.test_runs import SEED_NETWORK, SEED_TRAINING, SEED_X, SEED_Y

# The seed network has 12 parameters and the dataset 1 sample: size = 12 x epochs.
THRESHOLD = 1000


@pytest.fixture(scope="module")
def stack(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:  # fmt: skip
    workdir: Path = tmp_path_factory.mktemp("stack-queues")
    stack = start_stack(request.getfixturevalue("e2e_pg_url"), workdir, workers=0,
                        **E2E_ENV, BACKPROP_SMALL_JOB_THRESHOLD=str(THRESHOLD))  # fmt: skip
    stack.start_worker(concurrency=1, queues="large")
    stack.start_worker(concurrency=1, queues="small,default")
    yield stack
    stack.stop()


def _submit(stack: Stack, dataset_id: str, epochs: int, **extra: object) -> dict:
    return stack.submit(dataset_id, SEED_NETWORK, {**SEED_TRAINING, "epochs": epochs}, **extra)


def _run(stack: Stack, run_id: str) -> dict:
    return stack.client.get(f"/api/v1/runs/{run_id}").json()


def test_workers_take_the_queues_they_are_told(stack: Stack) -> None:
    queue = stack.env["BACKPROP_TASK_QUEUE"]
    large_log = stack.workers[0].log.read_text(errors="replace")
    small_log = stack.workers[1].log.read_text(errors="replace")
    assert f"{queue}.large" in large_log and f"{queue}.small" not in large_log
    assert f"{queue}.small" in small_log and f"{queue}.large" not in small_log


def test_a_tiny_job_finishes_first_while_large_is_busy(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    first = _submit(stack, ds["id"], 200_000)
    second = _submit(stack, ds["id"], 200_000)
    assert first["queue"] == second["queue"] == "large"
    wait_for(lambda: _run(stack, first["id"])["progress"]["epoch"] > 0, 60, "the large run")

    tiny = _submit(stack, ds["id"], 5)
    assert tiny["queue"] == "small"
    done = stack.wait_done(tiny["id"], timeout=30)
    assert done["status"] == "succeeded" and done["progress"]["epoch"] == 5
    # The large queue is still busy with the first run; the second still waits.
    assert _run(stack, first["id"])["status"] == "running"
    assert _run(stack, second["id"])["status"] == "queued"
    for run in (first, second):
        stack.client.post(f"/api/v1/runs/{run['id']}/cancel")
    for run in (first, second):
        assert stack.wait_done(run["id"], timeout=30)["status"] == "cancelled"


def test_a_higher_priority_run_starts_before_an_earlier_one(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    blocker = _submit(stack, ds["id"], 200_000)
    wait_for(lambda: _run(stack, blocker["id"])["progress"]["epoch"] > 0, 60, "the blocker")
    low = _submit(stack, ds["id"], 100)
    high = _submit(stack, ds["id"], 100, priority=9)
    assert (low["queue"], low["priority"], high["priority"]) == ("large", 0, 9)
    assert _run(stack, low["id"])["status"] == "queued"
    stack.client.post(f"/api/v1/runs/{blocker['id']}/cancel")
    low_done = stack.wait_done(low["id"], timeout=60)
    high_done = stack.wait_done(high["id"], timeout=60)
    assert low_done["status"] == high_done["status"] == "succeeded"
    assert high_done["started_at"] < low_done["started_at"]
    assert high_done["finished_at"] <= low_done["started_at"]  # one large process: in turn


def test_priority_is_validated(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    body = {"dataset_id": ds["id"], "network": SEED_NETWORK, "training": SEED_TRAINING}
    for bad in (-1, 10, "high"):
        resp = stack.client.post("/api/v1/runs", json={**body, "priority": bad})
        assert resp.status_code == 422, resp.text
