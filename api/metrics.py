"""``GET /metrics`` in Prometheus text format.

- HTTP requests of this API process: counts and latencies by method, route and status.
- Runs by status and queue depth: read at scrape time (database, Redis).
- Training: epoch and run duration histograms, samples trained — reported by every worker
  through Redis (core.telemetry), so one scrape of any API process covers the fleet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import redis
from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core import telemetry
from core.db.models import Run, RunStatus
from core.db.session import get_sessionmaker
from core.queues import all_queues
from core.settings import get_settings

logger = logging.getLogger(__name__)

registry = CollectorRegistry()
HTTP_REQUESTS = Counter(
    "backprop_http_requests_total",
    "HTTP requests answered by this API process.",
    ["method", "route", "status"],
    registry=registry,
)
HTTP_LATENCY = Histogram(
    "backprop_http_request_duration_seconds",
    "Time to answer HTTP requests (to the first byte for streams).",
    ["method", "route"],
    registry=registry,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)


def _route_of(scope: Scope) -> str:
    """The matched route's template (``/api/v1/runs/{run_id}``), never the raw path, so
    labels stay bounded. The router records the route in the scope as it dispatches."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


class HTTPMetricsMiddleware:
    """Counts and times every HTTP request (pure ASGI: streams pass through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                route = _route_of(scope)
                HTTP_LATENCY.labels(scope["method"], route).observe(time.perf_counter() - start)
                HTTP_REQUESTS.labels(scope["method"], route, str(status)).inc()
            await send(message)

        await self.app(scope, receive, send_and_note)


def _histogram(
    name: str, doc: str, values: dict[str, float], key: str, buckets: tuple[float, ...]
) -> HistogramMetricFamily:
    cumulative, pairs = 0.0, []
    bounds: tuple[float | str, ...] = (*buckets, "+Inf")
    for bound in bounds:
        cumulative += values.get(f"{key}_bucket:{bound}", 0.0)
        pairs.append((str(float(bound)) if bound != "+Inf" else "+Inf", cumulative))
    return HistogramMetricFamily(name, doc, buckets=pairs, sum_value=values.get(f"{key}_sum", 0.0))


class ServiceCollector:
    """Reads the database and Redis at each scrape."""

    def __init__(self, redis_client: redis.Redis) -> None:
        self._redis = redis_client

    def _queue_length(self, name: str) -> int:
        """Messages waiting in a Celery queue: kombu keeps one Redis list per priority
        step, named ``<queue>`` and ``<queue>\x06\x16<step>``."""
        keys = [name] + [f"{name}\x06\x16{step}" for step in range(1, 10)]
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.llen(key)
        return int(sum(pipe.execute()))

    def collect(self) -> Iterable[Metric]:
        settings = get_settings()
        runs = GaugeMetricFamily("backprop_runs", "Runs by status.", labels=["status"])
        try:
            with get_sessionmaker()() as db:
                counts = dict(
                    db.execute(select(Run.status, func.count()).group_by(Run.status)).tuples().all()
                )
            for status in RunStatus:
                runs.add_metric([status.value], counts.get(status.value, 0))
            yield runs
        except Exception as exc:  # a scrape must not fail because one source is away
            logger.warning("metrics: runs by status unavailable: %s", exc)
        try:
            depth = GaugeMetricFamily(
                "backprop_queue_depth", "Task messages waiting in the queue.", labels=["queue"]
            )
            for name in all_queues(settings.task_queue):
                depth.add_metric([name], self._queue_length(name))
            yield depth
            values = telemetry.read(self._redis)
        except redis.RedisError as exc:
            logger.warning("metrics: Redis unavailable: %s", exc)
            return
        yield _histogram(
            "backprop_epoch_duration_seconds", "Time to train one epoch.", values,
            "epoch_seconds", telemetry.EPOCH_BUCKETS,
        )  # fmt: skip
        yield _histogram(
            "backprop_run_duration_seconds", "Time from a run's start to its end.", values,
            "run_seconds", telemetry.RUN_BUCKETS,
        )  # fmt: skip
        samples = CounterMetricFamily(
            "backprop_samples_trained", "Samples passed through training (all epochs)."
        )
        samples.add_metric([], values.get("samples_total", 0.0))
        yield samples
        seconds = CounterMetricFamily(
            "backprop_training_seconds", "Time spent training epochs; samples/s = rate ratio."
        )
        seconds.add_metric([], values.get("training_seconds_total", 0.0))
        yield seconds
        ended = CounterMetricFamily(
            "backprop_runs_ended", "Runs that reached an end status.", labels=["status"]
        )
        for status in (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled):
            ended.add_metric([status.value], values.get(f"runs_ended_total:{status.value}", 0.0))
        yield ended


router = APIRouter(tags=["health"])


@router.get(
    "/metrics",
    response_class=Response,
    include_in_schema=True,
    summary="Prometheus metrics",
    description="Prometheus metrics of the service (text exposition format), needing no API "
    "key: this process's HTTP requests and latencies by route and status, runs by status and "
    "queue depth (read at scrape time), and the training histograms and counters that every "
    "worker reports through Redis, so one scrape of any API process covers the fleet. A "
    "source that does not answer is left out rather than failing the scrape.",
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics of the service (text exposition format)."""
    registry_with_service: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry_with_service), media_type=CONTENT_TYPE_LATEST)


def build_registry(redis_client: redis.Redis) -> CollectorRegistry:
    """This process's HTTP metrics plus the service-wide collector."""
    combined = CollectorRegistry()
    combined.register(_Forward(registry))
    combined.register(ServiceCollector(redis_client))
    return combined


class _Forward:
    """Expose another registry's metrics inside this one."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterable[Metric]:
        return self._source.collect()
