"""DirectRead: a row read from the driver's cursor is the row SQLAlchemy gives, and a
driver's error comes out as SQLAlchemy's, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    Table,
    bindparam,
    create_engine,
    insert,
    pool,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError, OperationalError

from core.db.direct_read import DirectRead
from core.db.models import Run, RunTransition
from core.db.session import normalize_url
from core.runs import timeline

T0 = datetime(2026, 12, 3, 1, 2, 3, 456789, tzinfo=UTC)
RUNS = Run.__table__


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    made = create_engine(normalize_url(db_url), poolclass=pool.QueuePool, pool_size=1)
    yield made.execution_options(isolation_level="AUTOCOMMIT")
    made.dispose()


def _record_statement(dialect: str) -> Any:
    """Every column of ``runs`` and the run's timeline, as a poll reads them."""
    return select(*RUNS.columns, timeline.aggregated(dialect)).where(
        RUNS.c.id == bindparam("run_id")
    )


def _store_run(engine: Engine, run_id: str) -> None:
    """A run with a value of each kind: times, JSON, floats, NULLs, booleans, a timeline."""
    with engine.begin() as conn:
        conn.execute(insert(Run).values(
            id=run_id, owner="me", name="ünïcode ✓", dataset_id="d", status="succeeded",
            network={"layers": [{"units": 2, "activation": "sigmoid"}]},
            training={"loss": "mse", "epochs": 3, "optimizer": {"learning_rate": 0.5}},
            epoch=3, epochs=3, metrics={"loss": 0.125, "val_loss": None}, loss=0.125,
            accuracy=None, error=None, cancel_requested=False, held=True, attempts=2,
            created_at=T0, started_at=T0 + timedelta(seconds=1),
            finished_at=T0 + timedelta(seconds=2.5), tags={"stage": "a"}, notes=None,
        ))  # fmt: skip
        for n, status in enumerate(("queued", "running", "succeeded")):
            conn.execute(insert(RunTransition).values(
                run_id=run_id, status=status, at=T0 + timedelta(seconds=n),
                reason=f"step {n}", attempt=n, worker=None if n == 0 else "host:1",
            ))  # fmt: skip


def test_a_row_is_what_sqlalchemy_gives_first_and_later(engine: Engine) -> None:
    _store_run(engine, "r1")
    _store_run(engine, "r2")
    stmt = _record_statement(engine.dialect.name)
    read = DirectRead(_record_statement)
    for run_id in ("r1", "r2", "r1"):  # the second and third use the learnt processors
        with engine.connect() as conn:
            direct = read.first(conn, {"run_id": run_id})
            expected = dict(conn.execute(stmt, {"run_id": run_id}).one()._mapping)
        assert direct == expected
        assert direct is not None
        assert [type(direct[k]) for k in expected] == [type(v) for v in expected.values()]
    assert direct["finished_at"] == T0 + timedelta(seconds=2.5)
    assert direct["finished_at"].utcoffset() == timedelta(0)
    assert direct["network"]["layers"][0]["units"] == 2 and direct["name"] == "ünïcode ✓"
    assert [item["status"] for item in timeline.from_aggregate(direct["timeline"])] == [
        "queued", "running", "succeeded",
    ]  # fmt: skip


def test_no_row_is_none(engine: Engine) -> None:
    with engine.connect() as conn:
        assert DirectRead(_record_statement).first(conn, {"run_id": "x"}) is None


def test_a_driver_error_comes_out_as_sqlalchemys(engine: Engine) -> None:
    missing = Table("no_such_table", MetaData(), Column("id", Integer))
    read = DirectRead(lambda _: select(missing.c.id).where(missing.c.id == bindparam("id")))
    with engine.connect() as conn, pytest.raises(DBAPIError, match="no_such_table"):
        read.first(conn, {"id": 1})


def test_a_connection_the_server_dropped_is_invalidated_and_the_next_one_works(
    pg_migrated_url: str,
) -> None:
    """As when PostgreSQL restarts under a poll: SQLAlchemy's OperationalError (the API's
    503), and the pool then hands out a live connection."""
    engine = create_engine(normalize_url(pg_migrated_url), pool_size=1).execution_options(
        isolation_level="AUTOCOMMIT"
    )
    try:
        read = DirectRead(_record_statement)
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
        admin = create_engine(normalize_url(pg_migrated_url), poolclass=pool.NullPool)
        with admin.connect() as other:
            assert other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        admin.dispose()
        with engine.connect() as conn:
            with pytest.raises(OperationalError):
                read.first(conn, {"run_id": "x"})
            assert conn.invalidated
        with engine.connect() as conn:
            assert read.first(conn, {"run_id": "x"}) is None
    finally:
        engine.dispose()


def test_a_literal_in_the_statement_is_bound_as_sqlalchemy_binds_it(engine: Engine) -> None:
    _store_run(engine, "r1")
    read = DirectRead(
        lambda dialect: select(RUNS.c.id, RUNS.c.finished_at).where(
            RUNS.c.id == bindparam("run id.0"), RUNS.c.status == "succeeded", RUNS.c.epoch > 2
        )
    )
    with engine.connect() as conn:  # a name the dialect escapes, and literals bound for us
        assert read.first(conn, {"run id.0": "r1"}) == {
            "id": "r1", "finished_at": T0 + timedelta(seconds=2.5),
        }  # fmt: skip


def test_only_an_autocommit_connection_is_read(db_url: str) -> None:
    """The fallback runs the statement again: inside a transaction that the error aborted,
    it would fail for another reason."""
    plain = create_engine(normalize_url(db_url), poolclass=pool.NullPool)
    try:
        with plain.connect() as conn, pytest.raises(ValueError, match="autocommit"):
            DirectRead(_record_statement).first(conn, {"run_id": "x"})
    finally:
        plain.dispose()
