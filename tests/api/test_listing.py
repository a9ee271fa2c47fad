"""The run list's query building (api/listing.py, api/pagination.py) on SQLite and PostgreSQL.

Runs are inserted straight into a migrated database with values drawn at random (ties on
purpose: equal losses, equal creation times); every filter and every order is then read page
by page through ``keyset_page`` and compared with the same selection and order computed in
Python from the values inserted.
"""

from __future__ import annotations

import base64
import random
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import HTTPException
from sqlalchemy import create_engine, event, pool, select, text, update
from sqlalchemy.orm import Session

from api.listing import DEFAULT_ORDER, RUN_SORT_KEYS, Filters, run_sort
from api.pagination import Sort, decode_cursor, keyset_page
from core.db.models import Run, metric_columns
from core.db.session import normalize_url

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
NAMES = ("Iris baseline", "iris wide", "digits", "50%_off", "seed 2-2-2", None)


@pytest.fixture
def db(db_url: str) -> Iterator[Session]:
    engine = create_engine(normalize_url(db_url), poolclass=pool.NullPool)
    with Session(engine) as session:
        yield session
    engine.dispose()


def _value(rng: random.Random, choices: tuple[float, ...]) -> float | None:
    return None if rng.random() < 0.25 else rng.choice(choices)


def make_runs(db: Session, n: int, seed: int = 0, owner: str = "me") -> list[dict[str, Any]]:
    """``n`` runs of ``owner`` with random values; what was inserted, as plain dicts."""
    rng = random.Random(seed)
    sweeps = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(3)]
    datasets = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(3)]
    made = []
    for _ in range(n):
        metrics = {
            "loss": _value(rng, (0.1, 0.2, 0.25, 0.5, 1.5)),  # few values: many ties
            "val_loss": _value(rng, (0.15, 0.3, 0.45)),
            "accuracy": _value(rng, (0.5, 0.75, 0.9, 1.0)),
            "val_accuracy": _value(rng, (0.6, 0.8)),
        }
        drawn = {
            "project": rng.choice(("iris", "digits", None)),
            "stage": rng.choice(("a", "b", None)),
            "odd_key.v-1/x": rng.choice(("x:y", "", None)),
        }
        tags = {k: v for k, v in drawn.items() if v is not None}
        row = {
            "id": str(uuid.UUID(int=rng.getrandbits(128))),
            "owner": owner,
            "name": rng.choice(NAMES),
            "status": rng.choice(STATUSES),
            "dataset_id": rng.choice(datasets),
            "sweep_id": rng.choice((*sweeps, None, None)),
            # a few minutes apart, often the same instant: ties broken by id
            "created_at": T0 + timedelta(minutes=rng.randrange(0, 40)),
            "best_epoch": rng.choice((None, 3, 7, 7, 12)),
            "metrics": {k: v for k, v in metrics.items() if v is not None},
            "tags": tags or None,
        }
        made.append(row)
    db.add_all(
        Run(**row, **metric_columns(row["metrics"]), network={}, training={}, epochs=10)
        for row in made
    )
    db.commit()
    return made


def expected(rows: list[dict[str, Any]], sort: Sort) -> list[str]:
    """The ids in the order the list promises: by (value, created_at, id) in the sort's
    direction, the rows without a value after them by (created_at, id)."""

    def value(row: dict[str, Any]) -> Any:
        return row["best_epoch"] if sort.key == "best_epoch" else row["metrics"].get(sort.key)

    if sort.key == "created_at":
        having, lacking = [], rows
    else:
        having = [r for r in rows if value(r) is not None]
        lacking = [r for r in rows if value(r) is None]
    first = sorted(having, key=lambda r: (value(r), r["created_at"], r["id"]),
                   reverse=sort.descending)  # fmt: skip
    last = sorted(lacking, key=lambda r: (r["created_at"], r["id"]), reverse=sort.descending)
    return [r["id"] for r in first + last]


def read_all(db: Session, filters: Filters, sort: Sort, limit: int) -> list[str]:
    """Every page of the owner's filtered list, concatenated."""
    dialect = db.get_bind().dialect.name
    stmt = filters.apply(select(Run).where(Run.owner == "me"), Run, dialect)
    ids: list[str] = []
    cursor = None
    for _ in range(1000):
        rows, cursor = keyset_page(db, stmt, Run, sort, cursor, limit)
        assert len(rows) <= limit
        ids += [r.id for r in rows]
        if cursor is None:
            return ids
        assert len(rows) == limit  # only the last page may be short
    raise AssertionError("the pages never ended")


FILTERS: dict[str, tuple[Filters, Callable[[dict[str, Any]], bool]]] = {
    "none": (Filters(), lambda r: True),
    "status": (Filters(statuses=["succeeded"]), lambda r: r["status"] == "succeeded"),
    "statuses": (
        Filters(statuses=["failed", "cancelled", "failed"]),
        lambda r: r["status"] in ("failed", "cancelled"),
    ),
    "tag": (
        Filters(tags=[("project", "iris")]),
        lambda r: (r["tags"] or {}).get("project") == "iris",
    ),
    "two tags": (
        Filters(tags=[("project", "digits"), ("stage", "b")]),
        lambda r: (
            (r["tags"] or {}).get("project") == "digits" and (r["tags"] or {}).get("stage") == "b"
        ),
    ),
    "odd key, value with a colon": (
        Filters(tags=[("odd_key.v-1/x", "x:y")]),
        lambda r: (r["tags"] or {}).get("odd_key.v-1/x") == "x:y",
    ),
    "empty value": (
        Filters(tags=[("odd_key.v-1/x", "")]),
        lambda r: (r["tags"] or {}).get("odd_key.v-1/x") == "",
    ),
    "one key, two values": (
        Filters(tags=[("stage", "a"), ("stage", "b")]),
        lambda r: False,
    ),
    "q": (Filters(q="IRIS"), lambda r: "iris" in (r["name"] or "").lower()),
    "q with LIKE wildcards": (Filters(q="0%_"), lambda r: "0%_" in (r["name"] or "")),
    "top level": (Filters(top_level=True), lambda r: r["sweep_id"] is None),
    "time window": (
        Filters(
            created_after=T0 + timedelta(minutes=10), created_before=T0 + timedelta(minutes=30)
        ),
        lambda r: T0 + timedelta(minutes=10) <= r["created_at"] < T0 + timedelta(minutes=30),
    ),
}


@pytest.mark.parametrize("name", list(FILTERS))
def test_each_filter_in_each_order_pages_through_exactly_the_expected_runs(
    db: Session, name: str
) -> None:
    rows = make_runs(db, 90)
    make_runs(db, 20, seed=1, owner="someone else")  # never listed
    filters, keep = FILTERS[name]
    chosen = [r for r in rows if keep(r)]
    assert chosen or name == "one key, two values"
    for key in RUN_SORT_KEYS:
        for order in ("asc", "desc"):
            sort = run_sort(key, order)
            assert read_all(db, filters, sort, limit=7) == expected(chosen, sort), (key, order)


def test_dataset_and_sweep_filters_and_the_default_orders(db: Session) -> None:
    rows = make_runs(db, 60, seed=2)
    dataset, sweep = rows[0]["dataset_id"], rows[1]["sweep_id"] or rows[2]["sweep_id"]
    both = Filters(dataset_id=dataset, sweep_id=sweep, statuses=list(STATUSES))
    chosen = [r for r in rows if r["dataset_id"] == dataset and r["sweep_id"] == sweep]
    sort = run_sort("val_loss", None)
    assert not sort.descending and read_all(db, both, sort, 4) == expected(chosen, sort)
    assert DEFAULT_ORDER == {
        "created_at": "desc", "loss": "asc", "val_loss": "asc",
        "accuracy": "desc", "val_accuracy": "desc", "best_epoch": "asc",
    }  # fmt: skip
    assert run_sort("created_at", None) == Sort("created_at", True)
    assert run_sort("accuracy", None) == Sort("accuracy", True)
    assert run_sort("accuracy", "asc") == Sort("accuracy", False)


@pytest.mark.parametrize("key", RUN_SORT_KEYS)
def test_paging_while_runs_are_added_yields_each_run_once_in_order(db: Session, key: str) -> None:
    """Between pages, new runs arrive (with values, ties and no values among them): every
    run that existed at the start is read exactly once, nothing twice, all in order."""
    rows = make_runs(db, 50, seed=3)
    sort = run_sort(key, None)
    stmt = select(Run).where(Run.owner == "me")
    seen: list[str] = []
    cursor = None
    for page_number in range(100):
        page, cursor = keyset_page(db, stmt, Run, sort, cursor, 6)
        seen += [r.id for r in page]
        if cursor is None:
            break
        rows += make_runs(db, 3, seed=100 + page_number)  # newer than all, some tied
    assert len(seen) == len(set(seen))
    assert set(seen) >= {r["id"] for r in rows[:50]}
    by_id = {r["id"]: r for r in rows}
    assert seen == expected([by_id[i] for i in seen], sort)


@pytest.mark.parametrize("descending", [False, True])
def test_a_run_that_gets_its_first_loss_while_a_page_is_read_is_on_it(
    db: Session, db_url: str, descending: bool
) -> None:
    """A page is one snapshot. Here another connection gives the run without a loss its
    first loss (as a worker does after epoch 1) right after each statement the page runs. A
    page read in two statements (the runs with a value, then those without) lost that run:
    the first had not seen it with a value, the second no longer saw it without one."""
    writer = create_engine(normalize_url(db_url), poolclass=pool.NullPool)
    if db_url.startswith("sqlite"):  # as the service runs it: a writer does not wait for readers
        with writer.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    valued, fresh = make_runs(db, 1, seed=0)[0], make_runs(db, 1, seed=1)[0]
    db.execute(update(Run).where(Run.id == valued["id"]).values(loss=0.5))
    db.execute(update(Run).where(Run.id == fresh["id"]).values(loss=None))
    db.commit()
    statements: list[str] = []

    def first_loss_after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)
        with writer.begin() as other:
            other.execute(update(Run).where(Run.id == fresh["id"]).values(loss=0.25))

    bound = db.get_bind()
    event.listen(bound, "after_cursor_execute", first_loss_after)
    try:
        page, cursor = keyset_page(
            db, select(Run).where(Run.owner == "me"), Run, Sort("loss", descending), None, 5
        )
    finally:
        event.remove(bound, "after_cursor_execute", first_loss_after)
        writer.dispose()
    assert [r.id for r in page] == [valued["id"], fresh["id"]] and cursor is None
    assert len(statements) == 1


def test_a_cursor_belongs_to_its_sort_and_order(db: Session) -> None:
    make_runs(db, 10, seed=4)
    stmt = select(Run).where(Run.owner == "me")
    _, cursor = keyset_page(db, stmt, Run, Sort("val_loss", False), None, 3)
    assert cursor is not None
    assert decode_cursor(cursor, Sort("val_loss", False)).row_id
    for other in (Sort("val_loss", True), Sort("loss", False), Sort()):
        with pytest.raises(HTTPException) as caught:
            keyset_page(db, stmt, Run, other, cursor, 3)
        assert caught.value.status_code == 400
        assert "made for sort=val_loss&order=asc" in caught.value.detail


@pytest.mark.parametrize(
    "raw",
    [
        "garbage",
        '{"s":"created_at","o":"desc","c":"0001-01-01T00:00:00+14:00","i":"x"}',
        '{"s":"created_at","o":"desc","c":"2026-01-01T00:00:00","i":"a\\u0000b"}',
        '{"s":"loss","o":"asc","c":"2026-01-01T00:00:00","i":"x","v":"0.1"}',
        '{"s":"loss","o":"asc","c":"2026-01-01T00:00:00","i":"x","v":true}',
        '{"s":"loss","o":"asc","c":12,"i":"x","v":0.1}',
        "[1, 2]",
        '{"s":"loss","o":"asc","c":"2026-01-01T00:00:00","i":"x","v":1' + "0" * 400 + "}",
        '{"s":"best_epoch","o":"asc","c":"2026-01-01T00:00:00","i":"x","v":4294967296}',
        '{"s":"best_epoch","o":"asc","c":"2026-01-01T00:00:00","i":"x","v":1.5}',
        '{"s":"loss","o":"asc","c":"2026-01-01T00:00:00","i":"' + "x" * 65 + '","v":1}',
    ],
)
def test_a_cursor_we_did_not_issue_is_400(raw: str) -> None:
    cursor = base64.urlsafe_b64encode(raw.encode()).decode()
    sort = next((Sort(k, False) for k in ("loss", "best_epoch") if f'"{k}"' in raw), Sort())
    with pytest.raises(HTTPException) as caught:
        decode_cursor(cursor, sort)
    assert caught.value.status_code == 400


def test_cursors_of_the_first_form_still_work(db: Session) -> None:
    rows = make_runs(db, 12, seed=5)
    order = expected(rows, Sort())
    by_id = {r["id"]: r for r in rows}
    fifth = by_id[order[4]]
    legacy = f"{fifth['created_at'].isoformat()}|{fifth['id']}"
    cursor = base64.urlsafe_b64encode(legacy.encode()).decode().rstrip("=")
    page, _ = keyset_page(db, select(Run).where(Run.owner == "me"), Run, Sort(), cursor, 50)
    assert [r.id for r in page] == order[5:]


@contextmanager
def _statements(db: Session) -> Iterator[list[tuple[str, Any]]]:
    """The SQL statements that ``db`` runs in the block, with their parameters."""
    bound = db.get_bind()
    seen: list[tuple[str, Any]] = []

    def note(conn: Any, cursor: Any, statement: str, parameters: Any, *args: Any) -> None:
        seen.append((statement, parameters))

    event.listen(bound, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(bound, "before_cursor_execute", note)


@pytest.mark.parametrize("key", RUN_SORT_KEYS[1:])
def test_a_page_sorted_by_a_metric_reads_its_partial_index(db: Session, key: str) -> None:
    """The sort indexes hold only the runs with a value (migration 0010): a page's sorted half
    must say ``key IS NOT NULL`` for the planner to read one, first page and later ones."""
    make_runs(db, 30, seed=6)
    bound = db.get_bind()
    with _statements(db) as seen:
        stmt = select(Run).where(Run.owner == "me")
        _, cursor = keyset_page(db, stmt, Run, Sort(key, False), None, 3)
        keyset_page(db, stmt, Run, Sort(key, False), cursor, 3)
    assert cursor is not None and len(seen) == 2
    with bound.connect() as conn:
        for statement, parameters in seen:
            if bound.dialect.name == "postgresql":
                conn.exec_driver_sql("SET enable_seqscan = off")  # can it, not does it here
                rows = conn.exec_driver_sql(f"EXPLAIN {statement}", parameters).all()
            else:
                rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
            plan = "\n".join(str(row[-1]) for row in rows)
            assert f"ix_runs_owner_{key}" in plan, plan


def _page_cost(db: Session, stmt: Any, sort: Sort, limit: int) -> tuple[int, str]:
    """What reading the first page costs the database (PostgreSQL: buffers; SQLite: VM
    instructions), and PostgreSQL's plan of it as it ran."""
    bound = db.get_bind()
    with _statements(db) as seen:
        keyset_page(db, stmt, Run, sort, None, limit)
    ((statement, parameters),) = seen
    with bound.connect() as conn:
        if bound.dialect.name == "postgresql":
            rows = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, BUFFERS) {statement}", parameters)
            plan = "\n".join(row[0] for row in rows)
            hits = re.search(r"Buffers: shared hit=(\d+)", plan)
            return (int(hits.group(1)) if hits else 0), plan
        steps = [0]

        def step() -> int:
            steps[0] += 1
            return 0

        raw = conn.connection.dbapi_connection
        raw.set_progress_handler(step, 1)  # type: ignore[union-attr]
        try:
            conn.exec_driver_sql(statement, parameters).all()
        finally:
            raw.set_progress_handler(None, 1)  # type: ignore[union-attr]
        return steps[0], ""


def test_a_page_of_runs_with_a_value_does_not_scan_for_those_without_one(db: Session) -> None:
    """The sort indexes hold no NULLs, so the runs without a value are found by scanning the
    owner's runs by time. A page that the runs with a value fill must not run that scan: with
    one run in a thousand lacking a loss, it would read them all, on every page."""
    costs: list[tuple[int, str]] = []
    for n in (100, 1000):
        make_runs(db, n - (100 if costs else 0), seed=n)
        db.execute(update(Run).values(loss=0.5))
        first = db.scalars(select(Run.id).order_by(Run.created_at, Run.id).limit(1)).one()
        db.execute(update(Run).where(Run.id == first).values(loss=None))
        db.commit()
        if db.get_bind().dialect.name == "postgresql":
            db.execute(text("ANALYZE runs"))
            db.commit()
        costs.append(_page_cost(db, select(Run).where(Run.owner == "me"), Sort("loss"), 10))
    (small, _), (large, plan) = costs
    if plan:  # PostgreSQL: the scan for the runs without a loss did not run
        lines = plan.splitlines()
        (condition,) = [i for i, line in enumerate(lines) if "loss IS NULL" in line]
        node = next(line for line in reversed(lines[:condition]) if "->" in line)
        assert "(never executed)" in node, plan
    else:  # SQLite: ten times the runs, about the same work
        assert large < 1.5 * small, (small, large)
