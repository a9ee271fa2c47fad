"""The workers' Celery application (tasks are sent through core.broker, which holds the
settings both share).

Results are not stored in a result backend: the database is the record of every run.
"""

from __future__ import annotations

import logging

from celery import Celery

from core.broker import celery_config
from core.settings import get_settings

logger = logging.getLogger(__name__)


def create_celery() -> Celery:
    """The worker's app: the service's Celery settings (core.broker) and its task modules."""
    settings = get_settings()
    app = Celery(
        "backprop",
        broker=settings.celery_broker_url,
        include=["workers.tasks", "workers.lifecycle"],
    )
    app.conf.update(celery_config(settings))
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
