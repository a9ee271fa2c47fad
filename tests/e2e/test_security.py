"""End to end with authentication on: keys, isolation, idempotency, webhooks, limits."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from cli.processes import free_port
from core.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.e2e.sse import read_events
from tests.e2e.stack import PYTHON, Stack, start_stack
from tests.e2e.test_runs import SEED_NETWORK, SEED_TRAINING, SEED_X, SEED_Y, long_training

MAX_ACTIVE = 3
MAX_REQUEST = 200_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("stack-security")
    stack = start_stack(
        f"sqlite:///{workdir / 'backprop.db'}",
        workdir,
        BACKPROP_AUTH="on",
        BACKPROP_AUTH_CACHE_S="0",
        BACKPROP_MAX_ACTIVE_RUNS=str(MAX_ACTIVE),
        BACKPROP_MAX_REQUEST_BYTES=str(MAX_REQUEST),
        BACKPROP_MAX_EPOCHS="1000000",
        BACKPROP_WEBHOOK_ALLOW_PRIVATE="true",
    )
    yield stack
    stack.stop()


def make_key(stack: Stack, owner: str) -> dict:
    out = subprocess.run(
        [PYTHON, "-m", "cli", "keys", "create", "--owner", owner, "--json"],
        env=stack.env, cwd=stack.workdir, capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    return json.loads(out.stdout)


def client_for(stack: Stack, key: str) -> httpx.Client:
    return httpx.Client(
        base_url=stack.base_url, timeout=30, headers={"Authorization": f"Bearer {key}"}
    )


@pytest.fixture(scope="module")
def alice(stack: Stack) -> Iterator[tuple[httpx.Client, dict]]:
    made = make_key(stack, "alice")
    with client_for(stack, made["key"]) as client:
        yield client, made


@pytest.fixture(scope="module")
def bob(stack: Stack) -> Iterator[httpx.Client]:
    with client_for(stack, make_key(stack, "bob")["key"]) as client:
        yield client


def _wait_done(client: httpx.Client, run_id: str, timeout: float = 60) -> dict:
    from tests.e2e.stack import wait_for

    return wait_for(
        lambda: (
            (r := client.get(f"/api/v1/runs/{run_id}").json())["status"]
            in ("succeeded", "failed", "cancelled")
            and r
        ),
        timeout,
        f"run {run_id} to end",
    )


def _seed_run(client: httpx.Client, **training) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    ds = client.post("/api/v1/datasets", json={"X": SEED_X, "y": SEED_Y})
    assert ds.status_code in (200, 201), ds.text  # 200: this owner's seed dataset again
    run = client.post(
        "/api/v1/runs",
        json={"dataset_id": ds.json()["id"], "network": SEED_NETWORK,
              "training": {**SEED_TRAINING, **training}},
    )  # fmt: skip
    assert run.status_code == 202, run.text
    return ds.json()["id"], run.json()["id"]


def test_missing_or_wrong_key_is_401_and_probes_stay_public(stack: Stack) -> None:
    anonymous = stack.client
    for method, path in [("GET", "/api/v1/runs"), ("GET", "/api/v1/datasets"),
                         ("POST", "/api/v1/runs"), ("GET", "/api/v1/runs/x/events")]:  # fmt: skip
        resp = anonymous.request(method, path)
        assert resp.status_code == 401, (path, resp.text)
        assert resp.headers["www-authenticate"] == "Bearer"
        assert "API key" in resp.json()["detail"]
    wrong = anonymous.get("/api/v1/runs", headers={"Authorization": "Bearer bp_not-a-key"})
    assert wrong.status_code == 401 and "invalid" in wrong.json()["detail"]
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert anonymous.get(path).status_code == 200
    schemes = anonymous.get("/openapi.json").json()["components"]["securitySchemes"]
    assert any(s.get("scheme") == "bearer" for s in schemes.values())


def test_another_owner_gets_404_everywhere(alice, bob: httpx.Client) -> None:  # type: ignore[no-untyped-def]
    client, _ = alice
    dataset_id, run_id = _seed_run(client, epochs=3)
    assert _wait_done(client, run_id)["status"] == "succeeded"
    assert client.get(f"/api/v1/runs/{run_id}/weights").status_code == 200

    for method, path, body in [
        ("GET", f"/api/v1/runs/{run_id}", None),
        ("GET", f"/api/v1/runs/{run_id}/metrics", None),
        ("GET", f"/api/v1/runs/{run_id}/events", None),
        ("GET", f"/api/v1/runs/{run_id}/weights", None),
        ("POST", f"/api/v1/runs/{run_id}/predict", {"inputs": [[0.05, 0.1]]}),
        ("POST", f"/api/v1/runs/{run_id}/cancel", None),
        ("DELETE", f"/api/v1/runs/{run_id}", None),
        ("GET", f"/api/v1/datasets/{dataset_id}", None),
        ("DELETE", f"/api/v1/datasets/{dataset_id}", None),
    ]:
        resp = bob.request(method, path, json=body)
        assert resp.status_code == 404, (method, path, resp.text)
    assert run_id not in [r["id"] for r in bob.get("/api/v1/runs").json()["items"]]
    assert dataset_id not in [d["id"] for d in bob.get("/api/v1/datasets").json()["items"]]
    stolen = bob.post("/api/v1/runs", json={"dataset_id": dataset_id, "network": SEED_NETWORK,
                                            "training": SEED_TRAINING})  # fmt: skip
    assert stolen.status_code == 422
    # And alice still has all of it.
    assert client.get(f"/api/v1/runs/{run_id}").status_code == 200
    assert run_id in [r["id"] for r in client.get("/api/v1/runs").json()["items"]]


def test_revoked_key_stops_working(stack: Stack) -> None:
    made = make_key(stack, "carol")
    with client_for(stack, made["key"]) as carol:
        assert carol.get("/api/v1/runs").status_code == 200
        listed = subprocess.run([PYTHON, "-m", "cli", "keys", "list", "--json"], env=stack.env,
                                capture_output=True, check=True, timeout=60)  # fmt: skip
        keys = json.loads(listed.stdout)
        assert made["id"] in [k["id"] for k in keys]
        assert all("key_hash" not in k and made["key"] not in json.dumps(k) for k in keys)
        subprocess.run([PYTHON, "-m", "cli", "keys", "revoke", made["id"]], env=stack.env,
                       check=True, capture_output=True, timeout=60)  # fmt: skip
        assert carol.get("/api/v1/runs").status_code == 401


def test_idempotency_key_returns_the_first_response(alice) -> None:  # type: ignore[no-untyped-def]
    client, _ = alice
    headers = {"Idempotency-Key": "upload-42"}
    data = {"X": [[0.25, 0.75]], "y": [[0.5, 0.5]]}  # content new to alice: 201
    first = client.post("/api/v1/datasets", json=data, headers=headers)
    again = client.post("/api/v1/datasets", json=data, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert first.json() == again.json()
    assert again.headers["location"] == first.headers["location"]
    other = client.post("/api/v1/datasets", json={"X": [[1, 2]], "y": [[3, 4]]}, headers=headers)
    assert other.status_code == 422 and "Idempotency-Key" in other.json()["detail"]
    # the same key with ?dedupe=false is another request
    copy = client.post("/api/v1/datasets", params={"dedupe": "false"}, json=data, headers=headers)
    assert copy.status_code == 422 and "Idempotency-Key" in copy.json()["detail"]
    # a new key on known content: 200 with the existing dataset, and so is its replay
    found = [client.post("/api/v1/datasets", json=data, headers={"Idempotency-Key": "upload-43"})
             for _ in range(2)]  # fmt: skip
    assert [r.status_code for r in found] == [200, 200]
    assert found[0].json() == found[1].json() == first.json()
    assert "idempotent-replayed" not in found[0].headers
    assert found[1].headers["idempotent-replayed"] == "true"

    body = {"dataset_id": first.json()["id"], "network": SEED_NETWORK, "training": SEED_TRAINING}
    runs = [client.post("/api/v1/runs", json=body, headers={"Idempotency-Key": "run-7"})
            for _ in range(3)]  # fmt: skip
    assert {r.status_code for r in runs} == {202}
    assert len({r.json()["id"] for r in runs}) == 1
    mine = [r for r in client.get("/api/v1/runs", params={"limit": 500}).json()["items"]
            if r["dataset_id"] == first.json()["id"]]  # fmt: skip
    assert len(mine) == 1
    _wait_done(client, runs[0].json()["id"])


class _Receiver(BaseHTTPRequestHandler):
    deliveries: list[tuple[bytes, dict[str, str]]] = []
    fail_first = 0

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).deliveries.append((body, dict(self.headers.items())))
        failing = len(type(self).deliveries) <= type(self).fail_first
        self.send_response(500 if failing else 204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_webhook_is_signed_retried_and_delivered_once(alice) -> None:  # type: ignore[no-untyped-def]
    client, made = alice
    _Receiver.deliveries, _Receiver.fail_first = [], 2
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/hook"
        ds = client.post("/api/v1/datasets", json={"X": SEED_X, "y": SEED_Y}).json()
        resp = client.post("/api/v1/runs", json={"dataset_id": ds["id"], "network": SEED_NETWORK,
                           "training": SEED_TRAINING, "callback_url": url})  # fmt: skip
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["id"]
        assert resp.json()["webhook_status"] == "pending"
        from tests.e2e.stack import wait_for

        wait_for(
            lambda: client.get(f"/api/v1/runs/{run_id}").json()["webhook_status"] == "delivered",
            30, "the webhook to be delivered",
        )  # fmt: skip
        assert len(_Receiver.deliveries) == 3  # two refused, then taken; never again after
        body, headers = _Receiver.deliveries[-1]
        signed = (headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER),
                  headers.get(DELIVERY_HEADER))  # fmt: skip
        assert verify(made["webhook_secret"], body, *signed)
        assert not verify("whsec_wrong", body, *signed)
        # One delivery id for every attempt, so the receiver can tell repeats apart.
        assert {h.get(DELIVERY_HEADER) for _, h in _Receiver.deliveries} == {signed[2]}
        sent = json.loads(body)
        assert sent["event"] == "run.finished"
        assert sent["run"]["id"] == run_id and sent["run"]["status"] == "succeeded"
        # The run's own record says the same of it, field for field.
        record = client.get(f"/api/v1/runs/{run_id}").json()
        for key in ("metrics", "best_epoch", "stop_reason", "test_metrics", "progress", "error"):
            assert sent["run"][key] == record[key], key
    finally:
        server.shutdown()


def test_limits_answer_4xx_naming_the_limit(alice) -> None:  # type: ignore[no-untyped-def]
    client, _ = alice
    dataset_id, first = _seed_run(client, **long_training())
    ids = [first]
    for _ in range(MAX_ACTIVE - 1):
        ids.append(_seed_run(client, **long_training())[1])
    over = client.post("/api/v1/runs", json={"dataset_id": dataset_id, "network": SEED_NETWORK,
                                             "training": SEED_TRAINING})  # fmt: skip
    assert over.status_code == 429 and "BACKPROP_MAX_ACTIVE_RUNS" in over.json()["detail"]
    for run_id in ids:
        client.post(f"/api/v1/runs/{run_id}/cancel")
    for run_id in ids:
        _wait_done(client, run_id)

    big = {"dataset_id": dataset_id, "network": SEED_NETWORK, "training": SEED_TRAINING,
           "name": "x" * 150, "padding": "y" * MAX_REQUEST}  # fmt: skip
    resp = client.post("/api/v1/runs", json=big)
    assert resp.status_code == 413 and "BACKPROP_MAX_REQUEST_BYTES" in resp.json()["detail"]
    chunked = client.post(
        "/api/v1/runs",
        content=iter([b'{"dataset_id": "', b"z" * MAX_REQUEST, b'"}']),
        headers={"Content-Type": "application/json"},
    )
    assert chunked.status_code == 413

    timed = client.post("/api/v1/runs", json={"dataset_id": dataset_id, "network": SEED_NETWORK,
                        "training": {**long_training(), "max_runtime_s": 1.0}})  # fmt: skip
    assert timed.status_code == 202
    done = _wait_done(client, timed.json()["id"], timeout=30)
    assert done["status"] == "failed" and "exceeded max runtime" in done["error"]
    events = read_events(client, f"/api/v1/runs/{timed.json()['id']}/events", timeout=10)
    assert events[-1].data["status"] == "failed"
    # The service still works after all of that.
    _, ok = _seed_run(client)
    assert _wait_done(client, ok)["status"] == "succeeded"


def test_auth_off_is_refused_on_a_non_loopback_address(stack: Stack) -> None:
    env = {**stack.env, "BACKPROP_AUTH": "off"}
    proc = subprocess.run(
        [PYTHON, "-m", "cli", "api", "--host", "0.0.0.0", "--port", str(free_port())],
        env=env, capture_output=True, timeout=60, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "loopback" in proc.stderr + proc.stdout
