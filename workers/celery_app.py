"""The Celery application: Redis broker, settings for long CPU-bound jobs.

Results are not stored in a result backend: the database is the record of every run.
"""

from __future__ import annotations

import logging
import uuid

from celery import Celery
from kombu import Queue

from core.queues import all_queues, celery_priority, queue_name
from core.settings import get_settings

logger = logging.getLogger(__name__)

TRAIN_TASK = "backprop.train_run"
WEBHOOK_TASK = "backprop.deliver_webhook"


def create_celery() -> Celery:
    settings = get_settings()
    app = Celery(
        "backprop",
        broker=settings.celery_broker_url,
        include=["workers.tasks", "workers.lifecycle"],
    )
    app.conf.update(
        # A killed worker's job goes back to the queue, and no job waits behind a busy one.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=settings.task_queue,
        # Runs go to <task_queue>.small or .large (core/queues.py); a worker takes all three
        # queues unless `backprop worker --queues` names some.
        task_queues=[Queue(name) for name in all_queues(settings.task_queue)],
        broker_connection_retry_on_startup=True,
        # Ten priority levels (a run's priority 0-9; Redis serves level 0 first).
        broker_transport_options={
            "visibility_timeout": settings.celery_visibility_timeout_s,
            "priority_steps": list(range(10)),
        },
        # When Redis is away, a submit must not hang: the run is stored and the
        # reclaimer sends its message again later.
        broker_connection_timeout=2,
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        # No broadcast (pidbox) queue: cancel goes through the database, and closing that
        # fanout channel on a lost broker connection crashes the worker (kombu).
        worker_enable_remote_control=False,
    )
    return app


celery_app = create_celery()


def log_worker_output() -> None:
    """Make every line that a worker process prints one line of our log (configured by
    the caller, :func:`core.logs.configure_logging`), in its format. Call before
    ``worker_main``; the caller also turns Celery's banner off (``--quiet``).

    - Celery leaves logging alone: it configures nothing when ``setup_logging`` has a
      receiver (else it gives the pool's ``multiprocessing`` logger a handler of its own,
      in its own format, e.g. for "Process 'ForkPoolWorker-1' … exited with 'signal 9'").
    - That logger, which does not propagate, writes through our handler, at ERROR as
      Celery sets it.
    - What code prints to stdout or stderr is logged (``celery.redirected``), as Celery
      does under ``worker_redirect_stdouts``.
    - The notices Celery writes straight to the terminal, often from a signal handler
      (``worker: Warm shutdown (MainProcess)``, through ``celery.apps.worker.safe_say``),
      go to :func:`core.logs.write_now`.
    """
    from celery import signals
    from celery.apps import worker as celery_worker
    from celery.utils.log import get_multiprocessing_logger

    from core.logs import write_now

    def keep_our_logging(**_: object) -> None:
        pool_logger = get_multiprocessing_logger()
        if pool_logger is not None:
            pool_logger.handlers = list(logging.getLogger().handlers)
            pool_logger.setLevel(logging.ERROR)
        if celery_app.conf.worker_redirect_stdouts:
            celery_app.log.redirect_stdouts(celery_app.conf.worker_redirect_stdouts_level)

    def say(msg: object, f: object = None) -> None:
        write_now("celery.apps.worker", logging.INFO, str(msg).strip())

    signals.setup_logging.connect(keep_our_logging, weak=False)
    celery_worker.safe_say = say


def _routing_of(run_id: str) -> tuple[str | None, int]:
    """The stored queue kind and priority of a run (default queue when unreadable)."""
    from sqlalchemy import select

    from core.db.models import Run
    from core.db.session import session_scope

    try:
        with session_scope() as s:
            row = s.execute(select(Run.queue, Run.priority).where(Run.id == run_id)).first()
    except Exception as exc:
        logger.warning("run %s: could not read its queue (%s); using the default", run_id, exc)
        return None, 0
    return (row[0], row[1] or 0) if row else (None, 0)


def task_id_for(run_id: str) -> str:
    """A task id that starts with the run id, so Celery's own log lines (``Task …[id]
    received``) name the run too; the suffix keeps re-sends of one run apart."""
    return f"{run_id}.{uuid.uuid4().hex[:8]}"


def enqueue_run(run_id: str, queue: str | None = None, priority: int | None = None) -> bool:
    """Send the training task of ``run_id``; False (logged) when the broker is away.

    ``queue`` is the run's queue kind (``small``/``large``) and ``priority`` its priority
    (0-9, higher first); both are read from the run's row when not given.
    Only call this after the run's row is committed: the worker must find it.
    """
    if queue is None and priority is None:
        queue, priority = _routing_of(run_id)
    name = queue_name(queue, get_settings().task_queue)
    try:
        celery_app.send_task(
            TRAIN_TASK,
            args=[run_id],
            task_id=task_id_for(run_id),
            queue=name,
            priority=celery_priority(priority or 0),
        )
        return True
    except Exception as exc:  # broker down: the run stays queued until re-enqueued
        logger.error("could not enqueue run %s: %s", run_id, exc)
        return False


def enqueue_webhook(run_id: str) -> bool:
    """Send the webhook delivery task of a run that just ended."""
    try:
        celery_app.send_task(WEBHOOK_TASK, args=[run_id], task_id=task_id_for(run_id))
        return True
    except Exception as exc:
        logger.error("could not enqueue the webhook of run %s: %s", run_id, exc)
        return False
