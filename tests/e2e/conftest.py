"""Fixtures that run the real service: one stack per database backend, shared by a module."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.e2e.stack import Stack, start_stack

E2E_ENV = {
    "BACKPROP_MAX_UPLOAD_BYTES": "1000000",
    "BACKPROP_MAX_DATASET_CELLS": "100000",
    "BACKPROP_MAX_EPOCHS": "1000000",
    "BACKPROP_LEASE_S": "10",
}


@pytest.fixture(scope="session")
def e2e_pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database for the service processes of the e2e tests."""
    name = f"backprop_e2e_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = pg_server_url.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def stack_on(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    *,
    workers: int = 1,
    **env: str,
) -> Iterator[Stack]:
    """A stack on the database named by ``request.param`` (``sqlite`` or ``postgresql``),
    with ``E2E_ENV`` and ``env``; stopped when the generator is closed."""
    workdir: Path = tmp_path_factory.mktemp(f"stack-{name}-{request.param}")
    if request.param == "sqlite":
        db_url = f"sqlite:///{workdir / 'backprop.db'}"
    else:
        db_url = request.getfixturevalue("e2e_pg_url")
    stack = start_stack(db_url, workdir, workers=workers, **{**E2E_ENV, **env})
    yield stack
    stack.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    yield from stack_on(request, tmp_path_factory, "main")


@pytest.fixture(autouse=True)
def _no_runs_left_behind(request: pytest.FixtureRequest) -> Iterator[None]:
    """A failed test must not leave long runs that block the next tests' workers."""
    yield
    if "stack" not in request.fixturenames:
        return
    stack: Stack = request.getfixturevalue("stack")
    if stack.env.get("BACKPROP_AUTH") == "on":
        return  # anonymous requests see nothing there; those tests clean up themselves
    for status in ("queued", "running"):
        body = stack.client.get("/api/v1/runs", params={"status": status, "limit": 500}).json()
        for run in body["items"]:
            stack.client.post(f"/api/v1/runs/{run['id']}/cancel")
    for run in stack.client.get("/api/v1/runs", params={"status": "running"}).json()["items"]:
        stack.wait_done(run["id"], timeout=30)
