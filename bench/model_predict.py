"""Model-predict benchmark (issue #11): ``POST /models/{name}/predict`` against
``POST /runs/{id}/predict`` on the same run, in the same stack, interleaved.

A script, not a test. It starts the real service with :func:`bench.service.bench_stack`
(migrate, one uvicorn API process, one Celery worker) on a fresh PostgreSQL database and the
local Redis, trains one iris classifier (4-16-3, standardised), registers it as the model
``bench``, checks that both routes answer the same, then measures both routes in rounds:
each round runs a phase of one route and a phase of the other (the order alternates, ABBA,
so a drift of the shared machine falls on both), at each connection count. A phase is a
load generator in its own process (asyncio + httpx, ``N`` connections, each sending its
next request when the last one answered) posting the same body for a fixed time. Per route
it reports requests per second, p50/p99 latency and the API process's CPU time per request,
pooled over the rounds, and each round's figures.

Prints a table and writes ``bench/results/model_predict.json``. Run from the repository's
root folder as ``python bench/model_predict.py`` (``--rounds``, ``--seconds``,
``--connections``, ``--rows``); needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust)
and Redis at 127.0.0.1:6379 (``--pg`` / ``--redis``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests.e2e.stack lives in the source tree, not the package
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.service import API, RESULTS, CpuMeter, bench_stack, machine_info, pct  # noqa: E402

IRIS = ROOT / "examples" / "iris"
NAME = "bench"


async def _load(url: str, body: bytes, duration: float, conc: int) -> dict[str, Any]:
    """``conc`` connections POSTing ``body`` to ``url`` back to back for ``duration`` s."""
    limits = httpx.Limits(max_connections=conc, max_keepalive_connections=conc)
    headers = {"Content-Type": "application/json"}
    lat: list[float] = []
    errors = 0
    async with httpx.AsyncClient(limits=limits, timeout=30, headers=headers) as client:
        await asyncio.gather(*(client.post(url, content=body) for _ in range(conc)))  # connect
        stop = time.perf_counter() + duration

        async def one() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    ok = (await client.post(url, content=body)).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    lat.append(time.perf_counter() - t0)
                else:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(conc)))
        wall = time.perf_counter() - t0
    return {"requests": len(lat), "errors": errors, "seconds": wall, "latencies_s": lat}


def phase(url: str, body: bytes, duration: float, conc: int, api_pid: int) -> dict[str, Any]:
    """One load phase in a child process, with the API process's CPU time over it."""
    with CpuMeter(api_pid) as cpu:
        out = subprocess.run(
            [sys.executable, __file__, "--load-child", url, body.decode(), str(duration),
             str(conc)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["api_cpu_s"] = cpu.result["process_cores"] * result["seconds"]
    return result


def summary(phases: list[dict[str, Any]]) -> dict[str, Any]:
    """Pooled figures of a route's phases: requests per second over their total time,
    latency percentiles over all their requests, API CPU per request."""
    lat_ms = [v * 1000 for p in phases for v in p["latencies_s"]]
    seconds = sum(p["seconds"] for p in phases)
    requests = sum(p["requests"] for p in phases)
    return {
        "requests": requests,
        "errors": sum(p["errors"] for p in phases),
        "seconds": seconds,
        "rps": requests / seconds,
        "p50_ms": pct(lat_ms, 0.50),
        "p99_ms": pct(lat_ms, 0.99),
        "api_cpu_ms_per_request": 1000 * sum(p["api_cpu_s"] for p in phases) / requests,
        "rounds_rps": [round(p["requests"] / p["seconds"], 1) for p in phases],
        "rounds_p50_ms": [round(pct([v * 1000 for v in p["latencies_s"]], 0.5), 3) for p in phases],
    }


def train_and_register(stack: Any) -> tuple[str, list[list[float]]]:
    """An iris classifier, registered as ``NAME``; its run id and some feature rows."""
    import csv

    with (IRIS / "iris.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    features = [[float(v) for v in row[:4]] for row in rows]
    resp = stack.client.post(
        f"{API}/datasets",
        files={"file": ("iris.csv", (IRIS / "iris.csv").read_bytes(), "text/csv")},
        data={"target": "species", "name": "iris"},
    )
    assert resp.status_code in (200, 201), resp.text
    network = json.loads((IRIS / "network.json").read_text())
    training = json.loads((IRIS / "training.json").read_text())
    run = stack.wait_done(stack.submit(resp.json()["id"], network, training)["id"], timeout=300)
    assert run["status"] == "succeeded", run
    put = stack.client.put(f"{API}/models/{NAME}", json={"run_id": run["id"]})
    assert put.status_code == 201, put.text
    return run["id"], features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--rounds", type=int, default=6, help="phases per route and count")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of a phase")
    parser.add_argument("--connections", default="1,8", help="comma-separated counts")
    parser.add_argument("--rows", type=int, default=1, help="input rows per request")
    parser.add_argument("--out", type=Path, default=RESULTS / "model_predict.json")
    parser.add_argument("--load-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.load_child:
        url, body, duration, conc = args.load_child
        print(json.dumps(asyncio.run(_load(url, body.encode(), float(duration), int(conc)))))
        return

    os.environ["BACKPROP_TEST_REDIS_URL"] = args.redis
    results: dict[str, Any] = {
        "machine": machine_info(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "settings": {"rounds": args.rounds, "seconds": args.seconds, "rows": args.rows},
        "cases": {},
    }
    with bench_stack(args.pg, args.redis, "model-predict", concurrency=1) as (stack, _, _):
        run_id, features = train_and_register(stack)
        body = json.dumps({"inputs": features[: args.rows]}).encode()
        urls = {
            "run": f"{stack.base_url}{API}/runs/{run_id}/predict",
            "model": f"{stack.base_url}{API}/models/{NAME}/predict",
        }
        # The same answer through both (and the registry names the run).
        answers = {k: httpx.post(url, content=body, headers={"Content-Type": "application/json"},
                                 timeout=30).json() for k, url in urls.items()}  # fmt: skip
        assert answers["model"]["run_id"] == run_id and answers["model"]["version"] == 1
        assert answers["model"]["outputs"] == answers["run"]["outputs"]
        assert stack.api is not None
        api_pid = stack.api.pid
        results["stack"] = {"database": "postgresql (fresh database)", "api_processes": 1,
                            "run_id": run_id, "model": NAME}  # fmt: skip
        for conc in [int(c) for c in args.connections.split(",")]:
            for url in urls.values():  # warm-up: loaded model, pooled connections
                phase(url, body, 1.0, conc, api_pid)
            phases: dict[str, list[dict[str, Any]]] = {"run": [], "model": []}
            for i in range(args.rounds):
                order = ("run", "model") if i % 2 == 0 else ("model", "run")
                for route in order:
                    phases[route].append(phase(urls[route], body, args.seconds, conc, api_pid))
            results["cases"][f"{conc}_connections"] = {k: summary(v) for k, v in phases.items()}

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"machine: {results['machine']}")
    print(f"{'connections':>11}  {'route':<28} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'API CPU ms/req':>15}  rounds req/s")  # fmt: skip
    label = {"run": "POST /runs/{id}/predict", "model": "POST /models/{name}/predict"}
    for case, figures in results["cases"].items():
        for route, s in figures.items():
            print(f"{case.split('_')[0]:>11}  {label[route]:<28} {s['rps']:>8.1f} "
                  f"{s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} {s['api_cpu_ms_per_request']:>15.3f}"
                  f"  {s['rounds_rps']}")  # fmt: skip
        ratio = figures["model"]["rps"] / figures["run"]["rps"]
        print(f"{'':>11}  model/run req/s: {ratio:.3f}")


if __name__ == "__main__":
    main()
