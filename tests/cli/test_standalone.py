"""`backprop standalone`: one command runs everything — and stops everything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from cli.processes import free_port
from tests.e2e.stack import wait_for
from tests.e2e.test_runs import SEED_NETWORK, SEED_TRAINING, SEED_X, SEED_Y


def descendants(pid: int) -> set[int]:
    """All processes below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_standalone_with_embedded_redis_trains_and_stops_everything(
    tmp_path: Path, stop_signal: int
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKPROP_")}
    # Nothing answers there, so standalone must start its own Redis.
    env["BACKPROP_REDIS_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    env["BACKPROP_TASK_QUEUE"] = f"standalone-{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", "standalone", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(proc.stdout.read().decode() if proc.stdout else "")
            try:
                return client.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, 90, "standalone to be ready", interval=0.2)
        assert (tmp_path / "backprop.db").exists()  # SQLite in the working folder
        ds = client.post("/api/v1/datasets", json={"X": SEED_X, "y": SEED_Y}).json()
        run = client.post("/api/v1/runs", json={"dataset_id": ds["id"], "network": SEED_NETWORK,
                                                "training": SEED_TRAINING}).json()  # fmt: skip
        done = wait_for(
            lambda: (r := client.get(f"/api/v1/runs/{run['id']}").json())["status"]
            in ("succeeded", "failed")
            and r,
            60, "the run to end",
        )  # fmt: skip
        assert done["status"] == "succeeded"
        weights = client.get(f"/api/v1/runs/{run['id']}/weights").json()["layers"]
        assert len(weights) == 2

        family = descendants(proc.pid)
        assert len(family) >= 4  # redis, api, worker and its pool process at least
        proc.send_signal(stop_signal)
        assert proc.wait(60) == 0
        output = proc.stdout.read().decode() if proc.stdout else ""
        assert "embedded" in output
        # Text for people (the default here), in one format: no JSON line, no Celery banner.
        assert "INFO backprop: Backprop Service is up" in output
        assert not [line for line in output.splitlines() if line.lstrip().startswith("{")]
        assert "[config]" not in output and "[queues]" not in output
        wait_for(lambda: not any(alive(pid) for pid in family), 10, "no process left behind")
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
