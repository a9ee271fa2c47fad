"""A sweep's trials in the service: releasing them, pruning them (ASHA), finishing the sweep.

(The pure rules — search spaces, rungs, which trials ASHA keeps — are in core/sweeps.py.)

A sweep's trials are ordinary runs, all created ``queued`` and ``held`` when the sweep is;
only ``max_concurrent`` of them at a time are released to the run dispatcher
(core/dispatch.py), which sends them to free workers like any other run.
:func:`dispatch` releases more as trials end; :func:`refresh` moves the sweep to ``running``
and, once every trial ended, to its final status. Both are idempotent and safe to call from
any process at any time: a dispatch starts with an UPDATE of the sweep's row, which
serialises dispatchers of one sweep, and each trial is taken with a conditional UPDATE.

Who calls them: the API after creating a sweep; the worker that finished a trial
(:func:`after_run_end`, from ``RunTrainer._announce_end``) — inline, so the next trial does
not wait behind other messages; and the reclaimer loop of every worker
(:func:`reconcile`), the safety net when a worker died between a trial's end and its
dispatch.

Pruning runs in the trial's own worker process: :class:`PruneCheck` is asked after every
epoch, and at a rung epoch compares the trial's metric with its siblings' at that epoch.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from sqlalchemy import CursorResult, Executable, func, select, update
from sqlalchemy.orm import Session

from core.db.models import (
    SWEEP_ACTIVE,
    MetricRow,
    Run,
    RunStatus,
    Sweep,
    SweepStatus,
    utcnow,
)
from core.db.session import session_scope
from core.dispatch import request_dispatch
from core.sweeps import asha_cutoff, asha_keep, mode_of, rungs

logger = logging.getLogger(__name__)

_ACTIVE_RUN = (RunStatus.queued.value, RunStatus.running.value)
_ACTIVE_SWEEP = [s.value for s in SWEEP_ACTIVE]


def _rowcount(s: Session, stmt: Executable) -> int:
    """Rows matched by the UPDATE ``stmt``. (``Session.execute`` is typed as returning a
    ``Result``; for an UPDATE it is a ``CursorResult``, which has the row count.)"""
    return cast(CursorResult[Any], s.execute(stmt)).rowcount


def _take_trials(s: Session, sweep_id: str) -> list[str]:
    """Release up to the sweep's free slots of held trials; returns their ids."""
    locked = _rowcount(
        s,
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.status.in_(_ACTIVE_SWEEP))
        .values(updated_at=utcnow())
        .execution_options(synchronize_session=False),
    )
    if not locked:
        return []
    max_concurrent = s.scalar(select(Sweep.max_concurrent).where(Sweep.id == sweep_id)) or 1
    in_flight = s.scalar(
        select(func.count())
        .select_from(Run)
        .where(
            Run.sweep_id == sweep_id,
            Run.status.in_(_ACTIVE_RUN),
            Run.held.is_(False),
        )
    )
    slots = max_concurrent - (in_flight or 0)
    if slots <= 0:
        return []
    waiting = s.scalars(
        select(Run.id)
        .where(
            Run.sweep_id == sweep_id,
            Run.status == RunStatus.queued.value,
            Run.held.is_(True),
        )
        .order_by(Run.trial, Run.fold)
        .limit(slots)
    ).all()
    taken = []
    for run_id in waiting:
        if _rowcount(
            s,
            update(Run)
            .where(Run.id == run_id, Run.status == RunStatus.queued.value, Run.held.is_(True))
            .values(held=False)
            .execution_options(synchronize_session=False),
        ):
            taken.append(run_id)
    return taken


def dispatch(sweep_id: str) -> list[str]:
    """Release held trials while fewer than ``max_concurrent`` are released and active,
    then let the run dispatcher send them; returns the ids released. Call only outside any
    open transaction on the sweep."""
    with session_scope() as s:
        taken = _take_trials(s, sweep_id)
    if taken:
        logger.info("sweep %s: released %d trial(s)", sweep_id, len(taken))
        request_dispatch()
    return taken


def refresh(sweep_id: str) -> str | None:
    """Bring the sweep's status up to date with its trials; returns the status."""
    with session_scope() as s:
        sweep = s.get(Sweep, sweep_id)
        if sweep is None:
            return None
        if sweep.status not in _ACTIVE_SWEEP:
            return sweep.status
        counts: dict[str, int] = {
            status: n
            for status, n in s.execute(
                select(Run.status, func.count())
                .where(Run.sweep_id == sweep_id)
                .group_by(Run.status)
            ).all()
        }
        total = sum(counts.values())
        active = sum(counts.get(status, 0) for status in _ACTIVE_RUN)
        values: dict[str, Any] = {}
        if total and not active:
            if counts.get(RunStatus.succeeded.value):
                new = SweepStatus.succeeded
            elif counts.get(RunStatus.failed.value):
                new = SweepStatus.failed
            else:
                new = SweepStatus.cancelled
            values["finished_at"] = utcnow()
        elif counts.get(RunStatus.running.value) or active < total:
            new = SweepStatus.running
        else:
            return sweep.status
        if new.value == sweep.status:
            return sweep.status
        s.execute(
            update(Sweep)
            .where(Sweep.id == sweep_id, Sweep.status.in_(_ACTIVE_SWEEP))
            .values(status=new.value, **values)
            .execution_options(synchronize_session=False)
        )
        if new.value not in _ACTIVE_SWEEP:
            logger.info("sweep %s %s", sweep_id, new.value)
        return new.value


def after_run_end(run_id: str, sweep_id: str) -> None:
    """Trial ``run_id`` of ``sweep_id`` ended: start the next trials and update the sweep.

    Never raises: the trial's own outcome is already recorded, and :func:`reconcile`
    catches up on anything missed here.
    """
    try:
        dispatch(sweep_id)
        refresh(sweep_id)
    except Exception as exc:
        logger.warning("run %s: could not advance its sweep (%s); the reclaimer will", run_id, exc)


def reconcile(limit: int = 200) -> int:
    """Dispatch and refresh every active sweep (the reclaimer's periodic safety net)."""
    with session_scope() as s:
        ids = list(
            s.scalars(
                select(Sweep.id)
                .where(Sweep.status.in_(_ACTIVE_SWEEP))
                .order_by(Sweep.updated_at)
                .limit(limit)
            )
        )
    for sweep_id in ids:
        dispatch(sweep_id)
        refresh(sweep_id)
    return len(ids)


class PruneCheck:
    """Asked after each epoch of a run: should it stop here (ASHA)? Returns the verdict, a
    sentence for the run's timeline; the worker then asks :func:`core.runs.lifecycle.prune`.

    The first call reads whether the run is a trial of a sweep with pruning; a run that is
    not costs that one query and nothing more.
    """

    def __init__(self, run_id: str, *, sweep_id: str | None) -> None:
        self.run_id = run_id
        # Not a sweep's trial (known from the claim): nothing to load, nothing to check.
        self._loaded = sweep_id is None
        self._rungs: frozenset[int] = frozenset()
        self._sweep_id: str | None = None
        self._fold: int | None = None
        self._metric = "val_loss"
        self._eta = 3

    def __call__(self, epoch: int) -> str | None:
        try:
            if not self._loaded:
                self._load()
                self._loaded = True
            if epoch not in self._rungs:
                return None
            return self._check(epoch)
        except Exception as exc:  # pruning is an optimisation: never break the run for it
            logger.warning("run %s: pruning check failed (%s); continuing", self.run_id, exc)
            return None

    def _load(self) -> None:
        with session_scope() as s:
            row = s.execute(
                select(Run.sweep_id, Run.fold, Run.epochs).where(Run.id == self.run_id)
            ).first()
            if row is None or row.sweep_id is None:
                return
            sweep = s.execute(
                select(Sweep.metric, Sweep.spec).where(Sweep.id == row.sweep_id)
            ).first()
        if sweep is None or not (sweep.spec or {}).get("pruning"):
            return
        pruning = sweep.spec["pruning"]
        self._sweep_id, self._fold, self._metric = row.sweep_id, row.fold, sweep.metric
        self._eta = int(pruning.get("eta", 3))
        self._rungs = frozenset(rungs(int(pruning.get("min_epochs", 1)), self._eta, row.epochs))

    def _check(self, epoch: int) -> str | None:
        column = getattr(MetricRow, self._metric)
        with session_scope() as s:
            stmt = (
                select(MetricRow.run_id, column)
                .join(Run, Run.id == MetricRow.run_id)
                .where(Run.sweep_id == self._sweep_id, MetricRow.epoch == epoch)
            )
            if self._fold is not None:
                stmt = stmt.where(Run.fold == self._fold)
            at_rung = {run_id: value for run_id, value in s.execute(stmt).all()}
        mine = at_rung.get(self.run_id)
        values = list(at_rung.values())
        mode = mode_of(self._metric)
        if asha_keep(mine, values, self._eta, mode):
            return None
        cutoff = asha_cutoff(values, self._eta, mode)
        assert mine is not None and cutoff is not None  # else the trial would continue
        rung = sorted(self._rungs).index(epoch) + 1
        side = "above" if mode == "min" else "below"
        return (
            f"pruned at rung {rung} (epoch {epoch}): {self._metric} {mine:.4g} {side} the "
            f"cutoff {cutoff:.4g}, the best 1/{self._eta} of the {len(values)} trials there"
        )
