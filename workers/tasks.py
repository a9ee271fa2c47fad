"""Celery tasks. They carry only ids and re-read everything from the database."""

from __future__ import annotations

import logging

from celery import Task

from core.settings import get_settings
from workers import webhooks
from workers.celery_app import TRAIN_TASK, WEBHOOK_TASK, celery_app
from workers.runner import RunTrainer

logger = logging.getLogger(__name__)


@celery_app.task(name=TRAIN_TASK, acks_late=True, ignore_result=True)
def train_run(run_id: str) -> str | None:
    """Train run ``run_id``; a duplicate delivery of a live run does nothing."""
    return RunTrainer(run_id).run()


@celery_app.task(name=WEBHOOK_TASK, bind=True, acks_late=True, ignore_result=True)
def deliver_webhook(self: Task, run_id: str) -> str:
    """POST the run's webhook; on failure retry after 1, 2, 4, … s (at most 60 s)."""
    try:
        return webhooks.deliver(run_id)
    except webhooks.RetryLater as exc:
        if self.request.retries + 1 >= get_settings().webhook_max_attempts:
            logger.warning("run %s: webhook failed for good: %s", run_id, exc)
            webhooks.give_up(run_id)
            return "failed"
        logger.info("run %s: webhook failed (%s); retrying", run_id, exc)
        raise self.retry(countdown=min(2**self.request.retries, 60)) from exc
