"""Worker process life: BLAS threads, forked connections, graceful hand-back, reclaiming.

- Each pool process limits BLAS threads and drops database connections inherited
  through fork.
- SIGTERM to the worker's main process (``docker stop``) starts Celery's warm shutdown;
  we then ask every pool process (SIGUSR2) to hand its run back: it finishes the current
  epoch, checkpoints, re-queues the run and returns, so another worker resumes it.
- SIGTERM or SIGINT to the whole process group (Ctrl-C, systemd's ``KillMode=control-group``)
  reaches the pool processes too. A pool process that is training takes SIGTERM as the same
  request to hand back and lets the main process lead the warm shutdown; an idle one ends
  at once. Pool processes ignore SIGINT (billiard sets that up).
- The main process reclaims runs whose lease expired (their worker died) and puts them back
  in the queue; the atomic claim makes any duplicate delivery a no-op.
- The main process also announces the worker's slots to the dispatcher and, every
  ``BACKPROP_DISPATCH_INTERVAL_S``, re-sends lost messages and sends queued runs to free
  slots (core/dispatch.py). It withdraws the announcement when it shuts down.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from billiard.process import active_children
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutting_down,
)
from threadpoolctl import threadpool_limits

from core.db.session import get_engine, set_pooling
from core.dispatch import (
    dispatch,
    kinds_of_queues,
    maintain,
    wait_for_request,
    withdraw_worker,
)
from core.logs import current_run_id
from core.runs import lifecycle as runs
from core.runs.sweeps import reconcile as reconcile_sweeps
from core.settings import get_settings
from core.streams import EventPublisher

logger = logging.getLogger(__name__)

HANDBACK_SIGNAL = signal.SIGUSR2
_handback = threading.Event()


def handback_requested() -> bool:
    """True in a pool process once its worker is shutting down."""
    return _handback.is_set()


def _request_handback(_signum: int, _frame: object) -> None:
    _handback.set()


@contextmanager
def training_a_run() -> Iterator[None]:
    """While a pool process trains a run, SIGTERM asks it to hand the run back.

    Outside a run, billiard's own SIGTERM handler stays in place (the process ends at once:
    it holds nothing worth saving, and Celery's terminate waits for it). The end of a run
    also forgets a hand-back request, so a pool process sent SIGTERM on its own (its worker
    goes on) does not hand back every run it takes next.
    """
    previous = signal.signal(signal.SIGTERM, _request_handback)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        _handback.clear()


@worker_process_init.connect
def _init_pool_process(**_kwargs: object) -> None:
    threadpool_limits(limits=get_settings().blas_threads)
    # A pool process trains: it keeps a connection pool of its own (the parent has none
    # to pass on, see _set_up_the_main_process).
    set_pooling(True)
    signal.signal(HANDBACK_SIGNAL, _request_handback)


@worker_init.connect
def _set_up_the_main_process(**_kwargs: object) -> None:
    """The main process forks pool processes at any time (a killed one is replaced), while
    its reclaimer thread uses the database: with pooled connections, a child could inherit
    one and share its socket with the parent. So the main process pools nothing (the
    dispatcher keeps a per-process pool of its own; see get_process_engine)."""
    set_pooling(False)
    # Celery logs every task that returned as "succeeded", a failed run included; the run's
    # own outcome is logged by the runner, so its INFO lines would only mislead.
    logging.getLogger("celery.app.trace").setLevel(logging.WARNING)


@worker_shutting_down.connect
def _ask_pool_to_hand_back(**_kwargs: object) -> None:
    # No more runs for us: the runs handed back go to the other workers.
    _stop_loops.set()
    if _me is not None:
        withdraw_worker(_me.worker_id)
    for child in active_children():
        if child.pid is None:
            continue
        try:
            os.kill(child.pid, HANDBACK_SIGNAL)
        except ProcessLookupError:
            pass


def reclaim() -> list[str]:
    """Put back in the queue the runs whose worker died (core.runs.lifecycle.reclaim);
    returns their ids. The dispatcher sends them to free workers, where they resume from
    their checkpoints."""
    with get_engine().begin() as conn:
        changes = runs.reclaim(conn)
    for change in changes:
        logger.warning("run %s: %s", change.run_id, change.reason)
    runs.announce(changes, _events())
    return [change.run_id for change in changes]


_publisher: EventPublisher | None = None


def _events() -> EventPublisher:
    """The main process's publisher of status events (one Redis client, made on first use)."""
    global _publisher
    if _publisher is None:
        settings = get_settings()
        client = redis.Redis.from_url(settings.redis_url)
        _publisher = EventPublisher(
            client, maxlen=settings.stream_maxlen, ttl_s=settings.stream_ttl_s
        )
    return _publisher


_stop_loops = threading.Event()


def _reclaim_loop() -> None:
    interval = max(get_settings().lease_s / 3, 1.0)
    while not _stop_loops.wait(interval):
        try:
            reclaim()
            reconcile_sweeps()
        except Exception as exc:  # database away for a moment: try again next round
            logger.warning("reclaiming expired runs failed: %s", exc)


@dataclass
class _Announcement:
    """What this worker tells the dispatcher about itself."""

    worker_id: str
    slots: int
    kinds: list[str]


def _dispatch_loop(me: _Announcement) -> None:
    """A dispatch round whenever one is requested (a run was submitted or ended), and the
    full round (announce, re-send lost messages, dispatch) every interval."""
    interval = get_settings().dispatch_interval_s
    failing = False
    last_full = -interval
    while not _stop_loops.is_set():
        try:
            if time.monotonic() - last_full >= interval:
                maintain(me.worker_id, me.slots, me.kinds)
                last_full = time.monotonic()
            else:
                dispatch()
            if failing:
                logger.info("dispatching works again")
            failing = False
            wait_for_request(max(0.05, interval - (time.monotonic() - last_full)))
        except Exception as exc:  # Redis or the database away: runs wait; try again soon
            if not failing:
                logger.warning("dispatching failed (%s); retrying every %.0f s", exc, interval)
            failing = True
            _stop_loops.wait(interval)
    # Shutting down: withdraw again, in case this loop's last announcement raced the one
    # withdrawal made when the shutdown began.
    withdraw_worker(me.worker_id)


def _announcement(consumer: Any) -> _Announcement:
    settings = get_settings()
    queues = list(consumer.app.amqp.queues.consume_from or consumer.app.amqp.queues)
    return _Announcement(
        worker_id=f"{socket.gethostname()}:{os.getpid()}",
        slots=int(consumer.controller.concurrency),
        kinds=kinds_of_queues(queues, settings.task_queue),
    )


_me: _Announcement | None = None


@worker_ready.connect
def _start_loops(sender: Any = None, **_kwargs: object) -> None:
    global _me
    _me = _announcement(sender)
    logger.info("worker %s: %d slot(s) for %s runs", _me.worker_id, _me.slots,
                "/".join(_me.kinds) or "no")  # fmt: skip
    threading.Thread(target=_reclaim_loop, name="lease-reclaimer", daemon=True).start()
    threading.Thread(target=_dispatch_loop, args=(_me,), name="dispatcher", daemon=True).start()


@task_prerun.connect
def _bind_run_id(args: tuple[object, ...] | None = None, **_kwargs: object) -> None:
    """Every log line written while a task works on a run carries its id."""
    if args and isinstance(args[0], str):
        current_run_id.set(args[0])


@task_postrun.connect
def _unbind_run_id(**_kwargs: object) -> None:
    current_run_id.set(None)
