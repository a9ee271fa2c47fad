"""Webhook signing and the SSRF guard (pure code; DNS of literal addresses only)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from core.webhooks import WebhookTargetError, check_target, payload, sign, verify


def test_signature_is_hmac_sha256_of_the_exact_body() -> None:
    body = payload({"id": "r1", "status": "succeeded"})
    expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert sign("s3cret", body) == f"sha256={expected}"
    assert verify("s3cret", body, sign("s3cret", body))
    assert not verify("s3cret", body + b" ", sign("s3cret", body))
    assert not verify("other", body, sign("s3cret", body))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",
        "http://localhost:8080/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.1.2.3/",
        "http://192.168.0.10/",
        "http://0.0.0.0/",
    ],
)
def test_private_targets_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(WebhookTargetError, match="callback_url"):
        check_target(url, allow_private=False)
    check_target(url, allow_private=True)


@pytest.mark.parametrize("url", ["ftp://example.org/x", "file:///etc/passwd", "http:///nohost"])
def test_bad_schemes_and_hostless_urls_are_refused_always(url: str) -> None:
    with pytest.raises(WebhookTargetError):
        check_target(url, allow_private=True)


def test_a_public_address_is_allowed() -> None:
    check_target("https://93.184.216.34/hook", allow_private=False)


@pytest.mark.parametrize(
    "url", ["http://example.com:99999/", "http://[::1/", "http://" + "a" * 64 + ".com/"]
)
def test_malformed_urls_are_refused_not_crashed_on(url: str) -> None:
    with pytest.raises(WebhookTargetError, match="callback_url"):
        check_target(url, allow_private=False)
