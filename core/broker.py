"""Sending Celery tasks by name, and the Celery settings that the workers use too.

Importing this module builds nothing and connects to nothing: the sending app is made on
first use (one per process and broker URL). The API and the dispatcher send through it,
by task name, so they need no worker code; ``workers.celery_app`` builds the worker's app
from the same :func:`celery_config`.
"""

from __future__ import annotations

import logging
import uuid
from functools import lru_cache
from typing import Any

from celery import Celery
from kombu.entity import Queue  # kombu's __init__ imports it lazily: no explicit re-export

from core.queues import all_queues, celery_priority, queue_name
from core.settings import Settings, get_settings

logger = logging.getLogger(__name__)

TRAIN_TASK = "backprop.train_run"
WEBHOOK_TASK = "backprop.deliver_webhook"


def celery_config(settings: Settings) -> dict[str, Any]:
    """The Celery configuration of the service, for the sending app and the workers'."""
    return {
        # A killed worker's job goes back to the queue, and no job waits behind a busy one.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": settings.task_queue,
        # Runs go to <task_queue>.small or .large (core/queues.py); a worker takes all three
        # queues unless `backprop worker --queues` names some.
        "task_queues": [Queue(name) for name in all_queues(settings.task_queue)],
        "broker_connection_retry_on_startup": True,
        # Ten priority levels (a run's priority 0-9; Redis serves level 0 first).
        "broker_transport_options": {
            "visibility_timeout": settings.celery_visibility_timeout_s,
            "priority_steps": list(range(10)),
        },
        # When Redis is away, a send must not hang: the run stays unsent in the database
        # and the dispatcher sends it once Redis answers again.
        "broker_connection_timeout": 2,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        # No broadcast (pidbox) queue: cancel goes through the database, and closing that
        # fanout channel on a lost broker connection crashes the worker (kombu).
        "worker_enable_remote_control": False,
    }


@lru_cache(maxsize=4)
def _sender(broker_url: str, task_queue: str) -> Celery:
    app = Celery("backprop-sender", broker=broker_url, set_as_current=False)
    app.conf.update(celery_config(get_settings()))
    return app


def sending_app(settings: Settings | None = None) -> Celery:
    """The app that sends tasks (made on first use)."""
    settings = settings or get_settings()
    return _sender(settings.celery_broker_url, settings.task_queue)


def task_id_for(run_id: str) -> str:
    """A task id that starts with the run id, so Celery's own log lines (``Task …[id]
    received``) name the run too; the suffix keeps re-sends of one run apart."""
    return f"{run_id}.{uuid.uuid4().hex[:8]}"


def enqueue_run(run_id: str, queue: str | None, priority: int) -> bool:
    """Send the training task of ``run_id`` to the Celery queue of its kind (``small``,
    ``large``) at its priority (0-9, higher first); False (logged) when the broker is away.
    Only call this after the run's row is committed: the worker must find it."""
    settings = get_settings()
    try:
        sending_app(settings).send_task(
            TRAIN_TASK,
            args=[run_id],
            task_id=task_id_for(run_id),
            queue=queue_name(queue, settings.task_queue),
            priority=celery_priority(priority),
        )
        return True
    except Exception as exc:  # broker away: the dispatcher marks the run unsent again
        logger.error("could not send run %s: %s", run_id, exc)
        return False


def enqueue_webhook(run_id: str) -> bool:
    """Send the webhook delivery task of a run that just ended."""
    try:
        sending_app().send_task(WEBHOOK_TASK, args=[run_id], task_id=task_id_for(run_id))
        return True
    except Exception as exc:
        logger.error("could not send the webhook of run %s: %s", run_id, exc)
        return False
