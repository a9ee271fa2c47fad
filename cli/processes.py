"""Child processes for ``backprop standalone``: start, watch and stop them together."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence

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


class ProcessGroup:
    """Named children, stopped in reverse start order with SIGTERM, then SIGKILL (the
    whole process group, so no grandchild survives)."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        proc = subprocess.Popen(
            list(argv),
            env=env,
            start_new_session=True,  # Ctrl-C reaches only us; we stop the children in order
            preexec_fn=_die_with_parent,
        )
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
