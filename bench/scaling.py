"""Scaling benchmark (issue #7): throughput with 1, 2 and 4 worker processes, sweep wall time.

A script, not a test. It starts the real service with ``tests.e2e.stack`` — one uvicorn API
process and one Celery worker with N prefork processes — on a fresh PostgreSQL database it
creates (and drops at the end) and a private ``redis-server`` on a free port (so that the
Redis command counts are the service's alone), then measures:

1. For a *tiny* job mix (a 2-8-1 network, 64 samples, 5 epochs: overhead-bound) and a
   *medium* mix (16-64-64-1, 4000 samples, 10 epochs: compute-bound), all jobs submitted at
   once, with 1, 2 and 4 worker processes: jobs per hour and training samples per second
   (samples × epochs of the training part / wall time from the first submit to the last
   finish).
2. The wall time of a 16-trial grid sweep (``max_concurrent`` 16, so the workers are the
   limit) with 1 vs 2 worker processes.
3. The per-job costs that a capacity plan needs: PostgreSQL transactions per job and per
   epoch (``pg_stat_database.xact_commit`` of the service's database, minus this script's
   own polls), Redis commands per job (``INFO commandstats``), and the peak number of
   PostgreSQL connections with N worker processes.

Prints a table and writes ``bench/results/scaling.json``. Run as ``python bench/scaling.py``;
needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust; ``--pg``) and ``redis-server`` on
the PATH. The machine's other load matters: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests.e2e.stack lives in the source tree, not the package
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
import redis  # noqa: E402

from cli.processes import free_port  # noqa: E402
from tests.e2e.stack import Stack, start_stack, wait_for  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TERMINAL = ("succeeded", "failed", "cancelled")

MIXES: dict[str, dict[str, Any]] = {
    "tiny": {
        "n_jobs": 80,
        "samples": 64,
        "features": 2,
        "network": {"input_dim": 2, "layers": [{"units": 8, "activation": "tanh"},
                                               {"units": 1, "activation": "identity"}]},
        "training": {"loss": "mse", "optimizer": {"name": "sgd", "learning_rate": 0.05},
                     "epochs": 5, "batch_size": 16, "seed": 0},
    },
    "medium": {
        "n_jobs": 12,
        "samples": 4000,
        "features": 16,
        "network": {"input_dim": 16, "layers": [{"units": 64, "activation": "relu"},
                                                {"units": 64, "activation": "relu"},
                                                {"units": 1, "activation": "identity"}]},
        "training": {"loss": "mse", "optimizer": {"name": "adam", "learning_rate": 0.001},
                     "epochs": 30, "batch_size": 64, "seed": 0},
    },
}  # fmt: skip


class Probe:
    """Counters of the service's database and Redis, and a poller of run completion."""

    def __init__(self, pg_url: str, redis_url: str) -> None:
        self.conn = psycopg.connect(pg_url, autocommit=True)
        self.db = self.conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        self.redis = redis.Redis.from_url(redis_url)
        self.queries = 0  # our own transactions, subtracted from xact_commit

    def _one(self, sql: str, *args: Any) -> Any:
        self.queries += 1
        return self.conn.execute(sql, args).fetchone()[0]  # type: ignore[index]

    def commits(self) -> int:
        # pg_stat counters are per-transaction snapshots: clear to see fresh values.
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        self.queries += 1
        return int(self._one("SELECT xact_commit FROM pg_stat_database WHERE datname = %s",
                             self.db))  # fmt: skip

    def connections(self) -> int:
        return int(self._one("SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
                             "AND pid <> pg_backend_pid()", self.db))  # fmt: skip

    def redis_calls(self) -> int:
        stats = self.redis.info("commandstats")
        return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")

    def wait_done(self, ids: list[str], timeout: float = 900) -> tuple[float, int]:
        """Seconds until every run in ``ids`` ended, and the peak PG connections seen."""
        t0 = time.perf_counter()
        peak = 0
        while True:
            done = self._one("SELECT count(*) FROM runs WHERE id = ANY(%s) AND status = ANY(%s)",
                             ids, list(TERMINAL))  # fmt: skip
            peak = max(peak, self.connections())
            if done == len(ids):
                return time.perf_counter() - t0, peak
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"{len(ids) - done} runs still active after {timeout} s")
            time.sleep(0.1)


def dataset_for(stack: Stack, mix: dict[str, Any]) -> str:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(mix["samples"], mix["features"]))
    y = np.tanh(X @ rng.normal(size=(mix["features"], 1)))
    return stack.upload_json(X.round(5).tolist(), y.round(5).tolist())["id"]


def submit_all(stack: Stack, bodies: list[dict[str, Any]]) -> list[str]:
    ids: list[str] = [""] * len(bodies)

    def post(i: int) -> None:
        resp = stack.client.post("/api/v1/runs", json=bodies[i])
        assert resp.status_code == 202, resp.text
        ids[i] = resp.json()["id"]

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return ids


def run_mix(stack: Stack, probe: Probe, name: str, dataset_id: str, reps: int) -> dict[str, Any]:
    """The median of ``reps`` repetitions; the per-job costs from the first."""
    results = [_run_mix(stack, probe, name, dataset_id, costs=i == 0) for i in range(reps)]
    walls = sorted(r["wall_s"] for r in results)
    median = walls[len(walls) // 2]
    mix = MIXES[name]
    n, epochs = mix["n_jobs"], mix["training"]["epochs"]
    return {
        **results[0],
        "wall_s": median,
        "wall_s_all": [r["wall_s"] for r in results],
        "jobs_per_hour": round(n / median * 3600),
        "samples_per_s": round(n * mix["samples"] * epochs / median),
    }


def _run_mix(stack: Stack, probe: Probe, name: str, dataset_id: str, costs: bool
             ) -> dict[str, Any]:  # fmt: skip
    mix = MIXES[name]
    bodies = [
        {"dataset_id": dataset_id, "network": mix["network"],
         "training": {**mix["training"], "seed": i}}
        for i in range(mix["n_jobs"])
    ]  # fmt: skip
    commits0, queries0, calls0 = probe.commits(), probe.queries, probe.redis_calls()
    t0 = time.perf_counter()
    ids = submit_all(stack, bodies)
    _, peak = probe.wait_done(ids)
    wall = time.perf_counter() - t0
    calls = probe.redis_calls() - calls0
    # Idle backends report their transaction counts within ~10 s (PGSTAT_IDLE_INTERVAL).
    time.sleep(11 if costs else 0)
    own = probe.queries - queries0
    commits = probe.commits() - commits0 - own
    statuses = {stack.client.get(f"/api/v1/runs/{i}").json()["status"] for i in ids}
    assert statuses == {"succeeded"}, statuses
    n, epochs = mix["n_jobs"], mix["training"]["epochs"]
    return {
        "jobs": n,
        "wall_s": round(wall, 2),
        "jobs_per_hour": round(n / wall * 3600),
        "samples_per_s": round(n * mix["samples"] * epochs / wall),
        "pg_commits_per_job": round(commits / n, 1),
        "pg_commits_per_epoch": round(commits / (n * epochs), 2),
        "redis_commands_per_job": round(calls / n, 1),
        "peak_pg_connections": peak,
    }


def run_sweep(stack: Stack, probe: Probe, dataset_id: str) -> dict[str, Any]:
    mix = MIXES["medium"]
    body = {
        "base": {"dataset_id": dataset_id, "network": mix["network"],
                 "training": {**mix["training"], "epochs": 20, "validation_split": 0.2}},
        "search": {"type": "grid", "parameters": {
            "training.optimizer.learning_rate": [1e-4, 3e-4, 1e-3, 3e-3],
            "network.layers.0.units": [16, 32, 48, 64]}},
        "metric": "val_loss",
        "max_concurrent": 16,
    }  # fmt: skip
    t0 = time.perf_counter()
    resp = stack.client.post("/api/v1/sweeps", json=body)
    assert resp.status_code == 202, resp.text
    sweep_id = resp.json()["id"]

    def ended() -> dict[str, Any] | None:
        sweep = stack.client.get(f"/api/v1/sweeps/{sweep_id}").json()
        return sweep if sweep["status"] not in ("queued", "running") else None

    sweep = wait_for(ended, 900, "the sweep", interval=0.2)
    wall = time.perf_counter() - t0
    assert sweep["status"] == "succeeded" and sweep["progress"]["finished"] == 16, sweep
    return {"trials": 16, "wall_s": round(wall, 2), "best": sweep["best"]["params"]}


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is needed on the PATH")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    wait_for(lambda: _pings(url), 10, "redis-server")
    return proc, url


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.RedisError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts to measure")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (median reported)")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]

    workdir = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    name = f"backprop_scaling_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.pg, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = args.pg.rsplit("/", 1)[0] + "/" + name
    redis_proc, redis_url = start_redis(workdir)
    os.environ["BACKPROP_TEST_REDIS_URL"] = redis_url
    import tests.e2e.stack as stack_module

    stack_module.REDIS_URL = redis_url
    results: dict[str, Any] = {"cpus": os.cpu_count(), "mixes": {}, "sweep": {}}
    stack = start_stack(db_url, workdir, workers=0, BACKPROP_MAX_ACTIVE_RUNS="1000")
    probe = Probe(db_url, redis_url)
    try:
        datasets = {mix: dataset_for(stack, MIXES[mix]) for mix in MIXES}
        for n in counts:
            worker = stack.start_worker(concurrency=n)
            for mix in MIXES:
                result = run_mix(stack, probe, mix, datasets[mix], args.reps)
                results["mixes"].setdefault(mix, {})[str(n)] = result
                print(f"{mix:7s} {n} process(es): {json.dumps(result)}", flush=True)
            if n in (1, 2):
                sweeps = [run_sweep(stack, probe, datasets["medium"]) for _ in range(args.reps)]
                walls = sorted(r["wall_s"] for r in sweeps)
                result = {**sweeps[0], "wall_s": walls[len(walls) // 2],
                          "wall_s_all": [r["wall_s"] for r in sweeps]}  # fmt: skip
                results["sweep"][str(n)] = result
                print(f"sweep   {n} process(es): {json.dumps(result)}", flush=True)
            worker.stop()
            stack.workers.remove(worker)
    finally:
        stack.stop()
        probe.conn.close()
        redis_proc.terminate()
        redis_proc.wait(10)
        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(workdir, ignore_errors=True)

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n| mix | processes | jobs/hour | samples/s | PG commits/job | Redis cmds/job |")
    print("|---|---|---|---|---|---|")
    for mix, by_n in results["mixes"].items():
        for n, r in by_n.items():
            print(f"| {mix} | {n} | {r['jobs_per_hour']} | {r['samples_per_s']} | "
                  f"{r['pg_commits_per_job']} | {r['redis_commands_per_job']} |")  # fmt: skip
    for n, r in results["sweep"].items():
        print(f"16-trial sweep, {n} process(es): {r['wall_s']} s")


if __name__ == "__main__":
    main()
