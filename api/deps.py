"""Injected dependencies: database session, owner of the request, Redis, task queue."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from api.auth import PrincipalDep
from core.db.session import get_sessionmaker
from core.settings import Settings, get_settings


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
