"""The fair dispatcher: its choice (pure), and dispatching against real databases and Redis.

The sends are recorded by a function given to ``dispatch``, so no Celery process is needed;
the database (SQLite and PostgreSQL) and Redis are real.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from core.db.models import Run, RunStatus, utcnow
from core.db.session import session_scope
from core.dispatch import (
    Waiting,
    announce_worker,
    broker_redis,
    choose,
    dispatch,
    freed,
    kinds_of_queues,
    request_dispatch,
    resend_lost,
    wait_for_request,
    withdraw_worker,
)
from core.settings import Settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _w(run_id: str, owner: str, priority: int = 0, kind: str = "small", at: int = 0) -> Waiting:
    return Waiting(run_id, owner, priority, kind, T0 + timedelta(seconds=at))


# -- choose: the rule, without a database ------------------------------------------------


def test_owners_take_turns_whatever_their_backlog() -> None:
    waiting = [_w(f"a{i}", "alice", at=i) for i in range(60)] + [_w("b0", "bob", at=100)]
    picked = choose(waiting, free_total=3, free_by_kind={"small": 3}, last_served={})
    assert [r.id for r in picked] == ["a0", "b0", "a1"]


def test_the_owner_served_longest_ago_goes_first() -> None:
    waiting = [_w("a0", "alice"), _w("b0", "bob", at=5)]
    picked = choose(waiting, free_total=1, free_by_kind={"small": 1},
                    last_served={"alice": 7, "bob": 3})  # fmt: skip
    assert [r.id for r in picked] == ["b0"]


def test_priority_decides_inside_an_owner_and_between_owners_heads() -> None:
    waiting = [
        _w("a-low", "alice", priority=0, at=0),
        _w("a-high", "alice", priority=5, at=1),
        _w("b-mid", "bob", priority=3, at=2),
    ]
    picked = choose(waiting, free_total=3, free_by_kind={"small": 3}, last_served={})
    # alice's head is her priority-5 run; it beats bob's 3, whose head then beats alice's 0.
    assert [r.id for r in picked] == ["a-high", "b-mid", "a-low"]


def test_a_run_waits_for_a_slot_of_its_kind_without_holding_back_others() -> None:
    waiting = [_w("a-large", "alice", kind="large", at=0), _w("a-small", "alice", at=1)]
    picked = choose(waiting, free_total=2, free_by_kind={"small": 1, "large": 0},
                    last_served={})  # fmt: skip
    assert [r.id for r in picked] == ["a-small"]


def test_no_more_runs_than_free_slots() -> None:
    waiting = [_w(f"a{i}", "alice", at=i) for i in range(5)]
    assert choose(waiting, free_total=0, free_by_kind={"small": 5}, last_served={}) == []
    assert len(choose(waiting, free_total=9, free_by_kind={"small": 2}, last_served={})) == 2


def test_queue_names_map_to_run_kinds() -> None:
    assert kinds_of_queues(["bp", "bp.small"], "bp") == ["default", "small"]
    assert kinds_of_queues(["bp.large", "other"], "bp") == ["large"]


# -- dispatch: the database, Redis and the sends ---------------------------------------------


class Recorder:
    """Stands in for the Celery send; answers ``ok`` (the broker took the message)."""

    def __init__(self, ok: bool = True) -> None:
        self.sent: list[tuple[str, str | None, int]] = []
        self.ok = ok

    def __call__(self, run_id: str, kind: str | None, priority: int) -> bool:
        self.sent.append((run_id, kind, priority))
        return self.ok

    @property
    def ids(self) -> list[str]:
        return [run_id for run_id, _, _ in self.sent]


def _add_runs(*specs: tuple[str, str, int, str]) -> None:
    """Runs ``(id, owner, priority, kind)``, created one second apart, queued and unsent."""
    with session_scope() as s:
        for i, (run_id, owner, priority, kind) in enumerate(specs):
            s.add(Run(id=run_id, owner=owner, dataset_id="d", network={}, training={},
                      status=RunStatus.queued.value, epochs=1, metrics={}, queue=kind,
                      priority=priority, created_at=T0 + timedelta(seconds=i)))  # fmt: skip


def _runs() -> dict[str, Run]:
    with session_scope() as s:
        return {run.id: run for run in s.scalars(select(Run))}


def _set_status(run_id: str, status: str) -> None:
    with session_scope() as s:
        s.execute(update(Run).where(Run.id == run_id).values(status=status))


def test_nothing_is_sent_while_no_worker_has_announced_itself(
    service_settings: Settings,
) -> None:
    _add_runs(("r1", "alice", 0, "small"))
    send = Recorder()
    assert dispatch(send=send) == [] and send.sent == []
    assert _runs()["r1"].enqueued_at is None


def test_dispatch_fills_free_slots_in_turn_and_marks_the_runs_sent(
    service_settings: Settings,
) -> None:
    _add_runs(*[(f"a{i}", "alice", 0, "small") for i in range(4)], ("b0", "bob", 0, "small"))
    announce_worker("host:1", 2, ["default", "large", "small"])
    send = Recorder()
    assert dispatch(send=send) == ["a0", "b0"]
    assert send.sent == [("a0", "small", 0), ("b0", "small", 0)]
    runs = _runs()
    assert runs["a0"].enqueued_at is not None and runs["b0"].enqueued_at is not None
    assert runs["a1"].enqueued_at is None
    # Both slots are taken (sent, not claimed yet): nothing more goes out.
    assert dispatch(send=send) == []
    # a0 is claimed and ends: one slot frees, and alice is next (bob has nothing waiting).
    _set_status("a0", RunStatus.succeeded.value)
    assert dispatch(send=send) == ["a1"]


def test_a_new_owner_goes_ahead_of_a_served_owners_backlog(service_settings: Settings) -> None:
    _add_runs(*[(f"a{i}", "alice", 0, "small") for i in range(6)])
    announce_worker("host:1", 1, ["small"])
    send = Recorder()
    assert dispatch(send=send) == ["a0"]
    _set_status("a0", RunStatus.running.value)
    _add_runs(("b0", "bob", 0, "small"))
    assert dispatch(send=send) == []  # the one slot is busy
    _set_status("a0", RunStatus.succeeded.value)
    assert dispatch(send=send) == ["b0"]


def test_held_trials_and_other_statuses_are_not_sent(service_settings: Settings) -> None:
    _add_runs(("held", "alice", 0, "small"), ("done", "alice", 0, "small"),
              ("free", "alice", 0, "small"))  # fmt: skip
    with session_scope() as s:
        s.execute(update(Run).where(Run.id == "held").values(held=True))
    _set_status("done", RunStatus.cancelled.value)
    announce_worker("host:1", 4, ["small"])
    assert dispatch(send=Recorder()) == ["free"]


def test_a_failed_send_leaves_the_run_unsent_for_the_next_round(
    service_settings: Settings,
) -> None:
    _add_runs(("r1", "alice", 0, "small"))
    announce_worker("host:1", 1, ["small"])
    assert dispatch(send=Recorder(ok=False)) == []
    assert _runs()["r1"].enqueued_at is None
    assert dispatch(send=Recorder()) == ["r1"]


def test_a_withdrawn_or_silent_worker_gets_nothing(service_settings: Settings) -> None:
    _add_runs(("r1", "alice", 0, "small"))
    announce_worker("host:1", 1, ["small"])
    withdraw_worker("host:1")
    assert dispatch(send=Recorder()) == []
    # An announcement not renewed for long is dropped.
    client = broker_redis(service_settings)
    key = f"backprop:workers:{service_settings.task_queue}"
    client.hset(key, "host:2", '{"slots": 1, "kinds": ["small"], "seen": 0}')
    assert dispatch(send=Recorder()) == []
    assert client.hget(key, "host:2") is None


def test_runs_sent_to_a_broker_that_lost_its_data_are_sent_again(
    service_settings: Settings,
) -> None:
    _add_runs(("r1", "alice", 0, "small"), ("r2", "bob", 0, "small"))
    announce_worker("host:1", 2, ["small"])
    assert resend_lost() == 0  # the first round sets the marker
    assert sorted(dispatch(send=Recorder())) == ["r1", "r2"]
    assert resend_lost() == 0  # marker there, nothing old: nothing lost
    # Redis restarted without persistence: the marker is gone with the messages.
    broker_redis(service_settings).delete(f"backprop:broker-marker:{service_settings.task_queue}")
    assert resend_lost() == 2
    assert all(run.enqueued_at is None for run in _runs().values())
    assert sorted(dispatch(send=Recorder())) == ["r1", "r2"]


def test_a_run_unclaimed_long_after_its_send_is_sent_again(service_settings: Settings) -> None:
    _add_runs(("old", "alice", 0, "small"), ("new", "bob", 0, "small"))
    resend_lost()  # marker
    long_ago = utcnow() - timedelta(seconds=service_settings.requeue_after_s + 5)
    with session_scope() as s:
        s.execute(update(Run).where(Run.id == "old").values(enqueued_at=long_ago))
        s.execute(update(Run).where(Run.id == "new").values(enqueued_at=utcnow()))
    assert resend_lost() == 1
    runs = _runs()
    assert runs["old"].enqueued_at is None and runs["new"].enqueued_at is not None


@pytest.mark.parametrize("kinds", [["large"], ["small"]])
def test_capacity_counts_only_the_kinds_a_worker_takes(
    service_settings: Settings, kinds: list[str]
) -> None:
    _add_runs(("s", "alice", 0, "small"), ("l", "alice", 0, "large"))
    announce_worker("host:1", 2, kinds)
    assert dispatch(send=Recorder()) == [kinds[0][0]]


def test_a_dispatch_request_wakes_one_waiting_dispatcher(service_settings: Settings) -> None:
    assert wait_for_request(0.1) is False  # nothing requested: the wait times out
    for _ in range(5):
        request_dispatch()
    # Any number of requests stand for one round.
    assert (
        broker_redis(service_settings).llen(f"backprop:dispatch-kick:{service_settings.task_queue}")
        == 1
    )
    assert wait_for_request(5) is True
    assert wait_for_request(0.1) is False


def test_the_slot_of_a_finishing_run_counts_as_free(service_settings: Settings) -> None:
    # A worker about to end a run asks for the next one first: its message is on its way
    # while the run's last statements are written.
    _add_runs(("ending", "alice", 0, "small"), ("next", "alice", 0, "small"))
    _set_status("ending", RunStatus.running.value)
    announce_worker("host:1", 1, ["small"])
    assert dispatch(send=Recorder()) == []
    request_dispatch(freeing="ending")
    assert dispatch(send=Recorder()) == ["next"]
    _set_status("ending", RunStatus.succeeded.value)
    freed("ending")
    key = f"backprop:freeing:{service_settings.task_queue}"
    assert broker_redis(service_settings).smembers(key) == set()


def test_a_run_announced_as_freeing_long_ago_counts_as_busy_again(
    service_settings: Settings,
) -> None:
    # Its worker died between announcing the end and ending: after a lease, the slot is
    # the run's again (it may be running elsewhere by now).
    _add_runs(("ending", "alice", 0, "small"), ("next", "alice", 0, "small"))
    _set_status("ending", RunStatus.running.value)
    announce_worker("host:1", 1, ["small"])
    key = f"backprop:freeing:{service_settings.task_queue}"
    long_ago = time.time() - service_settings.lease_s - 1
    broker_redis(service_settings).zadd(key, {"ending": long_ago})
    assert dispatch(send=Recorder()) == []
    request_dispatch(freeing="ending")
    assert dispatch(send=Recorder()) == ["next"]
