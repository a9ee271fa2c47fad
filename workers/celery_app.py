"""The Celery application: Redis broker, settings for long CPU-bound jobs.

Results are not stored in a result backend: the database is the record of every run.
"""

from __future__ import annotations

import logging

from celery import Celery

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
        broker_connection_retry_on_startup=True,
        broker_transport_options={"visibility_timeout": settings.celery_visibility_timeout_s},
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


def enqueue_run(run_id: str) -> bool:
    """Send the training task of ``run_id``; False (logged) when the broker is away.

    Only call this after the run's row is committed: the worker must find it.
    """
    try:
        celery_app.send_task(TRAIN_TASK, args=[run_id])
        return True
    except Exception as exc:  # broker down: the run stays queued until re-enqueued
        logger.error("could not enqueue run %s: %s", run_id, exc)
        return False


def enqueue_webhook(run_id: str) -> bool:
    """Send the webhook delivery task of a run that just ended."""
    try:
        celery_app.send_task(WEBHOOK_TASK, args=[run_id])
        return True
    except Exception as exc:
        logger.error("could not enqueue the webhook of run %s: %s", run_id, exc)
        return False
