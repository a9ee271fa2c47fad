"""Webhooks: signing and its receiver side, the address guard, one delivery.

The guard's decision is tested on literal addresses only (getaddrinfo of a literal sends
nothing); deliveries go only to receivers on 127.0.0.1 that the tests run themselves.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from core.logs import RedactUrlsFilter, redact_urls
from core.webhooks import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Target,
    WebhookTargetError,
    address_refusal,
    check_target,
    delivery_headers,
    delivery_id_for,
    payload,
    post,
    resolve_target,
    sign,
    verify,
)

SECRET = "whsec_test"


def _hmac(secret: str, content: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), content, hashlib.sha256).hexdigest()


# -- signing and the receiver side ---------------------------------------------------------


def test_signature_covers_timestamp_delivery_id_and_the_exact_body() -> None:
    body = payload({"id": "r1", "status": "succeeded"})
    delivery = delivery_id_for("r1")
    headers = delivery_headers(body, SECRET, delivery, now=1_700_000_000.7)
    assert headers[DELIVERY_HEADER] == delivery
    assert headers[TIMESTAMP_HEADER] == "1700000000"
    independent = _hmac(SECRET, b"1700000000." + delivery.encode() + b"." + body)
    assert headers[SIGNATURE_HEADER] == independent
    assert verify(SECRET, body, independent, "1700000000", delivery, now=1_700_000_010)


def test_verify_refuses_tampering_replays_and_missing_headers() -> None:
    body, delivery, now = payload({"id": "r1"}), delivery_id_for("r1"), 1_700_000_000
    ts = str(now)
    signature = sign(SECRET, body, timestamp=ts, delivery_id=delivery)
    assert verify(SECRET, body, signature, ts, delivery, max_age_s=300, now=now + 300)
    # A replay of a captured delivery, once its timestamp is older than the window:
    assert not verify(SECRET, body, signature, ts, delivery, max_age_s=300, now=now + 301)
    # Refreshing the timestamp of a capture breaks the signature:
    later = str(now + 400)
    assert not verify(SECRET, body, signature, later, delivery, max_age_s=300, now=now + 401)
    assert not verify(SECRET, body + b" ", signature, ts, delivery, now=now)
    assert not verify(SECRET, body, signature, ts, delivery_id_for("r2"), now=now)
    assert not verify("other", body, signature, ts, delivery, now=now)
    assert not verify(SECRET, body, signature, str(now + 301), delivery, now=now)  # future
    assert not verify(SECRET, body, None, ts, delivery, now=now)
    assert not verify(SECRET, body, signature, None, delivery, now=now)
    assert not verify(SECRET, body, signature, "-5", delivery, now=now)


def test_delivery_id_is_stable_per_run_and_event() -> None:
    first = delivery_id_for("11111111-1111-4111-8111-111111111111")
    assert first == delivery_id_for("11111111-1111-4111-8111-111111111111")
    assert first != delivery_id_for("22222222-2222-4222-8222-222222222222")
    assert uuid.UUID(first).version == 5


def test_unsigned_without_a_secret_but_still_dated_and_identified() -> None:
    headers = delivery_headers(b"{}", None, "d1", now=5)
    assert SIGNATURE_HEADER not in headers
    assert headers[DELIVERY_HEADER] == "d1" and headers[TIMESTAMP_HEADER] == "5"


# -- the address guard: the decision on one address -----------------------------------------

REFUSED = [
    "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.31.255.254", "192.168.0.10",
    "127.0.0.1", "127.255.255.254", "::1",
    "169.254.0.1", "169.254.169.254", "fe80::1",
    "100.64.0.1", "100.100.100.200", "100.127.255.254",
    "0.0.0.0", "0.1.2.3", "::",
    "224.0.0.1", "239.255.255.250", "ff02::1", "ff0e::1",
    "240.0.0.1", "255.255.255.255", "192.0.0.8", "192.0.2.1", "198.18.0.1", "192.88.99.1",
    "fc00::1", "fd12:3456::1", "fec0::1", "2001:db8::1", "100::1", "3fff::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:100.100.100.200",
    "2002:7f00:1::", "2002:a00:1::1", "2002:a9fe:a9fe::",  # 6to4 of 127.0.0.1, 10.0.0.1, …
    "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo: client 127.0.0.1
    "2001:0:a00:1:8000:63bf:3fff:fdd2",  # Teredo: server 10.0.0.1
    "64:ff9b::7f00:1", "64:ff9b::a00:1", "64:ff9b::a9fe:a9fe",  # NAT64 of private ones
    "64:ff9b:1::808:808",  # local-use NAT64 prefix
    "::7f00:1", "::808:808",  # IPv4-compatible (deprecated)
]  # fmt: skip

ACCEPTED = [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "2001:4860:4860::8888", "2620:fe::fe",
    "2002:808:808::1",  # 6to4 of 8.8.8.8
    "::ffff:8.8.8.8", "64:ff9b::808:808",  # mapped, NAT64 of 8.8.8.8
    "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # Teredo: server 65.54.227.120, client 8.8.8.8
]  # fmt: skip


@pytest.mark.parametrize("literal", REFUSED)
def test_guard_refuses_addresses_that_are_not_globally_routable(literal: str) -> None:
    assert address_refusal(ipaddress.ip_address(literal)) is not None


@pytest.mark.parametrize("literal", ACCEPTED)
def test_guard_accepts_global_addresses(literal: str) -> None:
    assert address_refusal(ipaddress.ip_address(literal)) is None


def test_guard_names_the_embedded_address() -> None:
    reason = address_refusal(ipaddress.ip_address("2002:7f00:1::"))
    assert reason is not None and "6to4" in reason and "127.0.0.1" in reason


# -- the address guard on URLs (submit time and delivery) ----------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://100.100.100.200/latest/meta-data/",
        "http://100.64.0.1/",
        "http://[2002:7f00:1::]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:10.0.0.1]:8080/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://10.1.2.3/",
        "http://172.16.0.1/",
        "http://192.168.0.10/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
    ],
)
def test_non_global_targets_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(WebhookTargetError, match="callback_url"):
        check_target(url, allow_private=False)
    with pytest.raises(WebhookTargetError, match="callback_url"):
        resolve_target(url, allow_private=False)  # what delivery does
    check_target(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",  # decimal 127.0.0.1
        "http://0177.0.0.1/",  # octal
        "http://0x7f.0.0.1/",  # hex
        "http://0x7f000001/",
        "http://127.1/",  # short form
        "http://10.1/",
        "http://0/",
        "http://127.0.0.1./",
        "http://1.2.3.4.5/",
    ],
)
def test_numeric_spellings_of_addresses_are_refused(url: str) -> None:
    with pytest.raises(WebhookTargetError, match="callback_url"):
        check_target(url, allow_private=False)
    with pytest.raises(WebhookTargetError, match="callback_url"):
        check_target(url, allow_private=True)


@pytest.mark.parametrize("url", ["ftp://example.org/x", "file:///etc/passwd", "http:///nohost"])
def test_bad_schemes_and_hostless_urls_are_refused_always(url: str) -> None:
    with pytest.raises(WebhookTargetError):
        check_target(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://93.184.216.34/hook",
        "http://8.8.8.8:8080/x?y=1",
        "https://[2001:4860:4860::8888]/hook",
        "http://[2002:808:808::1]/hook",
    ],
)
def test_global_addresses_are_allowed(url: str) -> None:
    check_target(url, allow_private=False)  # a literal: resolved without any traffic
    target = resolve_target(url, allow_private=False)
    assert len(target.addresses) == 1 and address_refusal(target.addresses[0]) is None


@pytest.mark.parametrize(
    "url", ["http://example.com:99999/", "http://[::1/", "http://" + "a" * 64 + ".com/"]
)
def test_malformed_urls_are_refused_not_crashed_on(url: str) -> None:
    with pytest.raises(WebhookTargetError, match="callback_url"):
        check_target(url, allow_private=False)


# -- one delivery, to a receiver on 127.0.0.1 ----------------------------------------------


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    server: ThreadingHTTPServer
    seen: list[Seen] = field(default_factory=list)
    status: int = 204

    @property
    def port(self) -> int:
        return self.server.server_port


def _serve(context: ssl.SSLContext | None = None) -> Receiver:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            receiver.seen.append(Seen(self.path, dict(self.headers.items()), body))
            self.send_response(receiver.status)
            if 300 <= receiver.status < 400:
                self.send_header("Location", f"http://127.0.0.1:{receiver.port}/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    receiver = Receiver(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = _serve()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def test_delivery_is_pinned_signed_and_logged_without_secrets(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"http://hookuser:hookpass-S3CRET@localhost:{receiver.port}/hook?token=QUERY-S3CRET"
    target = resolve_target(url, allow_private=True)
    assert ipaddress.ip_address("127.0.0.1") in target.addresses
    body, delivery = payload({"id": "r1"}), delivery_id_for("r1")
    caplog.set_level(logging.DEBUG)
    assert post(target, body, SECRET, delivery) == 204

    [seen] = receiver.seen
    assert seen.path == "/hook?token=QUERY-S3CRET" and seen.body == body
    assert seen.headers["Host"] == f"localhost:{receiver.port}"
    assert (
        seen.headers["Authorization"]
        == "Basic " + base64.b64encode(b"hookuser:hookpass-S3CRET").decode()
    )
    ts = seen.headers[TIMESTAMP_HEADER]
    assert abs(int(ts) - time.time()) < 60 and seen.headers[DELIVERY_HEADER] == delivery
    expected = _hmac(SECRET, f"{ts}.{delivery}.".encode() + body)
    assert seen.headers[SIGNATURE_HEADER] == expected
    assert verify(SECRET, body, expected, ts, delivery)

    lines = [record.getMessage() for record in caplog.records]
    assert any(line.startswith("HTTP Request: POST") for line in lines), lines
    text = "\n".join(lines)
    assert "?[redacted]" in text
    for secret in ("hookuser", "hookpass-S3CRET", "QUERY-S3CRET"):
        assert secret not in text


def test_the_connection_goes_to_the_checked_address_not_a_fresh_lookup(
    receiver: Receiver,
) -> None:
    # The name does not resolve at all: the request can only reach the receiver through the
    # address checked before (what a DNS rebinding attack would try to change).
    target = Target(
        url=httpx.URL(f"http://hooks.invalid:{receiver.port}/hook"),
        host="hooks.invalid",
        port=receiver.port,
        addresses=(ipaddress.ip_address("127.0.0.1"),),
    )
    assert post(target, b"{}", None, "d1") == 204
    assert receiver.seen[0].headers["Host"] == f"hooks.invalid:{receiver.port}"


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    receiver.status = 302
    target = resolve_target(f"http://127.0.0.1:{receiver.port}/hook", allow_private=True)
    assert post(target, b"{}", None, "d1") == 302
    assert [seen.path for seen in receiver.seen] == ["/hook"]


def test_nobody_listening_raises_a_connect_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connecting is refused
        target = resolve_target(f"http://127.0.0.1:{port}/hook", allow_private=True)
        with pytest.raises(httpx.ConnectError):
            post(target, b"{}", None, "d1", timeout=2)


def _self_signed(tmp: Path, name: str) -> tuple[Path, Path]:
    cert, key = tmp / f"{name}.crt", tmp / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_https_is_pinned_with_sni_and_the_certificate_checked_against_the_name(
    tmp_path: Path,
) -> None:
    cert, key = _self_signed(tmp_path, "hooks.invalid")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    names: list[str | None] = []
    server_context.sni_callback = lambda _sock, name, _ctx: names.append(name)  # type: ignore[assignment,func-returns-value]
    receiver = _serve(server_context)
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        target = Target(
            url=httpx.URL(f"https://hooks.invalid:{receiver.port}/hook"),
            host="hooks.invalid",
            port=receiver.port,
            addresses=(ipaddress.ip_address("127.0.0.1"),),
        )
        assert post(target, b"{}", None, "d1", verify_tls=trust) == 204
        assert names[-1] == "hooks.invalid"
        # The same address under another name: the certificate does not match it.
        other = Target(
            url=httpx.URL(f"https://other.invalid:{receiver.port}/hook"),
            host="other.invalid",
            port=receiver.port,
            addresses=target.addresses,
        )
        with pytest.raises(httpx.ConnectError, match="certificate"):
            post(other, b"{}", None, "d1", verify_tls=trust)
        assert len(receiver.seen) == 1
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()


# -- log redaction -------------------------------------------------------------------------


def test_redact_urls_drops_userinfo_query_and_fragment() -> None:
    line = 'POST http://u:p@ss@h.example:8/a/b?token=x&y=z#frag "HTTP/1.1 500"'
    assert redact_urls(line) == 'POST http://h.example:8/a/b?[redacted] "HTTP/1.1 500"'
    assert redact_urls("see https://[::1]/p and http://x/") == "see https://[::1]/p and http://x/"
    record = logging.LogRecord(
        "httpx", logging.INFO, __file__, 1, "to %s", ("http://a:b@h/?q",), None
    )
    assert RedactUrlsFilter().filter(record) and record.getMessage() == "to http://h/?[redacted]"
