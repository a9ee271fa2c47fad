"""End to end: webhook attempts and giving up, signatures, redacted logs, and the address
guard at submit, across real API and worker processes.

Deliveries go only to receivers these tests run on 127.0.0.1; the refused targets are
literal addresses, which the API checks without sending anything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from cli.processes import free_port
from core.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from tests.e2e.stack import Stack, service_env, start_stack, wait_for
from tests.seed import SEED_NETWORK, SEED_TRAINING, SEED_X, SEED_Y

ATTEMPTS = 5  # more than Celery's default max_retries + 1, which once cut delivery short
BACKOFF_S = 0.1
SECRET = "whsec_e2e_webhooks"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("stack-webhooks")
    stack = start_stack(
        f"sqlite:///{workdir / 'backprop.db'}",
        workdir,
        BACKPROP_WEBHOOK_ALLOW_PRIVATE="true",
        BACKPROP_WEBHOOK_MAX_ATTEMPTS=str(ATTEMPTS),
        BACKPROP_WEBHOOK_BACKOFF_S=str(BACKOFF_S),
        BACKPROP_WEBHOOK_SECRET=SECRET,
    )
    yield stack
    stack.stop()


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that answers ``failure`` (500, or a redirect to itself)
    to the first ``fail_first`` POSTs, then 204."""

    fail_first: int
    failure: int = 500
    deliveries: list[Delivery] = field(default_factory=list)
    server: ThreadingHTTPServer = field(init=False)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.deliveries.append(Delivery(self.path, dict(self.headers.items()), body))
                failing = len(receiver.deliveries) <= receiver.fail_first
                self.send_response(receiver.failure if failing else 204)
                if failing and 300 <= receiver.failure < 400:
                    self.send_header("Location", f"http://127.0.0.1:{receiver.port}/moved")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return self.server.server_port

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _submit(stack: Stack, callback_url: str) -> str:
    ds = stack.upload_json(SEED_X, SEED_Y)
    run = stack.submit(ds["id"], SEED_NETWORK, SEED_TRAINING, callback_url=callback_url)
    assert run["webhook_status"] == "pending"
    return str(run["id"])


def _webhook_status(stack: Stack, run_id: str, status: str, timeout: float = 60) -> None:
    wait_for(
        lambda: stack.client.get(f"/api/v1/runs/{run_id}").json()["webhook_status"] == status,
        timeout, f"the webhook of run {run_id} to be {status}", interval=0.1,
    )  # fmt: skip


def _check_signed(delivery: Delivery) -> str:
    """Verify a delivery as a receiver would, with an independent HMAC; its delivery id."""
    ts, delivery_id = delivery.headers[TIMESTAMP_HEADER], delivery.headers[DELIVERY_HEADER]
    content = f"{ts}.{delivery_id}.".encode() + delivery.body
    expected = "sha256=" + hmac.new(SECRET.encode(), content, hashlib.sha256).hexdigest()
    assert delivery.headers[SIGNATURE_HEADER] == expected
    assert verify(SECRET, delivery.body, expected, ts, delivery_id, max_age_s=300)
    assert abs(int(ts) - time.time()) < 120
    return delivery_id


@pytest.mark.parametrize("failure", [500, 307])
def test_a_failing_receiver_gets_exactly_max_attempts_then_the_webhook_is_failed(
    stack: Stack, failure: int
) -> None:
    receiver = Receiver(fail_first=10**6, failure=failure)
    try:
        run_id = _submit(stack, f"http://127.0.0.1:{receiver.port}/hook")
        _webhook_status(stack, run_id, "failed")
        time.sleep(BACKOFF_S * 2**ATTEMPTS)  # longer than any further backoff
        assert [d.path for d in receiver.deliveries] == ["/hook"] * ATTEMPTS  # never /moved
        ids = {_check_signed(delivery) for delivery in receiver.deliveries}
        assert len(ids) == 1  # one delivery, several attempts
    finally:
        receiver.close()
    worker_log = stack.workers[0].log.read_text(errors="replace")
    assert "Traceback" not in worker_log and "MaxRetriesExceeded" not in worker_log
    gave_up = [line for line in worker_log.splitlines()
               if run_id in line and "webhook failed for good" in line]  # fmt: skip
    assert len(gave_up) == 1, gave_up
    assert f"after {ATTEMPTS} attempts" in gave_up[0] and '"level": "WARNING"' in gave_up[0]


def test_credentials_and_query_of_the_callback_url_stay_out_of_the_logs(stack: Stack) -> None:
    receiver = Receiver(fail_first=1)
    url = f"http://hookuser:hookpass-S3CRET@127.0.0.1:{receiver.port}/hook?token=QUERY-S3CRET"
    try:
        run_id = _submit(stack, url)
        _webhook_status(stack, run_id, "delivered")
    finally:
        receiver.close()
    assert len(receiver.deliveries) == 2
    first, second = receiver.deliveries
    assert _check_signed(first) == _check_signed(second)
    assert second.path == "/hook?token=QUERY-S3CRET"
    assert (
        second.headers["Authorization"]
        == "Basic " + base64.b64encode(b"hookuser:hookpass-S3CRET").decode()
    )

    logs = "\n".join(path.read_text(errors="replace") for path in stack.workdir.glob("*.log"))
    shown = f"http://127.0.0.1:{receiver.port}/hook?[redacted]"
    assert f"HTTP Request: POST {shown}" in logs  # httpx's own line, redacted
    assert f"webhook delivered to {shown}" in logs
    for secret in ("hookuser", "hookpass-S3CRET", "QUERY-S3CRET"):
        assert secret not in logs


@pytest.fixture(scope="module")
def guarded_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A second API on the same database, with the address guard on (the default)."""
    workdir = tmp_path_factory.mktemp("api-guarded")
    env = service_env(stack.env["BACKPROP_DATABASE_URL"], BACKPROP_WEBHOOK_ALLOW_PRIVATE="false")
    api = Stack(env=env, workdir=workdir, port=free_port())
    api.start_api()
    yield api
    api.stop()


@pytest.mark.parametrize(
    "callback_url",
    [
        "http://100.100.100.200/latest/meta-data/",
        "http://100.64.0.1/",
        "http://[2002:7f00:1::]/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:127.0.0.1]/",
        "http://[64:ff9b::a00:1]/",
        "http://2130706433/",
        "http://0177.0.0.1/",
        "http://0x7f.0.0.1/",
        "http://127.1/",
    ],
)
def test_the_api_refuses_targets_that_are_not_global(guarded_api: Stack, callback_url: str) -> None:
    ds = guarded_api.upload_json(SEED_X, SEED_Y)
    body = {"dataset_id": ds["id"], "network": SEED_NETWORK, "training": SEED_TRAINING,
            "callback_url": callback_url}  # fmt: skip
    resp = guarded_api.client.post("/api/v1/runs", json=body)
    assert resp.status_code == 422, resp.text
    assert "callback_url" in str(resp.json()["detail"])
