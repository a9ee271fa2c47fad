"""Fair dispatch: which queued runs are sent to the workers, and when.

The database is the source of truth and Celery the transport. A submitted run waits in the
database as ``queued`` with no message sent (``enqueued_at`` NULL). :func:`dispatch` sends
messages only while workers have a free slot, choosing among the waiting runs:

- inside one owner: highest ``priority`` first, then oldest;
- between owners: the owners' first runs compete; the highest priority wins, and among equal
  priorities the owner served longest ago goes first (round robin).

So one owner's backlog never sits in the broker ahead of another owner's new run: when a
slot frees, the next run released is the other owner's.

Capacity comes from the workers themselves. Each worker's main process announces its slots
and the queue kinds it takes (``small``/``large``/``default``) in a Redis hash every
``BACKPROP_DISPATCH_INTERVAL_S``; an entry not renewed for a few intervals is dropped. A run
takes a slot while it is ``running`` or sent and not yet claimed. With no worker announced,
nothing is sent, and runs wait safely in the database.

Who dispatches: the API inside a submit's transaction when no run is waiting (:func:`reserve`
then :func:`send_reserved`), and a thread in every worker's main process. That thread runs a
round as soon as one is requested (:func:`request_dispatch`: a one-element Redis list, pushed
by the worker process whose run is ending — naming it as *freeing*, so the next message is on
its way while it ends — or was handed back; one worker takes each request), and a full round
every interval (:func:`maintain`). Rounds take turns: a PostgreSQL advisory lock, or SQLite's
write lock.

:func:`maintain` also notices lost messages. A marker key lives in the broker's Redis; if it
is gone, Redis lost its data (restarted without persistence) and every sent-but-unclaimed
run is sent again. A run sent ``BACKPROP_REQUEUE_AFTER_S`` ago and still unclaimed is sent
again too. A duplicate message is harmless: the claim is atomic.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import cast

import redis
from sqlalchemy import (
    Connection,
    Table,
    and_,
    bindparam,
    exists,
    func,
    null,
    or_,
    select,
    type_coerce,
    union_all,
    update,
)

from core.broker import enqueue_run
from core.db.locks import serialise_dispatch
from core.db.models import Run, RunStatus, utcnow
from core.db.session import get_process_engine
from core.queues import DEFAULT, KINDS, queue_name
from core.settings import Settings, get_settings

logger = logging.getLogger(__name__)

Send = Callable[[str, str | None, int], bool]

_QUEUED = RunStatus.queued.value
_RUNNING = RunStatus.running.value


# -- names in Redis -------------------------------------------------------------------------


def _registry_key(task_queue: str) -> str:
    return f"backprop:workers:{task_queue}"


def _marker_key(task_queue: str) -> str:
    return f"backprop:broker-marker:{task_queue}"


def _served_key(task_queue: str) -> str:
    return f"backprop:served:{task_queue}"


def _kick_key(task_queue: str) -> str:
    return f"backprop:dispatch-kick:{task_queue}"


def _freeing_key(task_queue: str) -> str:
    return f"backprop:freeing:{task_queue}"


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    # Short timeouts: with Redis away, a submit must answer at once (the run then waits).
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)


@lru_cache(maxsize=4)
def _blocking_client(url: str, socket_timeout: float) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=socket_timeout)


def broker_redis(settings: Settings | None = None) -> redis.Redis:
    """A client of the broker's Redis (one per process and URL; redis-py is fork-safe)."""
    return _client((settings or get_settings()).celery_broker_url)


# -- capacity -------------------------------------------------------------------------------


def kinds_of_queues(queue_names: Iterable[str], task_queue: str) -> list[str]:
    """The run kinds (``small``, ``large``, ``default``) that a worker taking these Celery
    queues trains; queues of other names are not ours."""
    by_name = {queue_name(kind, task_queue): kind for kind in (*KINDS, DEFAULT)}
    return sorted({by_name[name] for name in queue_names if name in by_name})


def announce_worker(
    worker_id: str, slots: int, kinds: list[str], *, settings: Settings | None = None
) -> None:
    """Record (or renew) a worker's slots and kinds; raises redis errors."""
    settings = settings or get_settings()
    entry = json.dumps({"slots": slots, "kinds": kinds, "seen": time.time()})
    broker_redis(settings).hset(_registry_key(settings.task_queue), worker_id, entry)


def withdraw_worker(worker_id: str, *, settings: Settings | None = None) -> None:
    """Forget a worker that is shutting down, so no more runs are sent its way."""
    settings = settings or get_settings()
    try:
        broker_redis(settings).hdel(_registry_key(settings.task_queue), worker_id)
    except redis.RedisError as exc:
        logger.warning("could not withdraw worker %s from dispatch: %s", worker_id, exc)


@dataclass
class Capacity:
    """Worker slots: in all, and per run kind (a worker taking several kinds counts in each)."""

    total: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


def _capacity(entries: dict[bytes, bytes], stale_after_s: float, now: float) -> tuple[
    Capacity, list[bytes]
]:  # fmt: skip
    capacity = Capacity()
    stale: list[bytes] = []
    for worker_id, raw in entries.items():
        try:
            entry = json.loads(raw)
            seen, slots, kinds = float(entry["seen"]), int(entry["slots"]), list(entry["kinds"])
        except (ValueError, KeyError, TypeError):
            stale.append(worker_id)
            continue
        if now - seen > stale_after_s:
            stale.append(worker_id)
            continue
        training_kinds = [k for k in kinds if k in (*KINDS, DEFAULT)]
        if not training_kinds:
            continue
        capacity.total += slots
        for kind in training_kinds:
            capacity.by_kind[kind] = capacity.by_kind.get(kind, 0) + slots
    return capacity, stale


# -- choosing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Waiting:
    """A queued run not sent yet, as the dispatcher sees it."""

    id: str
    owner: str
    priority: int
    kind: str
    created_at: datetime


def choose(
    waiting: list[Waiting],
    *,
    free_total: int,
    free_by_kind: dict[str, int],
    last_served: dict[str, int],
) -> list[Waiting]:
    """The runs to send now, in order.

    ``waiting`` holds runs of any owners, in any order. ``last_served`` is each owner's
    turn number of its last send (higher = more recent; absent = never). ``free_by_kind``
    is the free slots per run kind, ``free_total`` those of all workers. Pure: no database,
    no Redis.
    """
    queues: dict[str, list[Waiting]] = {}
    for run in sorted(waiting, key=lambda r: (-r.priority, r.created_at, r.id)):
        queues.setdefault(run.owner, []).append(run)
    served = dict(last_served)
    free = dict(free_by_kind)
    chosen: list[Waiting] = []
    turn = max(served.values(), default=0)
    while free_total > 0:
        heads = []
        for runs in queues.values():
            # An owner's first run whose kind has a free slot (a large run waiting for a
            # large slot does not keep the owner's small runs back).
            head = next((r for r in runs if free.get(r.kind, 0) > 0), None)
            if head is not None:
                heads.append(head)
        if not heads:
            break
        pick = min(heads, key=lambda r: (-r.priority, served.get(r.owner, 0)))
        chosen.append(pick)
        queues[pick.owner].remove(pick)
        turn += 1
        served[pick.owner] = turn
        free[pick.kind] -= 1
        free_total -= 1
    return chosen


# -- sending --------------------------------------------------------------------------------

# SQLAlchemy types a mapped class's __table__ as FromClause; a declarative class has a Table.
_runs = cast(Table, Run.__table__)

# Prebuilt statements (compiled once): the waiting runs ranked in each owner and kind, then
# the slots taken per kind together with the first ``per_owner`` waiting runs of each.
# A run waits to be sent: queued, not sent yet, not held back by its sweep.
_IS_WAITING = and_(
    _runs.c.status == _QUEUED, _runs.c.enqueued_at.is_(None), _runs.c.held.is_(False)
)
#: Whether any run waits (to be embedded in another statement): with a backlog, no slot is
#: free (rounds send whenever one frees), so a submit need not dispatch itself.
BACKLOG = exists().where(_IS_WAITING)

_RANKED = (
    select(
        _runs.c.id,
        _runs.c.owner,
        _runs.c.priority,
        _runs.c.queue,
        _runs.c.created_at,
        func.row_number()
        .over(
            partition_by=(_runs.c.owner, _runs.c.queue),
            order_by=(_runs.c.priority.desc(), _runs.c.created_at, _runs.c.id),
        )
        .label("rank"),
    )
    .where(_IS_WAITING)
    .subquery()
)
# Both in one round trip: busy rows carry a count, waiting rows an id.
_BUSY_AND_WAITING = union_all(
    select(
        _runs.c.queue,
        func.count().label("busy"),
        null().label("id"),
        null().label("owner"),
        null().label("priority"),
        # Typed, so that the union's column converts (SQLite stores text) as created_at does.
        type_coerce(null(), _runs.c.created_at.type).label("created_at"),
    )
    .where(
        or_(
            _runs.c.status == _RUNNING,
            (_runs.c.status == _QUEUED) & _runs.c.enqueued_at.is_not(None),
        ),
        _runs.c.id.not_in(bindparam("freeing", expanding=True)),
    )
    .group_by(_runs.c.queue),
    select(
        _RANKED.c.queue,
        null(),
        _RANKED.c.id,
        _RANKED.c.owner,
        _RANKED.c.priority,
        _RANKED.c.created_at,
    ).where(_RANKED.c.rank <= bindparam("per_owner")),
)
_MARK_SENT = (
    update(_runs)
    .where(
        _runs.c.id.in_(bindparam("ids", expanding=True)),
        _runs.c.status == _QUEUED,
        _runs.c.enqueued_at.is_(None),
    )
    .values(enqueued_at=bindparam("now"))
    .returning(_runs.c.id)
)
_MARK_UNSENT = (
    update(_runs)
    .where(_runs.c.id == bindparam("run_id"), _runs.c.status == _QUEUED)
    .values(enqueued_at=None)
)


@dataclass
class Outlook:
    """What a round reads from Redis before its transaction: the workers' capacity and the
    runs that are finishing (their slots count as free: see :func:`request_dispatch`). Each
    owner's last turn is read under the dispatch lock instead (:func:`reserve`)."""

    capacity: Capacity
    freeing: list[str] = field(default_factory=list)


def read_outlook(settings: Settings | None = None) -> Outlook | None:
    """Capacity and finishing runs in one Redis round trip; None when Redis does not answer
    or no worker has room at all (then nothing can be sent)."""
    settings = settings or get_settings()
    client = broker_redis(settings)
    now = time.time()
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(_registry_key(settings.task_queue))
        # A run announced as freeing longer than a lease ago is not ending any more (its
        # worker died before it could say so): its slot counts as busy again.
        pipe.zrangebyscore(_freeing_key(settings.task_queue), now - settings.lease_s, "+inf")
        entries, freeing = pipe.execute()
    except redis.RedisError as exc:
        logger.debug("dispatch: broker unreachable (%s); runs wait in the database", exc)
        return None
    stale_after = max(10.0, 5 * settings.dispatch_interval_s)
    capacity, stale = _capacity(entries, stale_after, now)
    if stale:
        _forget(client, settings, stale)
    if capacity.total <= 0:
        return None
    return Outlook(capacity, sorted(run_id.decode() for run_id in freeing))


def reserve(conn: Connection, outlook: Outlook, settings: Settings | None = None) -> list[Waiting]:
    """Inside the caller's transaction (which then commits): take the dispatch lock, pick the
    runs to send, mark them sent and record their owners' turns. Send them with
    :func:`send_reserved` after the commit."""
    settings = settings or get_settings()
    serialise_dispatch(conn, settings.task_queue)
    # The turns are read and written under the lock: a round that waited for it sees the
    # turns of the round before.
    client = broker_redis(settings)
    try:
        # redis-py types its results for the sync and async clients alike; this one is sync.
        turns = cast(dict[bytes, bytes], client.hgetall(_served_key(settings.task_queue)))
    except redis.RedisError:
        turns = {}  # fairness history only: without it, ties go to the oldest run
    # At most capacity.total runs of an owner and kind can go in one round.
    rows = conn.execute(
        _BUSY_AND_WAITING, {"per_owner": outlook.capacity.total, "freeing": outlook.freeing}
    ).all()
    busy = {r.queue or DEFAULT: r.busy for r in rows if r.id is None}
    free_total = outlook.capacity.total - sum(busy.values())
    waiting = [
        Waiting(r.id, r.owner, r.priority or 0, r.queue or DEFAULT, r.created_at)
        for r in rows
        if r.id is not None
    ]
    if free_total <= 0 or not waiting:
        return []
    free_by_kind = {
        kind: slots - busy.get(kind, 0) for kind, slots in outlook.capacity.by_kind.items()
    }
    last_served = {owner.decode(): int(turn) for owner, turn in turns.items()}
    chosen = choose(
        waiting, free_total=free_total, free_by_kind=free_by_kind, last_served=last_served
    )
    if not chosen:
        return []
    marked = set(
        conn.scalars(_MARK_SENT, {"ids": [run.id for run in chosen], "now": utcnow()}).all()
    )
    taken = [run for run in chosen if run.id in marked]
    _record_turns(client, taken, last_served, settings)
    return taken


def send_reserved(
    chosen: list[Waiting], *, send: Send | None = None, settings: Settings | None = None
) -> list[str]:
    """Send the runs :func:`reserve` marked (after its commit); returns the ids sent. A run
    whose message could not be sent is marked unsent again, for the next round."""
    settings = settings or get_settings()
    send = send or enqueue_run
    sent: list[str] = []
    for run in chosen:
        if send(run.id, run.kind, run.priority):
            sent.append(run.id)
        else:
            _unsend(run.id)
    return sent


def dispatch(*, send: Send | None = None, settings: Settings | None = None) -> list[str]:
    """One round: send waiting runs to free worker slots, fairly; returns the ids sent.

    Never raises for an unreachable Redis or database: the runs wait, and the next round
    (at the latest the workers' interval) tries again.
    """
    settings = settings or get_settings()
    outlook = read_outlook(settings)
    if outlook is None:
        return []
    try:
        with get_process_engine().connect() as conn:
            chosen = reserve(conn, outlook, settings)
            conn.commit()
    except Exception as exc:  # the database is away for a moment: try again next time
        logger.warning("dispatch: could not choose runs to send (%s)", exc)
        return []
    return send_reserved(chosen, send=send, settings=settings)


def request_dispatch(settings: Settings | None = None, *, freeing: str | None = None) -> None:
    """Ask the workers' dispatcher for a round now (a run was handed back or re-queued, a
    sweep released trials). One Redis round trip; never raises: without Redis, nothing can
    be sent anyway, and the dispatcher's own interval catches up.

    ``freeing`` is a run that is about to end: its slot counts as free in that round, so the
    next run's message is on its way while the run's last statements are written, and waits
    in Redis until the slot's process takes it (Celery takes no more messages than a worker
    has processes). Call :func:`freed` once the run has ended.
    """
    settings = settings or get_settings()
    key = _kick_key(settings.task_queue)
    try:
        pipe = broker_redis(settings).pipeline(transaction=False)
        if freeing is not None:
            now = time.time()
            pipe.zadd(_freeing_key(settings.task_queue), {freeing: now})
            # Entries older than a lease are ignored by every round; drop them now and then.
            pipe.zremrangebyscore(_freeing_key(settings.task_queue), 0, now - 10 * settings.lease_s)
        pipe.lpush(key, 1)
        pipe.ltrim(key, 0, 0)  # one pending request stands for any number
        pipe.execute()
    except redis.RedisError as exc:
        logger.debug("could not request a dispatch round (%s)", exc)


def freed(run_id: str, settings: Settings | None = None) -> None:
    """The run announced by ``request_dispatch(freeing=…)`` has ended (its status no longer
    counts it as busy). Never raises."""
    settings = settings or get_settings()
    try:
        broker_redis(settings).zrem(_freeing_key(settings.task_queue), run_id)
    except redis.RedisError as exc:
        logger.debug("could not clear run %s from the finishing runs (%s)", run_id, exc)


def wait_for_request(timeout_s: float, settings: Settings | None = None) -> bool:
    """Block until a round is requested or ``timeout_s`` passed; True if requested.
    Raises redis errors."""
    settings = settings or get_settings()
    # A client of its own: a blocking read outlasts the shared client's socket timeout.
    client = _blocking_client(settings.celery_broker_url, settings.dispatch_interval_s + 5)
    timeout_s = min(timeout_s, settings.dispatch_interval_s)
    return client.blpop([_kick_key(settings.task_queue)], timeout=timeout_s) is not None


def _forget(client: redis.Redis, settings: Settings, worker_ids: list[bytes]) -> None:
    try:
        # redis-py types hash fields as str, but takes bytes (these are HGETALL's own keys).
        client.hdel(_registry_key(settings.task_queue), *worker_ids)  # type: ignore[arg-type]
    except redis.RedisError:
        pass


def _unsend(run_id: str) -> None:
    """The message could not be sent: the run waits again (the next dispatch retries)."""
    try:
        with get_process_engine().begin() as conn:
            conn.execute(_MARK_UNSENT, {"run_id": run_id})
    except Exception as exc:
        # It stays marked sent; resend_lost() sends it after BACKPROP_REQUEUE_AFTER_S.
        logger.warning("run %s: could not mark its message unsent (%s)", run_id, exc)


def _record_turns(
    client: redis.Redis, chosen: list[Waiting], last_served: dict[str, int], settings: Settings
) -> None:
    # A turn is the send's time in ns: ordered across processes on one clock, and the owner
    # served longest ago has the smallest. (Clock skew between hosts only blurs near-ties.)
    owners = {run.owner for run in chosen}
    latest = max(last_served, key=last_served.__getitem__, default=None)
    if not owners or owners == {latest}:
        return  # only the owner served last was served again: the order stays as it is
    now = time.time_ns()
    turns = {run.owner: now + i for i, run in enumerate(chosen)}
    try:
        client.hset(_served_key(settings.task_queue), mapping=turns)
    except redis.RedisError:
        pass  # fairness history only: losing it restarts the round robin


# -- the workers' interval ------------------------------------------------------------------


def resend_lost(settings: Settings | None = None) -> int:
    """Mark unsent the runs whose message was lost; returns how many.

    All sent-but-unclaimed runs when the broker's marker is gone (Redis lost its data), and
    otherwise those sent longer than ``requeue_after_s`` ago. Raises redis and database
    errors (the caller's loop retries).
    """
    settings = settings or get_settings()
    client = broker_redis(settings)
    marker = _marker_key(settings.task_queue)
    lost_everything = not client.exists(marker)
    sent = (Run.status == _QUEUED) & Run.enqueued_at.is_not(None)
    if not lost_everything:
        sent = sent & (Run.enqueued_at < utcnow() - timedelta(seconds=settings.requeue_after_s))
    with get_process_engine().begin() as conn:
        ids = list(
            conn.scalars(
                update(Run)
                .where(sent)
                .values(enqueued_at=None)
                .returning(Run.id)
                .execution_options(synchronize_session=False)
            )
        )
    if lost_everything:
        client.set(marker, str(time.time()))
        if ids:
            logger.warning(
                "the broker lost its data (restarted without persistence?): %d queued run(s) "
                "will be sent again", len(ids)
            )  # fmt: skip
    for run_id in ids if not lost_everything else []:
        logger.info("run %s: unclaimed since its message was sent; sending it again", run_id)
    return len(ids)


def maintain(worker_id: str, slots: int, kinds: list[str]) -> list[str]:
    """One round of a worker's main process: announce, re-send what was lost, dispatch."""
    announce_worker(worker_id, slots, kinds)
    resend_lost()
    return dispatch()
