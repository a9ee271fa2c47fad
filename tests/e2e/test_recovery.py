"""End to end: a worker stopped gracefully or killed mid-run; another one finishes the run.

Both must end with every epoch recorded exactly once and the weights of an uninterrupted
run of the same request (the engine's checkpoints resume bit-for-bit).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from core.engine import Network
from tests.e2e.stack import Stack, Worker, start_stack, wait_for
from tests.e2e.test_runs import SEED_NETWORK, SEED_TRAINING

LEASE_S = 3.0


@pytest.fixture(scope="module", params=["postgresql"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("stack-recovery")
    db_url = request.getfixturevalue("e2e_pg_url")
    stack = start_stack(
        db_url,
        workdir,
        workers=2,
        concurrency=1,
        BACKPROP_LEASE_S=str(LEASE_S),
        BACKPROP_CHECKPOINT_EVERY="25",
        # Celery's prefork pool now and then keeps a message it received just as its pool
        # process was SIGKILLed; the service's stale-queue re-send covers that, made quick here.
        BACKPROP_REQUEUE_AFTER_S="5",
        BACKPROP_MAX_EPOCHS="1000000",
    )
    yield stack
    stack.stop()


def _parent_pid(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[1])


def _worker_training(stack: Stack, run: dict) -> Worker:
    pid = int(run["worker"].rsplit(":", 1)[1])
    main = _parent_pid(pid)
    return next(w for w in stack.workers if w.proc.pid == main)


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    X = rng.uniform(-1, 1, size=(16, 2))
    return X, 1 / (1 + np.exp(-X[:, ::-1] * 2))


TRAINING = {**SEED_TRAINING, "epochs": 1500, "batch_size": 4, "shuffle": True, "seed": 11,
            "optimizer": {"name": "sgd", "learning_rate": 0.5, "momentum": 0.9},
            "dtype": "float64"}  # fmt: skip


def _interrupt_and_check(stack: Stack, interrupt) -> dict:  # type: ignore[no-untyped-def]
    X, Y = _data()
    ds = stack.upload_json(X.tolist(), Y.tolist())
    run = stack.submit(ds["id"], SEED_NETWORK, TRAINING)
    running = wait_for(
        lambda: (
            (r := stack.client.get(f"/api/v1/runs/{run['id']}").json())["progress"]["epoch"] >= 100
            and r
        ),
        60,
        "the run to pass epoch 100",
    )
    victim = _worker_training(stack, running)
    t0 = time.monotonic()
    interrupt(victim)
    done = stack.wait_done(run["id"], timeout=120)
    assert done["status"] == "succeeded", (done, stack.logs())
    assert time.monotonic() - t0 < 60
    assert done["attempts"] >= 1

    items = stack.client.get(f"/api/v1/runs/{run['id']}/metrics").json()["items"]
    assert [m["epoch"] for m in items] == list(range(1, 1501))

    reference = Network.from_spec(SEED_NETWORK, seed=TRAINING["seed"])
    history = reference.fit(X, Y, TRAINING)
    got = stack.client.get(f"/api/v1/runs/{run['id']}/weights").json()["layers"]
    for layer, want in zip(got, reference.weights, strict=True):
        np.testing.assert_array_equal(np.array(layer["W"]), want["W"])
        np.testing.assert_array_equal(np.array(layer["b"]), want["b"])
    assert [m["loss"] for m in items] == [h["loss"] for h in history]

    # Bring the fleet back to two workers for the next test.
    stack.workers.remove(victim)
    stack.start_worker(concurrency=1)
    return done


def test_sigterm_hands_the_run_back_and_another_worker_resumes_it(stack: Stack) -> None:
    def graceful(worker: Worker) -> None:
        worker.proc.send_signal(signal.SIGTERM)  # like `docker stop`: the main process only
        worker.proc.wait(30)
        assert "handed back" in worker.log.read_text()

    _interrupt_and_check(stack, graceful)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_whole_worker_group_hands_the_run_back(stack: Stack, sig: int) -> None:
    # Ctrl-C and systemd's KillMode=control-group signal every process of the group: the
    # pool process training the run must hand it back too, not die with it.
    def group_signal(worker: Worker) -> None:
        os.killpg(worker.proc.pid, sig)
        worker.proc.wait(30)
        assert "handed back" in worker.log.read_text(), worker.log.read_text()[-3000:]

    done = _interrupt_and_check(stack, group_signal)
    # A hand-back is not a failed attempt: only the attempt that finished the run counts.
    assert done["attempts"] == 1, done


def test_kill_9_of_the_worker_group_is_recovered_from_the_checkpoint(stack: Stack) -> None:
    def kill(worker: Worker) -> None:
        os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(10)

    _interrupt_and_check(stack, kill)


def test_a_duplicate_delivery_of_a_running_run_does_not_train_it_twice(stack: Stack) -> None:
    from celery import Celery

    from tests.e2e.stack import REDIS_URL

    X, Y = _data()
    ds = stack.upload_json(X.tolist(), Y.tolist())
    run = stack.submit(ds["id"], SEED_NETWORK, {**TRAINING, "epochs": 600})
    running = wait_for(
        lambda: (
            (r := stack.client.get(f"/api/v1/runs/{run['id']}").json())["progress"]["epoch"] >= 20
            and r
        ),
        60,
        "the run to be training",
    )
    # The same task message again, as a broker redelivery would send it; the other worker
    # process is idle and takes it at once.
    sender = Celery(broker=REDIS_URL)
    sender.send_task("backprop.train_run", args=[run["id"]], queue=stack.env["BACKPROP_TASK_QUEUE"])
    wait_for(
        lambda: "is not claimable" in "".join(w.log.read_text() for w in stack.workers),
        30, "the duplicate to be refused",
    )  # fmt: skip
    done = stack.wait_done(run["id"], timeout=120)
    assert done["status"] == "succeeded" and done["attempts"] == 1
    assert done["worker"] is None and running["worker"]
    items = stack.client.get(f"/api/v1/runs/{run['id']}/metrics").json()["items"]
    assert [m["epoch"] for m in items] == list(range(1, 601))


def test_a_run_that_kills_its_worker_every_time_ends_failed(stack: Stack) -> None:
    ds = stack.upload_json(*(a.tolist() for a in _data()))
    run = stack.submit(ds["id"], SEED_NETWORK, {**TRAINING, "epochs": 100_000})
    killed: set[str] = set()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        current = stack.client.get(f"/api/v1/runs/{run['id']}").json()
        if current["status"] == "failed":
            break
        worker = current["worker"]
        if current["status"] == "running" and worker and worker not in killed:
            os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)  # the pool process only
            killed.add(worker)
        time.sleep(0.1)
    assert current["status"] == "failed", current
    assert "attempts" in current["error"]
    assert len(killed) == 3  # BACKPROP_MAX_ATTEMPTS
    # The workers themselves survived (Celery replaced the killed pool processes).
    assert all(w.proc.poll() is None for w in stack.workers)
    ok = stack.submit(ds["id"], SEED_NETWORK, {**TRAINING, "epochs": 5})
    assert stack.wait_done(ok["id"])["status"] == "succeeded"
