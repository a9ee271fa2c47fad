"""CORS is off unless origins are configured (in-process app; no request reaches a store)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from api.main import create_app
from core.settings import get_settings

PREFLIGHT = {
    "Origin": "https://dashboard.example",
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "Authorization, Content-Type",
}


class _Client:
    """Sync calls into the app in-process (httpx's ASGI transport, no server)."""

    def __init__(self) -> None:
        self.app = create_app()

    def request(self, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
        async def call() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await client.request(method, path, headers=headers)

        return asyncio.run(call())

    def options(self, path: str, headers: dict[str, str]) -> httpx.Response:
        return self.request("OPTIONS", path, headers)

    def get(self, path: str, headers: dict[str, str]) -> httpx.Response:
        return self.request("GET", path, headers)


@pytest.fixture
def client_with(monkeypatch: pytest.MonkeyPatch) -> Iterator:  # type: ignore[type-arg]
    def make(origins: str | None) -> _Client:
        if origins is None:
            monkeypatch.delenv("BACKPROP_CORS_ORIGINS", raising=False)
        else:
            monkeypatch.setenv("BACKPROP_CORS_ORIGINS", origins)
        get_settings.cache_clear()
        return _Client()

    yield make
    get_settings.cache_clear()


def test_no_cors_headers_by_default(client_with) -> None:  # type: ignore[no-untyped-def]
    client = client_with(None)
    resp = client.options("/api/v1/runs", headers=PREFLIGHT)
    assert "access-control-allow-origin" not in resp.headers
    resp = client.get("/healthz", headers={"Origin": "https://dashboard.example"})
    assert "access-control-allow-origin" not in resp.headers


def test_configured_origins_are_allowed_and_others_are_not(client_with) -> None:  # type: ignore[no-untyped-def]
    client = client_with('["https://dashboard.example"]')
    resp = client.options("/api/v1/runs", headers=PREFLIGHT)
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == "https://dashboard.example"
    assert "authorization" in resp.headers["access-control-allow-headers"].lower()
    other = client.options("/api/v1/runs", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert other.headers.get("access-control-allow-origin") != "https://evil.example"
