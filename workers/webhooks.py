"""Webhook delivery for ended runs: signed, retried with backoff, then given up.

:func:`deliver` makes one attempt and raises :class:`RetryLater` when the receiver did not
take it; the Celery task (``workers.tasks.deliver_webhook``) decides whether to try again.
Log lines name the callback URL without credentials or query string.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from sqlalchemy import update

from core.db.models import Run, RunStatus
from core.db.session import session_scope
from core.keys import webhook_secret_of
from core.logs import redact_urls
from core.settings import get_settings
from core.webhooks import WebhookTargetError, delivery_id_for, payload, post, resolve_target

logger = logging.getLogger(__name__)


class RetryLater(Exception):
    """The receiver did not take the delivery; try again after a backoff."""


def _run_summary(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "error": run.error,
        "metrics": run.metrics,  # the model's: the best epoch's when early stopping kept it
        "best_epoch": run.best_epoch,
        "stop_reason": run.stop_reason,
        "test_metrics": run.test_metrics,
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


def deliver(run_id: str, attempt: int = 1) -> str:
    """Make attempt ``attempt`` at the webhook of ``run_id``; returns the outcome.

    Raises RetryLater when the receiver did not answer 2xx (a redirect is not followed
    and counts as a failure). A target refused by the address guard fails at once.
    """
    settings = get_settings()
    with session_scope() as s:
        run = s.get(Run, run_id)
        if run is None or not run.callback_url or run.webhook_status in ("delivered", "failed"):
            return "nothing to deliver"
        if not RunStatus(run.status).is_terminal:
            return "run has not ended"
        url, body, key_id = run.callback_url, payload(_run_summary(run)), run.api_key_id
    secret = webhook_secret_of(key_id) if key_id else settings.webhook_secret
    shown = redact_urls(url)
    try:
        target = resolve_target(url, allow_private=settings.webhook_allow_private)
    except WebhookTargetError as exc:
        logger.warning("run %s: webhook to %s not sent: %s", run_id, shown, redact_urls(str(exc)))
        _set_status(run_id, "failed")
        return "refused"
    try:
        code = post(target, body, secret, delivery_id_for(run_id))
    except httpx.HTTPError as exc:
        raise RetryLater(f"{type(exc).__name__}: {redact_urls(str(exc))}") from None
    if 200 <= code < 300:
        _set_status(run_id, "delivered")
        logger.info("run %s: webhook delivered to %s (attempt %d)", run_id, shown, attempt)
        return "delivered"
    if 300 <= code < 400:
        raise RetryLater(f"receiver answered {code} (redirects are not followed)")
    raise RetryLater(f"receiver answered {code}")


def give_up(run_id: str) -> None:
    """Mark the webhook of ``run_id`` failed (no more attempts)."""
    _set_status(run_id, "failed")
