"""The README's quickstart and engine snippet and docs/client.md's example, run as written
against live services so that they cannot rot.

A block the tests run is marked with ``<!-- test: NAME -->`` on the line before its fence:
``quickstart`` (README, shell, run in order as one script), ``compose`` (README, shell),
``engine`` (README, Python) and ``client`` (docs/client.md, Python). Each runs in a folder
laid out like a checkout (``examples/`` and ``.venv`` linked to the real ones), with bash
``set -euo pipefail`` or the venv's python. Nothing in a block is rewritten except where the
service is: ``BACKPROP_URL`` (which the blocks read) points at the test's service, and the
compose block's ``docker compose`` steps run on the host against a real stack instead.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psycopg
import pytest

from cli.processes import free_port
from tests.doc_blocks import blocks, markers_before_fences
from tests.e2e.stack import REDIS_URL, Stack, start_stack, wait_for

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CLIENT_MD = ROOT / "docs" / "client.md"
VENV_BIN = Path(sys.prefix) / "bin"

# The seed article's output-layer weights after its one step (w5, w7 / w6, w8).
SEED_W2_AFTER_ONE_STEP = [[0.35891648, 0.51130127], [0.40866619, 0.56137012]]


def checkout(folder: Path) -> Path:
    """A folder that looks like the repository's root to the documented commands."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "examples").symlink_to(ROOT / "examples")
    (folder / ".venv").symlink_to(Path(sys.prefix))
    shutil.copy(ROOT / ".env.example", folder / ".env.example")
    return folder


def user_env(**extra: str) -> dict[str, str]:
    """A newcomer's shell: no BACKPROP_* settings but ``extra``; the venv first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKPROP_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


def run_bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\n--- script\n{script}\n--- stdout\n{proc.stdout}\n"
        f"--- stderr\n{proc.stderr}"
    )
    return proc


def json_lines(text: str) -> list[object]:
    out: list[object] = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def check_quickstart(proc: subprocess.CompletedProcess[str], cwd: Path) -> None:
    """What the README says the quickstart shows: the seed run succeeds after one step with
    the article's weights, the iris CSV is a classification, the CLI run succeeds."""
    out = proc.stdout
    # the event stream ends with the run's terminal status
    assert "event: metric" in out and "event: status" in out, out
    docs = json_lines(out)
    records = [d for d in docs if isinstance(d, dict) and "status" in d and "network" in d]
    assert records and records[0]["status"] == "succeeded", out
    metrics = [d for d in docs if isinstance(d, dict) and "items" in d]
    assert [m["epoch"] for m in metrics[0]["items"]] == [1], out
    assert metrics[0]["items"][0]["loss"] == pytest.approx(0.298371109, abs=1e-6)
    weights = [d for d in docs if isinstance(d, dict) and "layers" in d]
    assert weights, out
    np.testing.assert_allclose(weights[0]["layers"][1]["W"], SEED_W2_AFTER_ONE_STEP, atol=1e-6)
    with np.load(cwd / "weights.npz") as npz:
        np.testing.assert_allclose(npz["W1"], SEED_W2_AFTER_ONE_STEP, atol=1e-6)
    predictions = [d for d in docs if isinstance(d, dict) and "outputs" in d]
    assert predictions and len(predictions[0]["outputs"][0]) == 2, out
    datasets = [d for d in docs if isinstance(d, dict) and d.get("task") == "classification"]
    assert datasets and datasets[0]["n_samples"] == 150, out
    # then the CLI's --watch: its summary says the iris run succeeded
    cli_output = out[out.rindex('"classification"') :]
    assert re.search(r"status\W+succeeded", cli_output) and "100/100" in cli_output, out


# -- services ----------------------------------------------------------------------------


@dataclass
class Service:
    url: str
    database_url: str


def make_run_command() -> list[str]:
    """The command `make run` ends in, from the Makefile (``$(BIN)`` is ``.venv/bin``)."""
    recipe = re.search(r"^run:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert recipe, "the Makefile has no run target"
    last = recipe.group(1).strip().splitlines()[-1].strip()
    return shlex.split(last.replace("$(BIN)", ".venv/bin"))


@pytest.fixture(scope="module")
def make_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`make run`'s service, as a newcomer starts it in a checkout: SQLite ``backprop.db``
    in the working folder, authentication off on loopback. Only the port (and a queue of
    its own on the shared Redis) differ."""
    folder = checkout(tmp_path_factory.mktemp("make-run"))
    command = make_run_command()
    assert command == [".venv/bin/backprop", "standalone"], command
    port = free_port()
    env = user_env(
        BACKPROP_REDIS_URL=REDIS_URL, BACKPROP_TASK_QUEUE=f"test-{uuid.uuid4().hex[:12]}"
    )
    log = open(folder / "standalone.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [*command, "--port", str(port)], cwd=folder, env=env, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError((folder / "standalone.log").read_text(errors="replace"))
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, 60, "`make run`'s service", interval=0.1)
        yield Service(url, f"sqlite:///{folder / 'backprop.db'}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


@pytest.fixture(scope="module")
def compose_like(
    pg_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, Stack]]:
    """What compose runs: migrate, API and a worker on PostgreSQL, authentication on."""
    name = f"backprop_quickstart_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db_url = f"{pg_server_url.rsplit('/', 1)[0]}/{name}"
    stack = start_stack(db_url, tmp_path_factory.mktemp("compose-like"), BACKPROP_AUTH="on")
    try:
        yield Service(stack.base_url, db_url), stack
    finally:
        stack.stop()
        with psycopg.connect(pg_server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def compose_script(database_url: str) -> str:
    """The compose block as run on the host against a stack that is already up: `docker
    compose up -d` is the stack; `docker compose exec -T api backprop …` is the same CLI with
    the api container's database setting."""
    (code,) = blocks(README, "compose", "sh")
    lines = []
    for line in code.replace("\\\n", " ").splitlines():
        if line.strip() == "docker compose up -d":
            continue
        inside_api = f"env BACKPROP_DATABASE_URL={shlex.quote(database_url)} "
        line = line.replace("docker compose exec -T api ", inside_api)
        assert "docker" not in line, f"a compose step the test cannot stand in for: {line}"
        lines.append(line)
    return "\n".join(lines)


# -- tests -------------------------------------------------------------------------------


def test_the_marked_blocks_and_the_files_they_name_exist() -> None:
    for markdown in (README, CLIENT_MD):
        assert markers_before_fences(markdown), (
            f"{markdown.name}: a <!-- test: … --> marker is not right before a fence"
        )
    assert len(blocks(README, "quickstart", "sh")) >= 2
    blocks(README, "compose", "sh")
    blocks(README, "engine", "python")
    blocks(CLIENT_MD, "client", "python")
    for markdown in (README, CLIENT_MD, ROOT / "examples" / "README.md"):
        text = markdown.read_text()
        named = re.findall(r"examples/[\w./-]*\w", text)
        # the files the code blocks read: curl's @file, the CLI's inputs, open(), upload
        code = "\n".join(re.findall(r"^```\w*\n(.*?)^```$", text, re.M | re.S))
        read = re.findall(
            r"(?:@|--(?:data|network|training|input)\s+|open\(\"|upload_dataset\(\")([\w./-]+)",
            code,
        )
        assert read, f"{markdown.name}: the test finds no file its code reads"
        for path in named + read:
            assert (ROOT / path).exists(), f"{markdown.name} names {path}, which does not exist"
    # a newcomer's shell has no `backprop` on PATH: the quickstart calls it as .venv/bin/backprop
    for code in blocks(README, "quickstart", "sh"):
        bare = re.findall(r"(?:^|[\s;|(])backprop\s", code, re.M)
        assert not bare, f"the quickstart calls `backprop` without .venv/bin/: {code}"


def test_readme_compose_quickstart_uses_the_compose_files_steps() -> None:
    """The compose block's steps are deploy.md's, on a service that docker-compose.yml has."""
    (code,) = blocks(README, "compose", "sh")
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    for line in ("cp .env.example .env", "docker compose up -d"):
        assert line in code.splitlines() and line in deploy, line
    sed = next(line for line in code.splitlines() if line.startswith("sed "))
    assert sed in deploy, sed
    # the key step: the same command as deploy.md's *Create an API key*
    key_step = re.search(r"^export BACKPROP_API_KEY=.*?\)$", code, re.M | re.S)
    assert key_step and key_step.group(0) in deploy, key_step
    services = re.findall(r"^  ([\w-]+):$", (ROOT / "docker-compose.yml").read_text(), re.M)
    for service in re.findall(r"docker compose exec (?:-T )?([\w-]+) backprop", code):
        assert service in services, f"docker-compose.yml has no service {service}"
    assert "keys create" in code and "Authorization: Bearer" in README.read_text()


def test_readme_engine_snippet_runs(tmp_path: Path) -> None:
    (code,) = blocks(README, "engine", "python")
    folder = checkout(tmp_path / "clone")
    proc = subprocess.run(
        [str(VENV_BIN / "python"), "-c", code], cwd=folder, env=user_env(),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    printed = [float(x) for x in re.findall(r"\d\.\d+(?:e-?\d+)?", proc.stdout)]
    assert printed == pytest.approx([0.027, 0.974], abs=5e-4), proc.stdout


def test_readme_quickstart_against_make_run(make_run: Service, tmp_path: Path) -> None:
    """`make run`, then steps 2 and 3 as written (no key: authentication is off)."""
    folder = checkout(tmp_path / "clone")
    script = "\n".join(blocks(README, "quickstart", "sh"))
    proc = run_bash(script, folder, user_env(BACKPROP_URL=make_run.url))
    check_quickstart(proc, folder)


def test_readme_quickstart_with_compose_and_its_key(
    compose_like: tuple[Service, Stack], tmp_path: Path
) -> None:
    """Step 1's compose block (its key included), then steps 2 and 3, against a stack with
    authentication on: every call carries the key the block created."""
    service, stack = compose_like
    folder = checkout(tmp_path / "clone")
    script = (
        compose_script(service.database_url) + "\n" + "\n".join(blocks(README, "quickstart", "sh"))
    )
    proc = run_bash(script, folder, user_env(BACKPROP_URL=service.url))
    check_quickstart(proc, folder)
    password = re.search(r"^POSTGRES_PASSWORD=(.*)$", (folder / ".env").read_text(), re.M)
    assert password and re.fullmatch(r"[0-9a-f]{48}", password.group(1)), password
    # the key was needed (anonymous requests are refused) and belongs to `me`
    assert stack.client.get("/api/v1/runs").status_code == 401
    keys = subprocess.run(
        [str(VENV_BIN / "backprop"), "keys", "list", "--json"], capture_output=True, text=True,
        env=user_env(BACKPROP_DATABASE_URL=service.database_url), check=True, timeout=60,
    )  # fmt: skip
    assert "me" in [k["owner"] for k in json.loads(keys.stdout)]


def test_client_example_runs(compose_like: tuple[Service, Stack], tmp_path: Path) -> None:
    """docs/client.md's example as written, with a key from `backprop keys create`."""
    service, _ = compose_like
    (code,) = blocks(CLIENT_MD, "client", "python")
    created = subprocess.run(
        [str(VENV_BIN / "backprop"), "keys", "create", "--owner", "client-example", "--json"],
        capture_output=True, text=True, check=True, timeout=60,
        env=user_env(BACKPROP_DATABASE_URL=service.database_url),
    )  # fmt: skip
    key = json.loads(created.stdout)["key"]
    folder = checkout(tmp_path / "clone")
    proc = subprocess.run(
        [str(VENV_BIN / "python"), "-c", code], cwd=folder, capture_output=True, text=True,
        env=user_env(BACKPROP_URL=service.url, BACKPROP_API_KEY=key), timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [int(line.split()[0]) for line in lines[:-1]] == list(range(1, 101)), proc.stdout
    assert lines[-1] == "succeeded ['setosa']", proc.stdout
    with np.load(folder / "model.npz") as npz:
        assert [npz[f].shape for f in ("W0", "b0", "W1", "b1")] == [(4, 16), (16,), (16, 3), (3,)]
