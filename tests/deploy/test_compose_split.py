"""The split deployment of docker-compose.yml: worker-small and worker-large (profile split).

Their commands are run as the image would run them (``backprop worker --queues ...`` with
the compose environment) far enough to see which Celery queues each one takes, against the
compose ``redis`` command with a password (REDIS_PASSWORD): each must authenticate to get
ready.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.deploy.test_compose import (
    TEST_PASSWORD,
    ComposeRedis,
    compose_resolved,
    environment_of,
    localize,
    native_argv,
    start,
    stop,
)
from tests.e2e.stack import wait_for


def test_split_workers_are_optional_and_share_the_worker_settings() -> None:
    services = compose_resolved({"POSTGRES_PASSWORD": TEST_PASSWORD})["services"]
    worker = services["worker"]
    for name, queues in (("worker-small", "small,default"), ("worker-large", "large")):
        service = services[name]
        assert service["profiles"] == ["split"], name
        command = service["command"]
        assert command[:2] == ["worker", "--queues"] and command[2] == queues
        assert environment_of(service) == environment_of(worker)
        assert service["depends_on"] == worker["depends_on"]
        assert service["stop_grace_period"] == worker["stop_grace_period"]
        assert "ports" not in service and "container_name" not in service


def test_split_worker_commands_take_their_queues(tmp_path: Path) -> None:
    queue = f"split-{uuid.uuid4().hex[:10]}"
    services = compose_resolved(
        {"POSTGRES_PASSWORD": TEST_PASSWORD, "REDIS_PASSWORD": "split-secret",
         "BACKPROP_TASK_QUEUE": queue, "BACKPROP_WORKER_CONCURRENCY": "1"}
    )["services"]  # fmt: skip
    (tmp_path / "redis").mkdir()
    server = ComposeRedis(services["redis"]["command"], tmp_path / "redis")
    # A worker connects to Redis only; the database is not touched before a task arrives.
    db_url = f"sqlite:///{tmp_path / 'unused.db'}"
    expected = {"worker-small": ({f"{queue}.small", queue}, f"{queue}.large"),
                "worker-large": ({f"{queue}.large"}, f"{queue}.small")}  # fmt: skip
    try:
        for name, (takes, not_taken) in expected.items():
            env = localize(environment_of(services[name]), db_url, server.url)
            assert ":split-secret@" in env["BACKPROP_REDIS_URL"], name
            log = tmp_path / f"{name}.log"
            proc = start(native_argv(services[name]["command"]), env, log, tmp_path)
            try:
                wait_for(lambda log=log: " ready." in log.read_text(errors="replace"), 60,
                         f"{name} to be ready", interval=0.1)  # fmt: skip
                text = log.read_text(errors="replace")
                assert "Authentication required" not in text, text
                # The worker's start line: "... process(es) (prefork), queues a, b, broker ..."
                started = next(ln for ln in text.splitlines() if "starting a Celery worker" in ln)
                listed = set(started.split("queues ", 1)[1].split(", broker")[0].split(", "))
                assert takes <= listed, text
                assert not_taken not in listed, text
            finally:
                stop(proc, timeout=60)
    finally:
        server.stop()
