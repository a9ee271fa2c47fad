"""The SSE event stream of one run: history from the database, live events from Redis.

Event ids are ``"<epoch>-<s>"``: the last finished epoch the client has and the first
letter of the last status it was told. Clients treat them as opaque; on reconnect the
``Last-Event-ID`` tells exactly what to send next, so nothing is missed or repeated.

Ordering guarantee: the worker commits an epoch to the database before it appends it to
the stream. We note the stream's end *before* reading the database, then read the stream
from there, dropping epochs the database already gave us; a silent stream (Redis lost
events, or is down) is covered by re-reading the database on every read timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import redis
import redis.asyncio as aioredis
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import bindparam, select

from core.db.models import MetricRow, Run, RunStatus
from core.db.session import get_sessionmaker
from core.runs import timeline
from core.streams import EVENT_METRIC, EVENT_STATUS, decode_event, stream_key

logger = logging.getLogger(__name__)

READ_BLOCK_MS = 2000

# OpenAPI description of a 200 that is an event stream (runs' and sweeps' /events).
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}
}
STATUS_LETTERS = {s.value[0]: s.value for s in RunStatus}
MAX_EVENT_EPOCH = 2**31 - 1


@dataclass
class Snapshot:
    status: str
    error: str | None
    items: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None  # why it has its status (its timeline's last reason)


def parse_last_event_id(value: str | None) -> tuple[int, str | None]:
    """``"12-r"`` → ``(12, "running")``; anything unreadable means "from the start"."""
    if not value:
        return 0, None
    epoch_text, _, letter = value.strip().partition("-")
    try:
        epoch = max(int(epoch_text), 0)
    except ValueError:
        return 0, None
    if epoch > MAX_EVENT_EPOCH:  # never issued; too big for an SQL integer (was a 500)
        return 0, None
    return epoch, STATUS_LETTERS.get(letter)


_HEAD = select(Run.owner, Run.status, Run.error, timeline.latest_reason()).where(
    Run.id == bindparam("run_id")
)
_ITEMS = (
    select(MetricRow)
    .where(MetricRow.run_id == bindparam("run_id"), MetricRow.epoch > bindparam("after"))
    .order_by(MetricRow.epoch)
)


def load_snapshot(run_id: str, after_epoch: int, owner: str | None = None) -> Snapshot | None:
    """The run as stored: its status, error and reason, and its epochs after
    ``after_epoch``; None when there is no such run, or ``owner`` (when given) does not own
    it. Two queries, in one transaction."""
    with get_sessionmaker()() as db:
        head = db.execute(_HEAD, {"run_id": run_id}).first()
        if head is None or (owner is not None and head.owner != owner):
            return None
        rows = db.scalars(_ITEMS, {"run_id": run_id, "after": after_epoch})
        return Snapshot(head.status, head.error, [row.as_item() for row in rows], head.reason)


class _Cursor:
    """What this client has been sent so far."""

    def __init__(self, epoch: int, status: str | None) -> None:
        self.epoch = epoch
        self.status = status

    def event_id(self) -> str:
        return f"{self.epoch}-{(self.status or 'q')[0]}"

    def metric(self, item: dict[str, Any]) -> dict[str, Any]:
        self.epoch = int(item["epoch"])
        return {"event": EVENT_METRIC, "id": self.event_id(), "data": json.dumps(item)}

    def status_event(
        self, status: str, error: str | None = None, reason: str | None = None
    ) -> dict[str, Any]:
        self.status = status
        data: dict[str, Any] = {"status": status}
        if reason:
            data["reason"] = reason
        if error:
            data["error"] = error
        return {"event": EVENT_STATUS, "id": self.event_id(), "data": json.dumps(data)}


def _from_snapshot(cursor: _Cursor, snap: Snapshot) -> tuple[list[dict[str, Any]], bool]:
    """Events that bring the client up to ``snap``; True when the run has ended."""
    events: list[dict[str, Any]] = []
    terminal = RunStatus(snap.status).is_terminal
    if not terminal and snap.status != cursor.status:
        events.append(cursor.status_event(snap.status, reason=snap.reason))
    events.extend(cursor.metric(item) for item in snap.items if item["epoch"] > cursor.epoch)
    if terminal and snap.status != cursor.status:
        events.append(cursor.status_event(snap.status, snap.error, snap.reason))
    return events, terminal


async def open_run_events(
    client: aioredis.Redis,
    run_id: str,
    owner: str,
    last_event_id: str | None,
    stop: anyio.Event | None = None,
) -> AsyncIterator[dict[str, Any]] | None:
    """The events of ``owner``'s run ``run_id`` after ``last_event_id`` (see
    :func:`run_event_stream`); None when the owner has no such run. Opening reads the
    database once, for the ownership check and the first events alike."""
    cursor = _Cursor(*parse_last_event_id(last_event_id))
    position = await _stream_end(client, run_id)
    first = await run_in_threadpool(load_snapshot, run_id, cursor.epoch, owner)
    if first is None:
        return None
    return run_event_stream(client, run_id, cursor, position, first, stop)


async def _stream_end(client: aioredis.Redis, run_id: str) -> str:
    """The id of the newest entry of the run's stream ("0-0" if none, or Redis is away)."""
    try:
        newest = await client.xrevrange(stream_key(run_id), count=1)
    except redis.RedisError as exc:
        logger.warning(
            "events of run %s: Redis unavailable (%s); polling the database", run_id, exc
        )
        return "0-0"
    if not newest:
        return "0-0"
    return newest[0][0].decode() if isinstance(newest[0][0], bytes) else newest[0][0]


async def run_event_stream(
    client: aioredis.Redis,
    run_id: str,
    cursor: _Cursor,
    position: str,
    first: Snapshot,
    stop: anyio.Event | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Events of ``run_id`` after ``cursor``: those that bring the client up to ``first``
    (read after the stream's end was noted at ``position``), then the stream's from there;
    ends after the terminal status, or within one read timeout once ``stop`` is set (server
    shutdown)."""
    key = stream_key(run_id)
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def catch_up() -> bool:
        snap = await run_in_threadpool(load_snapshot, run_id, cursor.epoch)
        if snap is None:  # deleted while watched
            return True
        events, ended = _from_snapshot(cursor, snap)
        for event in events:
            await queue.put(event)
        return ended

    opening, ended = _from_snapshot(cursor, first)
    for item in opening:
        yield item
    if ended:
        return

    while stop is None or not stop.is_set():
        try:
            reply = await client.xread({key: position}, block=READ_BLOCK_MS, count=500)
        except redis.RedisError as exc:
            logger.warning("events of run %s: Redis read failed (%s)", run_id, exc)
            reply = None
            await asyncio.sleep(1.0)
        if not reply:
            ended = await catch_up()
        else:
            ended = False
            for entry_id, fields in reply[0][1]:
                position = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                event, data = decode_event(fields)
                if event == EVENT_METRIC:
                    epoch = int(data["epoch"])
                    if epoch <= cursor.epoch:
                        continue  # already sent (from the database, or a resumed run)
                    if epoch > cursor.epoch + 1:
                        await catch_up()  # the stream lost some: fill the gap from the DB
                        if epoch <= cursor.epoch:
                            continue
                    await queue.put(cursor.metric(data))
                elif event == EVENT_STATUS:
                    status = data.get("status")
                    if (
                        not isinstance(status, str)
                        or status == cursor.status
                        or status not in STATUS_LETTERS.values()
                    ):
                        continue
                    if RunStatus(status).is_terminal:
                        # Every epoch is in the database before the terminal status.
                        ended = await catch_up()
                        break
                    reason = data.get("reason")
                    await queue.put(
                        cursor.status_event(
                            status, reason=reason if isinstance(reason, str) else None
                        )
                    )
        while not queue.empty():
            yield queue.get_nowait()
        if ended:
            return
