"""/api/v1/runs: submit, list, read, watch, cancel and delete runs (weights and predictions:
predictions.py)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import (
    Connection,
    bindparam,
    func,
    select,
)
from sqlalchemy.orm import Session
from sse_starlette.sse import EventSourceResponse

from api import idempotency
from api.auth import PrincipalDep
from api.deps import (
    OwnerDep,
    ResourceId,
    SessionDep,
    SettingsDep,
    edit_owned,
    get_owned,
    not_found,
)
from api.events import SSE_RESPONSE, open_run_events
from api.listing import (
    Filters,
    RunSortKey,
    SearchQuery,
    TagQuery,
    UtcTime,
    parse_tags,
    run_sort,
)
from api.pagination import Order, keyset_page
from api.routes.predictions import model_cache
from api.routes.registry import refuse_if_registered
from api.schemas import (
    BAD_CURSOR,
    MetricsOut,
    OrganiseEdit,
    RunCreate,
    RunList,
    RunRecord,
    error_responses,
)
from api.validation import check_warm_start, new_run_values, validate_against
from core.db.direct_read import DirectRead
from core.db.locks import lock_run_for_delete, serialise_owner
from core.db.models import (
    ACTIVE_STATUSES,
    SWEEP_ACTIVE,
    Dataset,
    MetricRow,
    Run,
    RunStatus,
    Sweep,
)
from core.db.session import (
    get_autocommit_engine,
    get_autocommit_sessionmaker,
    get_sessionmaker,
)
from core.dispatch import (
    BACKLOG,
    Waiting,
    read_outlook,
    request_dispatch,
    reserve,
    send_reserved,
)
from core.keys import Principal
from core.runs import lifecycle, timeline
from core.settings import Settings
from core.webhooks import WebhookTargetError, check_target

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])


def run_records(conn: Connection, rows: Sequence[Any]) -> list[RunRecord]:
    """The public records of ``rows`` (ORM ``Run``s or Core rows of ``runs``), each with
    its timeline (one query for them all)."""
    timelines = timeline.read_many(conn, [row.id for row in rows])
    return [RunRecord.of(row, timelines[row.id]) for row in rows]


# The dataset a run names, how many active runs its owner has and whether any run waits to
# be sent, in one statement. The dataset row is read FOR SHARE (PostgreSQL): a delete of it
# waits for this submit to end.
_DATASET_AND_ACTIVE = (
    select(
        Dataset.id,
        Dataset.owner,
        Dataset.n_samples,
        Dataset.n_features,
        Dataset.n_targets,
        Dataset.task,
        select(func.count())
        .select_from(Run)
        .where(
            Run.owner == bindparam("owner"),
            Run.status.in_([s.value for s in ACTIVE_STATUSES]),
        )
        .scalar_subquery()
        .label("active"),
        BACKLOG.label("backlog"),
    )
    .where(Dataset.id == bindparam("dataset_id"))
    .with_for_update(read=True, of=Dataset.__table__)
)


def _insert_run(
    db: Session | Connection, body: RunCreate, principal: Principal, settings: Settings
) -> tuple[RunRecord, bool]:
    """Check ``body`` against its dataset and the limits, insert the run; its record, and
    whether other runs were waiting to be sent.

    Call inside a transaction that began with ``serialise_owner``: the active-run count is
    then exact, and the dataset cannot be deleted before the commit.
    """
    owner = principal.owner
    dataset = None
    if "\x00" not in body.dataset_id:
        dataset = db.execute(
            _DATASET_AND_ACTIVE, {"dataset_id": body.dataset_id, "owner": owner}
        ).first()
    if dataset is None or dataset.owner != owner:
        raise HTTPException(422, detail=f"dataset_id: no dataset with id {body.dataset_id}")
    conn = db.connection() if isinstance(db, Session) else db
    validate_against(body, dataset, settings, conn)
    check_warm_start(db, body, owner)
    if body.callback_url is not None:
        try:
            check_target(body.callback_url, allow_private=settings.webhook_allow_private)
        except WebhookTargetError as exc:
            raise HTTPException(422, detail=str(exc)) from exc
    if dataset.active >= settings.max_active_runs:
        raise HTTPException(
            429,
            detail=f"you have {dataset.active} queued or running runs; the limit is "
            f"{settings.max_active_runs} (BACKPROP_MAX_ACTIVE_RUNS)",
        )
    values = new_run_values(body, dataset, principal, settings, name=body.name)
    row, first = lifecycle.create(conn, values, reason=timeline.submitted())
    return RunRecord.of(row, [first]), bool(dataset.backlog)


def _create_run(
    body: RunCreate, principal: Principal, settings: Settings, idempotency_key: str | None
) -> tuple[RunRecord, str] | Response:
    """Store the run (and its idempotency record) and, in the same transaction, a dispatch
    round when no other run waits; send what it picked after the commit. In a worker thread.

    The round here saves the hop to a worker's round, so an idle service starts the run at
    once. With runs waiting, the workers' rounds send them in turn: the submit only asks for
    a round (a waiting run may be one whose kind has no free slot while others have).
    """
    owner = principal.owner
    req_hash = idempotency.request_hash(body.model_dump_json().encode())
    # Capacity is read before the transaction: no Redis round trip while the locks are held.
    outlook = read_outlook(settings)
    picked: list[Waiting] = []
    waiting_before = [False]

    def create(db: Session) -> tuple[RunRecord, str]:
        record, backlog = _insert_run(db, body, principal, settings)
        waiting_before[0] = backlog
        if outlook is not None and not backlog:
            picked.extend(reserve(db.connection(), outlook, settings))
        return record, f"/api/v1/runs/{record.id}"

    with get_sessionmaker()() as db:
        serialise_owner(db.connection(), owner)
        result = idempotency.create_once(
            db, owner=owner, endpoint="runs", key=idempotency_key, req_hash=req_hash,
            status_code=202, response_model=RunRecord, create=create,
        )  # fmt: skip
    if isinstance(result, Response):
        return result  # a replay: nothing of this request was committed, nothing to send
    if waiting_before[0] or outlook is None:
        request_dispatch(settings)
    # Only after the commit: the worker must find the run.
    send_reserved(picked, settings=settings)
    return result


@router.post(
    "",
    status_code=202,
    response_model=RunRecord,
    summary="Submit a run",
    response_description="The run, `queued`; its URL in the `Location` header.",
    responses=error_responses(
        400,
        401,
        413,
        (422, "Invalid run request, e.g. a `dataset_id` you do not have, a network that does "
         "not fit the dataset, a limit passed, a refused `callback_url`, or an "
         "`Idempotency-Key` reused with another body."),
        429,
        503,
    ),
)  # fmt: skip
async def create_run(
    body: RunCreate,
    principal: PrincipalDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> Any:
    """Train `network` (API.md §2) on the dataset `dataset_id` with `training` (§3).

    The run is stored `queued` and answered at once with 202, its record and a `Location`
    header. It starts when a worker slot frees up: within one owner, higher `priority`
    (0-9) first, then older first; between owners, the owners take turns, so one owner's
    backlog delays another owner's new run by at most the run that frees the slot.

    The network's `input_dim` and its last layer's `units` must match the dataset's
    features and targets, and the request must stay within the service's limits (epochs,
    parameters, batch size, run time): a 422 names every problem. An owner has at most
    `BACKPROP_MAX_ACTIVE_RUNS` queued and running runs; a submit beyond is 429 (exact under
    concurrent submits). A `callback_url` is POSTed once when the run ends, signed
    (API.md §5b); a target that is not globally routable is refused with 422.

    With an `Idempotency-Key` header, a retry with the same key and body gets the first
    answer (marked `Idempotent-Replayed: true`) instead of a second run.
    """
    idempotency.check_key(idempotency_key)
    result = await run_in_threadpool(_create_run, body, principal, settings, idempotency_key)
    if isinstance(result, Response):
        return result  # a replay, as first answered
    record, location = result
    # Serialised here, once: the record is valid by construction (FastAPI would dump and
    # validate it again; the response model still documents it).
    return Response(record.model_dump_json(), status_code=202, media_type="application/json",
                    headers={"Location": location})  # fmt: skip


def _id_query(description: str) -> Any:
    return Query(min_length=1, max_length=64, pattern=r"^[^\x00]*$", description=description)


@router.get(
    "",
    response_model=RunList,
    summary="List runs",
    responses=error_responses((400, BAD_CURSOR), 401, 422, 503),
)
def list_runs(
    db: SessionDep,
    owner: OwnerDep,
    status: Annotated[
        list[RunStatus] | None,
        Query(
            max_length=5,
            description="Only runs with this status; repeat for several (any of them).",
        ),
    ] = None,
    tag: TagQuery = None,
    q: SearchQuery = None,
    dataset_id: Annotated[
        str | None, _id_query("Only runs trained on this dataset (its whole id).")
    ] = None,
    sweep_id: Annotated[
        str | None, _id_query("Only the trials of this sweep (its whole id).")
    ] = None,
    created_after: Annotated[
        UtcTime | None,
        Query(
            description="Only runs created at or after this time (ISO 8601; UTC unless it "
            "says otherwise)."
        ),
    ] = None,
    created_before: Annotated[
        UtcTime | None, Query(description="Only runs created before this time.")
    ] = None,
    top_level: Annotated[
        bool, Query(description="`true`: only runs that are no sweep's trial.")
    ] = False,
    sort: Annotated[
        RunSortKey,
        Query(
            description="The order: by creation time, or by a value of the run's `metrics` "
            "(the model's), or its `best_epoch`; ties by creation time. Runs without the "
            "value come last."
        ),
    ] = "created_at",
    order: Annotated[
        Order | None,
        Query(
            description="`asc` or `desc`. Default: newest first for `created_at`, lowest "
            "first for the losses and `best_epoch`, highest first for the accuracies."
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Your runs, `limit` (default 50) at a time, newest first unless `sort` and `order` say
    otherwise. Sweep trials are ordinary runs and are listed too (`top_level=true` leaves
    them out). The filters narrow the list together (AND).

    `next_cursor` is null on the last page; otherwise pass it as `cursor`, with the same
    `sort`, `order` and filters, for the next one. Paging is stable: runs added meanwhile
    never make a page repeat or skip one (a run whose sort value changes while it trains may
    move, as it does in the order).
    """
    filters = Filters(
        statuses=[s.value for s in status or ()], tags=parse_tags(tag), q=q,
        dataset_id=dataset_id, sweep_id=sweep_id, top_level=top_level,
        created_after=created_after, created_before=created_before,
    )  # fmt: skip
    stmt = filters.apply(select(Run).where(Run.owner == owner), Run, db.get_bind().dialect.name)
    rows, next_cursor = keyset_page(db, stmt, Run, run_sort(sort, order), cursor, limit)
    return {"items": run_records(db.connection(), rows), "next_cursor": next_cursor}


@router.patch(
    "/{run_id}",
    response_model=RunRecord,
    summary="Name, tag or annotate a run",
    responses=error_responses(400, 401, 404, 413, 422, 503),
)
def edit_run(run_id: ResourceId, body: OrganiseEdit, db: SessionDep, owner: OwnerDep) -> RunRecord:
    """Change the run's `name`, `tags` or `notes`; the fields left out stay as they are.
    `tags` merges (a key set to `null` is removed). Nothing else of the run changes, its
    status least of all, and a run may be edited at any time. 200 with the run's record.
    """
    run = edit_owned(db, Run, owner, run_id, body)
    return run_records(db.connection(), [run])[0]


# The polling endpoints do their database work in one worker-thread call, with a
# connection of their own: a session dependency would cost two more thread hops per
# request. The status read is a prebuilt Core statement on an autocommit connection, read
# from the driver's cursor (core/db/direct_read.py): one round trip, and no per-request
# statement building or result machinery.
# The run and its timeline in one statement. Only the columns the record shows, and the
# owner: the driver describes every column of every result.
_SHOWN = RunRecord.column_names() | {"owner"}
_RECORD_COLUMNS = [column for column in Run.__table__.columns if column.key in _SHOWN]
_RUN_BY_ID = DirectRead(
    lambda dialect: select(*_RECORD_COLUMNS, timeline.aggregated(dialect)).where(
        Run.__table__.c.id == bindparam("run_id")
    )
)


@router.get(
    "/{run_id}",
    response_model=RunRecord,
    summary="Read a run",
    responses=error_responses(401, 404, 422, 503),
)
async def get_run(run_id: ResourceId, owner: OwnerDep) -> Response:
    """The run's record: its `status` (`queued`, `running`, `succeeded`, `failed` or
    `cancelled`), `progress` in epochs, the latest epoch's `metrics`, and `error` when it
    failed. Cheap enough to poll; `/events` streams the same changes as they happen.
    """

    def read() -> Response:
        with get_autocommit_engine().connect() as conn:
            row = _RUN_BY_ID.first(conn, {"run_id": run_id})
        if row is None or row["owner"] != owner:
            raise not_found(Run, run_id)
        record = RunRecord.of(row, timeline.from_aggregate(row["timeline"]))
        # Serialised here, once: the record is valid by construction, and FastAPI would
        # otherwise dump and validate it again (the response model still documents it).
        return Response(record.model_dump_json(), media_type="application/json")

    return await run_in_threadpool(read)


@router.get(
    "/{run_id}/metrics",
    response_model=MetricsOut,
    response_model_exclude_none=True,  # optional keys are absent, as in the SSE items
    summary="Read a run's metrics per epoch",
    responses=error_responses(401, 404, 422, 503),
)
async def get_metrics(run_id: ResourceId, owner: OwnerDep) -> dict[str, Any]:
    """One item per finished epoch, in order, with no gaps or repeats: `epoch`, `loss`,
    `elapsed_s`, and `val_loss`, `accuracy`, `val_accuracy` when the run has them.
    """

    def read() -> dict[str, Any]:
        with get_autocommit_sessionmaker()() as db:
            get_owned(db, Run, owner, run_id)
            rows = db.scalars(
                select(MetricRow).where(MetricRow.run_id == run_id).order_by(MetricRow.epoch)
            )
            return {"run_id": run_id, "items": [row.as_item() for row in rows]}

    return await run_in_threadpool(read)


@router.get(
    "/{run_id}/events",
    summary="Watch a run (Server-Sent Events)",
    responses={**SSE_RESPONSE, **error_responses(401, 404, 422, 503)},
    response_class=EventSourceResponse,
)
async def run_events(
    run_id: ResourceId,
    request: Request,
    owner: OwnerDep,
    settings: SettingsDep,
    last_event_id: Annotated[str | None, Header(max_length=100)] = None,
) -> EventSourceResponse:
    """A `text/event-stream` of the run: `event: metric` for each finished epoch (`data`:
    the epoch's item as in `/metrics`) and `event: status` for each status change (`data`:
    `{"status": ...}`).

    A client that connects at any time, also after the run ended, first gets every earlier
    epoch, then live ones; after the final status the server closes the stream. Each event
    has an `id`: reconnecting with `Last-Event-ID` continues right after it, with nothing
    missed or repeated. When the API shuts down the stream ends cleanly, to be resumed
    the same way.
    """

    # On SIGTERM the stream ends cleanly (a complete response), and the client resumes
    # elsewhere with Last-Event-ID.
    shutting_down = anyio.Event()
    events = await open_run_events(
        request.app.state.redis, run_id, owner, last_event_id, stop=shutting_down
    )
    if events is None:
        raise not_found(Run, run_id)
    return EventSourceResponse(
        events,
        ping=int(settings.sse_ping_s),
        shutdown_event=shutting_down,
        shutdown_grace_period=5.0,
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/{run_id}/cancel",
    status_code=202,
    response_model=RunRecord,
    summary="Cancel a run",
    responses=error_responses(
        401, 404, (409, "The run already ended (succeeded, failed or cancelled)."), 422, 503
    ),
)
def cancel_run(run_id: ResourceId, request: Request, db: SessionDep, owner: OwnerDep) -> RunRecord:
    """Stop a queued or running run; 202 with its record.

    A queued run is `cancelled` at once and never starts. A running one is flagged and
    stops within one epoch (or a few seconds), then ends `cancelled` keeping its metrics
    so far: the record answered may still say `running`. Its `callback_url`, if any, is
    called when it ends.
    """
    run = get_owned(db, Run, owner, run_id)
    if RunStatus(run.status).is_terminal:
        raise HTTPException(409, detail=f"run {run_id} already ended ({run.status})")
    done = lifecycle.cancel(db.connection(), run_id)
    if done.outcome == "ended":  # it ended between our read and now
        db.rollback()
        db.refresh(run)
        raise HTTPException(409, detail=f"run {run_id} already ended ({run.status})")
    db.commit()
    lifecycle.announce([done.change], request.app.state.events)
    db.refresh(run)
    return run_records(db.connection(), [run])[0]


@router.delete(
    "/{run_id}",
    status_code=204,
    summary="Delete a run",
    responses=error_responses(
        401,
        404,
        (409, "The run is still queued or running (cancel it first), is a trial of a "
         "sweep that has not ended, or is a version of a registered model (`detail` names "
         "it)."),
        422,
        503,
    ),
)  # fmt: skip
def delete_run(run_id: ResourceId, db: SessionDep, owner: OwnerDep) -> Response:
    """Remove a finished run with its metrics and weights; 204, no body."""
    run = get_owned(db, Run, owner, run_id)
    if RunStatus(run.status) in ACTIVE_STATUSES:
        raise HTTPException(409, detail=f"run {run_id} is {run.status}; cancel it first")
    if run.sweep_id is not None:
        sweep_status = db.scalar(select(Sweep.status).where(Sweep.id == run.sweep_id))
        if sweep_status in SWEEP_ACTIVE:
            raise HTTPException(
                409, detail=f"run {run_id} is a trial of sweep {run.sweep_id}, which is "
                f"{sweep_status}; delete it once the sweep has ended"
            )  # fmt: skip
    # The row lock first: a registration that read the run commits before we look.
    lock_run_for_delete(db.connection(), run_id)
    refuse_if_registered(db, run_id)
    db.delete(run)
    db.commit()
    model_cache.drop(run_id)
    return Response(status_code=204)
