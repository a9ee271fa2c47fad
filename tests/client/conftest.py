"""A real service (uvicorn API + celery worker, SQLite, auth off) shared by a test module.

The e2e fixtures live in ``tests/e2e/conftest.py`` and are not visible here, so this is a
small fixture of its own on top of :func:`tests.e2e.stack.start_stack`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import Stack, start_stack
from tests.seed import SEED_NETWORK, SEED_TRAINING, SEED_X, SEED_Y  # noqa: F401 (re-exported)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Start the service on a free loopback port with a fresh SQLite database; stop it after."""
    workdir = tmp_path_factory.mktemp("client-stack")
    stack = start_stack(
        f"sqlite:///{workdir / 'backprop.db'}",
        workdir,
        BACKPROP_AUTH="off",
        BACKPROP_MAX_EPOCHS="1000000",
    )
    yield stack
    for status in ("queued", "running"):
        body = stack.client.get("/api/v1/runs", params={"status": status, "limit": 500}).json()
        for run in body["items"]:
            stack.client.post(f"/api/v1/runs/{run['id']}/cancel")
    stack.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The service for one test module."""
    yield from running_stack(tmp_path_factory)
