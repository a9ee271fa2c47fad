"""What a predict through a model name costs the database, on SQLite and PostgreSQL (the
app in-process, real databases): one statement, as a run's own predict, one that the
database answers from indexes alone (its plan has no table scan, with scans discouraged on
PostgreSQL so that small tables do not hide a missing index)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import Engine, event, text

from api.main import create_app
from api.routes.registry import CURRENT_RUN, VERSION_RUN
from core.db.models import Dataset, ModelArtifact, Run
from core.db.session import get_engine, get_sessionmaker
from core.engine import Network
from core.engine.artifacts import save_model
from core.settings import Settings, get_settings

NETWORK = {"input_dim": 2, "layers": [{"units": 3, "activation": "tanh"},
                                      {"units": 1, "activation": "identity"}]}  # fmt: skip
RUN_ID = "5eed0000-0000-4000-8000-000000000001"
DATASET_ID = "5eed0000-0000-4000-8000-000000000002"
INPUTS = [[0.5, -1.0], [2.0, 0.25]]


@pytest.fixture
def app_with_a_run(service_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("BACKPROP_AUTH", "off")
    get_settings.cache_clear()
    net = Network.from_spec(NETWORK, seed=4)
    with get_sessionmaker()() as db:
        db.add(
            Dataset(
                id=DATASET_ID,
                owner="default",
                name="d",
                n_samples=1,
                n_features=2,
                n_targets=1,
                task="regression",
                sha256="0" * 64,
                size_bytes=1,
                data=b"",
            )
        )
        db.flush()
        db.add(
            Run(
                id=RUN_ID,
                owner="default",
                dataset_id=DATASET_ID,
                network=NETWORK,
                training={"epochs": 1},
                status="succeeded",
                epoch=1,
                epochs=1,
                metrics={"loss": 0.5},
                enqueued_at=None,
            )
        )
        db.flush()
        db.add(ModelArtifact(run_id=RUN_ID, data=save_model(net), epoch=1))
        db.commit()  # fmt: skip
    yield create_app(), net.predict(np.array(INPUTS))


def _statements_of(app: Any, requests: list[tuple[str, str, Any]]) -> list[list[str]]:
    """The SQL statements each request ran (its answer checked to be a success)."""
    seen: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    async def scenario() -> list[list[str]]:
        per_request = []
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                for method, path, body in requests:
                    seen.clear()
                    resp = await client.request(method, path, json=body)
                    assert resp.status_code < 300, resp.text
                    per_request.append(list(seen))
        return per_request

    # On every engine: the routes use the pooled one and its autocommit twin.
    event.listen(Engine, "before_cursor_execute", note)
    try:
        return asyncio.run(scenario())
    finally:
        event.remove(Engine, "before_cursor_execute", note)


def test_a_model_predict_runs_one_statement_as_a_run_predict_does(app_with_a_run: Any) -> None:
    app, expected = app_with_a_run
    body = {"inputs": INPUTS}
    run_path, model_path = f"/api/v1/runs/{RUN_ID}/predict", "/api/v1/models/m/predict"
    statements = _statements_of(app, [
        ("PUT", "/api/v1/models/m", {"run_id": RUN_ID}),
        ("POST", run_path, body),  # loads the model into the cache
        ("POST", run_path, body),
        ("POST", model_path, body),
        ("POST", f"{model_path}?version=1", body),
    ])  # fmt: skip
    for made in statements[2:]:
        assert len(made) == 1, made
    # The name's lookup is the one statement: the run's row is not read again.
    for made in statements[3:]:
        assert "registered_models" in made[0] and "model_versions" in made[0], made


def test_the_name_resolves_through_indexes_only(app_with_a_run: Any) -> None:
    params = {"owner": "default", "name": "m", "version": 1}
    for stmt in (CURRENT_RUN, VERSION_RUN):
        engine = get_engine()
        with engine.connect() as conn:
            bound = stmt.params(**params)
            sql = str(bound.compile(engine, compile_kwargs={"literal_binds": True}))
            if engine.dialect.name == "postgresql":
                conn.execute(text("SET enable_seqscan = off"))
                plan = "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {sql}")))
                assert "Seq Scan" not in plan, plan
            else:
                rows = conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")).all()
                plan = "\n".join(str(r[-1]) for r in rows)
                assert all(line.startswith("SEARCH") for line in plan.splitlines()), plan
            assert "registered_models" in plan and "model_versions" in plan, plan


def test_the_model_answers_what_the_stored_network_computes(app_with_a_run: Any) -> None:
    app, expected = app_with_a_run

    async def scenario() -> dict[str, Any]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                assert (
                    await client.put("/api/v1/models/m", json={"run_id": RUN_ID})
                ).status_code == 201
                resp = await client.post("/api/v1/models/m/predict", json={"inputs": INPUTS})
                return dict(resp.json())

    answer = asyncio.run(scenario())
    assert (answer["model"], answer["version"], answer["run_id"]) == ("m", 1, RUN_ID)
    np.testing.assert_array_equal(np.array(answer["outputs"]), expected)
