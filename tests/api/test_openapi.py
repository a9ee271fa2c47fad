"""The OpenAPI document describes every operation and only the errors it can answer, each
with the one error body, ``ErrorOut``; and the error answers the app really gives fit that
body (in-process app, no request reaches a store)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DataError, OperationalError

from api.main import create_app
from api.schemas import ERROR_DESCRIPTIONS, ErrorOut
from core.settings import get_settings

HTTP_METHODS = {"get", "put", "post", "delete", "patch"}
PROBES = {"/healthz", "/readyz", "/metrics"}
ERROR_OUT = "#/components/schemas/ErrorOut"
# The operations that create runs: the only ones the active-run limit (429) applies to.
CREATES_RUNS = {
    ("post", "/api/v1/runs"),
    ("post", "/api/v1/sweeps"),
    # A sweep's refit, its added trials and its retried ones are new runs too.
    ("post", "/api/v1/sweeps/{sweep_id}/refit"),
    ("post", "/api/v1/sweeps/{sweep_id}/extend"),
    ("post", "/api/v1/sweeps/{sweep_id}/retry-failed"),
}
# /readyz answers 503 with its checks (HealthOut, API.md §1), not with an error body.
NOT_ERROR_OUT = {("get", "/readyz", "503")}
MAX_REQUEST_BYTES = 4096

Operations = list[tuple[str, str, dict[str, Any]]]


@pytest.fixture
def make_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[..., FastAPI]]:
    def make(auth: bool = False) -> FastAPI:
        monkeypatch.setenv("BACKPROP_AUTH", "on" if auth else "off")
        monkeypatch.setenv("BACKPROP_DATABASE_URL", f"sqlite:///{tmp_path / 'unused.db'}")
        monkeypatch.setenv("BACKPROP_MAX_REQUEST_BYTES", str(MAX_REQUEST_BYTES))
        monkeypatch.delenv("BACKPROP_CORS_ORIGINS", raising=False)
        get_settings.cache_clear()
        return create_app()

    yield make
    get_settings.cache_clear()


@pytest.fixture
def spec(make_app: Callable[..., FastAPI]) -> dict[str, Any]:
    return make_app().openapi()


def _operations(spec: dict[str, Any]) -> Operations:
    """(method, path, operation) of the API's own operations and the probes."""
    return [
        (method, path, op)
        for path, item in spec["paths"].items()
        if path.startswith("/api/v1/") or path in PROBES
        for method, op in item.items()
        if method in HTTP_METHODS
    ]


def _errors(op: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {code: resp for code, resp in op["responses"].items() if code[0] in "45"}


def test_every_operation_has_a_summary_and_a_description(spec: dict[str, Any]) -> None:
    ops = _operations(spec)
    assert len(ops) >= 23  # 20 under /api/v1, 3 probes
    for method, path, op in ops:
        where = f"{method.upper()} {path}"
        summary = (op.get("summary") or "").strip()
        assert summary, f"{where} has no summary"
        # FastAPI's fallback is the function's name in title case: a summary must be written.
        default = op["operationId"].split("_api_v1")[0].replace("_", " ").title()
        assert summary != default and "_" not in summary, f"{where}: summary {summary!r}"
        assert (op.get("description") or "").strip(), f"{where} has no description"


def test_every_error_response_is_an_error_out(spec: dict[str, Any]) -> None:
    for method, path, op in _operations(spec):
        for code, resp in _errors(op).items():
            where = f"{method.upper()} {path} {code}"
            if (method, path, code) in NOT_ERROR_OUT:
                continue
            ref = resp.get("content", {}).get("application/json", {}).get("schema", {})
            assert ref == {"$ref": ERROR_OUT}, f"{where}: {resp}"
            description = resp.get("description", "")
            assert description and description != "Additional Response", where
    # FastAPI's own 422 body is documented nowhere: every 422 says ErrorOut.
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    detail = spec["components"]["schemas"]["ErrorOut"]["properties"]["detail"]
    assert {"type": "string"} in detail["anyOf"]


def test_error_statuses_fit_the_operation(spec: dict[str, Any]) -> None:
    for method, path, op in _operations(spec):
        where = f"{method.upper()} {path}"
        codes = {int(code) for code in _errors(op)}
        assert codes <= set(ERROR_DESCRIPTIONS), f"{where}: {codes}"
        has_id = "{" in path
        has_body = "requestBody" in op
        if (method, path) not in CREATES_RUNS:
            assert 429 not in codes, f"{where} cannot pass the active-run limit"
        if not has_id:
            assert 404 not in codes and 409 not in codes, f"{where} looks up no id"
        if not has_body:
            assert 413 not in codes, f"{where} reads no body"
        if (method, path) != ("post", "/api/v1/datasets"):
            assert 415 not in codes, f"{where} takes one content type"
        if path in PROBES:
            assert codes <= {503}, f"{where}: {codes}"
            continue
        # Every API route checks the key and reads the database; every one has parameters.
        assert {401, 422, 503} <= codes, f"{where}: {codes}"
        if has_body:
            assert {400, 413} <= codes, f"{where}: {codes}"
        if method in ("get", "delete") and not has_id:  # a list: a bad cursor is 400
            assert 400 in codes, f"{where}: {codes}"
    created = {(m, p) for m, p, op in _operations(spec) if "429" in op["responses"]}
    assert created == CREATES_RUNS


# -- the bodies of real error answers -----------------------------------------------------


def _call(app: FastAPI, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(call())


def _error_body(resp: httpx.Response, status: int) -> ErrorOut:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"] == "application/json", resp.headers
    return ErrorOut.model_validate(resp.json(), strict=True)


VALID_RUN = {
    "dataset_id": "d",
    "network": {"input_dim": 2, "layers": [{"units": 1, "activation": "sigmoid"}]},
}


def test_validation_errors_are_lists_of_issues(make_app: Callable[..., FastAPI]) -> None:
    app = make_app()
    missing = _error_body(_call(app, "POST", "/api/v1/runs", json={}), 422)
    assert isinstance(missing.detail, list) and missing.detail[0].loc[0] == "body"
    over = _error_body(_call(app, "POST", "/api/v1/runs", json={**VALID_RUN, "priority": 10}), 422)
    assert isinstance(over.detail, list) and over.detail[0].ctx == {"le": "9"}
    bad_id = _error_body(_call(app, "GET", "/api/v1/runs/a%00b"), 422)
    assert isinstance(bad_id.detail, list) and bad_id.detail[0].loc == ["path", "run_id"]
    # The JSON upload validates its body itself, and answers the same shape.
    upload = _call(app, "POST", "/api/v1/datasets", json={"X": "not rows", "y": [1]})
    issues = _error_body(upload, 422).detail
    assert isinstance(issues, list) and issues[0].loc == ["X"]


def test_other_errors_are_sentences(make_app: Callable[..., FastAPI]) -> None:
    app = make_app()
    headers = {"Content-Type": "application/json"}
    too_deep = b"[" * 100 + b"]" * 100
    too_large = b" " * (MAX_REQUEST_BYTES + 1)
    nul_name = json.dumps({"name": "a\x00", "X": [[1.0]], "y": [1.0]})
    text = {"Content-Type": "text/plain"}
    cases: list[tuple[int, str, str, dict[str, Any]]] = [
        (400, "POST", "/api/v1/runs", {"content": b"{not json", "headers": headers}),
        (400, "POST", "/api/v1/runs", {"content": too_deep, "headers": headers}),
        (400, "POST", "/api/v1/runs", {"json": VALID_RUN, "headers": {"Idempotency-Key": ""}}),
        (413, "POST", "/api/v1/runs", {"content": too_large, "headers": headers}),
        (400, "POST", "/api/v1/datasets", {"content": b"{not json", "headers": headers}),
        (415, "POST", "/api/v1/datasets", {"content": b"x", "headers": text}),
        (422, "POST", "/api/v1/datasets", {"content": nul_name, "headers": headers}),
    ]
    for status, method, path, kwargs in cases:
        body = _error_body(_call(app, method, path, **kwargs), status)
        assert isinstance(body.detail, str) and body.detail, (status, path, body)


def test_missing_key_is_an_error_out(make_app: Callable[..., FastAPI]) -> None:
    resp = _call(make_app(auth=True), "GET", "/api/v1/runs")
    assert "API key" in str(_error_body(resp, 401).detail)
    assert resp.headers["www-authenticate"] == "Bearer"


def test_database_errors_are_error_outs(make_app: Callable[..., FastAPI]) -> None:
    """The app's handlers for a database that is away (503) or refuses a value (422)."""
    app = make_app()

    def unavailable() -> None:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))

    def refused() -> None:
        raise DataError("INSERT", {}, ValueError("invalid byte sequence"))

    app.add_api_route("/test/unavailable", unavailable)
    app.add_api_route("/test/refused", refused)
    resp = _call(app, "GET", "/test/unavailable")
    assert isinstance(_error_body(resp, 503).detail, str)
    assert resp.headers["retry-after"].isdigit()
    assert isinstance(_error_body(_call(app, "GET", "/test/refused"), 422).detail, str)
