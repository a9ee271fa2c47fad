"""Every change of a run's status and lease, one function per transition, and its effects.

This is the only module that writes ``runs.status`` (tests/core/test_run_lifecycle.py checks
that statically). docs/architecture.md has the state machine as a table.

::

    create ──▶ queued ──claim──▶ running ──succeed──▶ succeeded
                 ▲ │ │             │ │ ├──fail / expire──▶ failed
                 │ │ │             │ │ └──stop (cancel flag)──▶ cancelled
                 │ │ └──cancel / prune_waiting──▶ cancelled
                 └─┴──hand back / reclaim / pause (at a rung)─┘

How to use it:

- Each transition takes a ``Connection`` inside the caller's transaction, is a
  compare-and-set (a conditional UPDATE) and returns what it changed: a :class:`Change`,
  or ``None`` when its guard did not hold (another process got there first). The caller
  commits; the run's timeline row (``run_transitions``) is written in the same transaction.
- After the commit, the caller passes the changes to :func:`announce`, which carries out the
  effects outside the database: the SSE ``status`` event (with the reason), the dispatcher
  (a freed slot, a run to send), the sweep (its next trials, its status) and the webhook.
  Effects inside the database (the lease, the checkpoint's removal) are part of the
  transition itself.
- ``record_epoch`` and ``renew_lease`` change the lease, not the status: no timeline row.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import (
    Connection,
    Row,
    String,
    Table,
    Text,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.dml import ReturningUpdate
from sqlalchemy.sql.schema import CallableColumnDefault, ScalarElementColumnDefault

from core.broker import enqueue_webhook
from core.db.models import (
    SORTABLE_METRICS,
    Checkpoint,
    Dataset,
    MetricRow,
    Run,
    RunStatus,
    RunTransition,
    TZDateTime,
    metric_columns,
    utcnow,
)
from core.dispatch import freed, request_dispatch
from core.runs import timeline
from core.runs.sweeps import after_run_end
from core.streams import EVENT_STATUS, Publisher
from core.sweeps import STOP_EARLY, STOP_PRUNED, STOP_SWEEP_CANCELLED
from core.telemetry import run_ended_increments

logger = logging.getLogger(__name__)

_runs = cast(Table, Run.__table__)
_QUEUED, _RUNNING = RunStatus.queued.value, RunStatus.running.value


@dataclass(frozen=True)
class Change:
    """A transition that applied: what :func:`announce` needs after the commit."""

    run_id: str
    status: RunStatus
    reason: str
    sweep_id: str | None = None
    webhook: bool = False  # the run has a callback_url to call when it ends
    error: str | None = None
    duration_s: float | None = None  # from start to end, for telemetry
    frees_slot: bool = False  # a worker slot, or a message that held one, is free again
    sweep_slot: bool = False  # not an end, but its sweep has a free slot (a paused trial)

    @property
    def final(self) -> bool:
        return self.status.is_terminal


def _note(
    conn: Connection,
    run_id: str,
    status: RunStatus,
    reason: str,
    *,
    attempt: int,
    worker: str | None = None,
    at: datetime | None = None,
) -> None:
    conn.execute(
        insert(RunTransition).values(
            run_id=run_id, status=status.value, at=at or utcnow(), reason=reason,
            attempt=attempt, worker=worker,
        )
    )  # fmt: skip


def _as_sql(sentence: Callable[[str, int], str], **args: Any) -> Any:
    """``sentence(worker, attempt)`` as an SQL expression of ``args`` (SQL expressions by
    the sentence's parameter names): its text, written once in :mod:`core.runs.timeline`,
    around the values."""
    markers = {name: f"\x00{name}\x00" for name in args}
    text = sentence(*(cast(Any, markers[name]) for name in ("worker", "attempt")))
    parts: list[Any] = []
    for piece in text.split("\x00"):
        if piece in args:
            parts.append(sql_cast(args[piece], String))
        elif piece:
            parts.append(literal(piece))
    expression = parts[0]
    for part in parts[1:]:
        expression = expression + part
    return expression


# Built statements of the transitions, by their shape: their values are parameters, so each
# is built and compiled once (building one costs as much as its round trip).
_STATEMENTS: dict[tuple[Any, ...], Any] = {}


def _change(
    conn: Connection,
    shape: tuple[Any, ...] | None,
    build: Callable[[], ReturningUpdate[Any]],
    params: dict[str, Any],
    status: RunStatus,
    reason: str | Callable[[str, int], str],
    *,
    worker: str | None,
    at: datetime,
) -> tuple[Row[Any] | None, str]:
    """Run the conditional UPDATE ``build()`` (with ``params``; returning at least the
    run's ``id`` and ``attempts``) and write the timeline row of the change it made, if any;
    the row it returned and the reason. ``shape`` names the statement ``build`` makes, for
    the cache of built statements (None: built each time, for a statement with values in
    it). ``reason``: the sentence, or ``sentence(worker,
    attempt)`` of the new attempt count.

    On PostgreSQL this is one statement — the timeline row is inserted from the UPDATE's
    RETURNING in a data-modifying CTE — so it is atomic even without a transaction around
    it; elsewhere two, to run in the caller's transaction.
    """
    pg = conn.dialect.name == "postgresql"
    key = (shape, status, pg, callable(reason))
    stmt = _STATEMENTS.get(key) if shape is not None else None
    if stmt is None:
        stmt = build()
        if pg:
            changed = stmt.cte("changed")
            said = (
                _as_sql(reason, worker=bindparam("t_worker"), attempt=changed.c.attempts)
                if callable(reason)
                else bindparam("t_reason", type_=Text())
            )
            noted = insert(RunTransition).from_select(
                ["run_id", "status", "at", "reason", "attempt", "worker"],
                select(changed.c.id, literal(status.value), bindparam("t_at", type_=TZDateTime()),
                       said, changed.c.attempts, bindparam("t_worker", type_=String())),
            ).cte("noted")  # fmt: skip
            stmt = select(changed).add_cte(noted)
        if shape is not None:
            _STATEMENTS[key] = stmt
    if pg:
        params = {**params, "t_at": at, "t_worker": worker}
        if not callable(reason):
            params["t_reason"] = reason
    row = conn.execute(stmt, params).first()
    if row is None:
        return None, ""
    text = reason(worker or "", row.attempts) if callable(reason) else reason
    if not pg:
        _note(conn, row.id, status, text, attempt=row.attempts, worker=worker, at=at)
    return row, text


# -- create ----------------------------------------------------------------------------------

# SQLAlchemy types a mapped class's __table__ as FromClause; a declarative class has a Table.
_INSERT_RUN = insert(_runs).returning(*_runs.c)
_INSERT_TRANSITION = insert(cast(Table, RunTransition.__table__))


def create(
    conn: Connection, values: Mapping[str, Any], *, reason: str
) -> tuple[Row[Any], dict[str, Any]]:
    """Store a new ``queued`` run with the columns ``values`` (built by the API's
    ``new_run_values``, for ``POST /runs`` and sweeps alike); returns the stored row and
    its first transition, as :func:`core.runs.timeline.read_many` gives it."""
    if conn.dialect.name == "postgresql":
        row = _create_in_one_statement(conn, {**values, "status": _QUEUED}, reason)
    else:
        row = conn.execute(_INSERT_RUN, {**values, "status": _QUEUED}).one()
        conn.execute(
            _INSERT_TRANSITION,
            {"run_id": row.id, "status": _QUEUED, "at": row.created_at, "reason": reason,
             "attempt": 0, "worker": None},
        )  # fmt: skip
    first = {"status": _QUEUED, "at": row.created_at, "reason": reason, "attempt": 0,
             "worker": None}  # fmt: skip
    return row, first


class _StoredRow(dict[str, Any]):
    """A stored run's columns, read as attributes like a result row's."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _create_in_one_statement(conn: Connection, values: Mapping[str, Any], reason: str) -> Any:
    """The run and its first timeline row in one statement (PostgreSQL: the timeline row
    inserted from the run's INSERT … RETURNING in a data-modifying CTE). The columns'
    Python defaults (id, times, counters) are filled in here, as an INSERT of its own gets
    them from SQLAlchemy."""
    row_values = dict(values)
    for column in _runs.c:
        default = column.default
        if column.key not in row_values and isinstance(default, ScalarElementColumnDefault):
            row_values[column.key] = default.arg
        elif column.key not in row_values and isinstance(default, CallableColumnDefault):
            row_values[column.key] = cast(Any, default.arg)(None)
    shape = ("create", tuple(sorted(row_values)))
    stmt = _STATEMENTS.get(shape)
    if stmt is None:
        created = (
            insert(_runs)
            .values({k: bindparam(f"c_{k}", type_=_runs.c[k].type) for k in shape[1]})
            .returning(_runs.c.id, _runs.c.created_at)
            .cte("created")
        )
        noted = insert(RunTransition).from_select(
            ["run_id", "status", "at", "reason", "attempt", "worker"],
            select(created.c.id, literal(_QUEUED), created.c.created_at,
                   bindparam("t_reason", type_=Text()), literal(0), null()),
        ).cte("noted")  # fmt: skip
        stmt = _STATEMENTS[shape] = select(created).add_cte(noted)
    params = {f"c_{k}": v for k, v in row_values.items()}
    conn.execute(stmt, {**params, "t_reason": reason}).one()
    # The row as stored: every value was given here (no server-side default is left).
    return _StoredRow({column.key: row_values.get(column.key) for column in _runs.c})


def create_many(
    conn: Connection, rows: Sequence[Mapping[str, Any]], *, reasons: Sequence[str]
) -> list[str]:
    """Store many new ``queued`` runs (a sweep's trials) at once; returns their ids."""
    now = utcnow()
    ids = [
        row.id
        for row in conn.execute(
            insert(_runs).returning(_runs.c.id, sort_by_parameter_order=True),
            [{**values, "status": _QUEUED, "created_at": now} for values in rows],
        )
    ]
    conn.execute(
        _INSERT_TRANSITION,
        [
            {"run_id": run_id, "status": _QUEUED, "at": now, "reason": reason, "attempt": 0,
             "worker": None}
            for run_id, reason in zip(ids, reasons, strict=True)
        ],
    )  # fmt: skip
    return ids


# -- claim -----------------------------------------------------------------------------------


def _dataset_column(column: Any) -> Any:
    """``column`` of the run's dataset, as a subquery correlated to the updated run."""
    return select(column).where(Dataset.id == Run.dataset_id).scalar_subquery().label(column.key)


ClaimOutcome = Literal["claimed", "cancelled", "gave up", "not claimable"]


@dataclass(frozen=True)
class Claim:
    """What :func:`claim` found: the claimed run's row (network, training, dataset bytes,
    classes, epoch, sweep_id, callback_url), or the change that ended the run instead."""

    outcome: ClaimOutcome
    row: Row[Any] | None = None
    change: Change | None = None


def _claimable(run_id: Any, now: Any) -> Any:
    """Queued, or running under an expired lease (values or bound parameters)."""
    return and_(
        Run.id == run_id,
        or_(
            Run.status == _QUEUED,
            and_(
                Run.status == _RUNNING,
                or_(Run.lease_expires_at.is_(None), Run.lease_expires_at < now),
            ),
        ),
    )


def _claim_statement() -> ReturningUpdate[Any]:
    return (
        update(Run)
        .where(
            _claimable(bindparam("run_id"), bindparam("now", type_=TZDateTime())),
            Run.attempts < bindparam("max_attempts"),
            Run.cancel_requested.is_(False),
        )
        .values(
            status=_RUNNING,
            lease_owner=bindparam("v_worker"),
            lease_expires_at=bindparam("v_lease", type_=TZDateTime()),
            attempts=Run.attempts + 1,
            started_at=func.coalesce(Run.started_at, bindparam("v_now", type_=TZDateTime())),
        )
        .returning(
            Run.id,
            Run.attempts,
            Run.epoch,
            Run.network,
            Run.training,
            Run.sweep_id,
            Run.dataset_id,
            Run.callback_url,
            _dataset_column(Dataset.data),
            _dataset_column(Dataset.classes),
        )
    )


def claim(
    conn: Connection, run_id: str, *, worker: str, lease_s: float, max_attempts: int
) -> Claim:
    """queued (or running under an expired lease) → running, leased to ``worker``.

    A run whose cancel was asked while no worker held it ends ``cancelled`` here, untrained;
    one whose workers died ``max_attempts`` times ends ``failed`` instead of being tried
    again. A first attempt costs one statement on PostgreSQL: the claim (an UPDATE …
    RETURNING that brings the dataset along) with its timeline row.
    """
    now = utcnow()
    params = {"run_id": run_id, "now": now, "max_attempts": max_attempts, "v_worker": worker,
              "v_lease": now + timedelta(seconds=lease_s), "v_now": now}  # fmt: skip
    row, reason = _change(conn, ("claim",), _claim_statement, params, RunStatus.running,
                          timeline.claimed, worker=worker, at=now)  # fmt: skip
    if row is not None:
        change = Change(run_id, RunStatus.running, reason, sweep_id=row.sweep_id)
        return Claim("claimed", row=row, change=change)

    # Cancelled while its worker was away (it died or handed the run back).
    claimable = _claimable(run_id, now)
    ended = _end_unleased(conn, claimable & Run.cancel_requested.is_(True), RunStatus.cancelled,
                          reason=None, now=now)  # fmt: skip
    if ended is not None:
        return Claim("cancelled", change=ended)
    ended = _end_unleased(conn, claimable & (Run.attempts >= max_attempts), RunStatus.failed,
                          reason=timeline.gave_up(max_attempts), now=now)  # fmt: skip
    if ended is not None:
        return Claim("gave up", change=ended)
    return Claim("not claimable")


def _end_unleased(
    conn: Connection, guard: Any, status: RunStatus, *, reason: str | None, now: datetime
) -> Change | None:
    """End a run no worker holds (found at its claim); ``reason`` None: a cancel, said by
    who asked (its stop_reason) and where it had stopped."""
    if reason is None:
        found = conn.execute(select(Run.stop_reason, Run.epoch).where(guard)).first()
        if found is None:
            return None
        reason = timeline.cancelled(_canceller(found.stop_reason), after_epoch=found.epoch or None)
        # The sentence holds only while what it says does (a compare-and-set on both).
        same_asker = (
            Run.stop_reason.is_(None)
            if found.stop_reason is None
            else Run.stop_reason == found.stop_reason
        )
        guard = and_(guard, Run.epoch == found.epoch, same_asker)
    values: dict[str, Any] = {"status": status.value, "finished_at": now,
                              "lease_owner": None, "lease_expires_at": None}  # fmt: skip
    if status is RunStatus.failed:
        values["error"] = reason
    ended, _ = _change(
        conn,
        None,  # the guard holds values: built for this call
        lambda: update(Run)
        .where(guard)
        .values(**values)
        .returning(Run.id, Run.attempts, Run.callback_url, Run.sweep_id),
        {}, status, reason, worker=None, at=now,
    )  # fmt: skip
    if ended is None:
        return None
    conn.execute(delete(Checkpoint).where(Checkpoint.run_id == ended.id))
    return Change(ended.id, status, reason, sweep_id=ended.sweep_id,
                  webhook=bool(ended.callback_url), error=values.get("error"),
                  frees_slot=True)  # fmt: skip


def _canceller(stop_reason: str | None) -> str:
    return {STOP_SWEEP_CANCELLED: "its sweep", STOP_PRUNED: "its sweep's pruning"}.get(
        stop_reason or "", "its owner"
    )


# -- while training: epochs and the lease -------------------------------------------------------

_RECORD_EPOCH = (
    update(_runs)
    .where(_runs.c.id == bindparam("run_id"), _runs.c.lease_owner == bindparam("me"))
    .values(
        epoch=bindparam("epoch"),
        metrics=bindparam("metrics"),
        lease_expires_at=bindparam("lease"),
        # metrics' sortable values, in their columns (the list's sort keys)
        **{key: bindparam(f"m_{key}") for key in SORTABLE_METRICS},
    )  # fmt: skip
    .returning(_runs.c.cancel_requested, _runs.c.stop_reason)
)


@dataclass(frozen=True)
class EpochRecorded:
    cancel_requested: bool
    stop_reason: str | None


def record_epoch(
    conn: Connection,
    run_id: str,
    *,
    worker: str,
    epoch: int,
    metrics: dict[str, float],
    lease_s: float,
) -> EpochRecorded | None:
    """running → running: the epoch's progress, and the lease renewed. ``None`` if
    ``worker`` no longer holds the lease; else whether a stop was asked (cancel, prune)."""
    row = conn.execute(
        _RECORD_EPOCH,
        {"run_id": run_id, "me": worker, "epoch": epoch, "metrics": metrics,
         "lease": utcnow() + timedelta(seconds=lease_s),
         **{f"m_{key}": value for key, value in metric_columns(metrics).items()}},
    ).first()  # fmt: skip
    return None if row is None else EpochRecorded(bool(row[0]), row[1])


def renew_lease(conn: Connection, run_id: str, *, worker: str, lease_s: float) -> bool:
    """Extend ``worker``'s lease on the run; False if it lost the lease."""
    result = conn.execute(
        update(Run)
        .where(Run.id == run_id, Run.lease_owner == worker)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_s))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def stop_requested(conn: Connection, run_id: str) -> EpochRecorded:
    """Whether a stop was asked for the run (read by the lease heartbeat)."""
    row = conn.execute(
        select(Run.cancel_requested, Run.stop_reason).where(Run.id == run_id)
    ).first()
    return EpochRecorded(bool(row and row[0]), row[1] if row else None)


# -- back to the queue ----------------------------------------------------------------------------


def hand_back(
    conn: Connection, run_id: str, *, worker: str, checkpoint_epoch: int
) -> Change | None:
    """running → queued: ``worker`` is shutting down; the run resumes elsewhere from its
    checkpoint of ``checkpoint_epoch`` (0: none). A graceful hand-back is not a failed
    attempt."""
    row = conn.execute(
        update(Run)
        .where(Run.id == run_id, Run.lease_owner == worker, Run.status == _RUNNING)
        .values(
            status=_QUEUED,
            lease_owner=None,
            lease_expires_at=None,
            enqueued_at=None,  # the dispatcher sends it to another worker
            attempts=Run.attempts - 1,
        )
        .returning(Run.attempts, Run.sweep_id)
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        return None
    reason = timeline.handed_back(checkpoint_epoch)
    _note(conn, run_id, RunStatus.queued, reason, attempt=row.attempts, worker=worker)
    return Change(run_id, RunStatus.queued, reason, sweep_id=row.sweep_id, frees_slot=True)


def reclaim(conn: Connection, *, now: datetime | None = None, limit: int = 500) -> list[Change]:
    """running → queued for every run whose lease expired (its worker died), unsent: the
    dispatcher sends it to a free worker, where it resumes from its checkpoint. Each run
    is a compare-and-set on its expired lease, so reclaimers racing take it once."""
    now = now or utcnow()
    expired_lease = and_(
        Run.status == _RUNNING,
        or_(Run.lease_expires_at.is_(None), Run.lease_expires_at < now),
    )
    candidates = conn.execute(
        select(Run.id, Run.lease_owner).where(expired_lease).limit(limit)
    ).all()
    changes = []
    for run_id, worker in candidates:
        row = conn.execute(
            update(Run)
            .where(Run.id == run_id, expired_lease)
            .values(status=_QUEUED, lease_owner=None, lease_expires_at=None, enqueued_at=None)
            .returning(Run.attempts, Run.sweep_id)
            .execution_options(synchronize_session=False)
        ).first()
        if row is None:
            continue
        reason = timeline.lease_expired(worker)
        _note(conn, run_id, RunStatus.queued, reason, attempt=row.attempts, worker=worker, at=now)
        changes.append(Change(run_id, RunStatus.queued, reason, sweep_id=row.sweep_id,
                              frees_slot=True))  # fmt: skip
    return changes


# -- stop requests: cancel and prune --------------------------------------------------------------

CancelOutcome = Literal["cancelled", "stopping", "ended"]


@dataclass(frozen=True)
class Cancelled:
    """What :func:`cancel` did: ``cancelled`` at once (a queued run; ``change`` set),
    ``stopping`` (a running run, flagged: its worker ends it within an epoch) or ``ended``
    (nothing to cancel: it had ended)."""

    outcome: CancelOutcome
    change: Change | None = None


def cancel(conn: Connection, run_id: str) -> Cancelled:
    """Cancel by the run's owner: queued → cancelled at once; running → flagged."""
    now = utcnow()
    reason = timeline.cancelled("its owner")
    row = conn.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == _QUEUED)
        .values(status=RunStatus.cancelled.value, cancel_requested=True, finished_at=now)
        .returning(Run.attempts, Run.callback_url, Run.sweep_id)
        .execution_options(synchronize_session=False)
    ).first()
    if row is not None:
        # A run handed back or reclaimed may have left a checkpoint: it is not needed now.
        conn.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id))
        _note(conn, run_id, RunStatus.cancelled, reason, attempt=row.attempts, at=now)
        # Had it been sent, the message that held a slot is void: the slot is free again.
        return Cancelled("cancelled", Change(run_id, RunStatus.cancelled, reason,
                                             sweep_id=row.sweep_id,
                                             webhook=bool(row.callback_url),
                                             frees_slot=True))  # fmt: skip
    flagged = conn.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == _RUNNING)
        .values(cancel_requested=True)
        .execution_options(synchronize_session=False)
    )
    return Cancelled("stopping" if flagged.rowcount else "ended")


def cancel_sweep_trials(conn: Connection, sweep_id: str) -> list[Change]:
    """The sweep was cancelled: its queued trials (those waiting at a rung too) → cancelled
    at once, its running ones flagged (they stop within an epoch); all get ``stop_reason:
    sweep_cancelled``. Its refit run (no trial number) is a run of its own: left alone."""
    now = utcnow()
    reason = timeline.cancelled("its sweep")
    stopped = conn.execute(
        update(Run)
        .where(Run.sweep_id == sweep_id, Run.trial.is_not(None), Run.status == _QUEUED)
        .values(status=RunStatus.cancelled.value, cancel_requested=True,
                stop_reason=STOP_SWEEP_CANCELLED, finished_at=now)
        .returning(Run.id, Run.attempts, Run.callback_url)
        .execution_options(synchronize_session=False)
    ).all()  # fmt: skip
    if stopped:
        conn.execute(delete(Checkpoint).where(Checkpoint.run_id.in_([r.id for r in stopped])))
        conn.execute(
            _INSERT_TRANSITION,
            [{"run_id": r.id, "status": RunStatus.cancelled.value, "at": now, "reason": reason,
              "attempt": r.attempts, "worker": None} for r in stopped],
        )  # fmt: skip
    conn.execute(
        update(Run)
        .where(Run.sweep_id == sweep_id, Run.trial.is_not(None), Run.status == _RUNNING)
        .values(cancel_requested=True, stop_reason=STOP_SWEEP_CANCELLED)
        .execution_options(synchronize_session=False)
    )
    return [
        Change(
            r.id,
            RunStatus.cancelled,
            reason,
            sweep_id=sweep_id,
            webhook=bool(r.callback_url),
            frees_slot=True,
        )  # fmt: skip
        for r in stopped
    ]


def pause(
    conn: Connection, run_id: str, *, worker: str, epoch: int, details: Mapping[str, Any],
    reason: str,
) -> Change | None:  # fmt: skip
    """running → queued, held: a sweep's trial reached a rung where it is not (yet) among the
    best 1/eta (ASHA); it waits there, its checkpoint of ``epoch`` stored, until its sweep
    promotes it (releases it: it resumes from that checkpoint) or prunes it
    (:func:`prune_waiting`). ``details``: its standing at the rung, kept in
    ``stop_details``. Not a failed attempt."""
    row = conn.execute(
        update(Run)
        .where(Run.id == run_id, Run.lease_owner == worker, Run.status == _RUNNING)
        .values(
            status=_QUEUED,
            held=True,
            lease_owner=None,
            lease_expires_at=None,
            enqueued_at=None,
            attempts=Run.attempts - 1,
            stop_details=dict(details),
        )
        .returning(Run.attempts, Run.sweep_id)
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        return None
    _note(conn, run_id, RunStatus.queued, reason, attempt=row.attempts, worker=worker)
    return Change(run_id, RunStatus.queued, reason, sweep_id=row.sweep_id, frees_slot=True,
                  sweep_slot=True)  # fmt: skip


def prune_waiting(
    conn: Connection, run_id: str, *, details: Mapping[str, Any], verdict: str
) -> Change | None:
    """queued (held, waiting at a rung) → cancelled: its sweep found it outside the best
    1/eta of its rung once no other trial could change that (ASHA). It keeps its metrics
    and checkpoint-free partial progress; ``stop_reason: pruned``, ``stop_details``
    (rung, epoch, value, cutoff, …) and ``error`` = ``verdict``, which is the reason too.
    ``sweep_id`` is left out of the change: its caller is the sweep's own dispatch."""
    now = utcnow()
    row = conn.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == _QUEUED, Run.held.is_(True))
        .values(status=RunStatus.cancelled.value, stop_reason=STOP_PRUNED, finished_at=now,
                stop_details=dict(details), error=verdict)
        .returning(Run.attempts, Run.callback_url)
        .execution_options(synchronize_session=False)
    ).first()  # fmt: skip
    if row is None:
        return None
    conn.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id))
    _note(conn, run_id, RunStatus.cancelled, verdict, attempt=row.attempts, at=now)
    return Change(run_id, RunStatus.cancelled, verdict, webhook=bool(row.callback_url),
                  error=verdict)  # fmt: skip


# -- the end --------------------------------------------------------------------------------------


def _end(
    conn: Connection,
    run_id: str,
    status: RunStatus,
    *,
    worker: str,
    reason: str,
    error: str | None,
    drop_checkpoint: bool,
    results: Mapping[str, Any] | None = None,
) -> Change | None:
    """running → ``status``, guarded by ``worker``'s lease; ``results``: more columns of
    the run's outcome (best epoch, metrics, stop reason)."""
    now = utcnow()
    results = dict(results or {})
    # A value that is a column (last_epoch_metrics = metrics) is SQL; the others parameters.
    columns = sorted(k for k, v in results.items() if isinstance(v, InstrumentedAttribute))
    values = sorted(k for k in results if k not in columns)

    def build() -> ReturningUpdate[Any]:
        return (
            update(Run)
            .where(Run.id == bindparam("run_id"), Run.lease_owner == bindparam("worker"))
            .values(
                status=status.value, error=bindparam("v_error", type_=Text()),
                finished_at=bindparam("v_now", type_=TZDateTime()), lease_owner=None,
                lease_expires_at=None, **{k: results[k] for k in columns},
                **{k: bindparam(f"v_{k}") for k in values},
            )
            .returning(Run.id, Run.started_at, Run.attempts, Run.callback_url, Run.sweep_id)
        )  # fmt: skip

    params = {"run_id": run_id, "worker": worker, "v_error": error, "v_now": now,
              **{f"v_{k}": results[k] for k in values}}  # fmt: skip
    shape = ("end", tuple(columns), tuple(values))
    row, _ = _change(conn, shape, build, params, status, reason, worker=worker, at=now)
    if row is None:
        return None
    if drop_checkpoint:  # after the end: should we stop between, it is only left over
        conn.execute(delete(Checkpoint).where(Checkpoint.run_id == run_id))
    duration = (now - row.started_at).total_seconds() if row.started_at else None
    return Change(run_id, status, reason, sweep_id=row.sweep_id, webhook=bool(row.callback_url),
                  error=error, duration_s=duration, frees_slot=True)  # fmt: skip


def succeed(
    conn: Connection,
    run_id: str,
    *,
    worker: str,
    epochs: int,
    last_epoch: int,
    best_epoch: int | None = None,
    test_metrics: dict[str, Any] | None = None,
    more_metrics: Mapping[str, float] | None = None,
    drop_checkpoint: bool = True,
) -> Change | None:
    """running → succeeded: its model is stored (by the caller, before this).

    ``last_epoch`` < ``epochs``: early stopping ended it (``stop_reason: early_stopped``).
    ``best_epoch``: the epoch whose weights the model holds, when early stopping restored
    the best ones; the run's ``metrics`` become that epoch's (those of the model it hands
    out) and the last epoch's are kept as ``last_epoch_metrics``. ``test_metrics``: the
    model's scores on the rows ``test_split`` held out; ``more_metrics``: figures of the
    model to add to its ``metrics`` (a regression's ``val_mae`` and ``val_r2``).
    """
    results: dict[str, Any] = {}
    if last_epoch < epochs:
        results["stop_reason"] = STOP_EARLY
    if test_metrics is not None:
        results["test_metrics"] = test_metrics
    model_metrics: dict[str, Any] | None = None
    if best_epoch is not None:
        results["best_epoch"] = best_epoch
        results["last_epoch_metrics"] = Run.metrics  # the column's value before the update
        best = conn.execute(
            select(MetricRow.loss, MetricRow.val_loss, MetricRow.accuracy, MetricRow.val_accuracy)
            .where(MetricRow.run_id == run_id, MetricRow.epoch == best_epoch)
        ).first()  # fmt: skip
        if best is not None:
            model_metrics = {k: v for k, v in best._asdict().items() if v is not None}
    if more_metrics:
        if model_metrics is None:  # the last epoch's, as recorded
            stored = conn.scalar(select(Run.metrics).where(Run.id == run_id))
            model_metrics = dict(stored or {})
        model_metrics.update(more_metrics)
    if model_metrics is not None:
        results["metrics"] = model_metrics
        results.update(metric_columns(model_metrics))  # the list's sort keys, kept in step
    reason = timeline.trained(epochs, last_epoch=last_epoch, best_epoch=best_epoch)
    return _end(conn, run_id, RunStatus.succeeded, worker=worker, reason=reason, error=None,
                drop_checkpoint=drop_checkpoint, results=results)  # fmt: skip


def fail(conn: Connection, run_id: str, *, worker: str, error: str,
         drop_checkpoint: bool = True) -> Change | None:  # fmt: skip
    """running → failed: bad data, divergence, a bug. ``error`` is the reason too."""
    return _end(conn, run_id, RunStatus.failed, worker=worker, reason=error, error=error,
                drop_checkpoint=drop_checkpoint)  # fmt: skip


def expire(conn: Connection, run_id: str, *, worker: str, max_runtime_s: float, epoch: int,
           drop_checkpoint: bool = True) -> Change | None:  # fmt: skip
    """running → failed: the run exceeded its ``max_runtime_s``."""
    reason = timeline.runtime_exceeded(max_runtime_s, epoch)
    return _end(conn, run_id, RunStatus.failed, worker=worker, reason=reason, error=reason,
                drop_checkpoint=drop_checkpoint)  # fmt: skip


def stop(conn: Connection, run_id: str, *, worker: str, reason: str, error: str | None = None,
         drop_checkpoint: bool = True) -> Change | None:  # fmt: skip
    """running → cancelled: the run stopped at a cancel request, keeping its metrics so
    far. ``reason`` says who asked (see :func:`stop_reason_text`)."""
    return _end(conn, run_id, RunStatus.cancelled, worker=worker, reason=reason,
                error=error, drop_checkpoint=drop_checkpoint)  # fmt: skip


def stop_reason_text(stop_reason: str | None, *, after_epoch: int, note: str | None = None) -> str:
    """The reason of a :func:`stop`: ``note`` when the worker has one (a prune's verdict),
    else who cancelled (from ``runs.stop_reason``)."""
    if note:
        return note
    return timeline.cancelled(_canceller(stop_reason), after_epoch=after_epoch)


# -- effects --------------------------------------------------------------------------------------


def announce(
    changes: Iterable[Change | None], events: Publisher, *, slot_announced: bool = False
) -> None:
    """The effects of committed ``changes`` outside the database, in order: the status
    event (with its reason), then, for a run that ended, its sweep and its webhook; then
    one dispatch request for the slots they freed.

    ``slot_announced``: the worker already told the dispatcher that this run's slot is
    freeing (so the next run was chosen while it wrote its end): it now confirms instead
    of requesting a round. Never raises for an effect that failed; each is retried or
    reconciled elsewhere (the stream falls back to the database, the reclaimer refreshes
    sweeps, webhooks have their own retries).
    """
    request = False
    for change in changes:
        if change is None:
            continue
        data: dict[str, Any] = {"status": change.status.value, "reason": change.reason}
        if change.error:
            data["error"] = change.error
        telemetry = (
            run_ended_increments(change.status.value, change.duration_s) if change.final else None
        )
        events.publish(change.run_id, EVENT_STATUS, data, final=change.final, telemetry=telemetry)
        if (change.final or change.sweep_slot) and change.sweep_id is not None:
            after_run_end(change.run_id, change.sweep_id)  # admit the sweep's next trials
        if change.final and change.webhook:
            try:
                enqueue_webhook(change.run_id)
            except Exception as exc:  # the run's end is recorded; the webhook is best effort
                logger.warning("run %s: could not queue its webhook: %s", change.run_id, exc)
        if change.frees_slot:
            if slot_announced:
                freed(change.run_id)
            else:
                request = True
    if request:
        request_dispatch()
