"""A near-miss name in a request is a 422 whose item says what it meant, in ``msg`` and in
``ctx.did_you_mean`` (in-process app: request validation answers before any store)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from api.main import create_app
from api.schemas import ErrorOut
from core.settings import get_settings

NETWORK = {"input_dim": 2, "layers": [{"units": 1, "activation": "sigmoid"}]}


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FastAPI]:
    monkeypatch.setenv("BACKPROP_AUTH", "off")
    monkeypatch.setenv("BACKPROP_DATABASE_URL", f"sqlite:///{tmp_path / 'unused.db'}")
    get_settings.cache_clear()
    yield create_app()
    get_settings.cache_clear()


def _issues(app: FastAPI, method: str, path: str, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """The 422's items by their dotted ``loc``."""

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.request(method, path, **kwargs)

    resp = asyncio.run(call())
    assert resp.status_code == 422, resp.text
    body = ErrorOut.model_validate(resp.json(), strict=True)  # the documented shape
    assert isinstance(body.detail, list)
    return {".".join(map(str, i.loc)): i.model_dump(exclude_none=True) for i in body.detail}


def test_a_run_request_with_near_miss_names(app: FastAPI) -> None:
    body = {
        "dataset_id": "d",
        "network": {**NETWORK, "layers": [{"units": 1, "activaton": "sigmoid"},
                                          {"units": 1, "activation": "tahn"}]},
        "training": {"loss": "binary_crossentropi", "optimizer": "adamw", "epocs": 3},
        "priorty": 1,
    }  # fmt: skip
    issues = _issues(app, "POST", "/api/v1/runs", json=body)
    meant = {loc: issue["ctx"].get("did_you_mean") for loc, issue in issues.items()
             if "ctx" in issue}  # fmt: skip
    assert meant == {
        "body.network.layers.0.activaton": "activation",
        "body.network.layers.1.activation": "tanh",
        "body.training.loss": "binary_crossentropy",
        "body.training.optimizer": "adam",
        "body.training.epocs": "epochs",
        "body.priorty": "priority",
    }
    for loc, name in meant.items():
        assert issues[loc]["msg"].endswith(f"; did you mean '{name}'?"), issues[loc]
    # pydantic's own words stay in front, choices included.
    assert issues["body.network.layers.1.activation"]["msg"].startswith(
        "Input should be 'identity', 'sigmoid', 'tanh'"
    )
    assert issues["body.network.layers.0.activation"]["type"] == "missing"


def test_a_run_request_with_names_that_are_not_near_anything(app: FastAPI) -> None:
    body = {"dataset_id": "d", "network": NETWORK, "training": {"loss": "hinge"}}
    issue = _issues(app, "POST", "/api/v1/runs", json=body)["body.training.loss"]
    assert "did you mean" not in issue["msg"] and "did_you_mean" not in issue["ctx"]


def test_a_query_parameter_and_a_sweep_with_near_miss_names(app: FastAPI) -> None:
    # status repeats (?status=a&status=b): each value is checked at its index
    issues = _issues(app, "GET", "/api/v1/runs", params={"status": ["queued", "runing"]})
    issue = issues["query.status.1"]
    assert issue["ctx"]["did_you_mean"] == "running"
    assert issue["msg"].endswith("; did you mean 'running'?")
    for name, wrong, meant in (("sort", "val_los", "val_loss"), ("order", "dsc", "desc")):
        issue = _issues(app, "GET", "/api/v1/runs", params={name: wrong})[f"query.{name}"]
        assert issue["ctx"]["did_you_mean"] == meant, issue

    sweep = {
        "base": {"dataset_id": "d", "network": NETWORK},
        "search": {"type": "random", "parameters": {"training.epochs": [1]}},
        "metric": "val_acuracy",
        "max_concurent": 2,
    }
    meant = {loc: i["ctx"]["did_you_mean"]
             for loc, i in _issues(app, "POST", "/api/v1/sweeps", json=sweep).items()}  # fmt: skip
    assert meant == {"body.metric": "val_accuracy", "body.max_concurent": "max_concurrent"}
