"""End to end: admission under concurrency, and fair share between owners.

- The active-run limit holds exactly when hundreds of submits arrive at once.
- "A run was accepted" and "its dataset was deleted" never both happen.
- One owner's backlog does not delay another owner's new run by more than one run.
- Identical uploads of one owner at the same moment make one dataset; another owner's
  identical upload is its own.

Each on SQLite and PostgreSQL: the locks that make them exact differ between the two.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from core.db.models import Run
from tests.e2e.conftest import stack_on
from tests.e2e.stack import Stack, wait_for
from tests.e2e.test_runs import SEED_NETWORK, SEED_TRAINING, SEED_X, SEED_Y
from tests.e2e.test_security import client_for, make_key

MAX_ACTIVE = 100
SUBMITS = 300


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    # No worker at first: submitted runs stay queued, so the limit is reached and held.
    yield from stack_on(
        request, tmp_path_factory, "admission", workers=0,
        BACKPROP_MAX_ACTIVE_RUNS=str(MAX_ACTIVE), BACKPROP_AUTH="on", BACKPROP_AUTH_CACHE_S="60",
    )  # fmt: skip


def _all_at_once(n: int, call) -> list[httpx.Response]:  # type: ignore[no-untyped-def]
    """``call(i)`` from ``n`` threads released together."""
    start = threading.Barrier(n)

    def fire(i: int) -> httpx.Response:
        start.wait()
        return call(i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(fire, range(n)))


def _body(dataset_id: str, epochs: int = 5) -> dict:
    training = {**SEED_TRAINING, "epochs": epochs}
    return {"dataset_id": dataset_id, "network": SEED_NETWORK, "training": training}


def _cancel_active(client: httpx.Client) -> None:
    for status in ("queued", "running"):
        items = client.get("/api/v1/runs", params={"status": status, "limit": 500}).json()["items"]
        for run in items:
            client.post(f"/api/v1/runs/{run['id']}/cancel")


def test_the_active_run_limit_holds_exactly_under_concurrent_submits(stack: Stack) -> None:
    made = make_key(stack, "carol")
    with client_for(stack, made["key"]) as client:
        ds = client.post("/api/v1/datasets", json={"X": SEED_X, "y": SEED_Y}).json()
        clients = [client_for(stack, made["key"]) for _ in range(30)]
        try:
            answers = _all_at_once(
                SUBMITS, lambda i: clients[i % 30].post("/api/v1/runs", json=_body(ds["id"]))
            )
        finally:
            for c in clients:
                c.close()
        codes = sorted(r.status_code for r in answers)
        assert codes.count(202) == MAX_ACTIVE, codes
        assert codes.count(429) == SUBMITS - MAX_ACTIVE, codes
        assert all("BACKPROP_MAX_ACTIVE_RUNS" in r.text for r in answers if r.status_code == 429)
        queued = client.get("/api/v1/runs", params={"status": "queued", "limit": 500}).json()
        assert len(queued["items"]) == MAX_ACTIVE
        _cancel_active(client)


def test_a_run_is_never_accepted_for_a_dataset_deleted_at_the_same_time(stack: Stack) -> None:
    made = make_key(stack, "dave")
    outcomes = {"run": 0, "delete": 0}
    with client_for(stack, made["key"]) as runs, client_for(stack, made["key"]) as deletes:
        for _ in range(60):
            # A new dataset each round (not the last round's, which may still be in use).
            ds = runs.post(
                "/api/v1/datasets", params={"dedupe": "false"}, json={"X": SEED_X, "y": SEED_Y}
            ).json()
            submit, delete = _all_at_once(2, lambda i, ds=ds: (
                runs.post("/api/v1/runs", json=_body(ds["id"])) if i == 0
                else deletes.delete(f"/api/v1/datasets/{ds['id']}")
            ))  # fmt: skip
            assert submit.status_code in (202, 422), submit.text
            assert delete.status_code in (204, 409), delete.text
            # Exactly one of the two happened, and what is stored agrees with it.
            assert (submit.status_code == 202) != (delete.status_code == 204)
            still_there = runs.get(f"/api/v1/datasets/{ds['id']}").status_code == 200
            if submit.status_code == 202:
                outcomes["run"] += 1
                assert still_there
                runs.post(f"/api/v1/runs/{submit.json()['id']}/cancel")
            else:
                outcomes["delete"] += 1
                assert "no dataset" in submit.text and not still_there
    assert sum(outcomes.values()) == 60


def test_identical_uploads_at_once_make_one_dataset_per_owner(stack: Stack) -> None:
    keys = {owner: make_key(stack, owner)["key"] for owner in ("erin", "frank")}
    clients = {owner: [client_for(stack, key) for _ in range(8)] for owner, key in keys.items()}
    rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
    X = rng.normal(size=(200, 3)).tolist()
    body = {"X": X, "y": [sum(row) for row in X]}
    owners = ["erin"] * 16 + ["frank"] * 8
    try:
        answers = _all_at_once(len(owners), lambda i: clients[owners[i]][i % 8].post(
            "/api/v1/datasets", json={**body, "name": f"upload {i}"}
        ))  # fmt: skip
        for owner in ("erin", "frank"):
            mine = [r for r, o in zip(answers, owners, strict=True) if o == owner]
            assert sorted(r.status_code for r in mine) == [200] * (len(mine) - 1) + [201]
            ids = {r.json()["id"] for r in mine}
            assert len(ids) == 1, ids
            # and it is the one stored: the owner's list holds that content once
            listed = clients[owner][0].get("/api/v1/datasets", params={"limit": 500}).json()
            sha = mine[0].json()["sha256"]
            assert [d["id"] for d in listed["items"] if d["sha256"] == sha] == list(ids)
        erin = {r.json()["id"] for r, o in zip(answers, owners, strict=True) if o == "erin"}
        frank = {r.json()["id"] for r, o in zip(answers, owners, strict=True) if o == "frank"}
        assert erin.isdisjoint(frank)
    finally:
        for client in (c for group in clients.values() for c in group):
            client.close()


def _unsent(stack: Stack, owner: str) -> set[str]:
    """The owner's runs that wait in the database, not yet sent to a worker (queued, no
    ``enqueued_at``), read in one statement. A queued run that was sent already is on its
    way to the free slot it was sent to, whoever submits next."""
    with stack.database() as engine, engine.connect() as conn:
        return set(conn.scalars(select(Run.id).where(
            Run.owner == owner, Run.status == "queued", Run.enqueued_at.is_(None)
        )))  # fmt: skip


def test_another_owners_new_run_starts_ahead_of_a_backlog(stack: Stack) -> None:
    worker = stack.start_worker(concurrency=1)
    try:
        with client_for(stack, make_key(stack, "alice")["key"]) as alice, \
                client_for(stack, make_key(stack, "bob")["key"]) as bob:  # fmt: skip
            ds_a = alice.post("/api/v1/datasets", json={"X": SEED_X, "y": SEED_Y}).json()
            ds_b = bob.post("/api/v1/datasets", json={"X": SEED_X, "y": SEED_Y}).json()
            backlog = [
                alice.post("/api/v1/runs", json=_body(ds_a["id"], epochs=150)).json()
                for _ in range(12)
            ]
            wait_for(
                lambda: alice.get(f"/api/v1/runs/{backlog[1]['id']}").json()["status"]
                != "queued",
                60, "alice's backlog to start",
            )  # fmt: skip
            late = bob.post("/api/v1/runs", json=_body(ds_b["id"], epochs=150)).json()
            waiting_then = _unsent(stack, "alice")
            assert len(waiting_then) >= 5, "the backlog was gone before bob's run came"
            done = wait_for(
                lambda: (r := bob.get(f"/api/v1/runs/{late['id']}").json())["status"]
                == "succeeded" and r,
                60, "bob's run",
            )  # fmt: skip
            # None of alice's runs that were waiting unsent started before bob's: only the
            # one training and the one sent to the free slot when bob submitted went first.
            started_before = [
                run_id for run_id in waiting_then
                if (a := alice.get(f"/api/v1/runs/{run_id}").json())["started_at"] is not None
                and a["started_at"] < done["started_at"]
            ]  # fmt: skip
            assert started_before == [], (started_before, done)
            _cancel_active(alice)
    finally:
        worker.stop()
        stack.workers.remove(worker)
