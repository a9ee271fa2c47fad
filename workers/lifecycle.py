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
- The main process reclaims runs whose lease expired (their worker died) and re-enqueues
  them; the atomic claim makes any duplicate delivery a no-op.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from billiard.process import active_children
from celery.signals import (
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutting_down,
)
from sqlalchemy import or_, update
from threadpoolctl import threadpool_limits

from core.db.models import Run, RunStatus, utcnow
from core.db.session import session_scope, set_pooling
from core.logs import current_run_id
from core.settings import get_settings
from workers.sweeps import reconcile as reconcile_sweeps

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
    # to pass on, see _no_pooling_in_the_main_process).
    set_pooling(True)
    signal.signal(HANDBACK_SIGNAL, _request_handback)


@worker_init.connect
def _no_pooling_in_the_main_process(**_kwargs: object) -> None:
    """The main process forks pool processes at any time (a killed one is replaced), while
    its reclaimer thread uses the database: with pooled connections, a child could inherit
    one and share its socket with the parent. So the main process pools nothing."""
    set_pooling(False)


@worker_shutting_down.connect
def _ask_pool_to_hand_back(**_kwargs: object) -> None:
    for child in active_children():
        if child.pid is None:
            continue
        try:
            os.kill(child.pid, HANDBACK_SIGNAL)
        except ProcessLookupError:
            pass
    _reclaimer_stop.set()


def reclaim() -> list[str]:
    """Send again the runs that lost their worker or their message; returns their ids.

    - running with an expired lease: the worker died; the run goes back to the queue and
      resumes from its checkpoint wherever it lands next.
    - queued, with its message sent more than ``requeue_after_s`` ago: the message may
      have been lost (Redis restarted without it, or was away at submit time).
    The UPDATE … RETURNING picks each run once even with many workers reclaiming.
    """
    settings = get_settings()
    now = utcnow()
    with session_scope() as s:
        expired = list(
            s.scalars(
                update(Run)
                .where(
                    Run.status == RunStatus.running.value,
                    or_(Run.lease_expires_at.is_(None), Run.lease_expires_at < now),
                )
                .values(
                    status=RunStatus.queued.value,
                    lease_owner=None,
                    lease_expires_at=None,
                    enqueued_at=now,
                )
                .returning(Run.id)
                .execution_options(synchronize_session=False)
            )
        )
        stale = list(
            s.scalars(
                update(Run)
                .where(
                    Run.status == RunStatus.queued.value,
                    # A sweep's trial waits unsent (enqueued_at NULL) until its sweep sends it.
                    or_(Run.sweep_id.is_(None), Run.enqueued_at.is_not(None)),
                    or_(
                        Run.enqueued_at.is_(None),
                        Run.enqueued_at < now - timedelta(seconds=settings.requeue_after_s),
                    ),
                )
                .values(enqueued_at=now)
                .returning(Run.id)
                .execution_options(synchronize_session=False)
            )
        )
    from workers.celery_app import enqueue_run

    for run_id in expired:
        logger.warning("run %s: its worker stopped renewing the lease; re-queued", run_id)
        enqueue_run(run_id)
    for run_id in stale:
        logger.info("run %s: queued for long; its task message is sent again", run_id)
        enqueue_run(run_id)
    return expired + stale


_reclaimer_stop = threading.Event()


def _reclaim_loop() -> None:
    interval = max(get_settings().lease_s / 3, 1.0)
    while not _reclaimer_stop.wait(interval):
        try:
            reclaim()
            reconcile_sweeps()
        except Exception as exc:  # database away for a moment: try again next round
            logger.warning("reclaiming expired runs failed: %s", exc)


@worker_ready.connect
def _start_reclaimer(**_kwargs: object) -> None:
    threading.Thread(target=_reclaim_loop, name="lease-reclaimer", daemon=True).start()


@task_prerun.connect
def _bind_run_id(args: tuple[object, ...] | None = None, **_kwargs: object) -> None:
    """Every log line written while a task works on a run carries its id."""
    if args and isinstance(args[0], str):
        current_run_id.set(args[0])


@task_postrun.connect
def _unbind_run_id(**_kwargs: object) -> None:
    current_run_id.set(None)
