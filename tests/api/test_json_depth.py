"""The JSON nesting limit: the byte scanner against a reference, and the middleware in-process.

The service's own routes are covered end to end in tests/e2e/test_bad_input.py; here a small
Starlette app that parses its body with ``json.loads`` (as the datasets route does) shows what
the middleware lets through and what it stops, and the real app shows it is registered.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from api.json_depth import DepthScanner, JSONDepthLimit
from api.main import create_app
from core.settings import get_settings


def reference_depth(text: str) -> tuple[int, bool]:
    """The deepest nesting of ``text``, char by char; and whether it is plainly not JSON.

    Not JSON: it closes more than it opened, or has a backslash outside a string. A parser
    stops there, before nesting any deeper, so what the scanner counts after it is moot.
    """
    depth = deepest = 0
    in_string = escaped = invalid = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
            invalid = invalid or depth < 0
        elif c == "\\":
            invalid = True
    return deepest, invalid


def scan(data: bytes, limit: int, cuts: list[int] | None = None) -> bool:
    """Feed ``data`` split at ``cuts``; True when it stays within ``limit``."""
    bounds = [0, *(cuts or []), len(data)]
    pieces = [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    scanner = DepthScanner(limit)
    return all(scanner.feed(p, more=i < len(pieces) - 1) for i, p in enumerate(pieces))


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"1", 0),
        (b"[]", 1),
        (b'{"a": [1, {"b": [[2]]}]}', 5),
        (b'{"a": "[[[[[[", "b": [1]}', 2),  # brackets in strings do not count
        (b'{"a": "say \\"[[[\\" ok", "b": 2}', 1),  # escaped quotes stay in the string
        (b'{"a": "ends in a backslash \\\\", "b": [[1]]}', 3),  # \\ ends before the quote
        (b'["\\\\\\"[[[", [2]]', 2),
    ],
)
def test_depth_is_counted_outside_strings_whatever_the_chunking(body: bytes, depth: int) -> None:
    assert reference_depth(body.decode())[0] == depth
    for cut in range(len(body) + 1):
        assert scan(body, depth, [cut])
        assert depth == 0 or not scan(body, depth - 1, [cut])
    assert scan(body, depth, list(range(1, len(body))))  # one byte at a time
    if depth:
        assert not scan(body, depth - 1, list(range(1, len(body))))


def test_scanner_agrees_with_a_reference_on_random_text() -> None:
    """Random bracket soup with strings full of brackets, escapes and multi-byte text."""
    rng = random.Random(14)
    outside = ["[", "]", "{", "}", ",", "1", '"']
    inside = ["[", "]", "{", "}", "a", "é", '\\"', "\\\\", "\\n", '"']
    checked = 0
    for _ in range(20_000):
        tokens, in_string = [], False
        for _ in range(rng.randint(0, 40)):
            token = rng.choice(inside if in_string else outside)
            in_string ^= token == '"'
            tokens.append(token)
        text = "".join(tokens)
        deepest, invalid = reference_depth(text)
        if invalid:
            continue
        checked += 1
        data = text.encode()
        limit = rng.randint(0, 6)
        cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randint(0, 5))))
        assert scan(data, limit, cuts) == (deepest <= limit), (text, cuts, limit)
    assert checked > 5_000


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le", "utf-32-be"])
def test_other_encodings_json_loads_accepts_are_scanned_as_text(encoding: str) -> None:
    # U+5B5B and U+2200 hold the bytes of "[" and '"' in UTF-16 and UTF-32.
    body = json.dumps({"a": "[[\u5b5b\u2200", "b": [[[1]]]}, ensure_ascii=False).encode(encoding)
    assert json.loads(body)["b"] == [[[1]]]
    for cuts in ([], list(range(1, len(body), 3))):
        assert scan(body, 4, cuts) and not scan(body, 3, cuts)


def test_a_hundred_thousand_levels_are_refused_in_one_chunk_or_many() -> None:
    deep = b'{"X": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert not scan(deep, 64)
    assert not scan(deep, 64, list(range(65_536, len(deep), 65_536)))
    assert scan(b"[" * 64 + b"]" * 64, 64) and not scan(b"[" * 65 + b"]" * 65, 64)


# -- the middleware ---------------------------------------------------------------------


async def _echo(request: Request) -> JSONResponse:
    body = await request.body()
    try:
        parsed = json.loads(body)
    except ValueError:
        return JSONResponse({"parsed": None, "bytes": len(body)}, status_code=422)
    return JSONResponse({"parsed": type(parsed).__name__, "bytes": len(body)})


def _call(app: object, body: bytes | AsyncIterator[bytes], headers: dict[str, str]
          ) -> httpx.Response:  # fmt: skip
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.post("/echo", content=body, headers=headers)

    return asyncio.run(go())


ECHO = JSONDepthLimit(Starlette(routes=[Route("/echo", _echo, methods=["POST"])]), max_depth=8)
JSON_HEADERS = {"content-type": "application/json"}


def test_middleware_refuses_deep_json_and_passes_the_rest() -> None:
    deep = b"[" * 9 + b"]" * 9
    resp = _call(ECHO, deep, JSON_HEADERS)
    assert resp.status_code == 400
    assert resp.json()["detail"] == (
        "the JSON body nests arrays/objects deeper than the limit of 8 levels "
        "(BACKPROP_MAX_JSON_DEPTH)"
    )
    assert _call(ECHO, b"[" * 8 + b"]" * 8, JSON_HEADERS).json() == {"parsed": "list", "bytes": 16}
    for ctype in ("application/problem+json", "Application/JSON; charset=utf-8", ""):
        assert _call(ECHO, deep, {"content-type": ctype}).status_code == 400, ctype
    # No content type: FastAPI parses the body as JSON, so it is scanned too.
    assert _call(ECHO, deep, {}).status_code == 400
    # Not JSON: not scanned (a CSV or a multipart upload may hold any bytes).
    resp = _call(ECHO, b"[[[[[[[[[[[[ a,b", {"content-type": "text/csv"})
    assert resp.status_code == 422 and resp.json() == {"parsed": None, "bytes": 16}


def test_middleware_refuses_a_streamed_body_and_drains_it() -> None:
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"X": '
        for i in range(50):
            sent.append(i)
            yield b"[" * 1000
        yield b"]" * 50_000 + b"}"

    resp = _call(ECHO, chunks(), JSON_HEADERS)
    assert resp.status_code == 400 and "8 levels" in resp.json()["detail"]
    assert len(sent) == 50  # the client got to send it all

    async def fine() -> AsyncIterator[bytes]:
        yield b'{"X": [[1, 2],'
        yield b' [3, 4]], "s": "[[[[[[[[[[[["}'

    assert _call(ECHO, fine(), JSON_HEADERS).json()["parsed"] == "dict"


@pytest.fixture
def service_app(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    monkeypatch.setenv("BACKPROP_MAX_JSON_DEPTH", "20")
    monkeypatch.setenv("BACKPROP_AUTH", "off")  # with a key to check, 401 comes first
    get_settings.cache_clear()
    yield create_app()
    get_settings.cache_clear()


def test_the_service_app_registers_the_limit_from_its_setting(service_app: object) -> None:
    """Refused before any route, dependency or store is reached (none runs in this test)."""
    deep = b'{"X": ' + b"[" * 100_000 + b"]" * 100_000 + b', "y": [1]}'
    for path in ("/api/v1/datasets", "/api/v1/runs", "/api/v1/sweeps", "/api/v1/runs/x/predict"):

        async def go(path: str = path) -> httpx.Response:
            transport = httpx.ASGITransport(app=service_app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                return await client.post(path, content=deep, headers=JSON_HEADERS)

        resp = asyncio.run(go())
        assert resp.status_code == 400, (path, resp.text)
        assert "limit of 20 levels (BACKPROP_MAX_JSON_DEPTH)" in resp.json()["detail"]
