"""The Celery application: Redis broker, settings for long CPU-bound jobs.

Results are not stored in a result backend: the database is the record of every run.
"""

from __future__ import annotations

import logging

from celery import Celery
from celery.signals import worker_process_init
from threadpoolctl import threadpool_limits

from core.settings import get_settings

logger = logging.getLogger(__name__)

TRAIN_TASK = "backprop.train_run"


def create_celery() -> Celery:
    settings = get_settings()
    app = Celery("backprop", broker=settings.celery_broker_url, include=["workers.tasks"])
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
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


celery_app = create_celery()


@worker_process_init.connect
def _limit_blas_threads(**_kwargs: object) -> None:
    """One BLAS thread per worker process by default, so N processes fit N cores."""
    threadpool_limits(limits=get_settings().blas_threads)
