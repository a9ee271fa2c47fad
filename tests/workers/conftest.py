"""Fixtures for code of workers/ called in-process: settings pointing at a test database
and a task queue of its own on the local Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

from core.db.session import set_pooling
from core.settings import Settings, get_settings

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
