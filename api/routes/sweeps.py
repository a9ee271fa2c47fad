"""/api/v1/sweeps: hyperparameter sweeps over ordinary runs (API.md §5a, docs/sweeps.md).

A grid or random sweep expands its search space into trials, validates every trial's run
request exactly as ``POST /runs`` does, and stores them all as ``queued`` runs carrying its
``sweep_id``; a tpe sweep validates the corners of its space and stores none: its
dispatch creates each trial when a slot frees (core/runs/sweeps.py), which also sends at
most ``max_concurrent`` of them to the workers at a time. ``refit``, ``extend`` and
``retry-failed`` finish the job: a run of the best setting on all the data, more trials,
the failed ones again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, cast

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy import CursorResult, func, select, update
from sqlalchemy.orm import Session
from sse_starlette.sse import EventSourceResponse

from api import idempotency
from api.auth import PrincipalDep
from api.deps import OwnerDep, ResourceId, SessionDep, SettingsDep, edit_owned, get_owned
from api.events import SSE_RESPONSE
from api.listing import Filters, SearchQuery, TagQuery, parse_tags
from api.pagination import Sort, keyset_page
from api.schemas import (
    BAD_CURSOR,
    OrganiseEdit,
    RunCreate,
    RunRecord,
    SweepCreate,
    SweepExtend,
    SweepList,
    SweepRecord,
    error_responses,
)
from api.validation import check_warm_start, new_run_values, validate_against
from core.db.locks import serialise_owner
from core.db.models import (
    ACTIVE_STATUSES,
    SWEEP_ACTIVE,
    Dataset,
    Run,
    RunStatus,
    Sweep,
    SweepStatus,
    utcnow,
)
from core.db.session import get_sessionmaker
from core.dispatch import request_dispatch
from core.runs import lifecycle, timeline
from core.runs.requests import trial_label
from core.runs.sweeps import current_attempt, dispatch, refresh, reopen, trial_requests
from core.streams import EVENT_STATUS
from core.sweeps import (
    STOP_PRUNED,
    SearchSpace,
    SpaceError,
    apply,
    corners,
    expand,
    grid_size,
    leaderboard,
    mode_of,
)
from core.webhooks import WebhookTargetError, check_target

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/sweeps", tags=["sweeps"])

CLASSIFICATION_LOSSES = ("binary_crossentropy", "categorical_crossentropy")
EVENT_TRIAL = "trial"
POLL_S = 1.0


# -- records ------------------------------------------------------------------------------


def _trials(db: Session, sweep: Sweep) -> list[dict[str, Any]]:
    rows = db.execute(
        select(
            Run.id,
            Run.trial,
            Run.fold,
            Run.sweep_params,
            Run.status,
            Run.metrics,
            Run.epoch,
            Run.stop_reason,
            Run.stop_details,
            Run.held,
            Run.finished_at,
        )  # fmt: skip
        .where(Run.sweep_id == sweep.id, current_attempt())
        .order_by(Run.trial, Run.fold)
    ).all()
    return [
        {
            "run_id": r.id,
            "trial": r.trial,
            "fold": r.fold,
            "params": r.sweep_params or {},
            "status": r.status,
            "value": (r.metrics or {}).get(sweep.metric),
            "epoch": r.epoch,
            "stop_reason": r.stop_reason,
            "stop_details": r.stop_details,
            "waiting": bool(r.held and r.status == RunStatus.queued.value and r.epoch),
            "finished_at": r.finished_at,
        }
        for r in rows
    ]


def sweep_record(db: Session, sweep: Sweep) -> dict[str, Any]:
    trials = _trials(db, sweep)
    cv = sweep.spec.get("cross_validation")
    board = leaderboard(trials, sweep.metric, folds=cv["k"] if cv else None)
    statuses = [t["status"] for t in trials]
    best = board[0] if board and board[0]["status"] == RunStatus.succeeded.value else None
    return {
        "id": sweep.id,
        "name": sweep.name,
        "status": sweep.status,
        "metric": sweep.metric,
        "mode": mode_of(sweep.metric),
        "n_trials": sweep.n_trials,
        "max_concurrent": sweep.max_concurrent,
        "progress": {
            "finished": sum(RunStatus(s).is_terminal for s in statuses),
            "total": sweep.n_runs,
            "running": statuses.count(RunStatus.running.value),
            "queued": statuses.count(RunStatus.queued.value),
            "pruned": sum(t["stop_reason"] == STOP_PRUNED for t in trials),
            "waiting": sum(t["waiting"] for t in trials),
        },
        "leaderboard": board,
        "best": best,
        "search": sweep.spec.get("search"),
        "pruning": sweep.spec.get("pruning"),
        "cross_validation": cv,
        "base": sweep.spec.get("base"),
        "created_at": sweep.created_at,
        "finished_at": sweep.finished_at,
        "refit_run_id": db.scalar(
            select(Run.id)
            .where(Run.sweep_id == sweep.id, Run.trial.is_(None))
            .order_by(Run.created_at.desc())
            .limit(1)
        ),
        **(
            {"search_stopped": sweep.spec["search_stopped"]}
            if sweep.spec.get("search_stopped")
            else {}
        ),
        "tags": sweep.tags or {},
        "notes": sweep.notes,
    }


# -- creating -----------------------------------------------------------------------------


def _describe(index: int, params: dict[str, Any]) -> str:
    return f"trial {index} ({', '.join(f'{k}={v!r}' for k, v in params.items())})"


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    return "; ".join(parts)


def _trial_requests(
    body: SweepCreate, dataset: Dataset, settings: Any
) -> list[tuple[int, int | None, dict[str, Any], RunCreate]]:
    """(trial, fold, params, request) of every run of the sweep, each validated like POST /runs.

    Raises 422 naming the trial and its parameters when one is invalid.
    """
    folds = body.cross_validation.k if body.cross_validation else None
    n_configs = grid_size(body.search) if body.search.type == "grid" else body.search.n_trials or 10
    check_only = body.search.type == "tpe"  # its trials come later, one at a time
    n_runs = n_configs * (folds or 1)
    if n_runs > settings.max_sweep_trials:
        raise HTTPException(
            422,
            detail=f"search: the sweep has {n_runs} runs ({n_configs} configurations"
            f"{f' x {folds} folds' if folds else ''}); the limit is {settings.max_sweep_trials}"
            " (BACKPROP_MAX_SWEEP_TRIALS)",
        )
    if folds is not None and folds > dataset.n_samples:
        raise HTTPException(
            422,
            detail=f"cross_validation.k is {folds} but dataset {dataset.id} has only "
            f"{dataset.n_samples} samples",
        )
    base = body.base.model_dump(mode="json", exclude_unset=True)
    result = []
    configs = corners(body.search) if check_only else expand(body.search)
    for index, params in enumerate(configs):
        where = _describe(index, params)
        if check_only:
            where = "the corner " + where.split(" ", 2)[2] + " of the space"
        try:
            request = apply(base, params)
        except SpaceError as exc:
            raise HTTPException(422, detail=f"search.parameters: {where}: {exc}") from None
        for fold in range(folds) if folds else [None]:
            if fold is not None:
                training = request.setdefault("training", {})
                training["validation_split"] = 0.0
                training["validation_fold"] = {"k": folds, "index": fold}
            try:
                run_body = RunCreate.model_validate(request)
            except ValidationError as exc:
                raise HTTPException(
                    422, detail=f"{where}: invalid run request: {_validation_message(exc)}"
                ) from None
            if fold is None or fold == 0:
                try:
                    validate_against(run_body, dataset, settings)
                except HTTPException as exc:
                    raise HTTPException(422, detail=f"{where}: {exc.detail}") from None
                cfg = run_body.training
                if body.metric.startswith("val_") and not (
                    cfg.validation_split > 0 or cfg.validation_fold is not None
                ):
                    raise HTTPException(
                        422,
                        detail=f"metric: {body.metric} needs validation data: set "
                        f"base.training.validation_split > 0 or cross_validation ({where} "
                        "has none)",
                    )
                if body.metric == "val_accuracy" and cfg.loss not in CLASSIFICATION_LOSSES:
                    raise HTTPException(
                        422,
                        detail=f"metric: val_accuracy needs a classification loss "
                        f"({', '.join(CLASSIFICATION_LOSSES)}); {where} trains with {cfg.loss}",
                    )
            if not check_only:
                result.append((index, fold, params, run_body))
    return result


@router.post(
    "",
    status_code=202,
    response_model=SweepRecord,
    summary="Start a hyperparameter sweep",
    response_description="The sweep, `queued`; its URL in the `Location` header.",
    responses=error_responses(
        400,
        401,
        413,
        (422, "Invalid sweep: the first invalid trial, named with its parameters; a "
         "`val_*` metric without validation data, `val_accuracy` without a cross-entropy "
         "loss, more runs than BACKPROP_MAX_SWEEP_TRIALS, `cross_validation.k` above the "
         "dataset's samples; or an `Idempotency-Key` reused with another body."),
        (429, "The sweep's runs plus your queued and running runs would exceed "
         "BACKPROP_MAX_ACTIVE_RUNS."),
        503,
    ),
)  # fmt: skip
def create_sweep(
    body: SweepCreate,
    response: Response,
    db: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Any:
    """Expand `search` over the run request `base` into trials and store every trial as an
    ordinary `queued` run carrying `sweep_id` (docs/sweeps.md); 202 with the sweep's record
    and a `Location` header.

    A `grid` search tries every combination of the listed values, a `random` one draws
    `n_trials` configurations (seeded by `seed`) from lists or distributions; parameter keys
    are dotted paths into `base` (`training.optimizer.learning_rate`,
    `network.layers.0.units`). With `cross_validation: {"k": k}` each configuration runs
    once per fold. Every trial is validated exactly like `POST /runs` before anything is
    stored. At most `max_concurrent` trials are at the workers or training at once;
    `pruning` stops clearly weak trials early (successive halving), and the leaderboard
    ranks trials by `metric`.

    `Idempotency-Key` works as on `POST /runs`.
    """
    owner = principal.owner
    idempotency.check_key(idempotency_key)
    req_hash = idempotency.request_hash(body.model_dump_json().encode())

    def create(db: Session) -> tuple[dict[str, Any], str]:
        dataset = (
            None
            if "\x00" in body.base.dataset_id
            else db.scalars(
                select(Dataset).where(Dataset.id == body.base.dataset_id).with_for_update(read=True)
            ).first()
        )
        if dataset is None or dataset.owner != owner:
            raise HTTPException(
                422, detail=f"base.dataset_id: no dataset with id {body.base.dataset_id}"
            )
        if body.base.callback_url is not None:
            try:
                check_target(body.base.callback_url, allow_private=settings.webhook_allow_private)
            except WebhookTargetError as exc:
                raise HTTPException(422, detail=f"base.callback_url: {exc}") from exc
        trials = _trial_requests(body, dataset, settings)
        folds = body.cross_validation.k if body.cross_validation else 1
        n_trials = len({index for index, *_ in trials})
        if body.search.type == "tpe":
            n_trials = body.search.n_trials or 10
        active = db.scalar(
            select(func.count())
            .select_from(Run)
            .where(Run.owner == owner, Run.status.in_([s.value for s in ACTIVE_STATUSES]))
        )
        if (active or 0) + n_trials * folds > settings.max_active_runs:
            raise HTTPException(
                429,
                detail=f"this sweep has {n_trials * folds} runs and you have {active} queued or "
                f"running; the limit is {settings.max_active_runs} (BACKPROP_MAX_ACTIVE_RUNS)",
            )
        name = body.name or body.base.name
        sweep = Sweep(
            owner=owner,
            name=name,
            status=SweepStatus.queued.value,
            metric=body.metric,
            spec={
                **body.model_dump(mode="json", exclude_unset=True),
                "api_key_id": principal.key_id,
            },
            n_trials=n_trials,
            n_runs=n_trials * folds,
            max_concurrent=body.max_concurrent,
        )
        db.add(sweep)
        db.flush()
        rows, reasons = [], []
        for index, fold, params, run_body in trials:
            label = trial_label(name, index, fold)
            check_warm_start(db, run_body, owner)
            values = new_run_values(run_body, dataset, principal, settings, name=label)
            # Held: released by core/runs/sweeps.dispatch, max_concurrent at a time.
            rows.append({**values, "held": True, "sweep_id": sweep.id, "trial": index,
                         "fold": fold, "sweep_params": params})  # fmt: skip
            reasons.append(timeline.submitted(sweep_id=sweep.id, trial=index, fold=fold))
        if rows:  # a tpe sweep's trials are created by its dispatch, one at a time
            lifecycle.create_many(db.connection(), rows, reasons=reasons)
        return sweep_record(db, sweep), f"/api/v1/sweeps/{sweep.id}"

    # The owner's active-run count stays exact until the commit (see core/db/locks.py).
    serialise_owner(db.connection(), owner)
    result = idempotency.create_once(
        db, owner=owner, endpoint="sweeps", key=idempotency_key, req_hash=req_hash,
        status_code=202, response_model=SweepRecord, create=create,
    )  # fmt: skip
    if not isinstance(result, Response):
        record = result[0]
        if dispatch(record["id"]) and body.search.type == "tpe":  # after the commit
            with get_sessionmaker()() as fresh:
                sweep_row = fresh.get(Sweep, record["id"])
                assert sweep_row is not None
                record = sweep_record(fresh, sweep_row)
                result = (record, result[1])
        logger.info("sweep %s: %d runs, %d at a time", record["id"],
                    record["progress"]["total"], record["max_concurrent"])  # fmt: skip
    return idempotency.respond(result, response)


# -- reading ------------------------------------------------------------------------------


@router.get(
    "",
    response_model=SweepList,
    summary="List sweeps",
    responses=error_responses((400, BAD_CURSOR), 401, 422, 503),
)
def list_sweeps(
    db: SessionDep,
    owner: OwnerDep,
    status: Annotated[
        list[SweepStatus] | None,
        Query(max_length=5, description="Only sweeps with this status; repeat for several."),
    ] = None,
    tag: TagQuery = None,
    q: SearchQuery = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Your sweeps' records, newest first, `limit` (default 50) at a time; `status`, `tag`
    and `q` narrow the list as for runs. `next_cursor` is null on the last page; otherwise
    pass it as `cursor` (with the same filters) for the next one.
    """
    filters = Filters(statuses=[s.value for s in status or ()], tags=parse_tags(tag), q=q)
    stmt = filters.apply(
        select(Sweep).where(Sweep.owner == owner), Sweep, db.get_bind().dialect.name
    )
    rows, next_cursor = keyset_page(db, stmt, Sweep, Sort(), cursor, limit)
    return {"items": [sweep_record(db, s) for s in rows], "next_cursor": next_cursor}


@router.patch(
    "/{sweep_id}",
    response_model=SweepRecord,
    summary="Name, tag or annotate a sweep",
    responses=error_responses(400, 401, 404, 413, 422, 503),
)
def edit_sweep(
    sweep_id: ResourceId, body: OrganiseEdit, db: SessionDep, owner: OwnerDep
) -> dict[str, Any]:
    """Change the sweep's `name`, `tags` or `notes` as for a run; its trials keep theirs.
    200 with its record."""
    return sweep_record(db, edit_owned(db, Sweep, owner, sweep_id, body))


def _current(db: Session, owner: str, sweep_id: str) -> Sweep:
    sweep = get_owned(db, Sweep, owner, sweep_id)
    if SweepStatus(sweep.status) in SWEEP_ACTIVE:
        refresh(sweep_id)  # cheap, and catches up if a trial's end was missed
        db.refresh(sweep)
    return sweep


@router.get(
    "/{sweep_id}",
    response_model=SweepRecord,
    summary="Read a sweep",
    responses=error_responses(401, 404, 422, 503),
)
def get_sweep(sweep_id: ResourceId, db: SessionDep, owner: OwnerDep) -> dict[str, Any]:
    """The sweep's record: its `status`, `progress` (runs finished, running, queued and
    pruned of `total`), and the `leaderboard` with one entry per trial: succeeded trials
    first, best first, then those still queued or running, then cancelled (pruned) and
    failed ones. `best` is the first entry once it succeeded.
    """
    return sweep_record(db, _current(db, owner, sweep_id))


@router.post(
    "/{sweep_id}/cancel",
    status_code=202,
    response_model=SweepRecord,
    summary="Cancel a sweep",
    responses=error_responses(
        401, 404, (409, "The sweep already ended (succeeded, failed or cancelled)."), 422, 503
    ),
)
def cancel_sweep(
    sweep_id: ResourceId, request: Request, db: SessionDep, owner: OwnerDep
) -> dict[str, Any]:
    """Cancel the sweep at once; 202 with its record. Its queued trials end `cancelled`
    without starting, its running ones stop within an epoch keeping their metrics; all
    get `stop_reason: "sweep_cancelled"`.
    """
    sweep = get_owned(db, Sweep, owner, sweep_id)
    now = utcnow()
    cancelled = cast(
        CursorResult[Any],
        db.execute(
            update(Sweep)
            .where(Sweep.id == sweep_id, Sweep.status.in_([s.value for s in SWEEP_ACTIVE]))
            .values(status=SweepStatus.cancelled.value, finished_at=now)
            .execution_options(synchronize_session=False)
        ),
    ).rowcount
    if not cancelled:
        raise HTTPException(409, detail=f"sweep {sweep_id} already ended ({sweep.status})")
    # Queued trials never start; running ones stop within an epoch (their worker sees the flag).
    stopped = lifecycle.cancel_sweep_trials(db.connection(), sweep_id)
    db.commit()
    lifecycle.announce(stopped, request.app.state.events)
    db.refresh(sweep)
    return sweep_record(db, sweep)


# -- finishing the job: refit, extend, retry ---------------------------------------------


def _owned_sweep(db: Session, owner: str, sweep_id: str) -> Sweep:
    """The sweep, its status brought up to date, then the owner's admission lock taken.

    In this order: bringing the status up to date writes in a transaction of its own,
    which on SQLite would wait for the write lock that ``serialise_owner`` takes."""
    sweep = _current(db, owner, sweep_id)
    serialise_owner(db.connection(), owner)
    db.refresh(sweep)
    return sweep


def _admit(db: Session, owner: str, n_runs: int, settings: Any) -> None:
    """429 when ``n_runs`` more runs would exceed the owner's active-run limit."""
    active = (
        db.scalar(
            select(func.count())
            .select_from(Run)
            .where(Run.owner == owner, Run.status.in_([s.value for s in ACTIVE_STATUSES]))
        )
        or 0
    )
    if active + n_runs > settings.max_active_runs:
        raise HTTPException(
            429,
            detail=f"this adds {n_runs} runs and you have {active} queued or running; the "
            f"limit is {settings.max_active_runs} (BACKPROP_MAX_ACTIVE_RUNS)",
        )


def _sweep_dataset(db: Session, sweep: Sweep) -> Dataset:
    dataset_id = sweep.spec["base"]["dataset_id"]
    dataset = db.scalars(
        select(Dataset).where(Dataset.id == dataset_id).with_for_update(read=True)
    ).first()
    if dataset is None:
        raise HTTPException(409, detail=f"the sweep's dataset {dataset_id} no longer exists")
    return dataset


def refit_request(sweep: Sweep, best: dict[str, Any], runs: list[Any]) -> dict[str, Any]:
    """The refit's run request: the sweep's base with the best trial's parameters, trained
    on every row (no validation split, no fold held out, no early stopping), for as many
    epochs as the best trial trained (the epoch its model came from when early stopping
    ended it; the mean over its folds with cross-validation). A ``test_split`` stays: the
    test rows are not for choosing, only for scoring."""
    request = apply(sweep.spec["base"], best["params"])
    training = request.setdefault("training", {})
    training["validation_split"] = 0.0
    training.pop("validation_fold", None)
    if training.pop("early_stopping", None) is not None and runs:
        trained = [r.best_epoch or r.epoch for r in runs]
        training["epochs"] = max(1, round(sum(trained) / len(trained)))
    return request


@router.post(
    "/{sweep_id}/refit",
    status_code=202,
    response_model=RunRecord,
    summary="Train a sweep's best setting on all the data",
    response_description="The refit run, `queued`; its URL in the `Location` header.",
    responses=error_responses(
        401, 404,
        (409, "The sweep is still running, no trial succeeded, a refit of it is queued or "
         "running, or its dataset is gone."),
        422,
        (429, "One more run would exceed BACKPROP_MAX_ACTIVE_RUNS."),
        503,
    ),
)  # fmt: skip
def refit_sweep(
    sweep_id: ResourceId,
    response: Response,
    db: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> Any:
    """Train the best trial's setting on all the data — every fold, no validation hold-out —
    as a final run linked to the sweep: a run with the sweep's `sweep_id` and no `trial`,
    shown in the sweep's record as `refit_run_id` (the latest refit). Early stopping, if
    the base had it, is replaced by the number of epochs the best trial trained (the mean
    over its folds). 202 with the run's record.
    """
    owner = principal.owner
    sweep = _owned_sweep(db, owner, sweep_id)
    sweep_id = sweep.id  # the path may hold a unique prefix of it
    if SweepStatus(sweep.status) in SWEEP_ACTIVE:
        raise HTTPException(
            409, detail=f"sweep {sweep_id} is {sweep.status}: refit it once it has ended"
        )
    best = sweep_record(db, sweep)["best"]
    if best is None:
        raise HTTPException(409, detail=f"sweep {sweep_id} has no succeeded trial to refit")
    if db.scalar(
        select(Run.id).where(Run.sweep_id == sweep_id, Run.trial.is_(None),
                             Run.status.in_([s.value for s in ACTIVE_STATUSES]))
    ):  # fmt: skip
        raise HTTPException(409, detail=f"a refit of sweep {sweep_id} is queued or running")
    runs = db.execute(
        select(Run.epoch, Run.best_epoch).where(Run.id.in_(best.get("run_ids") or [best["run_id"]]))
    ).all()
    try:
        run_body = RunCreate.model_validate(refit_request(sweep, best, list(runs)))
    except ValidationError as exc:
        raise HTTPException(
            422, detail=f"refit: invalid run request: {_validation_message(exc)}"
        ) from None
    dataset = _sweep_dataset(db, sweep)
    validate_against(run_body, dataset, settings)
    _admit(db, owner, 1, settings)
    values = new_run_values(run_body, dataset, principal, settings,
                            name=trial_label(sweep.name, None, None))  # fmt: skip
    values.update(sweep_id=sweep.id, trial=None, fold=None, sweep_params=best["params"])
    row, first = lifecycle.create(db.connection(), values,
                                  reason=timeline.refit_submitted(sweep.id))  # fmt: skip
    db.commit()
    request_dispatch()
    response.headers["Location"] = f"/api/v1/runs/{row.id}"
    return RunRecord.of(row, [first])


@router.post(
    "/{sweep_id}/extend",
    status_code=202,
    response_model=SweepRecord,
    summary="Add trials to a sweep",
    responses=error_responses(
        400, 401, 404, 413,
        (409, "A grid sweep: it has run every combination (start another sweep with more "
         "values); or its dataset is gone."),
        (422, "`trials` is not a positive integer, an added trial is invalid, or the sweep "
         "would have more runs than BACKPROP_MAX_SWEEP_TRIALS."),
        (429, "The added runs would exceed BACKPROP_MAX_ACTIVE_RUNS."),
        503,
    ),
)  # fmt: skip
def extend_sweep(
    sweep_id: ResourceId,
    body: SweepExtend,
    db: SessionDep,
    principal: PrincipalDep,
    settings: SettingsDep,
) -> dict[str, Any]:
    """Add `trials` configurations to a `random` or `tpe` sweep. A random sweep draws them
    as if its `n_trials` had been larger from the start (the same seed: its first trials
    are the ones it has); a tpe sweep suggests them from all the results so far. A grid
    has no more combinations: 409. A sweep that ended runs again. 202 with its record.
    """
    owner = principal.owner
    sweep = _owned_sweep(db, owner, sweep_id)
    sweep_id = sweep.id  # the path may hold a unique prefix of it
    search = SearchSpace.model_validate(sweep.spec["search"])
    if search.type == "grid":
        raise HTTPException(
            409, detail=f"sweep {sweep_id} is a grid: it has run every combination; start "
            "another sweep with more values (extend takes random and tpe sweeps)",
        )  # fmt: skip
    folds = (sweep.spec.get("cross_validation") or {}).get("k")
    new_total = sweep.n_trials + body.trials
    if new_total * (folds or 1) > settings.max_sweep_trials:
        raise HTTPException(
            422, detail=f"trials: the sweep would have {new_total * (folds or 1)} runs; the "
            f"limit is {settings.max_sweep_trials} (BACKPROP_MAX_SWEEP_TRIALS)",
        )  # fmt: skip
    dataset = _sweep_dataset(db, sweep)
    _admit(db, owner, body.trials * (folds or 1), settings)
    spec = {**sweep.spec, "search": {**sweep.spec["search"], "n_trials": new_total}}
    spec.pop("search_stopped", None)
    if search.type == "random":
        more = expand(SearchSpace.model_validate(spec["search"]))[sweep.n_trials :]
        rows, reasons = [], []
        for offset, params in enumerate(more):
            index = sweep.n_trials + offset
            try:
                requests = trial_requests(spec["base"], params, folds)
            except (SpaceError, ValidationError) as exc:
                raise HTTPException(
                    422, detail=f"{_describe(index, params)}: invalid run request: {exc}"
                ) from None
            for fold, request in requests:
                run_body = RunCreate.model_validate(request.model_dump(mode="json"))
                if fold in (None, 0):
                    try:
                        validate_against(run_body, dataset, settings)
                    except HTTPException as exc:
                        raise HTTPException(
                            422, detail=f"{_describe(index, params)}: {exc.detail}"
                        ) from None
                values = new_run_values(run_body, dataset, principal, settings,
                                        name=trial_label(sweep.name, index, fold))  # fmt: skip
                rows.append({**values, "held": True, "sweep_id": sweep.id, "trial": index,
                             "fold": fold, "sweep_params": params})  # fmt: skip
                reasons.append(timeline.submitted(sweep_id=sweep.id, trial=index, fold=fold))
        lifecycle.create_many(db.connection(), rows, reasons=reasons)
    db.execute(
        update(Sweep).where(Sweep.id == sweep_id)
        .values(spec=spec, n_trials=new_total, n_runs=new_total * (folds or 1))
        .execution_options(synchronize_session=False)
    )  # fmt: skip
    reopen(db, sweep_id)
    db.commit()
    dispatch(sweep_id)
    db.refresh(sweep)
    return sweep_record(db, sweep)


@router.post(
    "/{sweep_id}/retry-failed",
    status_code=202,
    response_model=SweepRecord,
    summary="Run a sweep's failed trials again",
    responses=error_responses(
        401, 404, (409, "No trial's latest attempt failed; or the dataset is gone."), 422,
        (429, "The new runs would exceed BACKPROP_MAX_ACTIVE_RUNS."), 503,
    ),
)  # fmt: skip
def retry_failed(
    sweep_id: ResourceId, db: SessionDep, principal: PrincipalDep, settings: SettingsDep
) -> dict[str, Any]:
    """Run every trial (and fold) whose latest attempt `failed` again, as new runs with the
    same trial, fold and request; the leaderboard then shows the latest attempt. Pruned
    and cancelled trials are not failed. A sweep that ended runs again. 202 with its
    record.
    """
    owner = principal.owner
    sweep = _owned_sweep(db, owner, sweep_id)
    sweep_id = sweep.id  # the path may hold a unique prefix of it
    failed = db.execute(
        select(Run)
        .where(Run.sweep_id == sweep_id, current_attempt(),
               Run.status == RunStatus.failed.value)
        .order_by(Run.trial, Run.fold)
    ).scalars().all()  # fmt: skip
    if not failed:
        raise HTTPException(409, detail=f"sweep {sweep_id} has no failed trial to retry")
    dataset = _sweep_dataset(db, sweep)
    _admit(db, owner, len(failed), settings)
    rows, reasons = [], []
    for run in failed:
        run_body = RunCreate.model_validate(
            {"dataset_id": run.dataset_id, "network": run.network, "training": run.training,
             "callback_url": run.callback_url, "priority": run.priority}
        )  # fmt: skip
        values = new_run_values(run_body, dataset, principal, settings, name=run.name)
        rows.append({**values, "held": True, "sweep_id": sweep.id, "trial": run.trial,
                     "fold": run.fold, "sweep_params": run.sweep_params})  # fmt: skip
        reasons.append(timeline.retry_submitted(sweep_id=sweep.id, trial=run.trial or 0,
                                                fold=run.fold, failed_run_id=run.id))  # fmt: skip
    lifecycle.create_many(db.connection(), rows, reasons=reasons)
    reopen(db, sweep_id)
    db.commit()
    dispatch(sweep_id)
    db.refresh(sweep)
    return sweep_record(db, sweep)


# -- events -------------------------------------------------------------------------------


def _snapshot(owner: str, sweep_id: str) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """The sweep's status, its ended trials in the order they ended, and its record."""
    with get_sessionmaker()() as db:
        sweep = _current(db, owner, sweep_id)
        record = sweep_record(db, sweep)
        ended = [t for t in _trials(db, sweep) if RunStatus(t["status"]).is_terminal]
    ended.sort(
        key=lambda t: (t["finished_at"].timestamp() if t["finished_at"] else 0.0, t["run_id"])
    )
    return sweep.status, ended, record


_LETTERS = {s.value[0]: s.value for s in SweepStatus}


async def sweep_event_stream(
    owner: str, sweep_id: str, last_event_id: str | None
) -> AsyncIterator[dict[str, Any]]:
    """``trial`` events as trials end, ``status`` events as the sweep's status changes.

    Event ids are ``"<trials sent>-<status letter>"``; the stream closes after the final
    status, which comes once every trial has ended.
    """
    sent, status_sent = 0, None
    if last_event_id:
        count, _, letter = last_event_id.partition("-")
        sent = int(count) if count.isdigit() else 0
        status_sent = _LETTERS.get(letter)
    while True:
        status, ended, record = await run_in_threadpool(_snapshot, owner, sweep_id)
        metric = record["metric"]
        for trial in ended[sent:]:
            sent += 1
            data = {
                "run_id": trial["run_id"],
                "trial": trial["trial"],
                "fold": trial["fold"],
                "params": trial["params"],
                "status": trial["status"],
                metric: trial["value"],
                "epoch": trial["epoch"],
                "stop_reason": trial["stop_reason"],
                "progress": record["progress"],
            }
            yield {
                "event": EVENT_TRIAL,
                "id": f"{sent}-{(status_sent or 'q')[0]}",
                "data": json.dumps(data),
            }
        all_ended = record["progress"]["finished"] >= record["progress"]["total"]
        final = SweepStatus(status) not in SWEEP_ACTIVE and all_ended
        if status != status_sent and (final or SweepStatus(status) in SWEEP_ACTIVE):
            status_sent = status
            data = {"status": status, "progress": record["progress"], "best": record["best"]}
            yield {"event": EVENT_STATUS, "id": f"{sent}-{status[0]}", "data": json.dumps(data)}
        if final:
            return
        await asyncio.sleep(POLL_S)


@router.get(
    "/{sweep_id}/events",
    summary="Watch a sweep (Server-Sent Events)",
    responses={**SSE_RESPONSE, **error_responses(401, 404, 422, 503)},
    response_class=EventSourceResponse,
)
async def sweep_events(
    sweep_id: ResourceId,
    owner: OwnerDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(max_length=100)] = None,
) -> EventSourceResponse:
    """A `text/event-stream` of the sweep: `event: trial` each time a trial ends (`data`:
    `run_id`, `trial`, `fold`, `params`, `status`, the metric's value, `epoch`,
    `stop_reason`, `progress`) and `event: status` when the sweep's status changes
    (`data`: `status`, `progress`, `best`).

    The final status comes after the last trial ended; then the stream closes.
    Reconnecting with `Last-Event-ID` continues after that event. The stream polls the
    database once a second.
    """

    def check() -> None:
        with get_sessionmaker()() as db:
            get_owned(db, Sweep, owner, sweep_id)

    await run_in_threadpool(check)
    return EventSourceResponse(
        sweep_event_stream(owner, sweep_id, last_event_id),
        ping=int(settings.sse_ping_s),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
