"""Database fixtures shared by every test package: real SQLite files and real PostgreSQL.

PostgreSQL must be reachable (``BACKPROP_TEST_PG_ADMIN_URL``, default
``postgresql://postgres@127.0.0.1:5432/postgres``); when it is not, the tests that need it
FAIL — they are never skipped.

Fixtures:

- ``pg_server_url`` (session): an admin URL of the server, used to create databases.
- ``pg_url`` (session): a fresh, empty database ``backprop_test_<hex>``, dropped at the end.
- ``pg_empty_url`` (function): a fresh, empty database of its own, for tests that migrate
  up and down.
- ``sqlite_url`` (function): ``sqlite:///<tmp_path>/test.db`` (the file does not exist yet).
- ``db_url`` (function, parametrized ``sqlite`` / ``postgresql``): a database migrated to
  head with no rows. SQLite gets a new file per test; PostgreSQL shares one migrated
  database per session whose tables are truncated before each test.
- ``service_settings`` (function, on ``db_url``): the process's settings pointed at that
  database and at a task queue of its own on the local Redis, for service code called
  in-process (the dispatcher, the worker's run lifecycle).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from psycopg import sql
from sqlalchemy.engine import make_url

from core.db.migrate import upgrade
from core.db.models import Base
from core.db.session import set_pooling
from core.settings import Settings, get_settings

PG_ADMIN_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


def _libpq_url(url: str, database: str | None = None) -> str:
    """A URL psycopg accepts (no ``+driver``), optionally pointing at another database."""
    parsed = make_url(url).set(drivername="postgresql")
    if database is not None:
        parsed = parsed.set(database=database)
    return parsed.render_as_string(hide_password=False)


def _connect_admin(url: str) -> psycopg.Connection:
    return psycopg.connect(_libpq_url(url), autocommit=True, connect_timeout=5)


def _create_database(server_url: str) -> str:
    name = f"backprop_test_{uuid.uuid4().hex[:16]}"
    with _connect_admin(server_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return _libpq_url(server_url, database=name)


def _drop_database(server_url: str, url: str) -> None:
    name = make_url(url).database
    with _connect_admin(server_url) as conn:
        # FORCE ends the connections still pooled by cached engines (PostgreSQL 13+).
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    """Admin URL of the test PostgreSQL server (falls back to its database ``test``)."""
    url = os.environ.get("BACKPROP_TEST_PG_ADMIN_URL", PG_ADMIN_DEFAULT)
    errors: list[str] = []
    for candidate in (url, _libpq_url(url, database="test")):
        try:
            with _connect_admin(candidate):
                return candidate
        except psycopg.OperationalError as e:
            errors.append(f"{make_url(candidate).render_as_string()}: {str(e).strip()}")
    pytest.fail(
        "PostgreSQL is required for these tests but is unreachable. Start it or set "
        "BACKPROP_TEST_PG_ADMIN_URL to an admin URL. Tried:\n  " + "\n  ".join(errors),
        pytrace=False,
    )


@pytest.fixture(scope="session")
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh empty PostgreSQL database for the whole session (``postgresql://`` URL)."""
    url = _create_database(pg_server_url)
    yield url
    _drop_database(pg_server_url, url)


@pytest.fixture
def pg_empty_url(pg_server_url: str) -> Iterator[str]:
    """A fresh empty PostgreSQL database for one test."""
    url = _create_database(pg_server_url)
    yield url
    _drop_database(pg_server_url, url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite database file in the test's temporary folder."""
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture(scope="session")
def pg_migrated_url(pg_server_url: str) -> Iterator[str]:
    """A PostgreSQL database migrated to head once per session (shared; see ``db_url``)."""
    url = _create_database(pg_server_url)
    upgrade(url)
    yield url
    _drop_database(pg_server_url, url)


def _truncate_all(url: str) -> None:
    tables = [t.name for t in Base.metadata.sorted_tables]
    with psycopg.connect(_libpq_url(url), autocommit=True, connect_timeout=5) as conn:
        # A session an earlier test leaked "idle in transaction" would block TRUNCATE.
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND state LIKE 'idle in transaction%'"
        )
        conn.execute("SET lock_timeout = '10s'")
        conn.execute(
            sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in tables)
            )
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database migrated to head and empty, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'test.db'}"
        upgrade(url)
        return url
    url = request.getfixturevalue("pg_migrated_url")
    _truncate_all(url)
    return url


REDIS_URL = os.environ.get("BACKPROP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def service_settings(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The process's settings for ``db_url`` (SQLite and PostgreSQL) and a fresh queue name;
    the queue's Redis keys are removed afterwards."""
    queue = f"test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("BACKPROP_DATABASE_URL", db_url)
    monkeypatch.setenv("BACKPROP_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("BACKPROP_TASK_QUEUE", queue)
    get_settings.cache_clear()
    set_pooling(True)  # drops engines made for other URLs
    yield get_settings()
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"backprop:*:{queue}"))
    if keys:
        client.delete(*keys)
    get_settings.cache_clear()
    set_pooling(True)
