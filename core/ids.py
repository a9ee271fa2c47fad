"""Ids as people type them: a unique prefix of an id stands for the whole id.

The service's ids are UUIDs (36 characters, lower-case hex and hyphens). A value of
:data:`MIN_PREFIX` to 35 such characters (case aside) is a prefix; :func:`resolve_prefix`
turns it into the one id it begins, among the rows a caller may see (an owner's, say).
Anything else — a whole id, a name, text with ``%`` or ``_`` — is never looked up as a
prefix, so a prefix query needs no escaping and a full id costs no query.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import ColumnElement, Connection, Table, select
from sqlalchemy.orm import Session

#: The shortest prefix that stands for an id (shorter ones are only ever whole ids).
MIN_PREFIX = 6
#: How many candidates an ambiguous prefix names.
MAX_CANDIDATES = 10

_PREFIX = re.compile(rf"^[0-9a-f-]{{{MIN_PREFIX},35}}$")


def is_prefix(value: str) -> bool:
    """Whether ``value`` is looked up as an id prefix (6-35 hex digits or hyphens)."""
    return _PREFIX.match(value.lower()) is not None


class AmbiguousId(LookupError):
    """A prefix that begins several ids; ``candidates`` are the first of them, sorted."""

    def __init__(self, kind: str, prefix: str, candidates: list[str], more: bool) -> None:
        self.kind, self.prefix, self.candidates, self.more = kind, prefix, candidates, more
        listed = ", ".join(candidates) + (", …" if more else "")
        super().__init__(
            f"{kind} id prefix {prefix} is ambiguous: it begins {listed}; "
            "give more characters of the id"
        )


def resolve_prefix(
    db: Connection | Session,
    table: Table | Any,
    value: str,
    *where: ColumnElement[bool],
    kind: str,
) -> str:
    """The id of ``table`` that ``value`` begins, among the rows matching ``where``.

    ``value`` itself when it is no prefix (:func:`is_prefix`), is an id there, or begins
    none: the caller's own lookup then finds it or says it is not found.

    Raises:
        AmbiguousId: ``value`` begins more than one id.
    """
    if not is_prefix(value):
        return value
    prefix = value.lower()
    ids = list(
        db.execute(
            select(table.c.id)
            .where(table.c.id.startswith(prefix, autoescape=True), *where)
            .order_by(table.c.id)
            .limit(MAX_CANDIDATES + 1)
        ).scalars()
    )
    if not ids:
        return value
    if prefix in ids:
        return prefix
    if len(ids) == 1:
        return str(ids[0])
    raise AmbiguousId(kind, value, ids[:MAX_CANDIDATES], more=len(ids) > MAX_CANDIDATES)
