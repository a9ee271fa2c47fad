"""Long-run benchmark (issue #14, item 1): is a run's cost linear in its epochs?

A script, not a test. A run's cost used to grow with the square of its epochs: the worker
asked for a checkpoint every epoch and each checkpoint carried the whole metric history. Now
``fit`` serialises a checkpoint only when ``checkpoint_due`` says so and the checkpoint holds
state, not history. This script measures both halves of that:

1. Engine alone: the seed 2-2-2 network (``examples/seed/network.json``) on 4 samples,
   10,000 epochs (``--engine-epochs``), (a) without a checkpoint callback and (b) with a
   checkpoint serialised after *every* epoch (``checkpoint_every=1``, the old worker's worst
   case). From the per-epoch callback's ``elapsed_s`` it reports the time of each block of
   epochs (5 blocks, ``--blocks``), and the size of the first and last checkpoint. Target: the
   blocks are flat (last within 1.2x of the first) and the checkpoint size is constant.
2. Service: a real stack (migrate, one uvicorn API process, one Celery worker with one
   process, the default checkpoint cadence) on a fresh PostgreSQL database it creates and drops,
   and the local Redis. One 20,000-epoch run (``--epochs``) of the seed network on the same 4
   samples; while it trains, every ``--sample-seconds`` the script reads the checkpoint row's
   size and epoch and ``pg_total_relation_size('checkpoints')`` (the row is deleted when the run
   ends). When it succeeded, ``GET /api/v1/runs/{id}/metrics`` gives the per-epoch time of the
   first and the last 1,000 epochs (``--window``; from ``elapsed_s`` differences). Targets: last
   within 1.2x of first, checkpoint row size constant.

Prints a table and writes ``bench/results/long_run.json`` (git-ignored). Run as
``.venv/bin/python bench/long_run.py`` (about 4 minutes at ~100 epochs/s, most of it the service
run); ``--skip-engine`` / ``--skip-service`` run one half; ``--epochs 3000`` is a quick check.
Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust) and Redis at 127.0.0.1:6379
(override with ``--pg`` / ``--redis``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench and tests live in the source tree
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from bench.service import (  # noqa: E402
    API,
    RESULTS,
    SEED_NETWORK,
    TERMINAL,
    bench_stack,
    machine_info,
    ts,
)
from core.engine import Network  # noqa: E402
from core.settings import Settings  # noqa: E402

# The seed sample first, then three more in (0, 1): 4 samples, as in issue #14's measurements.
SAMPLES_X = [[0.05, 0.10], [0.10, 0.05], [0.90, 0.95], [0.95, 0.90]]
SAMPLES_Y = [[0.01, 0.99], [0.99, 0.01], [0.01, 0.99], [0.99, 0.01]]
FLAT_RATIO = 1.2  # the last block (or window) may take at most this times the first
SIZE_SLACK_B = 100  # only the digits of the numbers in a checkpoint's JSON part vary

Row = tuple[str, str, str, str]  # metric, value, target, met


def training(epochs: int, batch_size: int) -> dict[str, Any]:
    """The seed's training config (SGD lr 0.5, MSE, no shuffle) for ``epochs`` epochs."""
    return {
        "loss": "mse",
        "optimizer": {"name": "sgd", "learning_rate": 0.5, "momentum": 0.0},
        "epochs": epochs,
        "batch_size": batch_size,
        "shuffle": False,
        "seed": 0,
        "dtype": "float64",
    }


def met(ok: bool) -> str:
    """The last column of a row with a target."""
    return "met" if ok else "MISSED"


def info_row(metric: str, value: str) -> Row:
    """A table row without a target."""
    return (metric, value, "(info)", "")


def ratio_row(metric: str, ratio: float) -> Row:
    """A table row for a last/first ratio, against the flatness target."""
    return (metric, f"{ratio:.2f}x", f"<= {FLAT_RATIO}x", met(ratio <= FLAT_RATIO))


# -- 1. the engine alone --------------------------------------------------------------------


def block_times(elapsed: list[float], block: int) -> list[float]:
    """Seconds taken by each full block of ``block`` epochs, from cumulative ``elapsed``."""
    ends = range(block, len(elapsed) + 1, block)
    return [elapsed[end - 1] - (elapsed[end - block - 1] if end > block else 0.0) for end in ends]


def engine_case(epochs: int, batch_size: int, block: int, checkpoint_every: int) -> dict:
    """One ``fit`` of the seed network; block times and (if any) checkpoint sizes."""
    net = Network.from_spec(SEED_NETWORK, dtype="float64")
    X, Y = np.array(SAMPLES_X), np.array(SAMPLES_Y)
    elapsed: list[float] = []
    sizes: list[int] = []
    extra: dict[str, Any] = {}
    if checkpoint_every:
        extra = {
            "checkpoint_every": checkpoint_every,
            "on_checkpoint": lambda _epoch, data: sizes.append(len(data)),
        }
    t0 = time.perf_counter()
    net.fit(
        X, Y, training(epochs, batch_size), lambda item: elapsed.append(item["elapsed_s"]), **extra
    )
    wall = time.perf_counter() - t0
    blocks = block_times(elapsed, block)
    out: dict[str, Any] = {
        "checkpoint_every": checkpoint_every or None,
        "wall_s": wall,
        "epochs_per_s": epochs / wall,
        "block_epochs": block,
        "block_s": blocks,
        "last_over_first_block": blocks[-1] / blocks[0],
    }
    if sizes:
        out["checkpoints"] = len(sizes)
        out["checkpoint_bytes"] = {
            "first": sizes[0],
            "last": sizes[-1],
            "min": min(sizes),
            "max": max(sizes),
        }
    return out


def engine_bench(epochs: int, batch_size: int, blocks: int) -> dict[str, Any]:
    """The engine without a checkpoint callback, then with a checkpoint every epoch."""
    block = max(1, epochs // blocks)
    plain = engine_case(epochs, batch_size, block, 0)
    every = engine_case(epochs, batch_size, block, 1)
    return {
        "network": "seed 2-2-2 sigmoid, MSE, SGD lr 0.5, float64",
        "samples": len(SAMPLES_X),
        "epochs": epochs,
        "batch_size": batch_size,
        "no_checkpoint": plain,
        "checkpoint_every_epoch": every,
        "checkpoint_every_epoch_over_none": every["wall_s"] / plain["wall_s"],
    }


def engine_rows(case: dict[str, Any]) -> list[Row]:
    """Table rows of the engine part."""
    rows: list[Row] = []
    for key, label in (
        ("no_checkpoint", "no checkpoint"),
        ("checkpoint_every_epoch", "checkpoint every epoch"),
    ):
        c = case[key]
        ms = " ".join(f"{1000 * s:.0f}" for s in c["block_s"])
        rows.append((f"engine, {label}: blocks of {c['block_epochs']} (ms)", ms, "flat", ""))
        rows.append(ratio_row("  last/first block", c["last_over_first_block"]))
        rows.append(info_row("  epochs/s", f"{c['epochs_per_s']:.0f}"))
    ratio = case["checkpoint_every_epoch_over_none"]
    rows.append(info_row("engine time, checkpoint every epoch / none", f"{ratio:.2f}x"))
    sizes = case["checkpoint_every_epoch"]["checkpoint_bytes"]
    rows.append(
        (
            "engine checkpoint bytes, first -> last",
            f"{sizes['first']} -> {sizes['last']}",
            "constant",
            met(sizes["max"] - sizes["min"] <= SIZE_SLACK_B),
        )
    )
    return rows


# -- 2. the service -------------------------------------------------------------------------


def sample_checkpoint(conn: Any, run_id: str) -> dict[str, Any]:
    """The run's status, its checkpoint row (bytes, epoch) and the checkpoints table's size."""
    status = conn.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()[0]
    row = conn.execute(
        "SELECT octet_length(data), epoch FROM checkpoints WHERE run_id = %s", (run_id,)
    ).fetchone()
    table = conn.execute("SELECT pg_total_relation_size('checkpoints')").fetchone()[0]
    return {
        "t": time.time(),
        "status": status,
        "row_bytes": row and row[0],
        "epoch": row and row[1],
        "table_bytes": table,
    }


def watch_run(db_url: str, run_id: str, every_s: float, timeout_s: float) -> list[dict]:
    """Sample the run's checkpoint every ``every_s`` seconds until the run has ended."""
    import psycopg

    samples: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(db_url, autocommit=True) as conn:
        while True:
            sample = sample_checkpoint(conn, run_id)
            samples.append(sample)
            if sample["status"] in TERMINAL:
                return samples
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} did not end in {timeout_s:.0f} s")
            time.sleep(every_s)


def window_rates(items: list[dict[str, Any]], window: int) -> dict[str, float]:
    """Per-epoch seconds over the first and the last ``window`` epochs, from ``elapsed_s``."""
    elapsed = [item["elapsed_s"] for item in items]
    first = elapsed[window - 1] / window
    last = (elapsed[-1] - elapsed[-window - 1]) / window
    return {
        "window_epochs": window,
        "first_ms_per_epoch": 1000 * first,
        "last_ms_per_epoch": 1000 * last,
        "last_over_first": last / first,
    }


def checkpoint_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Row and table sizes seen while the run had a checkpoint row."""
    seen = [s for s in samples if s["row_bytes"] is not None]
    if not seen:
        return {"samples_with_row": 0}
    rows = [s["row_bytes"] for s in seen]
    tables = [s["table_bytes"] for s in seen]
    return {
        "samples_with_row": len(seen),
        "row_bytes_min": min(rows),
        "row_bytes_max": max(rows),
        "epochs_seen": [seen[0]["epoch"], seen[-1]["epoch"]],
        "table_bytes_first": tables[0],
        "table_bytes_last": tables[-1],
        "table_bytes_max": max(tables),
    }


def one_long_run(stack: Any, db_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Submit the long run, sample its checkpoint while it trains, then read its metrics."""
    dataset = stack.upload_json(SAMPLES_X, SAMPLES_Y, name="long-run")
    run_id = stack.submit(dataset["id"], SEED_NETWORK, training(args.epochs, args.batch_size))["id"]
    timeout = args.timeout or 120 + args.epochs / 10  # ten epochs/s at the very least
    samples = watch_run(db_url, run_id, args.sample_seconds, timeout)
    with httpx.Client(base_url=stack.base_url, timeout=120) as client:
        run = client.get(f"{API}/runs/{run_id}").json()
        assert run["status"] == "succeeded", f"run {run_id} ended {run['status']}: {run}"
        items = client.get(f"{API}/runs/{run_id}/metrics").json()["items"]
    assert [i["epoch"] for i in items] == list(range(1, args.epochs + 1)), "missing epochs"
    server_s = ts(run["finished_at"]) - ts(run["started_at"])
    return {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "server_started_to_finished_s": server_s,
        "epochs_per_s": args.epochs / server_s,
        "epochs_per_s_by_elapsed": args.epochs / items[-1]["elapsed_s"],
        **window_rates(items, min(args.window, args.epochs // 2)),
        "checkpoint": checkpoint_summary(samples),
        "samples": samples,
    }


def cadence() -> dict[str, Any]:
    """The checkpoint cadence the worker runs with (its environment or the defaults)."""
    fields = Settings.model_fields
    return {
        "every_epochs": os.environ.get(
            "BACKPROP_CHECKPOINT_EVERY", fields["checkpoint_every"].default
        ),
        "every_seconds": os.environ.get(
            "BACKPROP_CHECKPOINT_SECONDS", fields["checkpoint_seconds"].default
        ),
    }


def service_bench(args: argparse.Namespace) -> dict[str, Any]:
    """A fresh database and stack (one worker process) for one long run; dropped after."""
    max_epochs = str(max(args.epochs, 100_000))
    with bench_stack(
        args.pg, args.redis, "long-run", concurrency=1, BACKPROP_MAX_EPOCHS=max_epochs
    ) as (stack, db_url, _):
        result = one_long_run(stack, db_url, args)
    return {
        "stack": "postgresql (fresh database), 1 API process, 1 worker process",
        "checkpoint_cadence": cadence(),
        **result,
    }


def service_rows(case: dict[str, Any]) -> list[Row]:
    """Table rows of the service part."""
    w, cp = case["window_epochs"], case["checkpoint"]
    rows: list[Row] = [
        info_row(f"service ms/epoch, first {w}", f"{case['first_ms_per_epoch']:.2f}"),
        info_row(f"service ms/epoch, last {w}", f"{case['last_ms_per_epoch']:.2f}"),
        ratio_row("  last/first", case["last_over_first"]),
        info_row(f"service epochs/s ({case['epochs']} epochs)", f"{case['epochs_per_s']:.1f}"),
    ]
    if cp["samples_with_row"]:
        rows += [
            (
                "checkpoint row bytes, min..max",
                f"{cp['row_bytes_min']}..{cp['row_bytes_max']}",
                "constant",
                met(cp["row_bytes_max"] - cp["row_bytes_min"] <= SIZE_SLACK_B),
            ),
            info_row(
                "  samples (epochs seen)",
                f"{cp['samples_with_row']} ({cp['epochs_seen'][0]}..{cp['epochs_seen'][1]})",
            ),
            info_row(
                "checkpoints table bytes, first..last",
                f"{cp['table_bytes_first']}..{cp['table_bytes_last']}",
            ),
        ]
    else:
        rows.append(("checkpoint row bytes", "never seen", "constant", "MISSED"))
    return rows


# -- the run ----------------------------------------------------------------------------------


def table_rows(cases: dict[str, Any]) -> list[Row]:
    """The table of whichever parts ran."""
    rows: list[Row] = []
    if "engine" in cases:
        rows += engine_rows(cases["engine"])
    if "service" in cases:
        rows += service_rows(cases["service"])
    return rows


def print_table(rows: list[Row]) -> None:
    """The rows as aligned columns: metric, value, target, met."""
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    print(f"{'metric':<{widths[0]}}  {'value':>{widths[1]}}  {'target':>{widths[2]}}  met")
    for metric, value, target, ok in rows:
        print(f"{metric:<{widths[0]}}  {value:>{widths[1]}}  {target:>{widths[2]}}  {ok}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="epochs of both parts (default: 20000 service, 10000 engine)",
    )
    parser.add_argument("--engine-epochs", type=int, default=None, help="the engine part's epochs")
    parser.add_argument("--batch-size", type=int, default=1, choices=(1, 4))
    parser.add_argument("--blocks", type=int, default=5, help="blocks the engine epochs split in")
    parser.add_argument("--window", type=int, default=1000, help="first/last epochs compared")
    parser.add_argument("--sample-seconds", type=float, default=2.0)
    parser.add_argument("--timeout", type=float, default=None, help="seconds for the long run")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--skip-engine", action="store_true")
    parser.add_argument("--skip-service", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS / "long_run.json")
    args = parser.parse_args()
    args.engine_epochs = args.engine_epochs or args.epochs or 10_000
    args.epochs = args.epochs or 20_000
    return args


def main() -> None:
    args = parse_args()
    results: dict[str, Any] = {"machine": {**machine_info(), "numpy": np.__version__}, "cases": {}}
    if not args.skip_engine:
        results["cases"]["engine"] = engine_bench(args.engine_epochs, args.batch_size, args.blocks)
    if not args.skip_service:
        results["cases"]["service"] = service_bench(args)
    rows = table_rows(results["cases"])
    results["table"] = [
        dict(zip(("metric", "value", "target", "met"), r, strict=True)) for r in rows
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"machine: {results['machine']}")
    if rows:
        print_table(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
