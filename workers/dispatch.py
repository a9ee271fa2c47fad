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

Who calls :func:`dispatch`: the API right after a submit, the worker process that finished
or handed back a run, and every worker's main process on its interval (:func:`maintain`),
the safety net. Dispatchers take turns: a PostgreSQL advisory lock, or SQLite's write lock.

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

import redis
from sqlalchemy import Connection, func, or_, select, update

from core.db.locks import serialise_dispatch
from core.db.models import Run, RunStatus, utcnow
from core.db.session import get_engine
from core.queues import DEFAULT, KINDS, queue_name
from core.settings import Settings, get_settings
from workers.celery_app import enqueue_run

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


def _turn_key(task_queue: str) -> str:
    return f"backprop:served-turn:{task_queue}"


@lru_cache(maxsize=4)
def _client(url: str) -> redis.Redis:
    # Short timeouts: with Redis away, a submit must answer at once (the run then waits).
    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)


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


_BUSY = (
    select(Run.queue, func.count())
    .where(
        or_(
            Run.status == _RUNNING,
            (Run.status == _QUEUED) & Run.enqueued_at.is_not(None),
        )
    )
    .group_by(Run.queue)
)


def _waiting(conn: Connection, per_owner: int) -> list[Waiting]:
    """The first ``per_owner`` waiting runs of each owner and kind: all that one round of
    :func:`choose` can take."""
    rank = (
        func.row_number()
        .over(
            partition_by=(Run.owner, Run.queue),
            order_by=(Run.priority.desc(), Run.created_at, Run.id),
        )
        .label("rank")
    )
    ranked = (
        select(Run.id, Run.owner, Run.priority, Run.queue, Run.created_at, rank)
        .where(Run.status == _QUEUED, Run.enqueued_at.is_(None), Run.held.is_(False))
        .subquery()
    )
    rows = conn.execute(select(ranked).where(ranked.c.rank <= per_owner))
    return [Waiting(r.id, r.owner, r.priority or 0, r.queue or DEFAULT, r.created_at) for r in rows]


def dispatch(*, send: Send | None = None, settings: Settings | None = None) -> list[str]:
    """Send waiting runs to free worker slots, fairly; returns the ids sent.

    Never raises for an unreachable Redis or database: the runs wait, and the next call
    (at the latest the workers' interval) tries again.
    """
    settings = settings or get_settings()
    send = send or enqueue_run
    client = broker_redis(settings)
    try:
        entries = client.hgetall(_registry_key(settings.task_queue))
    except redis.RedisError as exc:
        logger.debug("dispatch: broker unreachable (%s); runs wait in the database", exc)
        return []
    stale_after = max(10.0, 5 * settings.dispatch_interval_s)
    capacity, stale = _capacity(entries, stale_after, time.time())
    if stale:
        _forget(client, settings, stale)
    if capacity.total <= 0:
        return []
    try:
        chosen = _reserve(capacity, client, settings)
    except Exception as exc:  # the database is away for a moment: try again next time
        logger.warning("dispatch: could not choose runs to send (%s)", exc)
        return []
    sent: list[str] = []
    for run in chosen:
        if send(run.id, run.kind, run.priority):
            sent.append(run.id)
        else:
            _unsend(run.id)
    if chosen:
        _record_turns(client, settings, chosen)
    return sent


def dispatch_quietly() -> None:
    """:func:`dispatch` for callers whose own work is done: never raises, only logs."""
    try:
        dispatch()
    except Exception as exc:
        logger.warning("dispatch failed (%s); the workers' next round retries", exc)


def _forget(client: redis.Redis, settings: Settings, worker_ids: list[bytes]) -> None:
    try:
        client.hdel(_registry_key(settings.task_queue), *worker_ids)
    except redis.RedisError:
        pass


def _reserve(capacity: Capacity, client: redis.Redis, settings: Settings) -> list[Waiting]:
    """In one transaction, as the only dispatcher: pick the runs and mark them sent."""
    with get_engine().connect() as conn:
        serialise_dispatch(conn, settings.task_queue)
        busy = {queue or DEFAULT: n for queue, n in conn.execute(_BUSY).all()}
        free_total = capacity.total - sum(busy.values())
        if free_total <= 0:
            conn.commit()
            return []
        waiting = _waiting(conn, free_total)
        if not waiting:
            conn.commit()
            return []
        owners = sorted({run.owner for run in waiting})
        try:
            turns = client.hmget(_served_key(settings.task_queue), owners)
        except redis.RedisError:
            turns = [None] * len(owners)
        last_served = {o: int(t) for o, t in zip(owners, turns, strict=True) if t is not None}
        free_by_kind = {kind: slots - busy.get(kind, 0) for kind, slots in capacity.by_kind.items()}
        chosen = choose(
            waiting, free_total=free_total, free_by_kind=free_by_kind, last_served=last_served
        )
        now = utcnow()
        taken: list[Waiting] = []
        for run in chosen:
            marked = conn.execute(
                update(Run)
                .where(Run.id == run.id, Run.status == _QUEUED, Run.enqueued_at.is_(None))
                .values(enqueued_at=now)
            ).rowcount
            if marked:
                taken.append(run)
        conn.commit()
    return taken


def _unsend(run_id: str) -> None:
    """The message could not be sent: the run waits again (the next dispatch retries)."""
    try:
        with get_engine().begin() as conn:
            conn.execute(
                update(Run).where(Run.id == run_id, Run.status == _QUEUED).values(enqueued_at=None)
            )
    except Exception as exc:
        # It stays marked sent; maintain() re-sends it after BACKPROP_REQUEUE_AFTER_S.
        logger.warning("run %s: could not mark its message unsent (%s)", run_id, exc)


def _record_turns(client: redis.Redis, settings: Settings, chosen: list[Waiting]) -> None:
    try:
        pipe = client.pipeline(transaction=False)
        for _ in chosen:
            pipe.incr(_turn_key(settings.task_queue))
        turns = pipe.execute()
        client.hset(
            _served_key(settings.task_queue),
            mapping={run.owner: turn for run, turn in zip(chosen, turns, strict=True)},
        )
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
    with get_engine().begin() as conn:
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
