"""Run webhooks: where they may go (SSRF guard), how they are signed, one delivery.

A webhook is a JSON POST to the run's ``callback_url`` when the run ends. Each delivery
carries three headers:

- ``X-Backprop-Delivery``: the delivery id, a UUID derived from the run id and the event,
  the same on every attempt (and on a duplicate send), so a receiver can drop repeats;
- ``X-Backprop-Timestamp``: when this attempt was sent, in Unix seconds;
- ``X-Backprop-Signature: sha256=<hex>``: HMAC-SHA256, with the secret of the API key that
  submitted the run, of ``f"{timestamp}.{delivery_id}."`` followed by the exact body bytes.

A receiver recomputes the signature (:func:`verify`) and refuses timestamps outside its
window, so a captured delivery cannot be replayed later, nor its timestamp refreshed.

The address guard (:func:`address_refusal`) lets a delivery reach only globally routable
addresses. It runs at submit time (:func:`check_target`) and again at delivery, on the
addresses the host resolves to then; :func:`post` connects to one of exactly those
addresses (the host name goes in ``Host`` and, for https, in the TLS SNI and certificate
check), so DNS cannot send the request anywhere else between check and connect.
This module does not decide about retries; ``workers.webhooks`` does.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import re
import socket
import ssl
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from core.logs import RedactUrlsFilter

SIGNATURE_HEADER = "X-Backprop-Signature"
DELIVERY_HEADER = "X-Backprop-Delivery"
TIMESTAMP_HEADER = "X-Backprop-Timestamp"
DEFAULT_MAX_AGE_S = 300.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Delivery ids are UUIDv5 of "<event>:<run id>" in this namespace.
_DELIVERY_NAMESPACE = uuid.UUID("6f1c3b1e-4a44-5d0f-9f53-0b6c1f1f8e21")

# httpx logs "HTTP Request: POST <url> ..." at INFO; callback URLs may carry credentials
# or tokens in the query. core.logs.configure_logging redacts every line it writes; this
# also covers processes that configured logging some other way.
_httpx_logger = logging.getLogger("httpx")
if not any(isinstance(f, RedactUrlsFilter) for f in _httpx_logger.filters):
    _httpx_logger.addFilter(RedactUrlsFilter())


class WebhookTargetError(ValueError):
    """The callback URL may not be called (scheme, host or address not allowed)."""


# -- signing -------------------------------------------------------------------------------


def delivery_id_for(run_id: str, event: str = "run.finished") -> str:
    """The id of the delivery of ``event`` for ``run_id``: the same on every attempt."""
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{event}:{run_id}"))


def signed_content(timestamp: str, delivery_id: str, body: bytes) -> bytes:
    """What the signature covers: ``f"{timestamp}.{delivery_id}."`` + the body bytes."""
    return f"{timestamp}.{delivery_id}.".encode() + body


def sign(secret: str, body: bytes, *, timestamp: str, delivery_id: str) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of :func:`signed_content` with ``secret``."""
    content = signed_content(timestamp, delivery_id, body)
    return "sha256=" + hmac.new(secret.encode(), content, hashlib.sha256).hexdigest()


def verify(
    secret: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    delivery_id: str | None,
    *,
    max_age_s: float = DEFAULT_MAX_AGE_S,
    now: float | None = None,
) -> bool:
    """What a receiver does: the timestamp is within ``max_age_s`` of ``now`` (either way,
    for clock skew) and the signature matches, compared in constant time.

    ``signature``, ``timestamp`` and ``delivery_id`` are the three headers' values (None
    when absent). A receiver that also remembers the delivery ids it took during the last
    ``max_age_s`` drops both replays and the service's own repeated attempts.
    """
    if not (signature and timestamp and delivery_id) or not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > max_age_s:
        return False
    expected = sign(secret, body, timestamp=timestamp, delivery_id=delivery_id)
    return hmac.compare_digest(expected, signature)


def delivery_headers(
    body: bytes, secret: str | None, delivery_id: str, *, now: float | None = None
) -> dict[str, str]:
    """The headers of one attempt: content type, delivery id, timestamp, signature."""
    timestamp = str(int(time.time() if now is None else now))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "backprop-webhooks/1",
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: timestamp,
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, body, timestamp=timestamp, delivery_id=delivery_id)
    return headers


def payload(run: dict[str, Any]) -> bytes:
    return json.dumps({"event": "run.finished", "run": run}, separators=(",", ":")).encode()


# -- the address guard ---------------------------------------------------------------------

# Not globally reachable (IANA special-purpose registries) although this Python's
# ``is_global`` may say so; newer Pythons know most of them.
_NOT_GLOBAL = tuple(
    ipaddress.ip_network(n)
    for n in (
        "192.0.0.0/24",  # IETF protocol assignments
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "::/96",  # IPv4-compatible IPv6 (deprecated) and ::, ::1
        "64:ff9b:1::/48",  # local-use IPv4/IPv6 translation
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments (Teredo is decided by its embedded IPv4)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing SIDs
        "fec0::/10",  # site-local (deprecated)
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_TEREDO = ipaddress.ip_network("2001::/32")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[str, list[ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address stands for (mapped, NAT64, 6to4, Teredo)."""
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", [address.ipv4_mapped]
    if address in _NAT64:
        return "NAT64", [ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)]
    if address.sixtofour is not None:
        return "6to4", [address.sixtofour]
    if address in _TEREDO and address.teredo is not None:
        return "Teredo", list(address.teredo)
    return "", []


def address_refusal(address: IPAddress) -> str | None:
    """Why a webhook may not go to ``address``, or None when it may (globally routable).

    IPv6 forms that carry an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, NAT64
    ``64:ff9b::a.b.c.d``, 6to4 ``2002:aabb:ccdd::``, Teredo server and client) are judged
    by every IPv4 address they carry. Any other address must be ``is_global`` and not
    multicast, reserved, site-local or in :data:`_NOT_GLOBAL` (ranges that this Python's
    ``is_global`` may still count as global).
    """
    if isinstance(address, ipaddress.IPv6Address):
        form, inner = _embedded_ipv4(address)
        for ipv4 in inner:
            reason = address_refusal(ipv4)
            if reason is not None:
                return f"{form} address embedding {ipv4}, {reason}"
        if inner:
            return None
        if address.is_site_local:
            return "a site-local address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if address.is_reserved:
        return "a reserved address"
    if not address.is_global or any(address in net for net in _NOT_GLOBAL):
        return "not a globally routable address"
    return None


# A host name made only of numbers (decimal, 0-octal, 0x-hex) is no DNS name (no top-level
# domain is numeric) but may be an address as inet_aton reads them: 2130706433, 0177.0.0.1,
# 0x7f.0.0.1 and 127.1 all mean 127.0.0.1.
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)


def _numeric_host(host: str) -> bool:
    return all(_NUMERIC_LABEL.match(label) for label in host.removesuffix(".").split("."))


@dataclass(frozen=True)
class Target:
    """A callback URL, parsed, and the addresses its host resolved to (all allowed)."""

    url: httpx.URL
    host: str  # ASCII (IDNA) host name or IP literal, without brackets
    port: int
    addresses: tuple[IPAddress, ...] = ()


def _parse(url: str) -> Target:
    """Parse with httpx's parser (the one that would send the request) and check the
    scheme, the host and the port; resolves nothing."""
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
        port = parsed.port
    except (httpx.InvalidURL, ValueError, TypeError, UnicodeError) as exc:
        raise WebhookTargetError(f"callback_url: not a valid URL ({exc})") from exc
    if parsed.scheme not in ("http", "https"):
        raise WebhookTargetError(
            f"callback_url: scheme must be http or https, not {parsed.scheme!r}"
        )
    if not host:
        raise WebhookTargetError("callback_url: has no host")
    if port is not None and not 0 < port < 65536:
        raise WebhookTargetError(f"callback_url: port {port} is out of range")
    if _numeric_host(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise WebhookTargetError(
                f"callback_url: {host!r} is an ambiguous numeric host; write the IPv4 "
                "address as four decimal numbers"
            ) from None
    default_port = 443 if parsed.scheme == "https" else 80
    return Target(url=parsed, host=host, port=port or default_port)


def _resolve(host: str, port: int) -> tuple[IPAddress, ...]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError, ValueError) as exc:
        raise WebhookTargetError(f"callback_url: cannot resolve host {host!r}") from exc
    found: list[IPAddress] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    if not found:
        raise WebhookTargetError(f"callback_url: host {host!r} has no address")
    return tuple(found)


def resolve_target(url: str, *, allow_private: bool) -> Target:
    """Parse ``url``, resolve its host and check every address it resolves to.

    With ``allow_private`` any address is allowed (tests, private deployments); without,
    one refused address refuses the URL, so a name cannot mix a public and a private one.
    """
    target = _parse(url)
    addresses = _resolve(target.host, target.port)
    if not allow_private:
        for address in addresses:
            reason = address_refusal(address)
            if reason is not None:
                raise WebhookTargetError(
                    f"callback_url: {target.host} resolves to {address}, {reason} "
                    "(allowed only with BACKPROP_WEBHOOK_ALLOW_PRIVATE=true)"
                )
    return Target(target.url, target.host, target.port, addresses)


def check_target(url: str, *, allow_private: bool) -> None:
    """Refuse URLs that may not be called (submit time).

    Every address the host name resolves to is checked, so a name that resolves to
    127.0.0.1 is refused as the literal would be. Delivery checks again, as DNS may change,
    and connects to a checked address. With ``allow_private`` nothing is resolved here.
    """
    if allow_private:
        _parse(url)
    else:
        resolve_target(url, allow_private=False)


# -- one delivery --------------------------------------------------------------------------


def _request_url(target: Target, address: IPAddress) -> httpx.URL:
    """The URL to connect to: the checked address instead of the host, no userinfo."""
    return target.url.copy_with(host=str(address), username=None, password=None, fragment=None)


def _host_header(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    default_port = 443 if target.url.scheme == "https" else 80
    return host if target.port == default_port else f"{host}:{target.port}"


def post(
    target: Target,
    body: bytes,
    secret: str | None,
    delivery_id: str,
    *,
    timeout: float = 10.0,
    verify_tls: ssl.SSLContext | bool = True,
) -> int:
    """POST one attempt to one of ``target.addresses``; returns the HTTP status.

    Tries the checked addresses in order while connecting fails, and raises the last
    httpx error when none answers. Redirects are not followed (a 3xx is the status).
    Proxies from the environment are not used: the request goes to the checked address.
    """
    if not target.addresses:
        raise WebhookTargetError("callback_url: no checked address to deliver to")
    headers = delivery_headers(body, secret, delivery_id)
    headers["Host"] = _host_header(target)
    # Without credentials, the base Auth sends the request as it is (what httpx does for
    # auth=None too, as the request URL carries no userinfo).
    auth = httpx.Auth()
    if target.url.username or target.url.password:
        auth = httpx.BasicAuth(target.url.username, target.url.password)
    is_name = target.url.scheme == "https" and not _is_ip_literal(target.host)
    extensions = {"sni_hostname": target.host} if is_name else {}
    last: httpx.TransportError = httpx.ConnectError("no address answered")
    with httpx.Client(
        timeout=timeout, follow_redirects=False, trust_env=False, verify=verify_tls
    ) as client:
        for address in target.addresses:
            try:
                response = client.post(
                    _request_url(target, address),
                    content=body,
                    headers=headers,
                    auth=auth,
                    extensions=extensions,
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last = exc
                continue
            return response.status_code
    raise last


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
