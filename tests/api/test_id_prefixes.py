"""A unique id prefix (6 characters or more) works wherever a path takes an id; an
ambiguous one is a 409 naming the candidates; another owner's ids never match. On SQLite and
PostgreSQL, through the app in-process with authentication on and real Redis."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest

from api.main import create_app
from core.db.models import Dataset, MetricRow, Run, Sweep
from core.db.session import get_sessionmaker
from core.keys import create_key
from core.settings import Settings, get_settings

NETWORK = {"input_dim": 2, "layers": [{"units": 1, "activation": "identity"}]}


def _uuid(head: str, tail: int) -> str:
    """A UUID-shaped id that begins with ``head`` (8 hex digits)."""
    return f"{head}-0000-4000-8000-{tail:012d}"


ALICE_RUNS = {
    "first": _uuid("abcdef01", 1),
    "second": _uuid("abcdef01", 2),  # "abcdef01" begins both
    "done": _uuid("abcdef99", 3),  # succeeded, two epochs
    "queued": _uuid("a1b2c3d4", 4),
}
BOB_RUN = _uuid("abcdef55", 5)
ALICE_DATASETS = [_uuid("d0d0d0d0", 6), _uuid("d0d0d0d1", 7)]
BOB_DATASET = _uuid("d0d0d0d2", 8)
ALICE_SWEEPS = [_uuid("5eeb5eeb", 9), _uuid("5eeb5eeb", 10)]
MANY_RUNS = [_uuid("ffffff00", 100 + i) for i in range(12)]


def _dataset(id_: str, owner: str) -> Dataset:
    return Dataset(id=id_, owner=owner, name="d", n_samples=1, n_features=2, n_targets=1,
                   task="regression", sha256="0" * 64, size_bytes=1, data=b"")  # fmt: skip


def _run(id_: str, owner: str, status: str = "failed", epoch: int = 0) -> Run:
    return Run(id=id_, owner=owner, dataset_id=ALICE_DATASETS[0], network=NETWORK,
               training={"epochs": 2}, status=status, epoch=epoch, epochs=2,
               metrics={"loss": None}, enqueued_at=None)  # fmt: skip


def _sweep(id_: str, owner: str) -> Sweep:
    return Sweep(id=id_, owner=owner, status="cancelled", metric="loss", spec={}, n_trials=1,
                 n_runs=0, max_concurrent=1)  # fmt: skip


Clients = dict[str, httpx.AsyncClient]


@pytest.fixture
def serve(
    service_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[Callable[[Clients], Awaitable[None]]], None]]:
    """Runs a scenario with Alice's and Bob's clients of the app (its lifespan started),
    over a database holding the rows above."""
    monkeypatch.setenv("BACKPROP_AUTH", "on")
    get_settings.cache_clear()
    with get_sessionmaker()() as db:
        db.add_all([_dataset(i, "alice") for i in ALICE_DATASETS] + [_dataset(BOB_DATASET, "bob")])
        db.add_all([_run(i, "alice") for i in (ALICE_RUNS["first"], ALICE_RUNS["second"])])
        db.add_all(
            [
                _run(ALICE_RUNS["done"], "alice", "succeeded", epoch=2),
                _run(ALICE_RUNS["queued"], "alice", "queued"),
                _run(BOB_RUN, "bob"),
            ]
        )
        db.add_all([_run(i, "alice") for i in MANY_RUNS])
        db.flush()
        db.add_all([MetricRow(run_id=ALICE_RUNS["done"], epoch=e, loss=1.0 / e, elapsed_s=0.1)
                    for e in (1, 2)])  # fmt: skip
        db.add_all([_sweep(i, "alice") for i in ALICE_SWEEPS])
        db.commit()
    keys = {owner: create_key(owner).key for owner in ("alice", "bob")}
    app = create_app()

    async def run(scenario: Callable[[Clients], Awaitable[None]]) -> None:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            clients = {
                owner: httpx.AsyncClient(transport=transport, base_url="http://api",
                                         headers={"Authorization": f"Bearer {key}"})
                for owner, key in keys.items()
            }  # fmt: skip
            try:
                await scenario(clients)
            finally:
                for client in clients.values():
                    await client.aclose()

    yield lambda scenario: asyncio.run(run(scenario))


def test_a_unique_prefix_stands_for_the_id(serve: Any) -> None:
    serve(_a_unique_prefix_stands_for_the_id)


async def _a_unique_prefix_stands_for_the_id(clients: Clients) -> None:
    alice, bob = clients["alice"], clients["bob"]
    done = ALICE_RUNS["done"]
    for prefix in ("abcdef9", "ABCDEF99", done[:13], done):
        resp = await alice.get(f"/api/v1/runs/{prefix}")
        assert resp.status_code == 200 and resp.json()["id"] == done, (prefix, resp.text)
    # The route's own queries use the whole id: the metrics, and the events replayed.
    metrics = (await alice.get("/api/v1/runs/abcdef99/metrics")).json()
    assert metrics["run_id"] == done and [m["epoch"] for m in metrics["items"]] == [1, 2]
    text = (await alice.get("/api/v1/runs/abcdef99/events")).text
    assert re.findall(r"event: (\w+)", text) == ["metric", "metric", "status"], text
    assert '"status": "succeeded"' in text or '"status":"succeeded"' in text
    # A write through a prefix acts on the whole id.
    cancelled = await alice.post("/api/v1/runs/a1b2c3/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["id"] == ALICE_RUNS["queued"]
    assert (await alice.get(f"/api/v1/runs/{ALICE_RUNS['queued']}")).json()["status"] == "cancelled"
    assert (await alice.get("/api/v1/datasets/d0d0d0d0")).json()["id"] == ALICE_DATASETS[0]
    assert (await alice.delete("/api/v1/datasets/d0d0d0d1")).status_code == 204
    assert (await alice.get(f"/api/v1/datasets/{ALICE_DATASETS[1]}")).status_code == 404
    # Now "d0d0d0d" begins only one of Alice's datasets (Bob's d0d0d0d2 does not count).
    assert (await alice.get("/api/v1/datasets/d0d0d0d")).json()["id"] == ALICE_DATASETS[0]
    assert (await bob.get("/api/v1/datasets/d0d0d0d")).json()["id"] == BOB_DATASET
    assert (await bob.get("/api/v1/runs/abcdef")).json()["id"] == BOB_RUN


def test_an_ambiguous_prefix_is_a_409_naming_the_candidates(serve: Any) -> None:
    serve(_an_ambiguous_prefix_is_a_409_naming_the_candidates)


async def _an_ambiguous_prefix_is_a_409_naming_the_candidates(clients: Clients) -> None:
    alice = clients["alice"]
    resp = await alice.get("/api/v1/runs/abcdef")
    assert resp.status_code == 409
    detail = resp.json()["detail"]
    assert detail == (
        f"run id prefix abcdef is ambiguous: it begins {ALICE_RUNS['first']}, "
        f"{ALICE_RUNS['second']}, {ALICE_RUNS['done']}; give more characters of the id"
    )
    assert BOB_RUN not in detail  # another owner's id is never named
    resp = await alice.get("/api/v1/runs/abcdef01")
    assert resp.status_code == 409 and ALICE_RUNS["done"] not in resp.json()["detail"]
    # Many candidates: the first ten, in order, then an ellipsis.
    detail = (await alice.get("/api/v1/runs/ffffff")).json()["detail"]
    assert re.findall(r"ffffff00-[0-9a-f-]+", detail) == MANY_RUNS[:10]
    assert detail.endswith(", …; give more characters of the id")
    assert (await alice.get("/api/v1/sweeps/5eeb5e")).status_code == 409
    assert (await alice.get("/api/v1/datasets/d0d0d0d")).status_code == 409


def test_what_is_not_a_unique_prefix_of_yours_is_not_found(serve: Any) -> None:
    serve(_what_is_not_a_unique_prefix_of_yours_is_not_found)


async def _what_is_not_a_unique_prefix_of_yours_is_not_found(clients: Clients) -> None:
    alice = clients["alice"]
    for value in (
        "a1b2c",  # 5 characters: too short, though unique
        "abcdef5",  # Bob's
        "abcdef0123",  # begins nothing
        "abcdef%",  # not hex: no LIKE wildcard
        "abcdef_1",
        "abcdef01 ",
    ):
        resp = await alice.get(f"/api/v1/runs/{value}")
        assert resp.status_code == 404, (value, resp.text)
        assert resp.json()["detail"] == f"run {value} not found"
    assert (await alice.get(f"/api/v1/runs/{BOB_RUN}")).status_code == 404


def test_a_prefix_without_a_valid_key_is_a_401(serve: Any) -> None:
    serve(_a_prefix_without_a_valid_key_is_a_401)


async def _a_prefix_without_a_valid_key_is_a_401(clients: Clients) -> None:
    # The prefix is resolved only for an authenticated caller: no key, or a wrong one, is
    # refused before any id is looked up (and no id of anyone's is named).
    alice = clients["alice"]
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer bp_not_a_key"}):
        resp = await alice.get("/api/v1/runs/abcdef", headers=headers)
        assert resp.status_code == 401, (headers, resp.text)
        assert "abcdef" not in resp.text


def test_every_route_with_an_id_in_its_path_resolves_prefixes(serve: Any) -> None:
    """Each operation answers an ambiguous prefix with 409 before anything else (its body
    included), so no route sees a prefix where it expects an id."""
    serve(_every_route_with_an_id_in_its_path_resolves_prefixes)


async def _every_route_with_an_id_in_its_path_resolves_prefixes(clients: Clients) -> None:
    alice = clients["alice"]
    ambiguous = {"run_id": "abcdef01", "dataset_id": "d0d0d0d", "sweep_id": "5eeb5eeb"}
    operations: list[tuple[str, str]] = []
    for path, item in (await alice.get("/openapi.json")).json()["paths"].items():
        names = set(re.findall(r"{(\w+)}", path)) - {"name"}  # a model's name is no id
        assert names <= set(ambiguous), f"{path}: an id parameter with no resource: {names}"
        if names:
            operations += [(method, path) for method in item]
            for method in item:
                assert "409" in item[method]["responses"], (method, path)
    assert len(operations) >= 14
    for method, path in operations:
        url = path.format(**ambiguous)
        resp = await alice.request(method.upper(), url, json={})
        assert resp.status_code == 409, (method, url, resp.text)
        assert "is ambiguous" in resp.json()["detail"]
