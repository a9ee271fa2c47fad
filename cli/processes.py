"""Child processes for ``backprop standalone``: start, watch and stop them together.

Our own children (api, worker) write their log lines themselves, in the format they
inherit; a foreign program (the embedded ``redis-server``) is started with ``relay=True``,
and each line it prints becomes a log line of ours (logger ``backprop.<name>``), so the
output stays in one format.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import IO

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the parent dies, so nothing is orphaned."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the parent's own shutdown still stops the children
        pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# redis-server's lines: "<pid>:<role> <day> <month> <year> <time> <mark> <message>", where
# the mark is its level: . debug, - verbose, * notice, # warning. Redis logs its ordinary
# start and stop at "warning" too, so only lines that say WARNING are warnings here.
_REDIS_LINE = re.compile(
    r"^\d+:[A-Z] \d{1,2} \w{3} \d{4} [\d:.]+ (?P<mark>[.*#-]) (?P<message>.*)$"
)
_REDIS_LEVELS = {".": logging.DEBUG, "-": logging.DEBUG, "*": logging.INFO, "#": logging.INFO}


def _relay(name: str, stream: IO[bytes]) -> None:
    """Log each line of a child's output until it closes it (in a thread of its own)."""
    child_logger = logging.getLogger(f"backprop.{name}")
    with stream:
        for raw in stream:
            line = raw.decode(errors="replace").rstrip()
            if not line.strip():
                continue
            found = _REDIS_LINE.match(line)
            message = found.group("message") if found else line
            level = _REDIS_LEVELS[found.group("mark")] if found else logging.INFO
            if message.startswith("WARNING"):
                level = logging.WARNING
            child_logger.log(level, "%s", message)


class ProcessGroup:
    """Named children, stopped in reverse start order with SIGTERM, then SIGKILL (the
    whole process group, so no grandchild survives)."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        env: dict[str, str] | None = None,
        *,
        relay: bool = False,
    ) -> None:
        """Start ``argv``; with ``relay``, its stdout and stderr become our log lines."""
        output = subprocess.PIPE if relay else None
        proc = subprocess.Popen(
            list(argv),
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT if relay else None,
            start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order
            preexec_fn=_die_with_parent,
        )
        if relay and proc.stdout is not None:
            threading.Thread(
                target=_relay, args=(name, proc.stdout), name=f"relay-{name}", daemon=True
            ).start()
        logger.info("started %s (pid %d)", name, proc.pid)
        self.children.append((name, proc))

    def first_exited(self) -> tuple[str, int] | None:
        for name, proc in self.children:
            code = proc.poll()
            if code is not None:
                return name, code
        return None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the children one at a time, newest first (api, then worker, then Redis):
        a worker handing its run back still needs the broker it was started with."""
        deadline = time.monotonic() + timeout_s
        for name, proc in reversed(self.children):
            if proc.poll() is None:
                logger.info("stopping %s (pid %d)", name, proc.pid)
                # The child's main process only, as `docker stop` does: a worker then
                # hands its runs back after the current epoch instead of dying mid-way.
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop in time; killing it", name)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
