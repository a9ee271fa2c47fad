"""A run's timeline: the sentences that say why its status changed, and reading them back.

Each change of status (core/runs/lifecycle.py) stores one row in ``run_transitions`` with
its time, reason, attempt and worker. The reasons are written for people: they are what
``GET /runs/{id}`` shows as ``transitions``, what the SSE ``status`` events carry and what
the dashboard's run page lists.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import JSON, Connection, Table, bindparam, func, literal_column, select, type_coerce

from core.db.models import Run, RunTransition

_transitions = cast(Table, RunTransition.__table__)
_COLUMNS = (
    _transitions.c.run_id,
    _transitions.c.status,
    _transitions.c.at,
    _transitions.c.reason,
    _transitions.c.attempt,
    _transitions.c.worker,
)


# -- reasons ------------------------------------------------------------------------------


def submitted(*, sweep_id: str | None = None, trial: int | None = None,
              fold: int | None = None) -> str:  # fmt: skip
    if sweep_id is None:
        return "submitted by its owner"
    which = f"trial {trial}" + (f" (fold {fold})" if fold is not None else "")
    return f"{which} of sweep {sweep_id}; starts when the sweep has a free slot"


def claimed(worker: str, attempt: int) -> str:
    return f"claimed by worker {worker} (attempt {attempt})"


def handed_back(checkpoint_epoch: int) -> str:
    """``checkpoint_epoch``: the epoch its checkpoint holds (0: none)."""
    if checkpoint_epoch <= 0:
        return "handed back at worker shutdown; starts again from epoch 1"
    return f"handed back at worker shutdown; resumes from epoch {checkpoint_epoch + 1}"


def lease_expired(worker: str | None) -> str:
    who = f" (worker {worker} stopped renewing it)" if worker else ""
    return f"lease expired; re-queued{who}"


def cancelled(by: str, *, after_epoch: int | None = None) -> str:
    """``by``: who cancelled, e.g. "its owner", "its sweep"."""
    what = f"cancelled by {by}"
    if after_epoch is None:
        return what
    return f"{what}; stopped after epoch {after_epoch}"


def gave_up(attempts: int) -> str:
    return (
        f"gave up after {attempts} attempts: the worker training this run stopped "
        "unexpectedly each time (out of memory, or killed?)"
    )


def trained(epochs: int, *, last_epoch: int, best_epoch: int | None = None) -> str:
    """A run that ended well: all ``epochs``, or early stopping at ``last_epoch``; and the
    epoch whose weights it kept when that is not the last."""
    kept = (
        f"; kept the weights of epoch {best_epoch}"
        if best_epoch is not None and best_epoch != last_epoch
        else ""
    )
    if last_epoch >= epochs:
        return f"trained all {epochs} epochs{kept}"
    return f"early stopped at epoch {last_epoch} of {epochs}{kept}"


def runtime_exceeded(max_runtime_s: float, epoch: int) -> str:
    return f"exceeded max runtime of {max_runtime_s:g} s at epoch {epoch}"


# -- reading ------------------------------------------------------------------------------

_BY_RUNS = (
    select(*_COLUMNS)
    .where(_transitions.c.run_id.in_(bindparam("run_ids", expanding=True)))
    .order_by(_transitions.c.id)
)


def _item(row: Any) -> dict[str, Any]:
    return {"status": row.status, "at": row.at, "reason": row.reason,
            "attempt": row.attempt, "worker": row.worker}  # fmt: skip


def read_many(conn: Connection, run_ids: Iterable[str]) -> dict[str, list[dict[str, Any]]]:
    """The transitions of each of ``run_ids`` (one query), in order; ``[]`` for none."""
    ids = list(run_ids)
    found: dict[str, list[dict[str, Any]]] = {run_id: [] for run_id in ids}
    if ids:
        rows = conn.execute(_BY_RUNS, {"run_ids": ids})
        for row in rows:
            found[row.run_id].append(_item(row))
    return found


def aggregated(dialect: str) -> Any:
    """A column of a ``select`` from ``runs``: the run's transitions as one JSON array
    (``[{id, status, at, reason, attempt, worker}]``, unordered; :func:`from_aggregate`
    orders them), so that a run and its timeline come in one round trip. ``dialect``:
    ``postgresql`` or ``sqlite``."""
    t, runs = _transitions, cast(Table, Run.__table__)
    pairs: list[Any] = []
    for column in (t.c.id, t.c.status, t.c.at, t.c.reason, t.c.attempt, t.c.worker):
        pairs += [literal_column(f"'{column.key}'"), column]
    if dialect == "postgresql":
        array = func.json_agg(func.json_build_object(*pairs))
    else:
        array = func.json_group_array(func.json_object(*pairs))
    # Not named "transitions": the record reads the row's attributes, and sets that itself.
    subquery = select(array).where(t.c.run_id == runs.c.id).scalar_subquery()
    return type_coerce(subquery, JSON).label("timeline")


def from_aggregate(value: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The items of :func:`aggregated`'s array in order, as :func:`read_many` gives them (a
    time without a zone, as SQLite's JSON writes it, is UTC)."""
    items = sorted(value or [], key=lambda item: int(item["id"]))
    out = []
    for item in items:
        at = item["at"]
        if isinstance(at, str):
            parsed = datetime.fromisoformat(at)
            at = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        out.append({"status": item["status"], "at": at, "reason": item["reason"],
                    "attempt": item["attempt"], "worker": item["worker"]})  # fmt: skip
    return out


def latest_reason() -> Any:
    """A column for a query of runs: why each run has its current status (the reason of its
    last transition), labelled ``reason``."""
    return (
        select(_transitions.c.reason)
        .where(_transitions.c.run_id == Run.id)
        .order_by(_transitions.c.id.desc())
        .limit(1)
        .scalar_subquery()
        .label("reason")
    )


def refit_submitted(sweep_id: str) -> str:
    return f"refit of sweep {sweep_id}: its best setting trained on all the data"


def retry_submitted(*, sweep_id: str, trial: int, fold: int | None, failed_run_id: str) -> str:
    which = f"trial {trial}" + (f" (fold {fold})" if fold is not None else "")
    return f"{which} of sweep {sweep_id} again, after run {failed_run_id} failed"
