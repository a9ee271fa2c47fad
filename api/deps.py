"""Injected dependencies and what every route shares: the database session, the owner of
the request, the settings, the type of an id in a path, and reading an owned resource."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, TypeVar

from fastapi import Depends, HTTPException, Path
from sqlalchemy.orm import Session

from api.auth import PrincipalDep
from core.db.models import Dataset, Run, Sweep
from core.db.session import get_sessionmaker
from core.settings import Settings, get_settings

#: An id in a path: the service issues UUIDs; anything with a NUL (PostgreSQL refuses it in
#: a query: it was a 500) or longer than 64 characters is refused with 422 before any query.
ResourceId = Annotated[
    str,
    Path(min_length=1, max_length=64, pattern=r"^[^\x00]+$", description="The resource's id."),
]

Owned = TypeVar("Owned", Dataset, Run, Sweep)


def get_owned(db: Session, model: type[Owned], owner: str, resource_id: str) -> Owned:
    """The ``model`` row with this id if ``owner`` owns it; 404 otherwise (another owner's
    resource is as absent as a missing one)."""
    row = None if "\x00" in resource_id else db.get(model, resource_id)
    if row is None or row.owner != owner:
        raise HTTPException(404, detail=f"{model.__name__.lower()} {resource_id} not found")
    return row


def get_db() -> Iterator[Session]:
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        session.close()


async def get_owner(principal: PrincipalDep) -> str:
    """The owner every dataset and run of this request belongs to.

    ``async`` because it does no I/O: a plain ``def`` would cost a thread hop per request.
    """
    return principal.owner


SessionDep = Annotated[Session, Depends(get_db)]
OwnerDep = Annotated[str, Depends(get_owner)]


async def _settings() -> Settings:
    return get_settings()


SettingsDep = Annotated[Settings, Depends(_settings)]
