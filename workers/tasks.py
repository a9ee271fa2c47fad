"""Celery tasks. They carry only ids and re-read everything from the database."""

from __future__ import annotations

from workers.celery_app import TRAIN_TASK, celery_app
from workers.runner import RunTrainer


@celery_app.task(name=TRAIN_TASK, acks_late=True, ignore_result=True)
def train_run(run_id: str) -> str | None:
    """Train run ``run_id``; a duplicate delivery of a live run does nothing."""
    return RunTrainer(run_id).run()
