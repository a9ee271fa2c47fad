"""Bearer API-key authentication: who is asking, for every resource route.

With ``BACKPROP_AUTH=off`` every request acts as the owner ``default`` (allowed only
while the API listens on loopback; see cli/main.py). Key lookups are cached briefly per
process so that status polling does not cost a database round trip per request; a
revoked key stops working within ``BACKPROP_AUTH_CACHE_S``.
"""

from __future__ import annotations

import time
from threading import Lock
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from core.keys import Principal, resolve_key
from core.settings import Settings, get_settings

ANONYMOUS = Principal(owner="default", key_id=None)

bearer = HTTPBearer(
    auto_error=False,
    description="An API key from `backprop keys create --owner NAME`.",
)


class _KeyCache:
    def __init__(self) -> None:
        self._items: dict[str, tuple[float, Principal | None]] = {}
        self._lock = Lock()

    def get(self, key: str, ttl: float) -> tuple[bool, Principal | None]:
        with self._lock:
            hit = self._items.get(key)
        if hit is not None and time.monotonic() - hit[0] < ttl:
            return True, hit[1]
        return False, None

    def put(self, key: str, principal: Principal | None) -> None:
        with self._lock:
            if len(self._items) > 10_000:
                self._items.clear()
            self._items[key] = (time.monotonic(), principal)


_cache = _KeyCache()


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(401, detail=message, headers={"WWW-Authenticate": "Bearer"})


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    settings: Settings = get_settings()
    if not settings.auth:
        return ANONYMOUS
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
    key = credentials.credentials
    found, principal = _cache.get(key, settings.auth_cache_s)
    if not found:
        principal = await run_in_threadpool(resolve_key, key)
        _cache.put(key, principal)
    if principal is None:
        raise _unauthorized("invalid or revoked API key")
    request.state.owner = principal.owner
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
