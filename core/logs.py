"""Logging for api and worker processes: JSON lines (default) or text, with ``run_id``.

Code that works on a run sets :data:`current_run_id`; every log line written meanwhile,
in any module, carries it, so one run's story can be filtered out of many workers' logs.
URLs in log lines lose their credentials and query string (:class:`RedactUrlsFilter`), as
callback URLs may carry secrets there and libraries such as httpx log the URLs they call.

One handler writes every line of a process (:func:`configure_logging`): Python warnings
(Celery's root-user ``SecurityWarning``, say) go through it too, and under ``json`` so do
uncaught exceptions, so that every line of ``backprop api``, ``worker`` and ``standalone``
is a JSON object. :func:`write_now` is for code that runs in a signal handler.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType

current_run_id: ContextVar[str | None] = ContextVar("current_run_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s%(run_suffix)s: %(message)s"
LOG_FORMATS = ("json", "text")


# Celery's task ids for runs are "<run id>.<suffix>" (core.broker.task_id_for).
_TASK_ID_OF_RUN = re.compile(r"\[([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.")


class RunIdFilter(logging.Filter):
    """Adds ``run_id`` (and a text suffix for it) to every record: from the context of the
    code handling a run, or from a Celery line naming a run's task."""

    def filter(self, record: logging.LogRecord) -> bool:
        run_id = getattr(record, "run_id", None) or current_run_id.get()
        if run_id is None and record.name.startswith("celery"):
            found = _TASK_ID_OF_RUN.search(record.getMessage())
            run_id = found.group(1) if found else None
        record.run_id = run_id
        record.run_suffix = f" [run {run_id}]" if run_id else ""
        return True


# scheme://[userinfo@]host-and-port[path][?query][#fragment], up to whitespace or a quote.
_URL = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^\s/?#\"'<>]*@)?"
    r"(?P<rest>[^\s?#\"'<>]*)(?P<query>\?[^\s#\"'<>]*)?(?P<fragment>#[^\s\"'<>]*)?"
)
REDACTED_QUERY = "?[redacted]"


def _redacted(match: re.Match[str]) -> str:
    query = REDACTED_QUERY if match.group("query") else ""
    return f"{match.group('scheme')}{match.group('rest')}{query}"


def redact_urls(text: str) -> str:
    """``text`` with every URL's userinfo and fragment dropped and its query replaced by
    ``?[redacted]``: ``http://u:pw@h/p?t=1`` → ``http://h/p?[redacted]``."""
    return _URL.sub(_redacted, text) if "://" in text else text


class RedactUrlsFilter(logging.Filter):
    """Redacts the URLs in a record's message (see :func:`redact_urls`); keeps every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "://" in message:
            record.msg, record.args = redact_urls(message), None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, run_id, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        run_id = getattr(record, "run_id", None)
        if run_id:
            entry["run_id"] = run_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


_handler: logging.Handler | None = None


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Replace the root handlers with one stderr handler in the chosen format.

    Warnings (:mod:`warnings`) are logged through it (logger ``py.warnings``). Under
    ``json`` an uncaught exception is logged too (level CRITICAL, with its traceback in
    ``exception``) instead of printed as a bare traceback.
    """
    global _handler
    fmt = fmt.strip().lower()
    if fmt not in LOG_FORMATS:
        raise ValueError(f"BACKPROP_LOG_FORMAT must be one of {LOG_FORMATS}, not {fmt!r}")
    handler = logging.StreamHandler()
    handler.addFilter(RunIdFilter())
    handler.addFilter(RedactUrlsFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    _handler = handler
    logging.captureWarnings(True)
    if fmt == "json":
        sys.excepthook = _log_uncaught
        threading.excepthook = _log_uncaught_in_thread


def _log_uncaught(
    kind: type[BaseException], error: BaseException, tb: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, tb)
        return
    logging.getLogger("backprop").critical("uncaught exception", exc_info=(kind, error, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    name = args.thread.name if args.thread is not None else "?"
    logging.getLogger("backprop").critical(
        "uncaught exception in thread %s", name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )  # fmt: skip


def write_now(name: str, level: int, message: str) -> None:
    """Write one line in the configured format straight to the log's file descriptor.

    For code that runs in a signal handler, where the handler's lock and the stream's
    buffer may be held by the very code the signal interrupted. Falls back to the
    logger when logging is not configured or its stream has no file descriptor.
    """
    handler = _handler
    stream = getattr(handler, "stream", None)
    try:
        fd = stream.fileno() if stream is not None else None
    except (OSError, ValueError):
        fd = None
    logger = logging.getLogger(name)
    if handler is None or fd is None:
        logger.log(level, "%s", message)
        return
    if not logger.isEnabledFor(level):
        return
    record = logger.makeRecord(name, level, "(unknown file)", 0, message, (), None)
    if handler.filter(record):
        try:
            os.write(fd, (handler.format(record) + "\n").encode("utf-8", "replace"))
        except OSError:  # a closed stderr must not break the caller (a shutdown, say)
            pass
