"""List benchmark (issue #13): ``GET /api/v1/runs`` pages over 10,000 runs on PostgreSQL.

A script, not a test. It starts the real service (``bench.service.bench_stack``: a fresh
PostgreSQL database, migrate, one uvicorn API process, one worker) and writes 10,000 runs
straight into the database, as a service some months old would hold them:

- 8 owners, one of them (``default``, the owner the API sees with authentication off) with
  about 60% of the runs, the others between 2% and 10%;
- statuses mostly ``succeeded`` (70%), then ``cancelled`` (12%), ``failed`` (10%),
  ``queued`` (5%, held back) and ``running`` (3%, leased by a worker that is not there);
- 40% of the runs are the trials of 80 sweeps (with their ``sweeps`` rows);
- 60% have tags (``project`` among 6 values, ``stage`` among 3) and 2% a rare one
  (``reviewed: yes``);
- metrics as training leaves them: ``loss`` on every run that trained, ``val_loss`` on 80%,
  accuracies on the classifiers (60%), ``best_epoch`` on the early-stopped 30%; each run
  with 2 to 4 timeline rows, the network and training of an iris-sized request;
- created over 90 days.

Then, after ``ANALYZE``, it reads each case below page by page (``limit=50``, up to
``--pages`` pages, following ``next_cursor``) with httpx from this process, ``--repeat``
times after a warm-up round, and reports the latency of each page request (p50, p95, max);
the target is under 50 ms per page. It also prints ``EXPLAIN (ANALYZE, BUFFERS)`` of the SQL
the API runs for the main cases (captured from the same code path, with the same
parameters), and measures what the sort indexes cost each training epoch: the
``record_epoch`` UPDATE timed with the indexes and without them (HOT updates counted).

Writes ``bench/results/list_runs.json``. Run as ``python bench/list_runs.py``; needs
PostgreSQL at 127.0.0.1:5432 (user postgres, trust) and Redis at 127.0.0.1:6379.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # tests.e2e.stack lives in the source tree, not the package
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from sqlalchemy import create_engine, event, insert, pool, select, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from bench.service import bench_stack, machine_info, pct  # noqa: E402

RESULTS = ROOT / "bench" / "results"
API = "/api/v1"
N_RUNS = 10_000
OWNERS = {"default": 0.60, "ana": 0.10, "bo": 0.08, "chen": 0.07, "dee": 0.06, "eli": 0.04,
          "fay": 0.03, "gus": 0.02}  # fmt: skip
STATUSES = {"succeeded": 0.70, "cancelled": 0.12, "failed": 0.10, "queued": 0.05, "running": 0.03}
PROJECTS = ("iris", "digits", "wine", "housing", "mnist-lite", "seed")
NETWORK = {"input_dim": 4, "layers": [{"units": 16, "activation": "tanh"},
                                      {"units": 3, "activation": "softmax"}],
           "init": "glorot_uniform"}  # fmt: skip
TRAINING = {"loss": "categorical_crossentropy", "epochs": 200, "batch_size": 16,
            "optimizer": {"name": "adam", "learning_rate": 0.01, "beta1": 0.9, "beta2": 0.999,
                          "eps": 1e-8, "weight_decay": 0.0},
            "shuffle": True, "seed": 0, "validation_split": 0.2, "standardize": True,
            "dtype": "float32", "early_stopping": {"patience": 10, "min_delta": 0.0,
                                                   "restore_best": True}}  # fmt: skip


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def populate(engine: Engine, n: int, seed: int = 0) -> dict[str, Any]:
    """Write ``n`` runs (and their sweeps and timelines) straight into the database; what a
    few cases need to know of them (a sweep and a dataset of ``default``)."""
    from core.db.models import Run, RunTransition, Sweep, metric_columns

    rng = random.Random(seed)
    now = datetime.now(UTC)
    datasets = {o: [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(6)] for o in OWNERS}
    sweeps: list[dict[str, Any]] = []
    for k in range(80):
        owner = _pick(rng, OWNERS)
        sweeps.append({
            "id": str(uuid.UUID(int=rng.getrandbits(128))), "owner": owner,
            "name": f"{rng.choice(PROJECTS)} sweep {k}", "status": "succeeded",
            "metric": "val_loss", "spec": {"base": {"network": NETWORK, "training": TRAINING}},
            "n_trials": 50, "n_runs": 50, "max_concurrent": 4,
            "created_at": now - timedelta(days=rng.uniform(0, 90)),
        })  # fmt: skip
    by_owner: dict[str, list[dict[str, Any]]] = {}
    for s in sweeps:
        by_owner.setdefault(s["owner"], []).append(s)
    runs, transitions = [], []
    for i in range(n):
        owner = _pick(rng, OWNERS)
        status = _pick(rng, STATUSES)
        sweep = rng.choice(by_owner[owner]) if by_owner.get(owner) and rng.random() < 0.4 else None
        created = (sweep["created_at"] + timedelta(minutes=rng.uniform(0, 120)) if sweep
                   else now - timedelta(days=rng.uniform(0, 90)))  # fmt: skip
        trained = status != "queued"
        classifier = rng.random() < 0.6
        loss = rng.lognormvariate(-1.5, 0.8) if trained else None
        metrics: dict[str, Any] = {"loss": loss}
        if trained and rng.random() < 0.8:
            metrics["val_loss"] = loss * rng.uniform(0.9, 1.6)
        if trained and classifier:
            metrics["accuracy"] = min(1.0, max(0.0, 1 - loss / 3 + rng.gauss(0, 0.05)))
            if "val_loss" in metrics:
                metrics["val_accuracy"] = min(
                    1.0, max(0.0, metrics["accuracy"] - rng.uniform(0, 0.1))
                )
        tags = None
        if rng.random() < 0.6:
            tags = {
                "project": rng.choice(PROJECTS),
                "stage": rng.choice(("explore", "tune", "final")),
            }
            if rng.random() < 0.03:
                tags["reviewed"] = "yes"
        run_id = str(uuid.UUID(int=rng.getrandbits(128)))
        early = status == "succeeded" and rng.random() < 0.43
        runs.append({
            "id": run_id, "owner": owner,
            "name": (f"{tags['project'] if tags else rng.choice(PROJECTS)} "
                     f"{rng.choice(('baseline', 'wide', 'deep', 'lr sweep', 'adam', 'sgd'))} {i}"),
            "dataset_id": rng.choice(datasets[owner]), "network": NETWORK, "training": TRAINING,
            "status": status, "epoch": rng.randrange(1, 200) if trained else 0, "epochs": 200,
            "metrics": metrics, **metric_columns(metrics),
            "sweep_id": sweep and sweep["id"], "trial": rng.randrange(50) if sweep else None,
            "tags": tags, "best_epoch": rng.randrange(5, 150) if early else None,
            "held": status == "queued", "attempts": 1 if trained else 0,
            "lease_owner": "gone:1" if status == "running" else None,
            "lease_expires_at": now + timedelta(days=1) if status == "running" else None,
            "created_at": created, "started_at": created if trained else None,
            "finished_at": created + timedelta(minutes=3)
            if status not in ("queued", "running") else None,
            "updated_at": created,
        })  # fmt: skip
        transitions.append({"run_id": run_id, "status": "queued", "at": created,
                            "reason": "submitted by its owner", "attempt": 0})  # fmt: skip
        if trained:
            transitions.append({"run_id": run_id, "status": "running", "at": created,
                                "reason": "claimed by worker w:1 (attempt 1)", "attempt": 1,
                                "worker": "w:1"})  # fmt: skip
        if status not in ("queued", "running"):
            transitions.append({"run_id": run_id, "status": status,
                                "at": created + timedelta(minutes=3),
                                "reason": f"{status} (bench)", "attempt": 1})  # fmt: skip
    with Session(engine) as db:
        db.execute(insert(Sweep), sweeps)
        for k in range(0, len(runs), 1000):
            db.execute(insert(Run), runs[k : k + 1000])
        db.execute(insert(RunTransition), [{"worker": None, **t} for t in transitions])
        db.commit()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE"))
    mine = [r for r in runs if r["owner"] == "default"]
    busiest = max(
        (s for s in sweeps if s["owner"] == "default"),
        key=lambda s: sum(r["sweep_id"] == s["id"] for r in mine),
    )
    return {
        "runs": len(runs),
        "runs_of_default": len(mine),
        "sweep": busiest["id"],
        "sweep_trials": sum(r["sweep_id"] == busiest["id"] for r in mine),
        "dataset": datasets["default"][0],
        "since": (now - timedelta(days=14)).isoformat(),
        "until": (now - timedelta(days=7)).isoformat(),
    }


def cases_for(known: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The queries measured: each a filter or two and a sort, as the dashboard would ask."""
    return {
        "newest first (no filter)": {},
        "status=succeeded, sort=val_loss asc": {"status": "succeeded", "sort": "val_loss"},
        "tag=project:iris, sort=accuracy desc": {"tag": "project:iris", "sort": "accuracy"},
        "top_level, status=failed|cancelled": {"top_level": "true",
                                               "status": ["failed", "cancelled"]},
        "sweep_id (its trials), sort=val_loss": {"sweep_id": known["sweep"], "sort": "val_loss"},
        "q=baseline, sort=loss asc": {"q": "baseline", "sort": "loss"},
        "rare tag reviewed:yes, sort=val_accuracy": {"tag": "reviewed:yes",
                                                     "sort": "val_accuracy"},
        "created in a 7-day window, sort=best_epoch": {"created_after": known["since"],
                                                       "created_before": known["until"],
                                                       "sort": "best_epoch"},
        "dataset_id + tag stage:final, sort=loss desc": {"dataset_id": known["dataset"],
                                                         "tag": "stage:final", "sort": "loss",
                                                         "order": "desc"},
    }  # fmt: skip


def read_pages(client: httpx.Client, params: dict[str, Any], pages: int) -> list[tuple[float, int]]:
    """Up to ``pages`` pages of the list; each request's (seconds, items)."""
    out = []
    cursor = None
    for _ in range(pages):
        query = {**params, "limit": 50, **({"cursor": cursor} if cursor else {})}
        t0 = time.perf_counter()
        resp = client.get(f"{API}/runs", params=query)
        elapsed = time.perf_counter() - t0
        resp.raise_for_status()
        body = resp.json()
        out.append((elapsed, len(body["items"])))
        cursor = body["next_cursor"]
        if cursor is None:
            break
    return out


def measure(base: str, cases: dict[str, dict[str, Any]], pages: int, repeat: int) -> dict:
    results: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=30) as client:
        for params in cases.values():  # warm-up: plans, caches, the API's first requests
            read_pages(client, params, pages)
        for name, params in cases.items():
            times: list[float] = []
            first: list[float] = []
            items = 0
            for _ in range(repeat):
                got = read_pages(client, params, pages)
                times += [t for t, _ in got]
                first.append(got[0][0])
                items = sum(n for _, n in got)
            ms = [t * 1000 for t in times]
            results[name] = {
                "params": params, "pages_per_round": len(times) // repeat, "runs_listed": items,
                "requests": len(ms), "p50_ms": pct(ms, 0.5), "p95_ms": pct(ms, 0.95),
                "max_ms": max(ms), "mean_ms": statistics.fmean(ms),
                "first_page_p50_ms": pct([t * 1000 for t in first], 0.5),
            }  # fmt: skip
    return results


def explain(db_url: str, cases: dict[str, dict[str, Any]], names: list[str]) -> dict[str, str]:
    """EXPLAIN (ANALYZE, BUFFERS) of the statements the list route runs for ``names``:
    built by the route's own code (filters, sort, keyset page with a cursor from page 1),
    captured as they execute, and explained with the same parameters."""
    from api.listing import Filters, parse_tags, run_sort
    from api.pagination import keyset_page
    from core.db.models import Run
    from core.db.session import normalize_url

    engine = create_engine(normalize_url(db_url), poolclass=pool.NullPool)
    captured: list[tuple[str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute")
    def grab(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM runs" in statement:
            captured.append((statement, parameters))

    plans: dict[str, str] = {}
    with Session(engine) as db:
        for name in names:
            p = cases[name]
            status = p.get("status")
            filters = Filters(
                statuses=[status] if isinstance(status, str) else list(status or ()),
                tags=parse_tags([p["tag"]] if "tag" in p else None), q=p.get("q"),
                dataset_id=p.get("dataset_id"), sweep_id=p.get("sweep_id"),
                top_level=p.get("top_level") == "true",
                created_after=datetime.fromisoformat(p["created_after"])
                if "created_after" in p else None,
                created_before=datetime.fromisoformat(p["created_before"])
                if "created_before" in p else None,
            )  # fmt: skip
            stmt = filters.apply(select(Run).where(Run.owner == "default"), Run, "postgresql")
            sort = run_sort(p.get("sort", "created_at"), p.get("order"))
            _, cursor = keyset_page(db, stmt, Run, sort, None, 50)  # page 1
            captured.clear()
            keyset_page(db, stmt, Run, sort, cursor, 50)  # page 2: the cursor's query
            lines = []
            for statement, parameters in captured:
                rows = (
                    db.connection()
                    .exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
                    .all()
                )
                lines.append("\n".join(r[0] for r in rows))
            plans[name] = "\n-- then --\n".join(lines)
    engine.dispose()
    return plans


def epoch_update_cost(db_url: str, n: int) -> dict[str, Any]:
    """The per-epoch ``record_epoch`` UPDATE on a running run, timed with the sort indexes
    and with them dropped (then made again); how many updates were HOT each time."""
    from sqlalchemy.schema import CreateIndex

    from core.db.models import SORTABLE_METRICS, Run
    from core.db.session import normalize_url
    from core.runs import lifecycle

    declared = {index.name: index for index in Run.__table__.indexes}

    engine = create_engine(normalize_url(db_url), poolclass=pool.NullPool)
    auto = engine.execution_options(isolation_level="AUTOCOMMIT")
    keys = (*SORTABLE_METRICS, "best_epoch")
    with auto.connect() as conn:
        run_id, worker = conn.execute(
            text("SELECT id, lease_owner FROM runs WHERE status = 'running' LIMIT 1")
        ).one()

    def hot(writer: Any) -> tuple[int, int]:
        """Updates and HOT updates of ``runs`` so far, once ``writer``'s counts are in."""
        writer.execute(text("SELECT pg_stat_force_next_flush()"))
        writer.execute(text("SELECT 1"))  # the flush happens at the end of a statement
        with auto.connect() as conn:
            conn.execute(text("SELECT pg_stat_clear_snapshot()"))
            row = conn.execute(text("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
                                    "WHERE relname = 'runs'")).one()  # fmt: skip
            return int(row[0]), int(row[1])

    def timed() -> dict[str, float]:
        rng = random.Random(1)
        with auto.connect() as conn:
            for epoch in range(50):  # warm-up
                lifecycle.record_epoch(conn, run_id, worker=worker, epoch=epoch,
                                       metrics={"loss": rng.random()}, lease_s=60)  # fmt: skip
            before = hot(conn)
            times = []
            for epoch in range(n):
                metrics = {"loss": rng.random(), "val_loss": rng.random(),
                           "accuracy": rng.random(), "val_accuracy": rng.random()}  # fmt: skip
                t0 = time.perf_counter()
                lifecycle.record_epoch(conn, run_id, worker=worker, epoch=epoch,
                                       metrics=metrics, lease_s=60)  # fmt: skip
                times.append((time.perf_counter() - t0) * 1000)
            after = hot(conn)
        updates = after[0] - before[0]
        hot_share = (after[1] - before[1]) / updates if updates else float("nan")
        return {"p50_ms": pct(times, 0.5), "p95_ms": pct(times, 0.95),
                "mean_ms": statistics.fmean(times), "hot_share": hot_share}  # fmt: skip

    def indexes(make: bool) -> None:
        with auto.connect() as conn:
            for key in keys[:4]:  # the metric columns' (best_epoch is written once, at the end)
                name = f"ix_runs_owner_{key}"  # as the models declare it
                conn.execute(CreateIndex(declared[name]) if make else text(f"DROP INDEX {name}"))
            conn.execute(text("VACUUM runs"))

    # Alternated, so that a drift of the shared machine shows as a difference between the
    # two rounds of the same kind.
    rounds: dict[str, list[dict[str, float]]] = {"with": [], "without": []}
    for _ in range(2):
        indexes(make=False)
        rounds["without"].append(timed())
        indexes(make=True)
        rounds["with"].append(timed())
    engine.dispose()
    return {"updates_per_round": n, "with_metric_indexes": rounds["with"],
            "without_metric_indexes": rounds["without"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--runs", type=int, default=N_RUNS)
    parser.add_argument("--pages", type=int, default=20, help="pages read per case and round")
    parser.add_argument("--repeat", type=int, default=5, help="rounds per case")
    parser.add_argument("--epoch-updates", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=RESULTS / "list_runs.json")
    args = parser.parse_args()

    os.environ["BACKPROP_TEST_REDIS_URL"] = args.redis
    results: dict[str, Any] = {"machine": machine_info(), "command": " ".join(sys.argv)}
    with bench_stack(args.pg, args.redis, "list-runs", concurrency=1) as (stack, db_url, _):
        from core.db.session import normalize_url

        engine = create_engine(normalize_url(db_url), poolclass=pool.NullPool)
        t0 = time.perf_counter()
        known = populate(engine, args.runs)
        with engine.connect() as conn:
            results["postgresql"] = conn.execute(text("SHOW server_version")).scalar()
        engine.dispose()
        results["data"] = {**known, "populate_s": round(time.perf_counter() - t0, 1)}
        cases = cases_for(known)
        results["cases"] = measure(stack.base_url, cases, args.pages, args.repeat)
        results["explain"] = explain(db_url, cases, [
            "status=succeeded, sort=val_loss asc", "tag=project:iris, sort=accuracy desc",
            "sweep_id (its trials), sort=val_loss", "rare tag reviewed:yes, sort=val_accuracy",
            "newest first (no filter)", "q=baseline, sort=loss asc",
            "top_level, status=failed|cancelled",
        ])  # fmt: skip
        results["epoch_update"] = epoch_update_cost(db_url, args.epoch_updates)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"machine: {results['machine']}; PostgreSQL {results['postgresql']}")
    print(f"data: {results['data']}")
    width = max(len(name) for name in results["cases"])
    print(f"{'case':<{width}}  pages  p50 ms  p95 ms  max ms  (target < 50 ms per page)")
    for name, c in results["cases"].items():
        print(f"{name:<{width}}  {c['pages_per_round']:>5}  {c['p50_ms']:>6.1f}  "
              f"{c['p95_ms']:>6.1f}  {c['max_ms']:>6.1f}")  # fmt: skip
    print(f"record_epoch UPDATE: {results['epoch_update']}")
    for name, plan in results["explain"].items():
        print(f"\n== EXPLAIN (ANALYZE, BUFFERS), page 2: {name}\n{plan}")


if __name__ == "__main__":
    main()
