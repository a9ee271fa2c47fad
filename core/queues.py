"""Which Celery queue a run goes to: ``small`` or ``large`` by the size of the job.

A job's size is ``parameters × samples × epochs`` — proportional to the floating-point work
of training it. Runs smaller than ``BACKPROP_SMALL_JOB_THRESHOLD`` go to the queue
``<task_queue>.small``, the others to ``<task_queue>.large``; other tasks (webhooks) use
``<task_queue>`` itself. A worker takes all three unless told otherwise
(``backprop worker --queues small``), so a split deployment can keep some processes free for
small jobs while long ones train elsewhere.

Pure functions: no Celery, no database.
"""

from __future__ import annotations

from core.spec import NetworkSpec

SMALL = "small"
LARGE = "large"
DEFAULT = "default"
KINDS = (SMALL, LARGE)


def count_parameters(network: NetworkSpec) -> int:
    """Weights and biases of ``network``."""
    fan_ins = [network.input_dim] + [layer.units for layer in network.layers[:-1]]
    return sum(
        (n_in + 1) * layer.units for n_in, layer in zip(fan_ins, network.layers, strict=True)
    )


def job_size(n_parameters: int, n_samples: int, epochs: int) -> int:
    """The size of a training job: ``parameters × samples × epochs``."""
    return n_parameters * n_samples * epochs


def queue_kind(size: int, threshold: int) -> str:
    """``"small"`` for a job below ``threshold``, else ``"large"``."""
    return SMALL if size < threshold else LARGE


def queue_name(kind: str | None, task_queue: str) -> str:
    """The Celery queue of a kind: ``small`` → ``<task_queue>.small``; ``default`` or None →
    ``<task_queue>``; any other name is taken as a full queue name."""
    if kind is None or kind == DEFAULT:
        return task_queue
    if kind in KINDS:
        return f"{task_queue}.{kind}"
    return kind


def all_queues(task_queue: str) -> list[str]:
    """Every queue a worker takes by default."""
    return [task_queue, *(queue_name(kind, task_queue) for kind in KINDS)]


def celery_priority(priority: int) -> int:
    """A run's priority (0–9, higher first) as a Redis-transport priority (0 is served first)."""
    return 9 - max(0, min(9, priority))
