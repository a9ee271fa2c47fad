"""The filters of the lists (``GET /api/v1/runs``, ``/sweeps``, ``/datasets``) as SQL, and
their query parameters.

Every filter narrows the list (they are ANDed); each is written so that it reads the same on
SQLite and PostgreSQL:

- ``tag=key:value`` (repeatable, ANDed): PostgreSQL tests them all at once with
  ``tags @> '{"key": "value", ...}'`` (JSONB, GIN-indexed on runs); SQLite compares
  ``json_extract(tags, '$."key"')`` with each value.
- ``q``: the name contains ``q``, case aside (``lower(name) LIKE '%q%'`` with ``%``, ``_``
  escaped; SQLite lowers ASCII letters only).
- runs also: ``status`` (any of several), ``dataset_id``, ``sweep_id``, ``top_level`` (no
  sweep trials), ``created_after`` (inclusive) and ``created_before`` (exclusive).

The order and the cursor are api/pagination.py's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import AfterValidator
from sqlalchemy import ColumnElement, Select, and_, false, func, type_coerce
from sqlalchemy.dialects.postgresql import JSONB

from api.pagination import Order, Sort
from core.db.models import SORTABLE_METRICS
from core.organise import EditError, check_tag_key, check_tag_value

#: What the run list sorts by; each is a column of ``runs`` (docs/API.md §5).
RunSortKey = Literal["created_at", "loss", "val_loss", "accuracy", "val_accuracy", "best_epoch"]
RUN_SORT_KEYS: tuple[str, ...] = ("created_at", *SORTABLE_METRICS, "best_epoch")
#: The order when none is asked: newest first; best first for a metric; lowest best epoch
#: first (the runs that stopped improving soonest).
DEFAULT_ORDER: dict[str, Order] = {
    "created_at": "desc", "loss": "asc", "val_loss": "asc", "accuracy": "desc",
    "val_accuracy": "desc", "best_epoch": "asc",
}  # fmt: skip


def run_sort(key: str, order: Order | None) -> Sort:
    """The order of the run list for ``?sort=key&order=order``."""
    return Sort(key, (order or DEFAULT_ORDER[key]) == "desc")


def _utc(value: datetime) -> datetime:
    """A time as UTC (a time without a zone is UTC); one that UTC cannot hold is invalid."""
    try:
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    except OverflowError as exc:
        raise ValueError("the time is out of range once converted to UTC") from exc


UtcTime = Annotated[datetime, AfterValidator(_utc)]
NoNul = r"^[^\x00]*$"

# -- query parameters shared by the list routes ----------------------------------------------


def _tag_filter(raw: str) -> str:
    key, sep, value = raw.partition(":")
    if not sep:
        raise ValueError(f"{raw!r} is not key:value")
    try:
        check_tag_key(key)
        check_tag_value(value)
    except EditError as exc:
        raise ValueError(str(exc)) from None
    return raw


TagQuery = Annotated[
    list[Annotated[str, AfterValidator(_tag_filter)]] | None,
    Query(
        max_length=20,
        description="`key:value`: only those tagged so. Repeat for several tags (all must "
        "match). The first `:` ends the key; the value may be empty.",
        examples=["project:iris"],
    ),
]
SearchQuery = Annotated[
    str | None,
    Query(
        min_length=1, max_length=200, pattern=NoNul,
        description="Only those whose name contains this text, case aside.",
    ),
]  # fmt: skip


def parse_tags(values: Sequence[str] | None) -> list[tuple[str, str]]:
    """The ``(key, value)`` pairs of ``?tag=key:value`` parameters (checked already)."""
    return [(key, value) for key, _, value in (raw.partition(":") for raw in values or ())]


def tags_match(model: Any, pairs: Sequence[tuple[str, str]], dialect: str) -> ColumnElement[bool]:
    """Rows of ``model`` that have every ``(key, value)`` tag of ``pairs``."""
    wanted: dict[str, str] = {}
    for key, value in pairs:
        if wanted.setdefault(key, value) != value:
            return false()  # one key, two values: nothing has both
    if dialect == "postgresql":
        return type_coerce(model.tags, JSONB).contains(wanted)
    return and_(*(
        func.json_extract(model.tags, f'$."{key}"') == value for key, value in wanted.items()
    ))  # fmt: skip


def name_contains(model: Any, text: str) -> ColumnElement[bool]:
    """Rows of ``model`` whose name contains ``text``, case aside (``%``, ``_`` literal)."""
    return model.name.icontains(text, autoescape=True)


@dataclass(frozen=True)
class Filters:
    """The filters of a list; the ones left empty do not filter."""

    tags: Sequence[tuple[str, str]] = ()
    q: str | None = None
    statuses: Sequence[str] = ()
    # runs only
    dataset_id: str | None = None
    sweep_id: str | None = None
    top_level: bool = False
    created_after: datetime | None = None
    created_before: datetime | None = None

    def apply(self, stmt: Select[Any], model: Any, dialect: str) -> Select[Any]:
        """``stmt`` narrowed to the rows of ``model`` that pass every filter."""
        if self.tags:
            stmt = stmt.where(tags_match(model, self.tags, dialect))
        if self.q:
            stmt = stmt.where(name_contains(model, self.q))
        if self.statuses:
            statuses = sorted(set(self.statuses))
            stmt = stmt.where(
                model.status == statuses[0] if len(statuses) == 1 else model.status.in_(statuses)
            )
        if self.dataset_id is not None:
            stmt = stmt.where(model.dataset_id == self.dataset_id)
        if self.sweep_id is not None:
            stmt = stmt.where(model.sweep_id == self.sweep_id)
        if self.top_level:
            stmt = stmt.where(model.sweep_id.is_(None))
        if self.created_after is not None:
            stmt = stmt.where(model.created_at >= self.created_after)
        if self.created_before is not None:
            stmt = stmt.where(model.created_at < self.created_before)
        return stmt
