"""Live run events on Redis Streams: the worker appends, the API reads.

One stream per run, key ``backprop:run:<run_id>:events``. Each entry has the fields
``event`` (``metric`` or ``status``) and ``data`` (JSON text). Redis carries only live
traffic: every event is also in the database, so a lost stream loses nothing that matters.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Protocol

import redis
from redis.typing import EncodableT, FieldT

from core.telemetry import queue_increments

logger = logging.getLogger(__name__)

EVENT_METRIC = "metric"
EVENT_STATUS = "status"


def stream_key(run_id: str) -> str:
    return f"backprop:run:{run_id}:events"


def encode_event(event: str, data: dict[str, Any]) -> dict[FieldT, EncodableT]:
    """The fields of a stream entry (typed as redis-py's ``xadd`` takes them: str to str)."""
    return {"event": event, "data": json.dumps(data, separators=(",", ":"))}


def decode_event(fields: dict[bytes | str, bytes | str]) -> tuple[str, dict[str, Any]]:
    """Inverse of :func:`encode_event` for an entry as returned by XREAD/XRANGE."""

    def text(value: bytes | str) -> str:
        return value.decode() if isinstance(value, bytes) else value

    by_name = {text(k): text(v) for k, v in fields.items()}
    return by_name["event"], json.loads(by_name["data"])


class Publisher(Protocol):
    """What publishes a run's events: :class:`EventPublisher`, or a recorder in tests."""

    def publish(
        self,
        run_id: str,
        event: str,
        data: dict[str, Any],
        *,
        final: bool = False,
        telemetry: dict[str, float] | None = None,
    ) -> bool: ...


class EventPublisher:
    """Appends run events to Redis; failures are logged, never raised.

    Publishing is best effort by design: the database write before it is the record, and
    readers fall back to the database when the stream is silent.
    """

    def __init__(self, client: redis.Redis, *, maxlen: int = 100_000, ttl_s: int = 86_400):
        self._client = client
        self._maxlen = maxlen
        self._ttl_s = ttl_s

    def publish(
        self,
        run_id: str,
        event: str,
        data: dict[str, Any],
        *,
        final: bool = False,
        telemetry: dict[str, float] | None = None,
    ) -> bool:
        """Append the event (and add ``telemetry`` increments) in one round trip."""
        key = stream_key(run_id)
        try:
            pipe = self._client.pipeline(transaction=False)
            pipe.xadd(key, encode_event(event, data), maxlen=self._maxlen, approximate=True)
            if final:
                pipe.expire(key, self._ttl_s)
            if telemetry:
                queue_increments(pipe, telemetry)
            pipe.execute()
            return True
        except redis.RedisError as exc:
            logger.warning("could not publish %s event of run %s: %s", event, run_id, exc)
            return False

    def delete(self, run_id: str) -> None:
        try:
            self._client.delete(stream_key(run_id))
        except redis.RedisError as exc:
            logger.warning("could not delete stream of run %s: %s", run_id, exc)
