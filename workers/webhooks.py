"""Webhook delivery for ended runs: once, signed, retried with backoff."""

from __future__ import annotations

import logging
from typing import Any

import httpx
from sqlalchemy import update

from core.db.models import Run, RunStatus
from core.db.session import session_scope
from core.keys import webhook_secret_of
from core.settings import get_settings
from core.webhooks import WebhookTargetError, check_target, payload, post

logger = logging.getLogger(__name__)


class RetryLater(Exception):
    """The receiver did not take the delivery; try again after a backoff."""


def _run_summary(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "error": run.error,
        "metrics": run.metrics,
        "progress": {"epoch": run.epoch, "epochs": run.epochs},
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def _set_status(run_id: str, status: str) -> None:
    with session_scope() as s:
        s.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(webhook_status=status)
            .execution_options(synchronize_session=False)
        )


def deliver(run_id: str) -> str:
    """Deliver the webhook of ``run_id``; returns the outcome, raises RetryLater."""
    settings = get_settings()
    with session_scope() as s:
        run = s.get(Run, run_id)
        if run is None or not run.callback_url or run.webhook_status == "delivered":
            return "nothing to deliver"
        if not RunStatus(run.status).is_terminal:
            return "run has not ended"
        url, body, key_id = run.callback_url, payload(_run_summary(run)), run.api_key_id
    secret = webhook_secret_of(key_id) if key_id else settings.webhook_secret
    try:
        check_target(url, allow_private=settings.webhook_allow_private)
    except WebhookTargetError as exc:
        logger.warning("run %s: webhook not sent: %s", run_id, exc)
        _set_status(run_id, "failed")
        return "refused"
    try:
        code = post(url, body, secret)
    except httpx.HTTPError as exc:
        raise RetryLater(f"{type(exc).__name__}: {exc}") from exc
    if 200 <= code < 300:
        _set_status(run_id, "delivered")
        return "delivered"
    raise RetryLater(f"receiver answered {code}")


def give_up(run_id: str) -> None:
    _set_status(run_id, "failed")
