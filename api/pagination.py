"""Keyset pagination, newest first, over tables with ``created_at`` and ``id`` columns."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi import HTTPException
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from core.db.models import as_utc

T = TypeVar("T", bound=tuple[Any, ...])


def encode_cursor(created_at: datetime, row_id: str) -> str:
    raw = f"{as_utc(created_at).isoformat()}|{row_id}"  # type: ignore[union-attr]
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        stamp, row_id = base64.urlsafe_b64decode(padded.encode()).decode().split("|", 1)
        if "\x00" in row_id:  # never issued; PostgreSQL refuses NUL in a query (was a 500)
            raise ValueError("NUL in cursor")
        created = datetime.fromisoformat(stamp)
        # Normalised here, so that a time the database cannot hold is a 400, not a 500.
        created = created.astimezone(UTC) if created.tzinfo else created.replace(tzinfo=UTC)
        return created, row_id
    except (ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise HTTPException(400, detail=f"cursor: not a cursor from this API ({cursor!r})") from exc


def paginate(stmt: Select[T], model: Any, cursor: str | None, limit: int) -> Select[T]:
    """Order newest first and start after ``cursor``; fetch ``limit + 1`` to see if more."""
    if cursor:
        created_at, row_id = decode_cursor(cursor)
        stmt = stmt.where(
            or_(
                model.created_at < created_at,
                and_(model.created_at == created_at, model.id < row_id),
            )
        )
    return stmt.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)


def page(rows: list[Any], limit: int) -> tuple[list[Any], str | None]:
    """Split the ``limit + 1`` fetched rows into the page and the next cursor."""
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last.created_at, last.id)


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
    return page(list(db.scalars(paginate(stmt, model, cursor, limit))), limit)
