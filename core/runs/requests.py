"""A run request and the columns of the new run it makes: the one place they are built,
for ``POST /runs``, a sweep's trials (made by the API, or later by a tpe sweep's
dispatcher in core/runs/sweeps.py), its refit, and retried trials.

The API's ``RunCreate`` (api/schemas.py) is :class:`RunRequest` with its OpenAPI examples;
the API validates a request against its dataset and the service's limits
(``api/validation.validate_against``) before the values are built here.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictInt

from core.db.models import RunStatus
from core.queues import count_parameters, job_size, queue_kind
from core.settings import Settings
from core.spec import Hinted, NetworkSpec, TrainingConfig

# Text that PostgreSQL can store: no NUL characters.
NO_NUL = r"^[^\x00]*$"


class RunRequest(Hinted):
    """What ``POST /runs`` takes (API.md §5), and each of a sweep's trials is."""

    name: str | None = Field(default=None, max_length=200, pattern=NO_NUL)
    dataset_id: str = Field(max_length=64)
    network: NetworkSpec
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    callback_url: str | None = Field(
        default=None,
        max_length=2000,
        description="POSTed once when the run ends, signed with X-Backprop-Signature.",
    )
    priority: StrictInt = Field(
        default=0, ge=0, le=9, description="0-9: among queued runs, higher ones start first."
    )


def queue_of(body: RunRequest, n_samples: int, settings: Settings) -> str:
    """``small`` or ``large``: the run's parameters x samples x epochs vs the threshold."""
    size = job_size(count_parameters(body.network), n_samples, body.training.epochs)
    return queue_kind(size, settings.small_job_threshold)


def run_values(
    body: RunRequest,
    *,
    dataset_id: str,
    n_samples: int,
    owner: str,
    api_key_id: str | None,
    settings: Settings,
    name: str | None,
) -> dict[str, Any]:
    """The columns of a new, queued run of ``body`` on the dataset ``dataset_id`` (of
    ``n_samples`` rows), for :func:`core.runs.lifecycle.create` / ``create_many``."""
    training = body.training.model_dump(mode="json")
    if training.get("max_runtime_s") is None:
        training["max_runtime_s"] = settings.max_runtime_s
    return {
        "owner": owner,
        "name": name,
        "dataset_id": dataset_id,
        "network": body.network.model_dump(mode="json", exclude_none=True),
        "training": training,
        "status": RunStatus.queued.value,
        "epochs": body.training.epochs,
        "metrics": {"loss": None},
        "callback_url": body.callback_url,
        "webhook_status": "pending" if body.callback_url else None,
        "api_key_id": api_key_id,
        "enqueued_at": None,  # sent by the dispatcher when a worker has room
        "queue": queue_of(body, n_samples, settings),
        "priority": body.priority,
        "parent_run_id": body.training.warm_start.run_id if body.training.warm_start else None,
    }


def trial_label(sweep_name: str | None, trial: int | None, fold: int | None) -> str:
    """A trial's run name: ``<sweep> trial <i>[ fold <f>]``; a refit's ``<sweep> refit``."""
    where = "refit" if trial is None else f"trial {trial}"
    return (f"{sweep_name or 'sweep'} {where}" + (f" fold {fold}" if fold is not None else ""))[
        :200
    ]
