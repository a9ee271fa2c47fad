"""Run webhooks: where they may go (SSRF guard), how they are signed, one delivery.

A webhook is a JSON POST to the run's ``callback_url`` when the run ends. The header
``X-Backprop-Signature: sha256=<hex>`` is HMAC-SHA256 of the exact body bytes with the
secret of the API key that submitted the run, so a receiver can check it came from us.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
from typing import Any
from urllib.parse import urlsplit

import httpx

SIGNATURE_HEADER = "X-Backprop-Signature"


class WebhookTargetError(ValueError):
    """The callback URL may not be called (scheme, host or address not allowed)."""


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return hmac.compare_digest(sign(secret, body), signature)


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (
        address.is_loopback
        or address.is_link_local
        or address.is_private
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def check_target(url: str, *, allow_private: bool) -> None:
    """Refuse URLs that point at this machine or its private networks (SSRF).

    Every address the host name resolves to is checked, so a name that resolves to
    127.0.0.1 is refused as the literal would be. Delivery checks again, as DNS may change.
    """
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port  # both parse, and may refuse, the URL
    except ValueError as exc:
        raise WebhookTargetError(f"callback_url: not a valid URL ({exc})") from exc
    if parts.scheme not in ("http", "https"):
        raise WebhookTargetError(
            f"callback_url: scheme must be http or https, not {parts.scheme!r}"
        )
    if not host:
        raise WebhookTargetError("callback_url: has no host")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(host, port or 80, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise WebhookTargetError(f"callback_url: cannot resolve host {host!r}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if _forbidden(address):
            raise WebhookTargetError(
                f"callback_url: {host} resolves to {address}, a loopback, link-local "
                "or private address (allowed only with BACKPROP_WEBHOOK_ALLOW_PRIVATE=true)"
            )


def payload(run: dict[str, Any]) -> bytes:
    return json.dumps({"event": "run.finished", "run": run}, separators=(",", ":")).encode()


def post(url: str, body: bytes, secret: str | None, *, timeout: float = 10.0) -> int:
    """POST one delivery; returns the HTTP status (raises httpx errors on no answer)."""
    headers = {"Content-Type": "application/json", "User-Agent": "backprop-webhooks/1"}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body)
    response = httpx.post(url, content=body, headers=headers, timeout=timeout)
    return response.status_code
