"""Celery tasks. They carry only ids and re-read everything from the database."""

from __future__ import annotations

import logging

from celery import Task

from core.broker import TRAIN_TASK, WEBHOOK_TASK
from core.settings import get_settings
from workers import webhooks
from workers.celery_app import celery_app
from workers.lifecycle import training_a_run
from workers.runner import RunTrainer

logger = logging.getLogger(__name__)


@celery_app.task(name=TRAIN_TASK, acks_late=True, ignore_result=True)
def train_run(run_id: str) -> str | None:
    """Train run ``run_id``; a duplicate delivery of a live run does nothing."""
    with training_a_run():
        return RunTrainer(run_id).run()


@celery_app.task(name=WEBHOOK_TASK, bind=True, acks_late=True, ignore_result=True)
def deliver_webhook(self: Task, run_id: str) -> str:
    """POST the run's webhook, at most ``BACKPROP_WEBHOOK_MAX_ATTEMPTS`` times, waiting
    ``BACKPROP_WEBHOOK_BACKOFF_S`` × 1, 2, 4, … (at most 60 s) in between; after the last
    failed attempt the webhook is ``failed``, with one warning line."""
    settings = get_settings()
    max_attempts = max(1, settings.webhook_max_attempts)
    attempt = self.request.retries + 1
    try:
        return webhooks.deliver(run_id, attempt)
    except webhooks.RetryLater as exc:
        if attempt >= max_attempts:
            logger.warning(
                "run %s: webhook failed for good after %d attempts: %s", run_id, attempt, exc
            )
            webhooks.give_up(run_id)
            return "failed"
        countdown = min(settings.webhook_backoff_s * 2 ** (attempt - 1), 60.0)
        logger.info(
            "run %s: webhook attempt %d/%d failed (%s); retrying in %.3g s",
            run_id, attempt, max_attempts, exc, countdown,
        )  # fmt: skip
        # max_retries explicitly: Celery's default (3) would end the task early, with a
        # MaxRetriesExceededError, before the attempts above are used up.
        raise self.retry(countdown=countdown, max_retries=max_attempts - 1) from None
