"""End to end (issue #13, item 1): name, tags and notes by PATCH on runs, sweeps and datasets;
the run list's filters, sorts and stable paging, over HTTP on SQLite and PostgreSQL.

Most lists are checked against runs written straight into the stack's database with values
chosen here (statuses, metrics with ties, tags, times), the expected selection and order
computed in Python from those values; the last tests train real runs, so that the sort
keys are the metrics the workers wrote.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from core.db.models import Run, metric_columns
from tests.e2e.stack import Stack, wait_for
from tests.e2e.test_runs import SEED_NETWORK, SEED_TRAINING, SEED_X, SEED_Y, long_training

API = "/api/v1"
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
NAMES = ("Iris baseline", "IRIS wide", "digits", "50%_off", None)


@pytest.fixture
def engine(stack: Stack) -> Iterator[Engine]:
    """The stack's own database, for writing runs straight into it."""
    with stack.database() as engine:
        yield engine


class Fakes:
    """Runs written straight into the database (owner ``default``, as the API sees it with
    authentication off), all removed at the end of the test. Queued ones are held back (as
    a sweep's trials waiting for a slot) and running ones hold a lease of another worker, so
    that the stack's worker leaves them alone."""

    def __init__(self, engine: Engine, seed: int) -> None:
        self.engine = engine
        self.rng = random.Random(seed)
        self.rows: list[dict[str, Any]] = []
        self.dataset = str(uuid.uuid4())  # no such dataset: these runs only need its id
        self.sweeps = [str(uuid.uuid4()) for _ in range(2)]

    def add(self, n: int, *, start: datetime) -> list[dict[str, Any]]:
        rng, made = self.rng, []
        for _ in range(n):
            metrics = {
                "loss": rng.choice((0.1, 0.2, 0.2, 0.7, None)),
                "val_loss": rng.choice((0.15, 0.3, 0.3, None)),
                "accuracy": rng.choice((0.5, 0.9, 1.0, None)),
                "val_accuracy": rng.choice((0.6, 0.8, None)),
            }
            drawn = {"project": rng.choice(("iris", "digits", None)),
                     "stage": rng.choice(("a", "b:c", None))}  # fmt: skip
            status = rng.choice(STATUSES)
            made.append({
                "id": str(uuid.uuid4()), "owner": "default", "name": rng.choice(NAMES),
                "status": status, "dataset_id": self.dataset,
                "sweep_id": rng.choice((*self.sweeps, None)),
                "created_at": start + timedelta(seconds=rng.randrange(0, 30)),  # ties
                "best_epoch": rng.choice((None, 2, 5)),
                "metrics": {k: v for k, v in metrics.items() if v is not None},
                "tags": {k: v for k, v in drawn.items() if v is not None} or None,
                "held": status == "queued",
                "lease_owner": "elsewhere:1" if status == "running" else None,
                "lease_expires_at": datetime.now(UTC) + timedelta(hours=1)
                if status == "running" else None,
            })  # fmt: skip
        with Session(self.engine) as db:
            db.add_all(
                Run(
                    **row,
                    **metric_columns(row["metrics"]),
                    network=SEED_NETWORK,
                    training=SEED_TRAINING,
                    epochs=10,
                    epoch=5,
                )  # fmt: skip
                for row in made
            )
            db.commit()
        self.rows += made
        return made

    def remove(self) -> None:
        with Session(self.engine) as db:
            db.execute(delete(Run).where(Run.id.in_([r["id"] for r in self.rows])))
            db.commit()


@pytest.fixture
def fakes(engine: Engine) -> Iterator[Fakes]:
    made = Fakes(engine, seed=13)
    yield made
    made.remove()


def expected(rows: list[dict[str, Any]], key: str, descending: bool) -> list[str]:
    """The order the API promises, from the values written: (value, created_at, id) in the
    order asked, then the runs without a value by (created_at, id) in that order."""

    def value(row: dict[str, Any]) -> Any:
        return row["best_epoch"] if key == "best_epoch" else row["metrics"].get(key)

    having = [r for r in rows if key != "created_at" and value(r) is not None]
    lacking = [r for r in rows if key == "created_at" or value(r) is None]
    first = sorted(having, key=lambda r: (value(r), r["created_at"], r["id"]), reverse=descending)
    last = sorted(lacking, key=lambda r: (r["created_at"], r["id"]), reverse=descending)
    return [r["id"] for r in first + last]


def read_all(stack: Stack, params: dict[str, Any], limit: int = 7) -> list[str]:
    ids: list[str] = []
    cursor = None
    for _ in range(200):
        page = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        resp = stack.client.get(f"{API}/runs", params=page)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        ids += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids
    raise AssertionError("the pages never ended")


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_filters_and_sorts_page_through_exactly_the_expected_runs(
    stack: Stack, fakes: Fakes
) -> None:
    t0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    rows = fakes.add(70, start=t0)
    mine = {"dataset_id": fakes.dataset}  # leaves out the module's other runs
    sweep = fakes.sweeps[0]
    cases: list[tuple[dict[str, Any], Any]] = [
        ({}, lambda r: True),
        ({"status": "succeeded"}, lambda r: r["status"] == "succeeded"),
        ({"status": ["failed", "running"]}, lambda r: r["status"] in ("failed", "running")),
        ({"tag": "project:iris"}, lambda r: (r["tags"] or {}).get("project") == "iris"),
        ({"tag": ["project:digits", "stage:b:c"]},
         lambda r: (r["tags"] or {}).get("project") == "digits"
         and (r["tags"] or {}).get("stage") == "b:c"),
        ({"q": "iris"}, lambda r: "iris" in (r["name"] or "").lower()),
        ({"q": "0%_"}, lambda r: "0%_" in (r["name"] or "")),
        ({"sweep_id": sweep}, lambda r: r["sweep_id"] == sweep),
        ({"top_level": "true"}, lambda r: r["sweep_id"] is None),
        ({"created_after": _iso(t0 + timedelta(seconds=10)),
          "created_before": "2026-12-01T10:00:20+01:00"},  # = t0 + 20 s
         lambda r: t0 + timedelta(seconds=10) <= r["created_at"] < t0 + timedelta(seconds=20)),
        ({"status": ["succeeded", "cancelled"], "tag": "project:iris", "top_level": "true"},
         lambda r: r["status"] in ("succeeded", "cancelled") and r["sweep_id"] is None
         and (r["tags"] or {}).get("project") == "iris"),
    ]  # fmt: skip
    for params, keep in cases:
        chosen = [r for r in rows if keep(r)]
        assert chosen, params
        for key in ("created_at", "loss", "val_loss", "accuracy", "val_accuracy", "best_epoch"):
            for order in ("asc", "desc"):
                got = read_all(stack, {**mine, **params, "sort": key, "order": order})
                assert got == expected(chosen, key, order == "desc"), (params, key, order)
    # Without ?order, each key's own default: newest first, lowest loss, highest accuracy.
    assert read_all(stack, mine) == expected(rows, "created_at", True)
    assert read_all(stack, {**mine, "sort": "val_loss"}) == expected(rows, "val_loss", False)
    assert read_all(stack, {**mine, "sort": "accuracy"}) == expected(rows, "accuracy", True)


@pytest.mark.parametrize("key", ["created_at", "val_loss", "accuracy"])
def test_paging_while_runs_are_added_yields_each_run_once_in_order(
    stack: Stack, fakes: Fakes, key: str
) -> None:
    """Runs keep arriving (some with the same values or times as those listed) while a
    filtered, sorted list is read page by page: each run that was there at the start comes
    exactly once, none twice, and the pages are in the promised order."""
    start = datetime.now(UTC).replace(microsecond=0)
    first = fakes.add(45, start=start)
    params = {"dataset_id": fakes.dataset, "status": ["succeeded", "failed", "cancelled"],
              "sort": key, "limit": 5}  # fmt: skip
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        body = stack.client.get(f"{API}/runs", params={**params, **({"cursor": cursor} if cursor
                                                                      else {})}).json()  # fmt: skip
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
        fakes.add(4, start=start)  # same range of times and values as the first ones
    finished = {r["id"] for r in first if r["status"] in ("succeeded", "failed", "cancelled")}
    assert len(seen) == len(set(seen)) and finished <= set(seen)
    by_id = {r["id"]: r for r in fakes.rows}
    assert seen == expected([by_id[i] for i in seen], key, key != "val_loss")


def test_bad_list_parameters_are_422_or_400(stack: Stack) -> None:
    bad: list[dict[str, Any]] = [
        {"status": "finished"}, {"sort": "val_los"}, {"order": "up"}, {"tag": "project"},
        {"tag": "bad key:v"}, {"tag": "k:line\nbreak"}, {"q": ""}, {"q": "a\x00b"},
        {"created_after": "yesterday"}, {"created_before": "9999-12-31T23:00:00-14:00"},
        {"top_level": "maybe"}, {"dataset_id": "x" * 65},
    ]  # fmt: skip
    for params in bad:
        resp = stack.client.get(f"{API}/runs", params=params)
        assert resp.status_code == 422, (params, resp.text)
        assert resp.json()["detail"][0]["loc"][0] == "query", resp.text
    hint = stack.client.get(f"{API}/runs", params={"sort": "val_los"}).json()["detail"][0]
    assert hint["ctx"]["did_you_mean"] == "val_loss"
    tag = stack.client.get(f"{API}/runs", params={"tag": ["a:b", "nocolon"]}).json()["detail"]
    assert tag[0]["loc"] == ["query", "tag", 1] and "'nocolon' is not key:value" in tag[0]["msg"]
    # A cursor is made for one sort and order.
    for _ in range(2):
        stack.submit(stack.upload_json(SEED_X, SEED_Y)["id"], SEED_NETWORK, SEED_TRAINING)
    cursor = stack.client.get(f"{API}/runs", params={"limit": 1, "sort": "loss"}).json()
    assert cursor["next_cursor"]
    resp = stack.client.get(f"{API}/runs", params={"cursor": cursor["next_cursor"]})
    assert resp.status_code == 400
    assert (
        "made for sort=loss&order=asc, not for sort=created_at&order=desc" in resp.json()["detail"]
    )
    for params in ({"tag": "k:v"}, {"q": "x"}):
        assert stack.client.get(f"{API}/datasets", params={**params, "limit": 1}).status_code == 200
        assert stack.client.get(f"{API}/sweeps", params={**params, "limit": 1}).status_code == 200
    assert stack.client.get(f"{API}/datasets", params={"tag": "nope"}).status_code == 422
    assert stack.client.get(f"{API}/sweeps", params={"q": ""}).status_code == 422


def _patch(stack: Stack, path: str, body: Any, status: int = 200) -> Any:
    resp = stack.client.patch(f"{API}/{path}", json=body)
    assert resp.status_code == status, (body, resp.text)
    return resp.json()


def test_patch_edits_a_runs_name_tags_and_notes_and_nothing_else(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    run = stack.wait_done(stack.submit(ds["id"], SEED_NETWORK, SEED_TRAINING, name="first")["id"])
    assert run["tags"] == {} and run["notes"] is None
    path = f"runs/{run['id']}"

    edited = _patch(stack, path, {"tags": {"project": "seed", "stage": "a"}, "notes": "look"})
    assert edited["name"] == "first" and edited["notes"] == "look"
    assert edited["tags"] == {"project": "seed", "stage": "a"}
    unchanged = {k: v for k, v in run.items() if k not in ("tags", "notes")}
    assert {k: v for k, v in edited.items() if k not in ("tags", "notes")} == unchanged
    # Merge patch: set one, remove one, keep the rest; a key not there is no error.
    edited = _patch(stack, path, {"tags": {"stage": None, "lr": "0.5", "gone": None}})
    assert edited["tags"] == {"project": "seed", "lr": "0.5"} and edited["notes"] == "look"
    # The request's content type may be JSON merge patch's own.
    resp = stack.client.patch(f"{API}/{path}", content=b'{"name": "renamed"}',
                              headers={"Content-Type": "application/merge-patch+json"})  # fmt: skip
    assert resp.status_code == 200 and resp.json()["name"] == "renamed", resp.text
    # null removes; {} changes nothing; a 6-character prefix stands for the id.
    edited = _patch(stack, f"runs/{run['id'][:6]}", {"name": None, "notes": None})
    assert edited["name"] is None and edited["notes"] is None
    assert edited["tags"] == {"project": "seed", "lr": "0.5"}
    assert _patch(stack, path, {}) == edited
    assert _patch(stack, path, {"tags": None})["tags"] == {}
    got = stack.client.get(f"{API}/{path}").json()
    assert got["tags"] == {} and got["name"] is None and got["status"] == "succeeded"
    assert got["transitions"] == run["transitions"]  # no status change, no timeline row

    # Bad edits: 422 naming the field; nothing changes.
    for body, where in [
        ({"tags": {"bad key": "v"}}, ["body", "tags", "bad key", "[key]"]),
        ({"tags": {"k": 1}}, ["body", "tags", "k"]),
        ({"tags": {"k": "x" * 201}}, ["body", "tags", "k"]),
        ({"tags": {"k": "tab\there"}}, ["body", "tags", "k"]),
        ({"tags": {"x" * 65: "v"}}, ["body", "tags", "x" * 65, "[key]"]),
        ({"tags": ["k:v"]}, ["body", "tags"]),
        ({"name": ""}, ["body", "name"]),
        ({"name": "a\x00b"}, ["body", "name"]),
        ({"notes": "n" * 10_001}, ["body", "notes"]),
        ({"status": "succeeded"}, ["body", "status"]),
    ]:
        detail = _patch(stack, path, body, 422)["detail"]
        assert detail[0]["loc"] == where, (body, detail)
    _patch(stack, path, {"tags": {f"k{i}": str(i) for i in range(30)}})
    too_many = _patch(stack, path, {"tags": {f"j{i}": "v" for i in range(21)}}, 422)
    assert too_many["detail"] == "tags: a resource has at most 50 tags; this edit would leave 51"
    assert len(stack.client.get(f"{API}/{path}").json()["tags"]) == 30
    assert _patch(stack, f"runs/{uuid.uuid4()}", {"notes": "x"}, 404)["detail"].endswith(
        "not found"
    )
    not_json = stack.client.patch(f"{API}/{path}", content=b"{not json",
                                  headers={"Content-Type": "application/json"})  # fmt: skip
    assert not_json.status_code == 400, not_json.text


def test_patch_while_a_run_trains_leaves_it_training(stack: Stack) -> None:
    ds = stack.upload_json(SEED_X, SEED_Y)
    run = stack.submit(ds["id"], SEED_NETWORK, long_training())
    stack.wait_status(run["id"], {"running"})
    before = stack.client.get(f"{API}/runs/{run['id']}").json()["progress"]["epoch"]
    edited = _patch(stack, f"runs/{run['id']}", {"name": "long one", "tags": {"kind": "long"}})
    assert edited["status"] == "running"
    # It goes on: epochs keep coming, the edit stays, and it still stops when cancelled.
    wait_for(lambda: stack.client.get(f"{API}/runs/{run['id']}").json()["progress"]["epoch"]
             > before + 10, 30, "more epochs")  # fmt: skip
    listed = stack.client.get(f"{API}/runs", params={"tag": "kind:long", "status": "running"})
    assert [r["id"] for r in listed.json()["items"]] == [run["id"]]
    stack.client.post(f"{API}/runs/{run['id']}/cancel")
    done = stack.wait_done(run["id"])
    assert done["status"] == "cancelled" and done["name"] == "long one"
    assert done["tags"] == {"kind": "long"}


def test_datasets_and_sweeps_are_edited_and_filtered_alike(stack: Stack) -> None:
    marker = uuid.uuid4().hex[:8]
    rng = np.random.default_rng(5)
    X = rng.uniform(-1, 1, size=(24, 2))
    ds = stack.upload_json(X.tolist(), (X @ np.array([[1.0], [-2.0]])).tolist(),
                           name=f"lines {marker}")  # fmt: skip
    path = f"datasets/{ds['id']}"
    edited = _patch(stack, path, {"name": f"Linear {marker}", "tags": {"src": marker},
                                  "notes": "y = x0 - 2 x1"})  # fmt: skip
    assert (edited["name"], edited["tags"], edited["notes"]) == (
        f"Linear {marker}", {"src": marker}, "y = x0 - 2 x1")  # fmt: skip
    assert edited["sha256"] == ds["sha256"] and edited["n_samples"] == 24
    assert _patch(stack, path, {"name": None}, 422)["detail"].startswith("name: a dataset's name")
    assert stack.client.get(f"{API}/{path}").json()["tags"] == {"src": marker}
    for params in ({"tag": f"src:{marker}"}, {"q": f"LINEAR {marker.upper()}"}):
        listed = stack.client.get(f"{API}/datasets", params=params).json()["items"]
        assert [d["id"] for d in listed] == [ds["id"]], params
    assert stack.client.get(f"{API}/datasets", params={"tag": f"src:{marker}x"}).json() == {
        "items": [], "next_cursor": None}  # fmt: skip

    linear = {"input_dim": 2, "layers": [{"units": 1, "activation": "identity"}]}
    sweep = stack.client.post(f"{API}/sweeps", json={
        "name": f"sweep {marker}",
        "base": {"dataset_id": ds["id"], "network": linear,
                 "training": {"loss": "mse", "epochs": 2, "batch_size": 8,
                              "validation_split": 0.25}},
        "search": {"type": "grid", "parameters": {"training.optimizer.learning_rate": [0.01, 0.1]}},
        "metric": "val_loss", "max_concurrent": 2,
    })  # fmt: skip
    assert sweep.status_code == 202, sweep.text
    sweep_id = sweep.json()["id"]
    edited = _patch(stack, f"sweeps/{sweep_id}", {"tags": {"src": marker}, "notes": "lr"})
    assert (edited["tags"], edited["notes"], edited["name"]) == ({"src": marker}, "lr",
                                                                  f"sweep {marker}")  # fmt: skip
    for params in ({"tag": f"src:{marker}"}, {"q": marker}):
        listed = stack.client.get(f"{API}/sweeps", params=params).json()["items"]
        assert [s["id"] for s in listed] == [sweep_id], params
    # Its trials: all of them with sweep_id, none with top_level; the sweep's tags stay its own.
    trials = read_all(stack, {"sweep_id": sweep_id})
    assert len(trials) == 2
    assert not set(trials) & set(read_all(stack, {"dataset_id": ds["id"], "top_level": "true"}))
    assert all(stack.client.get(f"{API}/runs/{t}").json()["tags"] == {} for t in trials)
    wait_for(lambda: all(stack.client.get(f"{API}/runs/{t}").json()["status"] == "succeeded"
                         for t in trials), 60, "the trials")  # fmt: skip


def test_sorting_by_metrics_follows_what_training_wrote(stack: Stack) -> None:
    """Real runs, some early-stopped with their best epoch's weights kept: the list sorted by
    each metric is the order of the metrics in their records (the model's, best epoch's)."""
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(40, 4)), rng.normal(size=(40, 1))  # noise: val_loss soon rises
    ds = stack.upload_json(X.tolist(), y.tolist(), name="noise", dedupe=False)
    network = {"input_dim": 4, "layers": [{"units": 16, "activation": "relu"},
                                          {"units": 1, "activation": "identity"}]}  # fmt: skip
    runs = []
    for k, lr in enumerate((0.05, 0.01, 0.002)):
        training = {"optimizer": {"name": "adam", "learning_rate": lr}, "epochs": 60,
                    "batch_size": 8, "validation_split": 0.5, "seed": k,
                    "early_stopping": {"patience": 3, "restore_best": True}}  # fmt: skip
        runs.append(stack.submit(ds["id"], network, training)["id"])
    records = [stack.wait_done(r, timeout=90) for r in runs]
    assert all(r["status"] == "succeeded" for r in records)
    stopped = [r for r in records if r["best_epoch"] is not None]
    assert stopped, "no run kept an earlier epoch's weights"
    for r in stopped:  # the record's metrics are the best epoch's
        items = stack.client.get(f"{API}/runs/{r['id']}/metrics").json()["items"]
        best = items[r["best_epoch"] - 1]
        assert {k: r["metrics"][k] for k in ("loss", "val_loss")} == {
            k: best[k] for k in ("loss", "val_loss")
        }
    for key, descending in (("val_loss", False), ("loss", True), ("best_epoch", False)):
        got = read_all(stack, {"dataset_id": ds["id"], "sort": key,
                               "order": "desc" if descending else "asc"}, limit=2)  # fmt: skip

        def value(r: dict[str, Any], key: str = key) -> Any:
            return r["best_epoch"] if key == "best_epoch" else r["metrics"][key]

        def created(r: dict[str, Any]) -> datetime:
            return datetime.fromisoformat(r["created_at"].replace("Z", "+00:00"))

        having = sorted(
            (r for r in records if value(r) is not None),
            key=lambda r: (value(r), created(r), r["id"]),
            reverse=descending,
        )
        lacking = sorted((r for r in records if value(r) is None),
                         key=lambda r: (created(r), r["id"]), reverse=descending)  # fmt: skip
        assert got == [r["id"] for r in having + lacking], key
