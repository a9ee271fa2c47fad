"""What machine a benchmark ran on: CPU, cores, memory, Python (shared by the bench scripts)."""

from __future__ import annotations

import os
import platform
from typing import Any


def machine_basics() -> dict[str, Any]:
    """``nproc``, CPU model, RAM in GB and the Python version, read from /proc."""
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kb = int(f.readline().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(mem_kb / 1024**2, 1),
        "python": platform.python_version(),
    }
