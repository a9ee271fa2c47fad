"""The real service as processes for end-to-end tests: migrate, uvicorn API, celery worker.

Each stack gets its own database and its own Celery queue on the shared Redis, so stacks
never take each other's jobs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from sqlalchemy import NullPool, create_engine
from sqlalchemy.engine import Engine

from cli.processes import free_port
from core.db.session import normalize_url

PYTHON = sys.executable
_MIGRATED: set[str] = set()  # database URLs migrated to head in this session
REDIS_URL = os.environ.get("BACKPROP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def service_env(db_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BACKPROP_DATABASE_URL=db_url,
        BACKPROP_REDIS_URL=REDIS_URL,
        BACKPROP_TASK_QUEUE=f"test-{uuid.uuid4().hex[:12]}",
        BACKPROP_LOG_LEVEL="INFO",
        # Loopback only; the security tests turn authentication on explicitly.
        BACKPROP_AUTH="off",
    )
    env.update(extra)
    return env


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    log: Path

    def ready(self) -> bool:
        return self.log.exists() and " ready." in self.log.read_text(errors="replace")

    def wait_ready(self) -> None:
        wait_for(self.ready, 60, "the worker to be ready", interval=0.1)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@dataclass
class Stack:
    """A running API plus workers; ``client`` talks to the API over loopback."""

    env: dict[str, str]
    workdir: Path
    port: int
    api: subprocess.Popen[bytes] | None = None
    workers: list[Worker] = field(default_factory=list)
    client: httpx.Client = field(init=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextmanager
    def database(self) -> Iterator[Engine]:
        """An engine on the stack's own database, for a test that reads or writes it
        directly; no connection outlives the block (no pool)."""
        engine = create_engine(normalize_url(self.env["BACKPROP_DATABASE_URL"]),
                               poolclass=NullPool)  # fmt: skip
        try:
            yield engine
        finally:
            engine.dispose()

    def migrate(self) -> None:
        """``backprop migrate`` on the stack's database, once per database and session (the
        e2e PostgreSQL database is shared by the stacks; no test takes its schema down)."""
        url = self.env["BACKPROP_DATABASE_URL"]
        if url in _MIGRATED:
            return
        subprocess.run(
            [PYTHON, "-m", "cli", "migrate"], env=self.env, check=True, cwd=self.workdir,
            capture_output=True,
        )  # fmt: skip
        _MIGRATED.add(url)

    def start_api(self, wait: bool = True) -> None:
        log = open(self.workdir / "api.log", "ab")  # noqa: SIM115 - closed with the process
        self.api = subprocess.Popen(
            [PYTHON, "-m", "cli", "api", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.client = httpx.Client(base_url=self.base_url, timeout=30)
        if wait:
            self.wait_api_ready()

    def wait_api_ready(self) -> None:
        def healthy() -> bool:
            if self.api is not None and self.api.poll() is not None:
                raise RuntimeError("api exited:\n" + (self.workdir / "api.log").read_text())
            try:
                return self.client.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, 30, "the API to be ready")

    def start_worker(self, concurrency: int = 2, wait: bool = True, queues: str | None = None,
                     **extra_env: str) -> Worker:  # fmt: skip
        n = len(self.workers)
        log = self.workdir / f"worker{n}.log"
        env = {**self.env, **extra_env}
        only = [f"--queues={queues}"] if queues else []
        proc = subprocess.Popen(
            [PYTHON, "-m", "cli", "worker", f"--concurrency={concurrency}", *only],
            env=env, cwd=self.workdir, stdout=open(log, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
            start_new_session=True,
        )  # fmt: skip
        worker = Worker(proc, log)
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    def stop(self) -> None:
        """SIGTERM to every process at once, then wait for each (SIGKILL if it hangs)."""
        procs = [(w.proc, 30.0) for w in self.workers]
        if self.api is not None:
            procs.append((self.api, 20.0))
        for proc, _ in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc, timeout in procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.client.close()

    # -- conveniences used by many tests ------------------------------------------------
    def upload_json(self, X, y, *, dedupe: bool = True, **extra) -> dict:  # type: ignore[no-untyped-def]
        """The dataset of ``X`` and ``y``: a new one (201), or with ``dedupe`` the one this
        owner already has of the same content (200)."""
        params = {} if dedupe else {"dedupe": "false"}
        resp = self.client.post("/api/v1/datasets", params=params, json={"X": X, "y": y, **extra})
        assert resp.status_code in ((200, 201) if dedupe else (201,)), resp.text
        return resp.json()

    def submit(self, dataset_id: str, network: dict, training: dict, **extra) -> dict:  # type: ignore[no-untyped-def]
        body = {"dataset_id": dataset_id, "network": network, "training": training, **extra}
        resp = self.client.post("/api/v1/runs", json=body)
        assert resp.status_code == 202, resp.text
        return resp.json()

    def wait_status(self, run_id: str, statuses: set[str], timeout: float = 60) -> dict:
        def reached() -> dict | None:
            resp = self.client.get(f"/api/v1/runs/{run_id}")
            if resp.status_code == 503:  # the database is away for a moment: ask again
                return None
            run = resp.json()
            return run if run["status"] in statuses else None

        return wait_for(reached, timeout, f"run {run_id} to reach {statuses}", interval=0.05)

    def wait_done(self, run_id: str, timeout: float = 60) -> dict:
        return self.wait_status(run_id, {"succeeded", "failed", "cancelled"}, timeout)

    def logs(self) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-5000:]}")
        return "\n".join(parts)


def start_stack(db_url: str, workdir: Path, *, workers: int = 1, concurrency: int = 2,
                **extra_env: str) -> Stack:  # fmt: skip
    stack = Stack(env=service_env(db_url, **extra_env), workdir=workdir, port=free_port())
    stack.migrate()
    # The processes start side by side (their imports take most of the time), then we
    # wait for each to be ready.
    stack.start_api(wait=False)
    started = [stack.start_worker(concurrency=concurrency, wait=False) for _ in range(workers)]
    stack.wait_api_ready()
    for worker in started:
        worker.wait_ready()
    return stack


def early_stopped_run(stack: Stack) -> dict:
    """A finished run that early stopping ended and whose model is an earlier epoch's:
    noise targets, so the validation loss soon rises (its record)."""
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(40, 4)), rng.normal(size=(40, 1))
    ds = stack.upload_json(X.tolist(), y.tolist(), name="noise")
    network = {"input_dim": 4, "layers": [{"units": 32, "activation": "relu"},
                                          {"units": 1, "activation": "identity"}]}  # fmt: skip
    training = {"optimizer": {"name": "adam", "learning_rate": 0.05}, "epochs": 200,
                "batch_size": 8, "validation_split": 0.5, "seed": 0,
                "early_stopping": {"patience": 3, "restore_best": True}}  # fmt: skip
    done = stack.wait_done(stack.submit(ds["id"], network, training)["id"], timeout=60)
    assert done["status"] == "succeeded" and done["stop_reason"] == "early_stopped", done
    return done
