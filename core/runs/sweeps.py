"""A sweep's trials in the service: releasing them, ASHA's rungs, tpe suggestions, the end.

(The pure rules — search spaces, rungs, which trials ASHA keeps — are in core/sweeps.py;
TPE's suggestions in core/tpe.py.)

A sweep's trials are ordinary runs, created ``queued`` and ``held``; only ``max_concurrent``
of them at a time are released to the run dispatcher (core/dispatch.py), which sends them to
free workers like any other run. :func:`dispatch` releases more as trials end; :func:`refresh`
moves the sweep to ``running`` and, once every trial ended, to its final status. Both are
idempotent and safe to call from any process at any time: a dispatch starts with an UPDATE
of the sweep's row, which serialises dispatchers of one sweep, and each trial is taken with
a conditional UPDATE.

A grid or random sweep creates all its trials up front. A ``tpe`` sweep creates each
configuration when a slot frees: :func:`dispatch` rebuilds the Optuna study from the
configurations stored so far, asks it for the next one and creates its runs, in the same
transaction as the sweep row's lock, so one process at a time asks, whichever it is.

ASHA (``pruning``), asynchronous successive halving with promotions as in Li et al.
(2018): when a trial reaches a rung epoch, its worker compares its metric with what every
trial of the sweep (same fold) recorded at that epoch; it goes on if it is among the best
``⌊n/eta⌋`` of those ``n``, else it *waits* at the rung (:class:`PruneCheck`; the worker
stores a checkpoint of that epoch and calls :func:`core.runs.lifecycle.pause`). A dispatch
first promotes waiting trials that are now among the best ``⌊n/eta⌋`` of their rung (they
resume from their checkpoint), then starts new trials. When nothing runs and no trial is
left to start, at least the best waiting trial of the highest rung goes on (``max(1,
⌊n/eta⌋)``, as synchronous successive halving keeps one), and once none can, the waiting
trials are pruned (:func:`core.runs.lifecycle.prune_waiting`), each with its rung, value
and the cutoff in ``stop_details``. So no trial goes past a rung unjudged, and no trial is
pruned before every trial that could beat it there has been compared with it.

A trial tried again (``retry-failed``) is a new run with the same trial and fold; only the
latest attempt of each counts (:func:`current_attempt`). A sweep's refit is a run with its
``sweep_id`` and no trial number: no slot, no rung, not in the leaderboard.

Who calls them: the API after creating, extending or retrying a sweep; the worker that
ended or paused a trial (:func:`after_run_end`, from ``lifecycle.announce``) — inline, so the
next trial does not wait behind other messages; and the reclaimer loop of every worker
(:func:`reconcile`), the safety net when a worker died between a trial's end and its
dispatch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from pydantic import ValidationError
from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Executable,
    and_,
    delete,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from core.db.models import (
    SWEEP_ACTIVE,
    Dataset,
    MetricRow,
    ModelArtifact,
    Run,
    RunStatus,
    Sweep,
    SweepStatus,
    utcnow,
)
from core.db.session import session_scope
from core.dispatch import request_dispatch
from core.runs import timeline
from core.runs.requests import RunRequest, run_values, trial_label
from core.settings import get_settings
from core.sweeps import (
    STOP_PRUNED,
    SearchSpace,
    SpaceError,
    apply,
    asha_cutoff,
    asha_keep,
    asha_kept,
    mean_std,
    mode_of,
    rungs,
)

logger = logging.getLogger(__name__)

_ACTIVE_RUN = (RunStatus.queued.value, RunStatus.running.value)
_ACTIVE_SWEEP = [s.value for s in SWEEP_ACTIVE]


def _rowcount(s: Session, stmt: Executable) -> int:
    """Rows matched by the UPDATE ``stmt``. (``Session.execute`` is typed as returning a
    ``Result``; for an UPDATE it is a ``CursorResult``, which has the row count.)"""
    return cast(CursorResult[Any], s.execute(stmt)).rowcount


def current_attempt() -> ColumnElement[bool]:
    """A sweep's trial run that is its trial's and fold's latest attempt (a retried trial
    has several runs; only the latest counts). Correlates with ``Run`` of the query."""
    newer = aliased(Run)
    return and_(
        Run.trial.is_not(None),
        ~exists().where(
            newer.sweep_id == Run.sweep_id,
            newer.trial == Run.trial,
            newer.fold.is_not_distinct_from(Run.fold),
            newer.created_at > Run.created_at,
        ),
    )


def _waiting() -> ColumnElement[bool]:
    """A trial waiting at a rung: held back, but it has trained (a new one has not)."""
    return and_(Run.status == RunStatus.queued.value, Run.held.is_(True), Run.epoch > 0)


# -- ASHA ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standing:
    """A trial's place at a rung: what decides whether it goes on, and what it records."""

    rung: int  # 1 for the first rung
    epoch: int
    metric: str
    value: float | None
    cutoff: float | None  # the worst value that may go on (None: none may yet)
    kept: int  # how many may go on
    trials: int  # how many trials reached the rung (this one included)
    eta: int

    def details(self) -> dict[str, Any]:
        """For ``runs.stop_details``."""
        return {"rung": self.rung, "epoch": self.epoch, "metric": self.metric,
                "value": self.value, "cutoff": self.cutoff, "kept": self.kept,
                "trials_at_rung": self.trials, "eta": self.eta}  # fmt: skip

    def waiting(self) -> str:
        """The reason of a pause at the rung."""
        if self.cutoff is None:
            why = (f"fewer than {self.eta} trials have reached it ({self.trials}), so none "
                   "goes on yet")  # fmt: skip
        else:
            side = "above" if mode_of(self.metric) == "min" else "below"
            why = (f"{self.metric} {_fmt(self.value)} {side} the cutoff {_fmt(self.cutoff)}, "
                   f"the best 1/{self.eta} of the {self.trials} trials there so far")  # fmt: skip
        return (f"waiting at rung {self.rung} (epoch {self.epoch}): {why}; it goes on if the "
                "trials still to come leave it among the best")  # fmt: skip

    def pruned(self) -> str:
        """The verdict of a pruned trial (its ``error`` and timeline reason)."""
        side = "above" if mode_of(self.metric) == "min" else "below"
        return (f"pruned at rung {self.rung} (epoch {self.epoch}): {self.metric} "
                f"{_fmt(self.value)} {side} the cutoff {_fmt(self.cutoff)}, the best "
                f"1/{self.eta} of the {self.trials} trials there")  # fmt: skip


def _fmt(value: float | None) -> str:
    return "none" if value is None else f"{value:.4g}"


@dataclass(frozen=True)
class _Asha:
    metric: str
    eta: int
    rung_epochs: tuple[int, ...]


def _asha_of(spec: dict[str, Any], metric: str, epochs: int) -> _Asha | None:
    pruning = spec.get("pruning")
    if not pruning:
        return None
    eta = int(pruning.get("eta", 3))
    return _Asha(metric, eta, tuple(rungs(int(pruning.get("min_epochs", 1)), eta, epochs)))


def rung_values(
    s: Session, sweep_id: str, epoch: int, fold: int | None, metric: str
) -> dict[str, float | None]:
    """Each trial's (latest attempt's) ``metric`` at ``epoch``, by run id, in ``fold``."""
    column = getattr(MetricRow, metric)
    stmt = (
        select(MetricRow.run_id, column)
        .join(Run, Run.id == MetricRow.run_id)
        .where(Run.sweep_id == sweep_id, MetricRow.epoch == epoch, current_attempt())
    )
    stmt = stmt.where(Run.fold.is_(None) if fold is None else Run.fold == fold)
    return {run_id: value for run_id, value in s.execute(stmt).all()}


def standing(
    asha: _Asha, epoch: int, mine: float | None, values: Sequence[float | None], *, final: bool
) -> Standing:
    """Where a trial with ``mine`` stands among ``values`` (its own included) at ``epoch``."""
    mode = mode_of(asha.metric)
    return Standing(
        rung=asha.rung_epochs.index(epoch) + 1 if epoch in asha.rung_epochs else 0,
        epoch=epoch, metric=asha.metric, value=mine,
        cutoff=asha_cutoff(values, asha.eta, mode, final=final),
        kept=asha_kept(len(values), asha.eta, final=final), trials=len(values), eta=asha.eta,
    )  # fmt: skip


def _promote(
    s: Session, sweep_id: str, asha_by_epochs: dict[int, _Asha], slots: int, *, final: bool
) -> list[str]:
    """Release up to ``slots`` trials waiting at a rung that are now among its best, the
    highest rung first, the best first, and among equals the earliest trial (and fold), so
    that the order does not depend on random run ids; returns their ids."""
    waiting = s.execute(
        select(Run.id, Run.epoch, Run.fold, Run.epochs, Run.trial).where(
            Run.sweep_id == sweep_id, _waiting(), current_attempt()
        )
    ).all()
    candidates: list[tuple[int, float, int, int, str]] = []
    cache: dict[tuple[int, int | None], dict[str, float | None]] = {}
    for row in waiting:
        asha = asha_by_epochs.get(row.epochs)
        if asha is None:
            continue
        key = (row.epoch, row.fold)
        if key not in cache:
            cache[key] = rung_values(s, sweep_id, row.epoch, row.fold, asha.metric)
        values = cache[key]
        mine = values.get(row.id)
        mode = mode_of(asha.metric)
        if asha_keep(mine, list(values.values()), asha.eta, mode, final=final):
            order = mine if mine is not None else float("inf")
            value = order if mode == "min" else -order
            trial, fold = row.trial if row.trial is not None else 2**31, row.fold or 0
            candidates.append((-row.epoch, value, trial, fold, row.id))
    taken = []
    for *_, run_id in sorted(candidates)[:slots]:
        if _rowcount(
            s,
            update(Run)
            .where(Run.id == run_id, _waiting())
            .values(held=False, stop_details=None)
            .execution_options(synchronize_session=False),
        ):
            # The weights it had while waiting were its model for the time being.
            s.execute(delete(ModelArtifact).where(ModelArtifact.run_id == run_id))
            taken.append(run_id)
    return taken


def _prune_waiting(s: Session, sweep_id: str, asha_by_epochs: dict[int, _Asha]) -> list[Any]:
    """Nothing runs and nothing is left to start: prune every trial still waiting."""
    from core.runs import lifecycle  # lifecycle imports this module

    waiting = s.execute(
        select(Run.id, Run.epoch, Run.fold, Run.epochs).where(
            Run.sweep_id == sweep_id, _waiting(), current_attempt()
        )
    ).all()
    changes = []
    for row in waiting:
        asha = asha_by_epochs.get(row.epochs)
        if asha is None:
            continue
        values = rung_values(s, sweep_id, row.epoch, row.fold, asha.metric)
        verdict = standing(asha, row.epoch, values.get(row.id), list(values.values()),
                           final=True)  # fmt: skip
        change = lifecycle.prune_waiting(
            s.connection(), row.id, details=verdict.details(), verdict=verdict.pruned()
        )
        if change is not None:
            changes.append(change)
    return changes


# -- tpe ----------------------------------------------------------------------------------


def observed_trials(s: Session, sweep_id: str, metric: str, space: SearchSpace) -> list[Any]:
    """The configurations of a tpe sweep so far, in trial order, as core/tpe.py takes them."""
    from core.tpe import Observed

    rows = s.execute(
        select(Run.trial, Run.fold, Run.sweep_params, Run.status, Run.metrics, Run.epoch,
               Run.stop_reason)
        .where(Run.sweep_id == sweep_id, current_attempt())
        .order_by(Run.trial, Run.fold)
    ).all()  # fmt: skip
    by_trial: dict[int, list[Any]] = {}
    for row in rows:
        by_trial.setdefault(row.trial, []).append(row)
    result = []
    for trial in sorted(by_trial):
        runs = by_trial[trial]
        params = runs[0].sweep_params or {}
        values = [(r.metrics or {}).get(metric) for r in runs]
        known = [float(v) for v in values if v is not None]
        statuses = {r.status for r in runs}
        if statuses & {RunStatus.queued.value, RunStatus.running.value}:
            result.append(Observed(params, "running"))
        elif statuses == {RunStatus.succeeded.value} and len(known) == len(values):
            result.append(Observed(params, "complete", mean_std(known)[0]))
        elif any(r.stop_reason == STOP_PRUNED for r in runs):
            step = min(r.epoch for r in runs)
            result.append(Observed(params, "pruned", mean_std(known)[0], step))
        else:
            result.append(Observed(params, "failed"))
    return result


def trial_requests(
    base: dict[str, Any], params: dict[str, Any], folds: int | None
) -> list[tuple[int | None, RunRequest]]:
    """(fold, request) of each run of one configuration: ``params`` written into the run
    request ``base``, one per cross-validation fold. Raises ``SpaceError`` or pydantic's
    ``ValidationError`` when it is not a valid run request."""
    request = apply(base, params)
    result = []
    for fold in range(folds) if folds else [None]:
        if fold is not None:
            training = request.setdefault("training", {})
            training["validation_split"] = 0.0
            training["validation_fold"] = {"k": folds, "index": fold}
        result.append((fold, RunRequest.model_validate(request)))
    return result


def _create_suggested(s: Session, sweep: Any, slots: int) -> list[str]:
    """A tpe sweep: create configurations while it has free slots and budget; returns the
    ids of the runs released (the other folds of a configuration wait, held)."""
    from core.runs import lifecycle  # lifecycle imports this module
    from core.tpe import suggest

    spec: dict[str, Any] = sweep.spec
    space = SearchSpace.model_validate(spec["search"])
    folds = (spec.get("cross_validation") or {}).get("k")
    created = (
        s.scalar(
            select(func.count(func.distinct(Run.trial))).where(
                Run.sweep_id == sweep.id, Run.trial.is_not(None)
            )
        )
        or 0
    )
    base = spec["base"]
    dataset = s.execute(
        select(Dataset.id, Dataset.n_samples).where(Dataset.id == base["dataset_id"])
    ).first()
    settings = get_settings()
    released: list[str] = []
    state = spec.get("tpe_state")
    while slots > 0 and created < sweep.n_trials:
        observed = observed_trials(s, sweep.id, sweep.metric, space)
        params, state = suggest(space, mode_of(sweep.metric), observed, state)
        try:
            if dataset is None:
                raise SpaceError(f"dataset {base['dataset_id']} no longer exists")
            requests = trial_requests(base, params, folds)
        except (SpaceError, ValidationError) as exc:
            # The API checked the corners of the space; should a suggestion still be
            # invalid, the search ends here rather than loop: its budget shrinks to what
            # was created, and the record says why.
            message = f"trial {created} ({params}): {exc}"
            logger.warning("sweep %s: search stopped: %s", sweep.id, message)
            s.execute(
                update(Sweep).where(Sweep.id == sweep.id)
                .values(n_trials=created, n_runs=created * (folds or 1),
                        spec={**spec, "tpe_state": state, "search_stopped": message})
                .execution_options(synchronize_session=False)
            )  # fmt: skip
            return released
        rows, reasons = [], []
        for fold, request in requests:
            label = trial_label(sweep.name, created, fold)
            values = run_values(
                request, dataset_id=dataset.id, n_samples=dataset.n_samples, owner=sweep.owner,
                api_key_id=spec.get("api_key_id"), settings=settings, name=label,
            )  # fmt: skip
            release = slots > 0
            slots -= release
            rows.append({**values, "held": not release, "sweep_id": sweep.id, "trial": created,
                         "fold": fold, "sweep_params": params})  # fmt: skip
            reasons.append(timeline.submitted(sweep_id=sweep.id, trial=created, fold=fold))
        ids = lifecycle.create_many(s.connection(), rows, reasons=reasons)
        released += [run_id for run_id, row in zip(ids, rows, strict=True) if not row["held"]]
        created += 1
        spec = {**spec, "tpe_state": state}
        s.execute(
            update(Sweep).where(Sweep.id == sweep.id).values(spec=spec)
            .execution_options(synchronize_session=False)
        )  # fmt: skip
    return released


# -- dispatch -----------------------------------------------------------------------------


@dataclass
class _Taken:
    released: list[str]
    ended: list[Any]  # lifecycle changes to announce (pruned waiting trials)


def _take_trials(s: Session, sweep_id: str) -> _Taken:
    """Fill the sweep's free slots: promotions first, then new trials (created now for a
    tpe sweep); prune the waiting trials once nothing else can happen."""
    taken = _Taken([], [])
    locked = _rowcount(
        s,
        update(Sweep)
        .where(Sweep.id == sweep_id, Sweep.status.in_(_ACTIVE_SWEEP))
        .values(updated_at=utcnow())
        .execution_options(synchronize_session=False),
    )
    if not locked:
        return taken
    sweep = s.execute(
        select(Sweep.id, Sweep.owner, Sweep.name, Sweep.metric, Sweep.spec, Sweep.n_trials,
               Sweep.max_concurrent).where(Sweep.id == sweep_id)
    ).one()  # fmt: skip
    in_flight = (
        s.scalar(
            select(func.count())
            .select_from(Run)
            .where(
                Run.sweep_id == sweep_id,
                Run.trial.is_not(None),
                Run.status.in_(_ACTIVE_RUN),
                Run.held.is_(False),
            )
        )
        or 0
    )
    slots = (sweep.max_concurrent or 1) - in_flight
    asha_by_epochs = {
        epochs: asha
        for epochs in s.scalars(
            select(func.distinct(Run.epochs)).where(Run.sweep_id == sweep_id, current_attempt())
        )
        if (asha := _asha_of(sweep.spec, sweep.metric, epochs)) is not None
    }
    if slots > 0 and asha_by_epochs:
        taken.released += _promote(s, sweep_id, asha_by_epochs, slots, final=False)
    if slots - len(taken.released) > 0:
        waiting = s.scalars(
            select(Run.id)
            .where(
                Run.sweep_id == sweep_id,
                Run.status == RunStatus.queued.value,
                Run.held.is_(True),
                Run.epoch == 0,
                current_attempt(),
            )
            .order_by(Run.trial, Run.fold)
            .limit(slots - len(taken.released))
        ).all()
        for run_id in waiting:
            if _rowcount(
                s,
                update(Run)
                .where(Run.id == run_id, Run.status == RunStatus.queued.value,
                       Run.held.is_(True))
                .values(held=False)
                .execution_options(synchronize_session=False),
            ):  # fmt: skip
                taken.released.append(run_id)
    if sweep.spec["search"]["type"] == "tpe" and slots - len(taken.released) > 0:
        taken.released += _create_suggested(s, sweep, slots - len(taken.released))
    if asha_by_epochs and in_flight == 0 and not taken.released and not _more_to_start(s, sweep):
        # Nothing runs, nothing new: at least the best waiting trial of a rung goes on;
        # when none can, the waiting trials are pruned.
        taken.released += _promote(s, sweep_id, asha_by_epochs, max(slots, 1), final=True)
        if not taken.released:
            taken.ended += _prune_waiting(s, sweep_id, asha_by_epochs)
    return taken


def _more_to_start(s: Session, sweep: Any) -> bool:
    """Whether the sweep has trials not started yet (held new ones, or a tpe budget left)."""
    new = s.scalar(
        select(func.count()).select_from(Run).where(
            Run.sweep_id == sweep.id, Run.status == RunStatus.queued.value,
            Run.held.is_(True), Run.epoch == 0, current_attempt(),
        )
    )  # fmt: skip
    if new:
        return True
    if sweep.spec["search"]["type"] != "tpe":
        return False
    created = (
        s.scalar(
            select(func.count(func.distinct(Run.trial))).where(
                Run.sweep_id == sweep.id, Run.trial.is_not(None)
            )
        )
        or 0
    )
    return bool(created < sweep.n_trials)


_events: Any = None


def _publisher() -> Any:
    """A publisher of status events for the trials a dispatch ends (made on first use)."""
    global _events
    if _events is None:
        import redis

        from core.streams import EventPublisher

        settings = get_settings()
        _events = EventPublisher(
            redis.Redis.from_url(settings.redis_url),
            maxlen=settings.stream_maxlen, ttl_s=settings.stream_ttl_s,
        )  # fmt: skip
    return _events


def dispatch(sweep_id: str) -> list[str]:
    """Fill the sweep's free slots (promoted trials, new ones), then let the run dispatcher
    send them; returns the ids released. Call only outside any open transaction on the
    sweep."""
    with session_scope() as s:
        taken = _take_trials(s, sweep_id)
    if taken.ended:
        from core.runs import lifecycle  # lifecycle imports this module

        logger.info("sweep %s: pruned %d waiting trial(s)", sweep_id, len(taken.ended))
        lifecycle.announce(taken.ended, _publisher())
    if taken.released:
        logger.info("sweep %s: released %d trial(s)", sweep_id, len(taken.released))
        request_dispatch()
    return taken.released


def reopen(s: Session, sweep_id: str) -> None:
    """An ended sweep was extended or its failed trials retried: it runs again."""
    s.execute(
        update(Sweep)
        .where(Sweep.id == sweep_id)
        .values(status=SweepStatus.running.value, finished_at=None, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


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
                .where(Run.sweep_id == sweep_id, current_attempt())
                .group_by(Run.status)
            ).all()
        }
        total = sum(counts.values())
        active = sum(counts.get(status, 0) for status in _ACTIVE_RUN)
        values: dict[str, Any] = {}
        if total and not active and not _more_to_start(s, sweep):
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
    """Asked after each epoch of a run: must it wait at this rung (ASHA)? Returns its
    :class:`Standing` there when it is not among the best ``⌊n/eta⌋`` of the trials that
    reached the rung; the worker then stores a checkpoint of the epoch and pauses it
    (:func:`core.runs.lifecycle.pause`) until its sweep promotes or prunes it.

    The first call reads whether the run is a trial of a sweep with pruning; a run that is
    not costs that one query and nothing more.
    """

    def __init__(self, run_id: str, *, sweep_id: str | None) -> None:
        self.run_id = run_id
        # Not a sweep's trial (known from the claim): nothing to load, nothing to check.
        self._loaded = sweep_id is None
        self._asha: _Asha | None = None
        self._sweep_id: str | None = None
        self._fold: int | None = None

    def __call__(self, epoch: int) -> Standing | None:
        try:
            if not self._loaded:
                self._load()
                self._loaded = True
            if self._asha is None or epoch not in self._asha.rung_epochs:
                return None
            return self._check(epoch)
        except Exception as exc:  # pruning is an optimisation: never break the run for it
            logger.warning("run %s: pruning check failed (%s); continuing", self.run_id, exc)
            return None

    def _load(self) -> None:
        with session_scope() as s:
            row = s.execute(
                select(Run.sweep_id, Run.trial, Run.fold, Run.epochs).where(Run.id == self.run_id)
            ).first()
            if row is None or row.sweep_id is None or row.trial is None:
                return  # not a trial (a refit has no trial number)
            sweep = s.execute(
                select(Sweep.metric, Sweep.spec).where(Sweep.id == row.sweep_id)
            ).first()
        if sweep is None:
            return
        self._sweep_id, self._fold = row.sweep_id, row.fold
        self._asha = _asha_of(sweep.spec or {}, sweep.metric, row.epochs)

    def _check(self, epoch: int) -> Standing | None:
        asha = self._asha
        assert asha is not None and self._sweep_id is not None
        with session_scope() as s:
            at_rung = rung_values(s, self._sweep_id, epoch, self._fold, asha.metric)
        mine = at_rung.get(self.run_id)
        values = list(at_rung.values())
        if asha_keep(mine, values, asha.eta, mode_of(asha.metric)):
            return None
        return standing(asha, epoch, mine, values, final=False)
