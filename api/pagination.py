"""Keyset pagination of the lists, in any order they sort by, stable while rows are added.

A list is ordered by a sort key, then ``created_at``, then ``id`` (unique), all in the same
direction; rows without a value of the sort key (NULL) come after all the others, ordered by
``(created_at, id)`` in that direction. A page is fetched as "the first ``limit + 1`` rows
after the last row of the previous page", and the cursor is that last row's position: its
sort value (or "in the group without one"), ``created_at`` and ``id``. So a page never
repeats or skips a row because rows were added or removed before it; only a row whose sort
value changes between two pages (a running run's loss) may move past the cursor.

Each page is one statement, so one snapshot of the table: the rows with a value, from an
index range scan (``(owner, key, created_at, id)``, read forwards or backwards), followed by
the rows without one, which that partial index does not hold: they come from
``(owner, created_at, id)``, read only when the rows with a value leave room on the page.

The cursor is opaque to clients: URL-safe base64 of a small JSON document naming the sort and
the order it was made for; using it with another sort or order is a 400. Cursors of the old
form (``created_at|id``, newest first) are still read.
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from fastapi import HTTPException
from sqlalchemy import ColumnElement, Select, func, literal, select, tuple_, union_all
from sqlalchemy.orm import Session

from core.db.models import as_utc

T = TypeVar("T", bound=tuple[Any, ...])

Order = Literal["asc", "desc"]


@dataclass(frozen=True)
class Sort:
    """The order of a list: by the column ``key`` of the model (``created_at``: by time
    alone), ``descending`` or not."""

    key: str = "created_at"
    descending: bool = True

    @property
    def order(self) -> Order:
        return "desc" if self.descending else "asc"

    def describe(self) -> str:
        return f"sort={self.key}&order={self.order}"


@dataclass(frozen=True)
class Position:
    """Where a page ended: the last row's sort value (``None``: among the rows without
    one), its ``created_at`` and its ``id``."""

    value: float | int | None
    created_at: datetime
    row_id: str


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def encode_cursor(sort: Sort, position: Position) -> str:
    """The cursor of the page that starts after ``position`` in the order ``sort``."""
    created = as_utc(position.created_at)
    assert created is not None
    doc: dict[str, Any] = {"s": sort.key, "o": sort.order, "c": created.isoformat(),
                           "i": position.row_id}  # fmt: skip
    if sort.key != "created_at":
        doc["v"] = position.value
    return _b64(json.dumps(doc, separators=(",", ":")))


def _bad(cursor: str, why: str = "not a cursor from this API") -> HTTPException:
    shown = cursor if len(cursor) <= 80 else cursor[:80] + "…"
    return HTTPException(400, detail=f"cursor: {why} ({shown!r})")


def _time(stamp: Any) -> datetime:
    if not isinstance(stamp, str):
        raise ValueError("no time")
    created = datetime.fromisoformat(stamp)
    # Normalised here, so that a time the database cannot hold is a 400, not a 500.
    return created.astimezone(UTC) if created.tzinfo else created.replace(tzinfo=UTC)


def _row_id(value: Any) -> str:
    # NUL: never issued, and PostgreSQL refuses it in a query (was a 500).
    if not isinstance(value, str) or "\x00" in value or len(value) > 64:
        raise ValueError("bad id")
    return value


def decode_cursor(cursor: str, sort: Sort) -> Position:
    """The position ``cursor`` points at; 400 when it is not one of ours or was made for
    another sort or order."""
    try:
        raw = base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode()).decode()
        if not raw.startswith("{"):  # the first form: "created_at|id", newest first
            stamp, row_id = raw.split("|", 1)
            doc: dict[str, Any] = {"s": "created_at", "o": "desc", "c": stamp, "i": row_id}
        else:
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise ValueError("not an object")
        made_for = Sort(str(doc.get("s")), doc.get("o") == "desc")
        created, row_id = _time(doc.get("c")), _row_id(doc.get("i"))
        value = _sort_value(doc.get("v"), made_for.key)
    except (ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise _bad(cursor) from exc
    if made_for != sort:
        raise _bad(cursor, f"made for {made_for.describe()}, not for {sort.describe()}")
    return Position(value, created, row_id)


def _sort_value(value: Any, key: str) -> float | int | None:
    """A cursor's sort value as its column holds it: an epoch number (32 bits) for
    ``best_epoch``, a finite float for a metric; ValueError for anything else (a value the
    database could not compare would be a 5xx)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("bad value")
    if key == "best_epoch":
        if not isinstance(value, int) or not -(2**31) <= value < 2**31:
            raise ValueError("bad epoch")
        return value
    number = float(value)  # OverflowError for an int beyond floats
    if not math.isfinite(number):
        raise ValueError("not finite")
    return number


def _after(columns: list[Any], values: list[Any], descending: bool) -> ColumnElement[bool]:
    """Rows after ``values`` in the order of ``columns``: a row-value comparison, which
    PostgreSQL answers from the index on those columns."""
    bound = [literal(v, type_=c.type) for c, v in zip(columns, values, strict=True)]
    return tuple_(*columns) < tuple_(*bound) if descending else tuple_(*columns) > tuple_(*bound)


def _ordered(stmt: Select[T], columns: list[Any], descending: bool, n: Any) -> Select[T]:
    return stmt.order_by(*(c.desc() if descending else c.asc() for c in columns)).limit(n)


def _in_turn(parts: list[Select[Any]], model: Any, columns: list[Any], desc: bool) -> Select[Any]:
    """The rows of each of ``parts`` (selects of ``model``, each ordered by ``columns``, the
    last of which is the id) after those of the ones before it, as one statement: one
    snapshot of the table, so that a row that moves from one part to the next while the page
    is read (a run's first loss) is neither lost nor shown twice, as it could be with one
    statement per part. The parts pick ids and sort values only; the rows are joined to them
    (a union of whole rows costs more to build than the query takes)."""
    members = [
        select(part.with_only_columns(*columns, literal(i).label("part")).subquery())
        for i, part in enumerate(parts)
    ]  # a subquery each: SQLite allows no ORDER BY or LIMIT in a member of a UNION
    picked = union_all(*members).subquery("picked")
    keys = [picked.c[column.key] for column in columns]
    return (
        select(model)
        .join(picked, model.id == keys[-1])
        .order_by(picked.c.part, *(k.desc() if desc else k.asc() for k in keys))
    )


def keyset_page(
    db: Session,
    stmt: Select[Any],
    model: Any,
    sort: Sort,
    cursor: str | None,
    limit: int,
    *,
    entities: bool = True,
) -> tuple[list[Any], str | None]:
    """One page of ``stmt``'s rows (ORM objects of ``model``, filtered by the caller; with
    ``entities=False``, rows of columns that include ``model``'s ``created_at`` and ``id``,
    by ``created_at`` only) in the order ``sort``, starting after ``cursor``; and the next
    page's cursor, or None after the last page."""
    if not entities and sort.key != "created_at":
        raise ValueError("rows of columns are paged by created_at only")

    def fetch(page: Select[Any]) -> list[Any]:
        return list(db.scalars(page)) if entities else list(db.execute(page).all())

    position = decode_cursor(cursor, sort) if cursor else None
    tail = [model.created_at, model.id]
    desc = sort.descending
    rows: list[Any] = []
    if sort.key == "created_at":
        page = stmt
        if position is not None:
            page = page.where(_after(tail, [position.created_at, position.row_id], desc))
        rows = fetch(_ordered(page, tail, desc, limit + 1))
    else:
        key = getattr(model, sort.key)
        parts: list[Select[Any]] = []
        unvalued = stmt.where(key.is_(None))
        room: Any = limit + 1
        if position is None or position.value is not None:
            valued = stmt.where(key.is_not(None))
            if position is not None:
                after = [position.value, position.created_at, position.row_id]
                valued = valued.where(_after([key, *tail], after, desc))
            parts.append(_ordered(valued, [key, *tail], desc, limit + 1))
            # The rows without a value come next, from their first, and are read only when
            # the rows with one leave room. The sort indexes hold no NULLs (migration 0010),
            # so that read may scan the owner's runs by time; a page the rows with a value
            # fill must skip it. PostgreSQL skips a part whose WHERE holds a false condition
            # of no row (a one-time filter), and plans it with its constant LIMIT; SQLite
            # tests such a condition row by row, but skips a part whose LIMIT is 0.
            shown = (
                select(func.count())
                .select_from(parts[0].with_only_columns(model.id).subquery())
                .scalar_subquery()
            )
            if db.get_bind().dialect.name == "sqlite":
                room = limit + 1 - shown
            else:
                unvalued = unvalued.where(shown <= limit)
        else:
            unvalued = unvalued.where(_after(tail, [position.created_at, position.row_id], desc))
        parts.append(_ordered(unvalued, tail, desc, room))
        page = parts[0] if len(parts) == 1 else _in_turn(parts, model, [key, *tail], desc)
        rows = fetch(page.limit(limit + 1))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    value = None if sort.key == "created_at" else getattr(last, sort.key)
    return rows[:limit], encode_cursor(sort, Position(value, last.created_at, last.id))


def list_owned(
    db: Session,
    model: Any,
    owner: str,
    cursor: str | None,
    limit: int,
    status: str | None = None,
) -> tuple[list[Any], str | None]:
    """One page of ``owner``'s rows of ``model`` (optionally of one ``status``), newest first,
    and the cursor of the next page."""
    stmt = select(model).where(model.owner == owner)
    if status is not None:
        stmt = stmt.where(model.status == status)
    return keyset_page(db, stmt, model, Sort(), cursor, limit)
