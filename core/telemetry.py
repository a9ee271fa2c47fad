"""Training telemetry shared through Redis, so one ``/metrics`` sees every worker.

Workers on any machine add to a few Redis hashes (one pipelined round trip per epoch);
the API's Prometheus collector reads them at scrape time. Counters reset if Redis loses
its data, which Prometheus handles like a process restart.
"""

from __future__ import annotations

import bisect
import logging

import redis

logger = logging.getLogger(__name__)

KEY = "backprop:telemetry"
EPOCH_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0)
RUN_BUCKETS = (0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 86400.0)


def bucket_field(name: str, buckets: tuple[float, ...], value: float) -> str:
    """The field of the smallest bucket holding ``value`` (``+Inf`` past the last).

    Buckets are stored non-cumulative; the reader adds them up.
    """
    i = bisect.bisect_left(buckets, value)
    return f"{name}_bucket:{buckets[i] if i < len(buckets) else '+Inf'}"


class WorkerTelemetry:
    """What a worker reports; failures are logged and dropped (telemetry is best effort)."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def _add(self, increments: dict[str, float]) -> None:
        try:
            pipe = self._client.pipeline(transaction=False)
            for field, amount in increments.items():
                pipe.hincrbyfloat(KEY, field, amount)
            pipe.execute()
        except redis.RedisError as exc:
            logger.debug("telemetry not recorded: %s", exc)

    def epoch(self, seconds: float, samples: int) -> None:
        self._add(
            {
                bucket_field("epoch_seconds", EPOCH_BUCKETS, seconds): 1,
                "epoch_seconds_sum": seconds,
                "epoch_seconds_count": 1,
                "samples_total": samples,
                "training_seconds_total": seconds,
            }
        )

    def run_ended(self, status: str, seconds: float | None) -> None:
        increments: dict[str, float] = {f"runs_ended_total:{status}": 1}
        if seconds is not None:
            increments[bucket_field("run_seconds", RUN_BUCKETS, seconds)] = 1
            increments["run_seconds_sum"] = seconds
            increments["run_seconds_count"] = 1
        self._add(increments)


def read(client: redis.Redis) -> dict[str, float]:
    raw = client.hgetall(KEY)
    return {(k.decode() if isinstance(k, bytes) else k): float(v) for k, v in raw.items()}
