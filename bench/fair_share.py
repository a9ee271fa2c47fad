"""Fair-share benchmark (issue #14, item 8): another owner's new run against a backlog.

A script, not a test. Before fair dispatch, owner B's 5-epoch run at priority 9 waited 43 s
behind owner A's 60 priority-9 runs, because A's messages sat in the broker ahead of B's.
Now queued runs wait in the database and ``core/dispatch.py`` sends one only when a
worker slot frees, round robin across owners: B's new run should start as soon as a slot
frees, ahead of A's backlog, so B waits at most one of A's runs.

The script starts a real stack with ``tests.e2e.stack.start_stack`` (migrate, one uvicorn API
process, one Celery worker with ``--concurrency`` processes, 2 by default, authentication on)
on a fresh PostgreSQL database it creates (and drops at the end) and the local Redis, on a
Celery queue of its own, makes API keys for the owners ``alice`` and ``bob``
(``python -m cli keys create``), and then:

1. calibrates: alice trains the seed network (``examples/seed/network.json``) on the seed
   dataset once (``--calibration-epochs``); from its epochs/s (the server's ``started_at`` and
   ``finished_at``) it picks the epochs that make one run last ``--run-seconds`` (1 s);
2. alice submits ``--backlog`` (60) such runs at priority 9, and the script waits until they
   fill the worker slots;
3. bob submits a 5-epoch run at priority 9, waits for it to finish, pauses a random 0-1 s and
   does it again, ``--probes`` (5) times in all, while alice's backlog drains;
4. it waits for the backlog to drain and reads every run's server timestamps
   (``GET /api/v1/runs/{id}``), plus when each of alice's runs was sent to a worker
   (``runs.enqueued_at``, read from the database).

For each probe: bob's wait (``started_at - created_at``), the median duration of alice's runs
that held the slots when bob submitted, the time from the first of them ending (a slot
freeing) to bob's start, and how many of alice's runs that were waiting at
bob's submit started before his run. Targets: the longest wait at most one median alice run
(ratio <= 1.0) and no alice run overtaking bob. A run already sent to a worker when bob
submitted (it took a slot that freed before bob came) is not an overtake; those are counted
apart. For context: how long the backlog took to drain, and the wait a FIFO queue would have
given bob.

Prints a table and writes ``bench/results/fair_share.json`` (git-ignored) with the machine's
details and load. Run as ``.venv/bin/python bench/fair_share.py`` (about 1-2 minutes);
needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust) and Redis at 127.0.0.1:6379
(override with ``--pg`` / ``--redis``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: bench and tests live in the source tree
    sys.path.insert(0, str(ROOT))

from bench.long_run import Row, info_row, met, print_table, training  # noqa: E402
from bench.service import (  # noqa: E402
    API,
    RESULTS,
    SEED_NETWORK,
    TERMINAL,
    bench_stack,
    machine_info,
    ts,
)

if TYPE_CHECKING:
    import httpx

    from tests.e2e.stack import Stack

SEED_DATA: dict[str, Any] = json.loads((ROOT / "examples" / "seed" / "data.json").read_text())
MAX_RATIO = 1.0  # bob's longest wait, in median alice runs


# -- the stack ------------------------------------------------------------------------------


@contextmanager
def fresh_stack(args: argparse.Namespace) -> Iterator[tuple[Stack, str]]:
    """A stack with authentication on, on a database created for it; dropped after."""
    with bench_stack(
        args.pg, args.redis, "fair-share", concurrency=args.concurrency,
        BACKPROP_AUTH="on", BACKPROP_AUTH_CACHE_S="60",
        BACKPROP_MAX_ACTIVE_RUNS=str(max(100, args.backlog + 10)), BACKPROP_MAX_EPOCHS="1000000",
    ) as (stack, db_url, _):  # fmt: skip
        yield stack, db_url


def upload_seed(client: httpx.Client) -> str:
    """Upload the seed dataset (``examples/seed/data.json``) as this owner; its id."""
    resp = client.post(f"{API}/datasets", json=SEED_DATA)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def submit(client: httpx.Client, dataset_id: str, epochs: int, priority: int) -> str:
    """Submit one seed-network run of ``epochs`` epochs; its id."""
    body = {
        "dataset_id": dataset_id,
        "network": SEED_NETWORK,
        "training": training(epochs, 1),
        "priority": priority,
    }
    resp = client.post(f"{API}/runs", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()["id"]


def get_run(client: httpx.Client, run_id: str) -> dict[str, Any]:
    """The run's record, with the server's timestamps."""
    resp = client.get(f"{API}/runs/{run_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def wait_ended(client: httpx.Client, run_id: str, timeout: float) -> dict[str, Any]:
    """Poll the run until it has ended; it must have succeeded."""
    from tests.e2e.stack import wait_for

    def ended() -> dict[str, Any] | None:
        run = get_run(client, run_id)
        return run if run["status"] in TERMINAL else None

    run = wait_for(ended, timeout, f"run {run_id} to end", interval=0.05)
    assert run["status"] == "succeeded", run
    return run


def count_runs(client: httpx.Client, status: str) -> int:
    """How many of this owner's runs have ``status`` (up to 500)."""
    resp = client.get(f"{API}/runs", params={"status": status, "limit": 500})
    assert resp.status_code == 200, resp.text
    return len(resp.json()["items"])


def duration(run: dict[str, Any]) -> float:
    """Seconds from the run's start to its end, by the server's clock."""
    return ts(run["finished_at"]) - ts(run["started_at"])


# -- the measurement ------------------------------------------------------------------------


def calibrate(client: httpx.Client, dataset_id: str, epochs: int) -> dict[str, Any]:
    """One run alone on the stack: its duration and epochs/s."""
    run = wait_ended(client, submit(client, dataset_id, epochs, 0), timeout=300)
    seconds = duration(run)
    return {"epochs": epochs, "seconds": seconds, "epochs_per_s": epochs / seconds}


def submit_backlog(
    client: httpx.Client, dataset_id: str, epochs: int, n: int, priority: int
) -> list[str]:
    """Submit alice's ``n`` runs one after the other; their ids, in order."""
    return [submit(client, dataset_id, epochs, priority) for _ in range(n)]


def wait_slots_full(client: httpx.Client, slots: int) -> None:
    """Wait until this owner's runs hold every worker slot."""
    from tests.e2e.stack import wait_for

    wait_for(lambda: count_runs(client, "running") >= slots, 60, "the slots to fill", 0.1)


def run_probes(
    alice: httpx.Client, bob: httpx.Client, dataset_id: str, args: argparse.Namespace
) -> list[str]:
    """Bob's probe runs, one at a time, each a random 0-1 s after the previous ended."""
    rng = random.Random(args.seed)
    ids: list[str] = []
    for i in range(args.probes):
        if count_runs(alice, "queued") == 0:
            print(f"alice's backlog was gone before probe {i + 1}; {i} probes made")
            break
        run_id = submit(bob, dataset_id, args.bob_epochs, args.priority)
        ids.append(run_id)
        wait_ended(bob, run_id, timeout=60 + 10 * args.run_seconds)
        time.sleep(rng.uniform(0.0, 1.0))
    return ids


def wait_drained(client: httpx.Client, timeout: float) -> None:
    """Wait until this owner has no queued or running run left (asked twice a second)."""
    from tests.e2e.stack import wait_for

    def drained() -> bool:
        return count_runs(client, "queued") == 0 and count_runs(client, "running") == 0

    wait_for(drained, timeout, "alice's backlog to drain", interval=0.5)


def sent_at(db_url: str, run_ids: list[str]) -> dict[str, float | None]:
    """When each run's message was last sent to a worker (``runs.enqueued_at``)."""
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, enqueued_at FROM runs WHERE id = ANY(%s)", (run_ids,)
        ).fetchall()
    return {run_id: when and when.timestamp() for run_id, when in rows}


# -- the analysis ---------------------------------------------------------------------------


def probe_result(
    bob_run: dict[str, Any], alice_runs: list[dict[str, Any]], sent: dict[str, float | None]
) -> dict[str, Any]:
    """Bob's wait, alice's runs holding the slots then, and alice's runs that went first."""
    submitted, started = ts(bob_run["created_at"]), ts(bob_run["started_at"])
    running = [a for a in alice_runs if ts(a["started_at"]) <= submitted < ts(a["finished_at"])]
    waiting = [
        a for a in alice_runs if ts(a["created_at"]) < submitted and ts(a["started_at"]) > submitted
    ]
    freed = min((ts(a["finished_at"]) for a in running), default=submitted)
    went_first = [a for a in waiting if ts(a["started_at"]) < started]
    # Sent to a worker after bob's submit (or not known when): the dispatcher chose it over bob.
    overtook = [a for a in went_first if (sent.get(a["id"]) or float("inf")) > submitted]
    return {
        "run_id": bob_run["id"],
        "wait_s": started - submitted,
        "run_s": duration(bob_run),
        "slot_freed_to_started_s": started - max(freed, submitted),
        "alice_running_at_submit": len(running),
        "alice_waiting_at_submit": len(waiting),
        "alice_running_median_s": statistics.median(duration(a) for a in running)
        if running
        else None,
        "alice_started_first_already_sent": len(went_first) - len(overtook),
        "alice_overtook": len(overtook),
    }


def analyse(
    bob_runs: list[dict[str, Any]],
    alice_runs: list[dict[str, Any]],
    sent: dict[str, float | None],
    slots: int,
) -> dict[str, Any]:
    """The per-probe results and their summary."""
    probes = [probe_result(b, alice_runs, sent) for b in bob_runs]
    waits = [p["wait_s"] for p in probes]
    alice_median = statistics.median(duration(a) for a in alice_runs)
    drain = max(ts(a["finished_at"]) for a in alice_runs) - ts(alice_runs[0]["created_at"])
    fifo = [p["alice_waiting_at_submit"] * alice_median / slots for p in probes]
    return {
        "probes": probes,
        "bob_wait_s": {"each": waits, "median": statistics.median(waits), "max": max(waits)},
        "slot_freed_to_bob_started_max_s": max(p["slot_freed_to_started_s"] for p in probes),
        "alice_run_median_s": alice_median,
        "max_wait_over_alice_run": max(waits) / alice_median,
        "alice_overtook": sum(p["alice_overtook"] for p in probes),
        "alice_started_first_already_sent": sum(
            p["alice_started_first_already_sent"] for p in probes
        ),
        "backlog_drain_s": drain,
        "fifo_wait_estimate_s": {"each": fifo, "median": statistics.median(fifo)},
    }


def table_rows(res: dict[str, Any]) -> list[Row]:
    """The table: calibration, each probe, the summary against the targets, context."""
    cal, s, n = res["calibration"], res["summary"], res["backlog"]
    rows: list[Row] = [
        info_row(
            f"calibration: epochs/s ({cal['epochs']}-epoch run)", f"{cal['epochs_per_s']:.0f}"
        ),
        info_row("alice's run: epochs (chosen)", str(res["alice_epochs"])),
        info_row("alice's run duration, median", f"{s['alice_run_median_s']:.2f} s"),
    ]
    for i, p in enumerate(s["probes"], 1):
        rows.append(
            info_row(
                f"bob probe {i}: wait (alice waiting / running)",
                f"{p['wait_s']:.3f} s ({p['alice_waiting_at_submit']} / "
                f"{p['alice_running_at_submit']})",
            )
        )
    ratio, overtook = s["max_wait_over_alice_run"], s["alice_overtook"]
    rows += [
        info_row("bob's wait, median", f"{s['bob_wait_s']['median']:.3f} s"),
        info_row("bob's wait, max", f"{s['bob_wait_s']['max']:.3f} s"),
        info_row(
            "  first slot freed -> bob started, max",
            f"{1000 * s['slot_freed_to_bob_started_max_s']:.0f} ms",
        ),
        (
            "max wait / alice's median run",
            f"{ratio:.2f}",
            f"<= {MAX_RATIO}",
            met(ratio <= MAX_RATIO),
        ),
        ("alice runs overtaking bob", str(overtook), "0", met(overtook == 0)),
        info_row(
            "  alice runs already sent at bob's submit",
            str(s["alice_started_first_already_sent"]),
        ),
        info_row(
            f"alice's backlog of {n}: first submit -> drained", f"{s['backlog_drain_s']:.1f} s"
        ),
        info_row(
            "  bob's wait behind a FIFO queue (est., median)",
            f"{s['fifo_wait_estimate_s']['median']:.1f} s",
        ),
        info_row(
            "load average 1 min, before / after",
            f"{res['load_avg']['before'][0]:.2f} / {res['load_avg']['after'][0]:.2f}",
        ),
    ]
    return rows


# -- the run ----------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Calibrate, fill the slots with alice's backlog, probe with bob's runs, drain, read."""
    from tests.e2e.test_security import client_for, make_key

    with fresh_stack(args) as (stack, db_url):
        with (
            client_for(stack, make_key(stack, "alice")["key"]) as alice,
            client_for(stack, make_key(stack, "bob")["key"]) as bob,
        ):
            alice_ds, bob_ds = upload_seed(alice), upload_seed(bob)
            cal = calibrate(alice, alice_ds, args.calibration_epochs)
            epochs = args.epochs or max(1, round(cal["epochs_per_s"] * args.run_seconds))
            print(f"calibration: {cal['epochs_per_s']:.0f} epochs/s; alice's runs: {epochs} epochs")
            backlog = submit_backlog(alice, alice_ds, epochs, args.backlog, args.priority)
            wait_slots_full(alice, args.concurrency)
            probe_ids = run_probes(alice, bob, bob_ds, args)
            wait_drained(alice, timeout=120 + 10 * args.backlog * args.run_seconds)
            alice_runs = [get_run(alice, run_id) for run_id in backlog]
            bob_runs = [get_run(bob, run_id) for run_id in probe_ids]
        sent = sent_at(db_url, backlog)
    assert bob_runs, "no probe was made: the backlog drained too soon"
    return {
        "stack": "postgresql (fresh database), 1 API process, auth on, "
        f"1 worker with {args.concurrency} processes",
        "calibration": cal,
        "alice_epochs": epochs,
        "bob_epochs": args.bob_epochs,
        "priority": args.priority,
        "backlog": args.backlog,
        "summary": analyse(bob_runs, alice_runs, sent, args.concurrency),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=2, help="the worker's processes")
    parser.add_argument("--backlog", type=int, default=60, help="alice's queued runs")
    parser.add_argument("--probes", type=int, default=5, help="bob's runs, one at a time")
    parser.add_argument("--run-seconds", type=float, default=1.0, help="one alice run's length")
    parser.add_argument("--epochs", type=int, default=None, help="alice's epochs (no calibration)")
    parser.add_argument("--calibration-epochs", type=int, default=300)
    parser.add_argument("--bob-epochs", type=int, default=5)
    parser.add_argument("--priority", type=int, default=9, help="of alice's and bob's runs")
    parser.add_argument("--seed", type=int, default=0, help="of the pauses between probes")
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--out", type=Path, default=RESULTS / "fair_share.json")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    load_before = os.getloadavg()
    results: dict[str, Any] = {"machine": machine_info(), **measure(args)}
    results["load_avg"] = {"before": load_before, "after": os.getloadavg()}
    rows = table_rows(results)
    results["table"] = [
        dict(zip(("metric", "value", "target", "met"), r, strict=True)) for r in rows
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"machine: {results['machine']}")
    print_table(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
