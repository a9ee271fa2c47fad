"""One log format: under ``BACKPROP_LOG_FORMAT=json`` every line is a JSON object.

Real processes on loopback: ``backprop api`` (with the access log on) and ``backprop
worker`` train a run on the test Redis, one of the worker's pool processes is killed (the
pool reports it through a logger of its own), and both are stopped with SIGTERM; ``backprop
standalone`` starts its embedded Redis, its API and its worker and is stopped too. Every
non-empty line each printed, from start to exit, must parse as a JSON object, including
what Celery prints by itself (its banner is off, its shutdown notice and its root-user
``SecurityWarning`` go through our handler) and what redis-server prints (relayed). And
``standalone`` says it is up only once ``/readyz`` answers 200: a request made as soon as
that line appears must get 200.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from cli.processes import free_port
from tests.e2e.stack import start_stack, wait_for
from tests.seed import SEED_NETWORK, SEED_TRAINING, SEED_X, SEED_Y

JSON_ENV = {"BACKPROP_LOG_FORMAT": "json"}


def json_lines(text: str, source: str) -> list[dict]:
    """Every non-empty line of ``text`` as a JSON object; fails naming the first that is not."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        assert isinstance(entry, dict), f"{source} line {number} is not a JSON object: {line!r}"
        entries.append(entry)
    return entries


def children_of(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    assert found, f"process {pid} has no children"
    return sorted(found)


def test_api_and_worker_print_only_json_lines(tmp_path: Path) -> None:
    stack = start_stack(
        f"sqlite:///{tmp_path / 'backprop.db'}",
        tmp_path,
        workers=1,
        concurrency=1,
        BACKPROP_ACCESS_LOG="true",
        **JSON_ENV,
    )
    try:
        ds = stack.upload_json(SEED_X, SEED_Y)
        run = stack.submit(ds["id"], SEED_NETWORK, SEED_TRAINING)
        done = stack.wait_done(run["id"])
        assert done["status"] == "succeeded", f"{done}\n{stack.logs()}"
        # A pool process that dies is reported by the pool's own logger: in JSON too.
        worker_log = stack.workers[0].log
        os.kill(children_of(stack.workers[0].proc.pid)[0], signal.SIGKILL)
        wait_for(lambda: "exited with 'signal 9" in worker_log.read_text(), 30,
                 "the worker to report its killed pool process")  # fmt: skip
    finally:
        stack.stop()
    api = json_lines((tmp_path / "api.log").read_text(), "api")
    worker = json_lines((tmp_path / "worker0.log").read_text(), "worker")

    def messages(entries: list[dict], logger: str) -> list[str]:
        return [e["message"] for e in entries if e["logger"] == logger]

    # Each source really wrote here, in JSON: uvicorn, its access log, Celery, our code.
    assert any("Application startup complete" in m for m in messages(api, "uvicorn.error")), api
    assert any("POST /api/v1/runs" in m for m in messages(api, "uvicorn.access")), api
    celery = messages(worker, "celery.apps.worker")
    assert any(m.endswith(" ready.") for m in celery), worker
    assert "worker: Warm shutdown (MainProcess)" in celery, worker
    assert any("exited with 'signal 9" in e["message"] for e in worker), worker
    assert any(e.get("run_id") == run["id"] for e in worker), worker
    assert any(m.startswith("starting a Celery worker") for m in messages(worker, "backprop"))
    if os.geteuid() == 0:  # Celery warns root; the warning is a log line like any other
        warnings = messages(worker, "py.warnings")
        assert any("SecurityWarning" in m for m in warnings), warnings


def test_a_bad_log_format_stops_a_command_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "BACKPROP_LOG_FORMAT": "xml"}
    done = subprocess.run(
        [sys.executable, "-m", "cli", "api", "--port", str(free_port())],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "backprop: BACKPROP_LOG_FORMAT must be one of ('json', 'text'), not 'xml'"
    ]


def _read_lines(stream, into: queue.Queue[str | None]) -> None:  # type: ignore[no-untyped-def]
    for raw in stream:
        into.put(raw.decode(errors="replace"))
    into.put(None)


def test_standalone_prints_only_json_lines_and_is_up_only_when_ready(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKPROP_")}
    # Nothing answers there, so standalone starts its own Redis (whose output it relays).
    env["BACKPROP_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    env["BACKPROP_TASK_QUEUE"] = f"logs-{port}"
    env.update(JSON_ENV)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "standalone", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
    output: list[str] = []
    readyz_when_up: int | None = None
    try:
        deadline = time.monotonic() + 90
        while readyz_when_up is None:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            assert line is not None, "standalone ended before it was up:\n" + "".join(output)
            output.append(line)
            if '"Backprop Service is up' in line:
                # Right away, before anything else: the API must already be ready.
                readyz_when_up = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        while (line := lines.get(timeout=10)) is not None:
            output.append(line)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert readyz_when_up == 200
    entries = json_lines("".join(output), "standalone")
    loggers = {e["logger"] for e in entries}
    # The parent, its Redis, its API and its worker all spoke, each in JSON.
    assert {"backprop", "backprop.redis", "uvicorn.error", "celery.apps.worker"} <= loggers
    up = next(i for i, e in enumerate(entries) if e["message"].startswith("Backprop Service is up"))
    started = next(
        i for i, e in enumerate(entries) if "Application startup complete" in e["message"]
    )
    assert started < up
    assert any(e["message"] == "worker: Warm shutdown (MainProcess)" for e in entries)
