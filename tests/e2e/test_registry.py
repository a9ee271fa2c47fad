"""The model registry end to end (``/api/v1/models``), on SQLite and PostgreSQL, with
authentication on: two owners, Alice (the stack's own client) and Bob.

The references are independent of the registry: every answer through a name is compared
with the same network trained here in-process from the same request (bit-identical in
float64, as the warm-start tests show) and with ``POST /runs/{id}/predict`` of the run
the answer names; a rollback is checked by the run id and the outputs it answers with.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from cli.processes import free_port
from core.engine import Network
from tests.e2e.conftest import stack_on
from tests.e2e.stack import PYTHON, Stack, wait_for

RNG = np.random.default_rng(11)
X = RNG.normal(size=(40, 3)) * np.array([1.0, 20.0, 0.5]) + np.array([0.0, 50.0, 2.0])
Y = X @ np.array([[0.4], [0.02], [-1.5]]) + RNG.normal(0, 0.05, size=(40, 1))
NETWORK = {"input_dim": 3, "layers": [{"units": 6, "activation": "tanh"},
                                      {"units": 1, "activation": "identity"}]}  # fmt: skip
TRAINING = {"loss": "mse", "optimizer": {"name": "adam", "learning_rate": 0.02}, "epochs": 8,
            "batch_size": 8, "standardize": True, "dtype": "float64"}  # fmt: skip
QUERY = RNG.normal(size=(5, 3)) * np.array([1.0, 20.0, 0.5]) + np.array([0.0, 50.0, 2.0])

CLASS_X = RNG.normal(size=(40, 2))
CLASS_Y = ["hi" if a + b > 0 else "lo" for a, b in CLASS_X]
CLASS_NETWORK = {"input_dim": 2, "layers": [{"units": 4, "activation": "tanh"},
                                            {"units": 2, "activation": "softmax"}]}  # fmt: skip
CLASS_TRAINING = {**TRAINING, "loss": "categorical_crossentropy", "seed": 5}

NAME_RULE = (
    "a model name is 1 to 100 characters: letters, digits, '.', '_' and '-', beginning with "
    "a letter or a digit"
)


def make_key(stack: Stack, owner: str) -> str:
    out = subprocess.run(
        [PYTHON, "-m", "cli", "keys", "create", "--owner", owner, "--json"],
        env=stack.env, cwd=stack.workdir, capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    return str(json.loads(out.stdout)["key"])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Authentication on; the stack's client (and so its helpers) act as Alice."""
    stacks = stack_on(request, tmp_path_factory, "registry", BACKPROP_AUTH="on")
    stack = next(stacks)
    try:
        stack.client.headers["Authorization"] = f"Bearer {make_key(stack, 'alice')}"
        yield stack
    finally:
        next(stacks, None)  # stops it


@pytest.fixture(scope="module")
def bob(stack: Stack) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {make_key(stack, 'bob')}"}
    with httpx.Client(base_url=stack.base_url, timeout=30, headers=headers) as client:
        yield client


@pytest.fixture(scope="module")
def runs(stack: Stack) -> dict[str, Any]:
    """Alice's succeeded runs: three regressions (seeds 1-3) and a classifier."""
    ds = stack.upload_json(X.tolist(), Y.tolist(), name="registry")
    submitted = {
        seed: stack.submit(ds["id"], NETWORK, {**TRAINING, "seed": seed})["id"]
        for seed in (1, 2, 3)
    }
    classes = stack.upload_json(CLASS_X.tolist(), CLASS_Y, name="registry-classes")
    classifier = stack.submit(classes["id"], CLASS_NETWORK, CLASS_TRAINING)["id"]
    done = {seed: stack.wait_done(run_id) for seed, run_id in submitted.items()}
    done["classifier"] = stack.wait_done(classifier)
    assert all(run["status"] == "succeeded" for run in done.values()), done
    return {"dataset_id": ds["id"], **done}


def reference(seed: int) -> np.ndarray:
    """The outputs on QUERY of the same network trained here from the same request."""
    net = Network.from_spec(NETWORK, seed=seed)
    net.fit(X, Y, {**TRAINING, "seed": seed})
    return net.predict(QUERY)


def predict(client: httpx.Client, path: str, inputs: Any = None, **params: Any) -> dict:
    body = {"inputs": (QUERY if inputs is None else inputs).tolist()}
    resp = client.post(f"/api/v1/{path}/predict", json=body, params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def put(client: httpx.Client, name: str, run_id: str, status: int = 200) -> dict:
    resp = client.put(f"/api/v1/models/{name}", json={"run_id": run_id})
    assert resp.status_code == status, resp.text
    return resp.json()


def check_answer(answer: dict, name: str, version: int, run_id: str, seed: int) -> None:
    """Through the name: the version and run named, their outputs (also by the run's own
    predict), no labels for a regression."""
    assert (answer["model"], answer["version"], answer["run_id"]) == (name, version, run_id)
    np.testing.assert_array_equal(np.array(answer["outputs"]), reference(seed))
    assert "labels" not in answer


def test_versions_predict_and_rollback(stack: Stack, runs: dict[str, Any]) -> None:
    client, name = stack.client, "house-prices"
    a, b, c = runs[1], runs[2], runs[3]

    resp = client.put(f"/api/v1/models/{name}", json={"run_id": a["id"]})
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"] == f"/api/v1/models/{name}"
    first = resp.json()
    assert (first["name"], first["current_version"], first["latest_version"]) == (name, 1, 1)
    assert first["run_id"] == a["id"]
    [v1] = first["versions"]
    assert (v1["version"], v1["run_id"], v1["current"]) == (1, a["id"], True)
    assert v1["metrics"] == a["metrics"] and v1["trained_at"] == a["finished_at"]
    assert client.get(f"/api/v1/models/{name}").json() == first
    answer = predict(client, f"models/{name}")
    check_answer(answer, name, 1, a["id"], 1)
    assert answer["outputs"] == predict(client, f"runs/{a['id']}")["outputs"]

    # A new run is the next version, and current.
    second = put(client, name, b["id"])
    assert (second["current_version"], second["latest_version"], second["run_id"]) == (
        2,
        2,
        b["id"],
    )
    assert [(v["version"], v["run_id"], v["current"]) for v in second["versions"]] == [
        (1, a["id"], False), (2, b["id"], True)]  # fmt: skip
    assert second["updated_at"] >= first["updated_at"]
    check_answer(predict(client, f"models/{name}"), name, 2, b["id"], 2)
    check_answer(predict(client, f"models/{name}", version=1), name, 1, a["id"], 1)
    assert predict(client, f"models/{name}")["outputs"] != answer["outputs"]

    # The run of version 1 again: a rollback re-points current and adds no number.
    rolled = put(client, name, a["id"])
    assert (rolled["current_version"], rolled["latest_version"], rolled["run_id"]) == (
        1,
        2,
        a["id"],
    )
    assert [(v["version"], v["run_id"], v["current"]) for v in rolled["versions"]] == [
        (1, a["id"], True), (2, b["id"], False)]  # fmt: skip
    check_answer(predict(client, f"models/{name}"), name, 1, a["id"], 1)
    check_answer(predict(client, f"models/{name}", version=2), name, 2, b["id"], 2)
    # The same PUT again changes nothing (PUT is idempotent).
    assert put(client, name, a["id"]) == rolled

    # Rolling forward after a rollback: the next number after the highest.
    third = put(client, name, c["id"])
    assert (third["current_version"], third["latest_version"], third["run_id"]) == (3, 3, c["id"])
    check_answer(predict(client, f"models/{name}"), name, 3, c["id"], 3)
    missing = client.post(f"/api/v1/models/{name}/predict", params={"version": 4},
                          json={"inputs": QUERY.tolist()})  # fmt: skip
    assert missing.status_code == 404
    assert missing.json()["detail"] == f"model {name} has no version 4 (its versions are 1 to 3)"

    # The model's predict checks inputs as the run's does.
    narrow = client.post(f"/api/v1/models/{name}/predict", json={"inputs": [[1.0, 2.0]]})
    assert narrow.status_code == 422
    assert narrow.json()["detail"] == "inputs[0] has 2 values; the network takes 3"
    for bad in ({"version": 0}, {"version": "two"}):
        resp = client.post(f"/api/v1/models/{name}/predict", params=bad,
                           json={"inputs": QUERY.tolist()})  # fmt: skip
        assert resp.status_code == 422 and resp.json()["detail"][0]["loc"] == ["query", "version"]


def test_a_classifier_answers_labels_as_its_run_does(stack: Stack, runs: dict[str, Any]) -> None:
    client, run = stack.client, runs["classifier"]
    put(client, "hi-or-lo", run["id"], status=201)
    inputs = np.array([[2.0, 1.0], [-1.0, -2.0], [0.3, 0.1]])
    answer = predict(client, "models/hi-or-lo", inputs)
    assert answer == {**predict(client, f"runs/{run['id']}", inputs), "model": "hi-or-lo",
                      "version": 1, "run_id": run["id"]}  # fmt: skip
    net = Network.from_spec(CLASS_NETWORK, seed=5)
    net.fit(CLASS_X, np.array(CLASS_Y), CLASS_TRAINING)
    np.testing.assert_array_equal(np.array(answer["outputs"]), net.predict(inputs))
    assert answer["labels"] == net.predict_labels(inputs) == ["hi", "lo", "hi"]


def test_the_list_pages_newest_first_with_the_current_run(
    stack: Stack, runs: dict[str, Any]
) -> None:
    client = stack.client
    names = ["list-a", "list-b", "list-c"]
    for name, seed in zip(names, (1, 2, 3), strict=True):
        put(client, name, runs[seed]["id"], status=201)
    put(client, "list-b", runs[1]["id"])  # list-b: version 2 (run 1) is current
    everything: list[dict] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        body = client.get("/api/v1/models", params=params).json()
        assert len(body["items"]) <= 2
        everything += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    mine = [m for m in everything if m["name"] in names]
    assert [m["name"] for m in mine] == names[::-1]  # newest first
    by_name = {m["name"]: m for m in everything}
    assert len(by_name) == len(everything)  # no repeats across pages
    b = by_name["list-b"]
    assert (b["current_version"], b["latest_version"], b["run_id"]) == (2, 2, runs[1]["id"])
    assert set(b) == {"name", "current_version", "run_id", "latest_version", "created_at",
                      "updated_at"}  # fmt: skip
    assert client.get("/api/v1/models", params={"cursor": "nonsense"}).status_code == 400
    assert client.get("/api/v1/models", params={"limit": 0}).status_code == 422


def test_names_are_checked_and_never_taken_for_id_prefixes(
    stack: Stack, runs: dict[str, Any]
) -> None:
    client, run_id = stack.client, runs[1]["id"]
    for bad in ("with space", "-leading", ".hidden", "a" * 101, "caf%C3%A9", "x%00y"):
        for method, path in (("PUT", ""), ("GET", ""), ("DELETE", ""), ("POST", "/predict")):
            body = {"run_id": run_id} if method == "PUT" else {"inputs": [[1.0, 2.0, 3.0]]}
            resp = client.request(method, f"/api/v1/models/{bad}{path}",
                                  json=None if method in ("GET", "DELETE") else body)  # fmt: skip
            assert resp.status_code == 422, (bad, method, resp.text)
            [issue] = resp.json()["detail"]
            assert issue["loc"] == ["path", "name"] and issue["msg"] == NAME_RULE
    for good in ("a" * 100, "v1.2_final-B", "7"):
        assert put(client, good, run_id, status=201)["name"] == good
    # Names that look like (prefixes of) a run's id stay as given: they are no ids.
    for name in (run_id[:8], run_id[:6].upper(), run_id):
        created = put(client, name, runs[2]["id"], status=201)
        assert created["name"] == name
        assert client.get(f"/api/v1/models/{name}").json()["name"] == name
        assert predict(client, f"models/{name}")["model"] == name
    # Case matters.
    put(client, "Case", run_id, status=201)
    put(client, "case", runs[2]["id"], status=201)
    assert predict(client, "models/Case")["run_id"] == run_id
    assert predict(client, "models/case")["run_id"] == runs[2]["id"]


def test_what_cannot_be_registered(stack: Stack, bob: httpx.Client, runs: dict[str, Any]) -> None:
    client = stack.client
    unknown = client.put("/api/v1/models/refused", json={"run_id": "no-such-run"})
    assert unknown.status_code == 422
    assert unknown.json()["detail"] == "run_id: no run with id no-such-run"
    waiting = stack.submit(runs["dataset_id"], NETWORK, {**TRAINING, "epochs": 1_000_000})
    resp = client.put("/api/v1/models/refused", json={"run_id": waiting["id"]})
    assert resp.status_code == 409, resp.text
    assert resp.json()["detail"].startswith(f"run {waiting['id']} is ")
    assert resp.json()["detail"].endswith("; only a succeeded run can be registered")
    client.post(f"/api/v1/runs/{waiting['id']}/cancel")
    cancelled = stack.wait_done(waiting["id"])
    resp = client.put("/api/v1/models/refused", json={"run_id": cancelled["id"]})
    assert resp.status_code == 409 and "is cancelled" in resp.json()["detail"]
    for body in ({}, {"run_id": ""}, {"run_id": runs[1]["id"], "extra": 1}, {"run_id": 7}):
        assert client.put("/api/v1/models/refused", json=body).status_code == 422, body
    assert (
        client.put(
            "/api/v1/models/refused", content=b"{nope", headers={"Content-Type": "application/json"}
        ).status_code
        == 400
    )
    # A whole id only: a prefix in the body is no run.
    prefix = client.put("/api/v1/models/refused", json={"run_id": runs[1]["id"][:8]})
    assert prefix.status_code == 422
    assert client.get("/api/v1/models/refused").status_code == 404  # nothing was created


def test_a_version_s_run_cannot_be_deleted_and_deleting_the_name_keeps_the_runs(
    stack: Stack, runs: dict[str, Any]
) -> None:
    client = stack.client
    extra = stack.wait_done(
        stack.submit(runs["dataset_id"], NETWORK, {**TRAINING, "seed": 9})["id"]
    )
    put(client, "keeper", runs[1]["id"], status=201)
    put(client, "keeper", extra["id"])
    put(client, "second-home", extra["id"], status=201)

    refused = client.delete(f"/api/v1/runs/{extra['id']}")
    assert refused.status_code == 409
    assert refused.json()["detail"] == (
        f"run {extra['id']} is version 2 of model keeper and version 1 of model second-home; "
        "a model's version cannot be deleted: delete the model first (DELETE "
        "/api/v1/models/keeper, DELETE /api/v1/models/second-home)"
    )
    assert client.get(f"/api/v1/runs/{extra['id']}").status_code == 200

    assert client.delete("/api/v1/models/keeper").status_code == 204
    assert client.get("/api/v1/models/keeper").status_code == 404
    gone = client.post("/api/v1/models/keeper/predict", json={"inputs": QUERY.tolist()})
    assert gone.status_code == 404 and gone.json()["detail"] == "model keeper not found"
    assert client.delete("/api/v1/models/keeper").status_code == 404
    assert "keeper" not in [m["name"] for m in client.get("/api/v1/models").json()["items"]]
    # The runs are still there and still predict.
    for run in (runs[1], extra):
        assert client.get(f"/api/v1/runs/{run['id']}").json()["status"] == "succeeded"
    np.testing.assert_array_equal(predict(client, f"runs/{runs[1]['id']}")["outputs"], reference(1))
    # Still a version of second-home: still kept.
    resp = client.delete(f"/api/v1/runs/{extra['id']}")
    assert resp.status_code == 409 and "version 1 of model second-home;" in resp.json()["detail"]
    assert client.delete("/api/v1/models/second-home").status_code == 204
    assert client.delete(f"/api/v1/runs/{extra['id']}").status_code == 204
    # A name deleted and registered again starts at version 1.
    again = put(client, "keeper", runs[2]["id"], status=201)
    assert (again["current_version"], again["latest_version"]) == (1, 1)
    assert len(again["versions"]) == 1


def test_another_owner_s_model_is_not_found(
    stack: Stack, bob: httpx.Client, runs: dict[str, Any]
) -> None:
    client, name = stack.client, "alices-model"
    put(client, name, runs[1]["id"], status=201)
    for method, path, body in [
        ("GET", f"/api/v1/models/{name}", None),
        ("POST", f"/api/v1/models/{name}/predict", {"inputs": QUERY.tolist()}),
        ("DELETE", f"/api/v1/models/{name}", None),
    ]:
        resp = bob.request(method, path, json=body)
        assert resp.status_code == 404, (method, path, resp.text)
        assert resp.json()["detail"] == f"model {name} not found"
    assert name not in [m["name"] for m in bob.get("/api/v1/models").json()["items"]]
    # Bob cannot register Alice's run, under any name.
    stolen = bob.put(f"/api/v1/models/{name}", json={"run_id": runs[1]["id"]})
    assert stolen.status_code == 422
    assert stolen.json()["detail"] == f"run_id: no run with id {runs[1]['id']}"
    # The same name is Bob's own model: separate from Alice's.
    ds = bob.post("/api/v1/datasets", json={"X": X.tolist(), "y": Y.tolist()}).json()
    submitted = bob.post("/api/v1/runs", json={"dataset_id": ds["id"], "network": NETWORK,
                                               "training": {**TRAINING, "seed": 2}})  # fmt: skip
    bobs_run = submitted.json()["id"]
    wait_for(lambda: bob.get(f"/api/v1/runs/{bobs_run}").json()["status"] == "succeeded", 60,
             "bob's run")  # fmt: skip
    assert put(bob, name, bobs_run, status=201)["run_id"] == bobs_run
    check_answer(predict(bob, f"models/{name}"), name, 1, bobs_run, 2)
    check_answer(predict(client, f"models/{name}"), name, 1, runs[1]["id"], 1)
    assert bob.delete(f"/api/v1/runs/{bobs_run}").status_code == 409
    assert client.delete(f"/api/v1/runs/{bobs_run}").status_code == 404


def at_once(stack: Stack, requests: list[tuple[str, str, Any]]) -> list[int]:
    """The statuses of ``(method, path, json)`` requests sent together, each from a thread
    and connection of its own, released at the same moment."""
    barrier = threading.Barrier(len(requests))
    statuses = [0] * len(requests)
    headers = dict(stack.client.headers)

    def send(i: int) -> None:
        method, path, body = requests[i]
        with httpx.Client(base_url=stack.base_url, headers=headers, timeout=60) as client:
            client.get("/healthz")  # connected before the start
            barrier.wait()
            statuses[i] = client.request(method, path, json=body).status_code

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


def test_concurrent_registrations_number_versions_without_gaps(
    stack: Stack, runs: dict[str, Any]
) -> None:
    """Eight PUTs of four runs to one new name at once: one creates it, versions 1-4 each
    name one run, whatever the order."""
    name, ids = "contended", [runs[s]["id"] for s in (1, 2, 3)] + [runs["classifier"]["id"]]
    statuses = at_once(stack, [("PUT", f"/api/v1/models/{name}", {"run_id": i}) for i in ids * 2])
    assert sorted(statuses) == [200] * 7 + [201], statuses
    model = stack.client.get(f"/api/v1/models/{name}").json()
    assert [v["version"] for v in model["versions"]] == [1, 2, 3, 4]
    assert sorted(v["run_id"] for v in model["versions"]) == sorted(ids)
    assert model["latest_version"] == 4


def test_a_registration_and_the_run_s_delete_never_both_win(
    stack: Stack, runs: dict[str, Any]
) -> None:
    """Each time, either the run became a version and its delete was refused (409), or the
    run was deleted and the registration found no run (422)."""
    tiny = {**TRAINING, "epochs": 1}
    ids = [stack.submit(runs["dataset_id"], NETWORK, {**tiny, "seed": 20 + i})["id"]
           for i in range(6)]  # fmt: skip
    for i, run_id in enumerate(ids):
        stack.wait_done(run_id)
        put_status, delete_status = at_once(stack, [
            ("PUT", f"/api/v1/models/race-{i}", {"run_id": run_id}),
            ("DELETE", f"/api/v1/runs/{run_id}", None),
        ])  # fmt: skip
        exists = stack.client.get(f"/api/v1/runs/{run_id}").status_code
        model = stack.client.get(f"/api/v1/models/race-{i}")
        if put_status == 201:
            assert (delete_status, exists) == (409, 200)
            assert model.json()["run_id"] == run_id
        else:
            assert (put_status, delete_status, exists) == (422, 204, 404)
            assert model.status_code == 404


def test_another_api_process_sees_puts_and_deletes_at_once(
    stack: Stack, runs: dict[str, Any]
) -> None:
    """Two API processes on one database: what one registers or deletes, the other answers
    by at its next request, though it has the model loaded (no stale name cache)."""
    port = free_port()
    log = open(stack.workdir / "api-second.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [PYTHON, "-m", "cli", "api", "--host", "127.0.0.1", "--port", str(port)],
        env=stack.env, cwd=stack.workdir, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    headers = dict(stack.client.headers)
    try:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30
        ) as other:

            def ready() -> bool:
                try:
                    return other.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_for(ready, 30, "the second API process")
            name, client = "shared", stack.client
            put(client, name, runs[1]["id"], status=201)
            check_answer(predict(other, f"models/{name}"), name, 1, runs[1]["id"], 1)
            put(client, name, runs[2]["id"])
            check_answer(predict(other, f"models/{name}"), name, 2, runs[2]["id"], 2)
            put(other, name, runs[1]["id"])  # a rollback in the other process
            check_answer(predict(client, f"models/{name}"), name, 1, runs[1]["id"], 1)
            assert client.delete(f"/api/v1/models/{name}").status_code == 204
            gone = other.post(f"/api/v1/models/{name}/predict", json={"inputs": QUERY.tolist()})
            assert gone.status_code == 404
            put(client, name, runs[3]["id"], status=201)
            check_answer(predict(other, f"models/{name}"), name, 1, runs[3]["id"], 3)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
        log.close()
