"""Engine and session factory. One engine per process and URL."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import Engine, NullPool, create_engine, event
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings

logger = logging.getLogger(__name__)


def normalize_url(url: str) -> str:
    """Let plain ``postgresql://`` URLs use psycopg 3 (SQLAlchemy's default is psycopg2)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


# A process that forks workers (Celery's main process) must hold no pooled connection at
# fork time: a child would share its socket with the parent. There, every connection is
# opened and closed per use (NullPool); see workers.lifecycle.
_pooling = True


def set_pooling(enabled: bool) -> None:
    """Pool connections in this process (or not), dropping the engines made so far."""
    global _pooling
    _pooling = enabled
    for cached in (
        get_engine,
        get_autocommit_engine,
        get_sessionmaker,
        get_autocommit_sessionmaker,
    ):
        cached.cache_clear()


@lru_cache(maxsize=8)
def get_engine(url: str | None = None) -> Engine:
    return _make_engine(url, pooled=_pooling)


# Engines that pool even in a process that forks (see get_process_engine), by pid and URL.
_process_engines: dict[tuple[int, str], Engine] = {}
_process_engines_lock = threading.Lock()


def get_process_engine(url: str | None = None) -> Engine:
    """A small pooled engine for this process only, even where the process forks.

    For a thread of Celery's main process that works often (the dispatcher), where opening a
    connection per use costs more than the work. A forked child inherits the parent's
    entries in ``_process_engines``: it never uses them (the key holds the pid) and never
    closes them (they stay referenced, and pool processes end with ``os._exit``), so the
    parent's sessions are not disturbed. SQLite pools nothing here: an open SQLite file must
    not cross a fork, and opening one is cheap.
    """
    resolved = normalize_url(url or get_settings().database_url)
    key = (os.getpid(), resolved)
    with _process_engines_lock:
        engine = _process_engines.get(key)
        if engine is None:
            pooled = not resolved.startswith("sqlite")
            engine = _process_engines[key] = _make_engine(url, pooled=pooled, pool_size=2)
    return engine


def _make_engine(url: str | None, *, pooled: bool, pool_size: int | None = None) -> Engine:
    settings = get_settings()
    url = normalize_url(url or settings.database_url)
    if url.startswith("sqlite"):
        # Several processes (api, workers) share the file: WAL lets readers go on while
        # one writes, and the busy timeout makes writers wait instead of failing.
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            **({} if pooled else {"poolclass": NullPool}),
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    # No server-side prepared statements: a statement cache tied to a connection is one
    # more thing that goes wrong when worker processes fork or die mid-transaction.
    # No pre-ping either (a round trip per checkout): a connection broken by a database
    # restart fails its statement, the pool then drops all of them, workers retry
    # (retry_transient) and the API answers that one request with 503.
    size = pool_size or settings.db_pool_size
    pooling: dict[str, Any] = (
        {"pool_size": size, "max_overflow": size} if pooled else {"poolclass": NullPool}
    )
    return create_engine(
        url,
        **pooling,
        connect_args={"prepare_threshold": None},
    )


@lru_cache(maxsize=8)
def get_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@lru_cache(maxsize=8)
def get_autocommit_engine(url: str | None = None) -> Engine:
    """The engine (same pool) in autocommit: each statement commits on its own, with no
    BEGIN/COMMIT around it.

    For statements that are each complete by themselves: a status poll, a metric list, and
    the worker's per-epoch writes, which are ordered so that stopping between any two is
    safe (see workers/runner.py). Anything that needs several statements to hold together
    uses :func:`get_sessionmaker` or a connection of :func:`get_engine`.
    """
    return get_engine(url).execution_options(isolation_level="AUTOCOMMIT")


@lru_cache(maxsize=8)
def get_autocommit_sessionmaker(url: str | None = None) -> sessionmaker[Session]:
    """Sessions on :func:`get_autocommit_engine` (reads only)."""
    return sessionmaker(bind=get_autocommit_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = get_sessionmaker(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


T = TypeVar("T")

# Errors that mean "the database is away for a moment", not "this statement is wrong".
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError)


def retry_transient(fn: Callable[[], T], *, give_up_after_s: float = 120.0, what: str = "") -> T:
    """Run ``fn`` (a whole short transaction) again while the database is unreachable.

    Backs off from 0.2 s to 5 s between tries and gives up after ``give_up_after_s``.
    ``fn`` must be safe to repeat: its transaction either committed or rolled back.
    """
    deadline = time.monotonic() + give_up_after_s
    delay = 0.2
    while True:
        try:
            return fn()
        except TRANSIENT_ERRORS as exc:
            if time.monotonic() + delay > deadline:
                raise
            logger.warning("database unavailable%s (%s); retrying in %.1f s",
                           f" while {what}" if what else "", type(exc).__name__, delay)  # fmt: skip
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
