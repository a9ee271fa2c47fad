"""A real service (uvicorn API + celery worker, SQLite, auth off) shared by a test module.

The e2e fixtures live in ``tests/e2e/conftest.py`` and are not visible here, so this is a
small fixture of its own on top of :func:`tests.e2e.stack.start_stack`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.stack import Stack, start_stack

SEED_NETWORK = {
    "input_dim": 2,
    "layers": [{"units": 2, "activation": "sigmoid"}, {"units": 2, "activation": "sigmoid"}],
    "initial_weights": [
        {"W": [[0.15, 0.25], [0.20, 0.30]], "b": [0.35, 0.35]},
        {"W": [[0.40, 0.50], [0.45, 0.55]], "b": [0.60, 0.60]},
    ],
}
SEED_TRAINING = {
    "loss": "mse",
    "optimizer": {"name": "sgd", "learning_rate": 0.5},
    "epochs": 1,
    "batch_size": 1,
    "shuffle": False,
    "seed": 0,
    "dtype": "float64",
}
SEED_X = [[0.05, 0.10]]
SEED_Y = [[0.01, 0.99]]
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
