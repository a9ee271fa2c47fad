"""The owner's own organisation of runs, sweeps and datasets: a ``name``, ``tags`` and
``notes``, and the one rule that edits them (``PATCH /api/v1/{runs,sweeps,datasets}/{id}``).

- ``name``: 1 to :data:`NAME_MAX` characters; ``None`` removes a run's or a sweep's name
  (a dataset always has one).
- ``tags``: string keys to string values, changed as a JSON merge patch (RFC 7396): a key
  with a string sets that tag, a key with ``None`` removes it, keys not named stay; ``None``
  for the whole ``tags`` removes them all. Keys are 1 to :data:`TAG_KEY_MAX` characters of
  ``A-Z a-z 0-9 _ . - /`` (no ``:``, which separates key and value in ``?tag=key:value``);
  values 0 to :data:`TAG_VALUE_MAX` characters, no control characters. A resource has at
  most :data:`MAX_TAGS` tags.
- ``notes``: free text up to :data:`NOTES_MAX` characters (no NUL); ``None`` removes it.

Editing never touches anything else of the resource, a run's status least of all (only
core/runs/lifecycle.py writes that).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, cast

from sqlalchemy import Connection, Table, select, update

from core.db.locks import select_for_update
from core.db.models import Dataset, Run, Sweep

NAME_MAX: Final = 200
TAG_KEY_MAX: Final = 64
TAG_VALUE_MAX: Final = 200
MAX_TAGS: Final = 50
NOTES_MAX: Final = 10_000

#: A tag's key, as a regular expression (for pydantic's ``pattern`` too).
TAG_KEY_PATTERN: Final = rf"^[A-Za-z0-9_.\-/]{{1,{TAG_KEY_MAX}}}$"
#: A tag's value: no control characters (NUL included, which PostgreSQL cannot store).
TAG_VALUE_PATTERN: Final = rf"^[^\x00-\x1f\x7f]{{0,{TAG_VALUE_MAX}}}$"
#: A name or notes: anything PostgreSQL can store as text (no NUL).
TEXT_PATTERN: Final = r"^[^\x00]*$"

_TAG_KEY = re.compile(TAG_KEY_PATTERN)
_TAG_VALUE = re.compile(TAG_VALUE_PATTERN)


class EditError(ValueError):
    """An edit that breaks the rule; ``field`` is where (``"tags"``, ``"name"``…)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def check_tag_key(key: str) -> str:
    """``key`` if it may name a tag, else :class:`EditError` saying why."""
    if not _TAG_KEY.match(key):
        raise EditError(
            "tags", f"tag key {key!r}: 1 to {TAG_KEY_MAX} characters of A-Z a-z 0-9 _ . - /"
        )
    return key


def check_tag_value(value: str) -> str:
    """``value`` if it may be a tag's value, else :class:`EditError` saying why."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: no JSON answer could carry it
            raise EditError("tags", f"tag value {value!r}: not valid Unicode") from None
    if not _TAG_VALUE.match(value):
        raise EditError(
            "tags",
            f"tag value {value!r}: at most {TAG_VALUE_MAX} characters, no control characters",
        )
    return value


def merge_tags(
    current: Mapping[str, str] | None, patch: Mapping[str, str | None] | None
) -> dict[str, str]:
    """``current`` tags changed by the merge ``patch`` (``None`` removes every tag; a key
    set to ``None`` removes that tag); :class:`EditError` beyond :data:`MAX_TAGS` tags."""
    if patch is None:
        return {}
    merged = dict(current or {})
    for key, value in patch.items():
        check_tag_key(key)
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = check_tag_value(value)
    if len(merged) > MAX_TAGS:
        raise EditError(
            "tags", f"a resource has at most {MAX_TAGS} tags; this edit would leave {len(merged)}"
        )
    return merged


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


#: A field the edit leaves as it is (``None`` means "remove").
UNSET: Final[Any] = _Unset()


@dataclass(frozen=True)
class Edit:
    """What to change; a field left :data:`UNSET` stays as it is."""

    name: str | None = field(default=UNSET)
    tags: Mapping[str, str | None] | None = field(default=UNSET)
    notes: str | None = field(default=UNSET)


Organised = type[Run] | type[Sweep] | type[Dataset]


def apply(conn: Connection, model: Organised, row_id: str, edit: Edit) -> bool:
    """Apply ``edit`` to the ``model`` row ``row_id`` in the caller's transaction; False
    when there is no such row. The row is locked first (SQLite: the write lock), so edits
    of its tags at the same time each see the other's result.

    Raises :class:`EditError` when the result breaks the rule.
    """
    table = cast(Table, model.__table__)
    row = select_for_update(
        conn, select(table.c.name, table.c.tags, table.c.notes).where(table.c.id == row_id)
    )
    if row is None:
        return False
    name, tags, notes = row.name, row.tags, row.notes
    if edit.name is not UNSET:
        if edit.name is None and model is Dataset:
            raise EditError("name", "a dataset's name cannot be removed (give a new one)")
        if edit.name is not None and not 1 <= len(edit.name) <= NAME_MAX:
            raise EditError("name", f"a name has 1 to {NAME_MAX} characters")
        name = edit.name
    if edit.tags is not UNSET:
        tags = merge_tags(tags, edit.tags) or None
    if edit.notes is not UNSET:
        if edit.notes is not None and len(edit.notes) > NOTES_MAX:
            raise EditError("notes", f"notes have at most {NOTES_MAX} characters")
        notes = edit.notes
    conn.execute(
        update(table).where(table.c.id == row_id).values(name=name, tags=tags, notes=notes)
    )
    return True
