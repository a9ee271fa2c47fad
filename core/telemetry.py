"""Training telemetry shared through Redis, so one ``/metrics`` sees every worker.

Workers on any machine add to a Redis hash, in the same pipeline as the run's events;
the API's Prometheus collector reads them at scrape time. Counters reset if Redis loses
its data, which Prometheus handles like a process restart.
"""

from __future__ import annotations

import bisect
from typing import cast

import redis
import redis.client

KEY = "backprop:telemetry"
EPOCH_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0)
RUN_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)


def bucket_field(name: str, buckets: tuple[float, ...], value: float) -> str:
    """The field of the smallest bucket holding ``value`` (``+Inf`` past the last).

    Buckets are stored non-cumulative; the reader adds them up.
    """
    i = bisect.bisect_left(buckets, value)
    return f"{name}_bucket:{buckets[i] if i < len(buckets) else '+Inf'}"


def epoch_increments(seconds: float, samples: int) -> dict[str, float]:
    """What one trained epoch adds to the telemetry hash."""
    return {
        bucket_field("epoch_seconds", EPOCH_BUCKETS, seconds): 1,
        "epoch_seconds_sum": seconds,
        "epoch_seconds_count": 1,
        "samples_total": samples,
        "training_seconds_total": seconds,
    }


def run_ended_increments(status: str, seconds: float | None) -> dict[str, float]:
    """What a run reaching ``status`` after ``seconds`` adds to the telemetry hash."""
    increments: dict[str, float] = {f"runs_ended_total:{status}": 1}
    if seconds is not None:
        increments[bucket_field("run_seconds", RUN_BUCKETS, seconds)] = 1
        increments["run_seconds_sum"] = seconds
        increments["run_seconds_count"] = 1
    return increments


def queue_increments(pipe: redis.client.Pipeline, increments: dict[str, float]) -> None:
    """Add ``increments`` to ``pipe`` — workers send them with the event they go with,
    so telemetry costs no round trip of its own."""
    for field, amount in increments.items():
        pipe.hincrbyfloat(KEY, field, amount)


def read(client: redis.Redis) -> dict[str, float]:
    # redis-py types its commands for the sync and asyncio clients at once (``Awaitable | T``);
    # a sync client returns the dict.
    raw = cast(dict[bytes | str, bytes | str], client.hgetall(KEY))
    return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}
