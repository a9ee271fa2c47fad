"""Injected dependencies and what every route shares: the database session, the owner of
the request, the settings, the type of an id in a path, the id prefixes that stand for
ids, and reading an owned resource."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from sqlalchemy import Connection
from sqlalchemy.orm import Session

from api.auth import PrincipalDep, bearer, get_principal
from api.schemas import OrganiseEdit, error_responses
from core import organise
from core.db.models import Dataset, Run, Sweep
from core.db.session import get_autocommit_engine, get_sessionmaker
from core.ids import AmbiguousId, is_prefix, resolve_prefix
from core.settings import Settings, get_settings

#: An id in a path: the service issues UUIDs; anything with a NUL (PostgreSQL refuses it in
#: a query: it was a 500) or longer than 64 characters is refused with 422 before any query.
#: A unique prefix of 6 or more characters stands for the id (:func:`resolve_path_ids`).
ResourceId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        pattern=r"^[^\x00]+$",
        description="The resource's id, or a prefix of it (6 characters or more) that begins "
        "no other id of yours.",
    ),
]

Owned = TypeVar("Owned", Dataset, Run, Sweep)

#: The path parameters that hold ids, and the resource each names.
ID_PARAMS: dict[str, type[Dataset | Run | Sweep]] = {
    "dataset_id": Dataset,
    "run_id": Run,
    "sweep_id": Sweep,
}
AMBIGUOUS_PREFIX = "An id prefix that begins more than one of your ids (`detail` lists them)."


def not_found(model: type[Any], resource_id: str) -> HTTPException:
    """The 404 of a resource that is missing or another owner's (the two look the same)."""
    return HTTPException(404, detail=f"{model.__name__.lower()} {resource_id} not found")


def get_owned(db: Session, model: type[Owned], owner: str, resource_id: str) -> Owned:
    """The ``model`` row with this id if ``owner`` owns it; 404 otherwise (another owner's
    resource is as absent as a missing one). A path id is whole by now
    (:func:`resolve_path_ids`); an id from a body goes through :func:`resolve_id` first."""
    row = None if "\x00" in resource_id else db.get(model, resource_id)
    if row is None or row.owner != owner:
        raise not_found(model, resource_id)
    return row


def edit_owned(
    db: Session, model: type[Owned], owner: str, resource_id: str, body: OrganiseEdit
) -> Owned:
    """Apply a ``PATCH`` of name, tags and notes (core/organise.py's rule) to ``owner``'s
    ``model`` row and commit; the row as it is now. 404 as :func:`get_owned`; 422 when the
    result breaks the rule (more tags than allowed, a dataset without a name)."""
    get_owned(db, model, owner, resource_id)
    try:
        found = organise.apply(db.connection(), model, resource_id, body.edit())
    except organise.EditError as exc:
        db.rollback()
        raise HTTPException(422, detail=f"{exc.field}: {exc}") from None
    if not found:  # deleted since we looked
        db.rollback()
        raise not_found(model, resource_id)
    db.commit()
    row = get_owned(db, model, owner, resource_id)
    db.refresh(row)
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


# -- id prefixes ------------------------------------------------------------------------------


def resolve_id(
    db: Connection | Session, model: type[Dataset | Run | Sweep], owner: str, value: str
) -> str:
    """The id of ``owner``'s ``model`` that ``value`` begins (6 characters or more), else
    ``value`` itself (a whole id, or one that is not found); 409 naming the candidates when
    it begins several. Other owners' ids never match. (For ids in paths see
    :func:`resolve_path_ids`; an id in a body may go through this before its lookup.)"""
    table: Any = model.__table__
    try:
        kind = model.__name__.lower()
        return resolve_prefix(db, table, value, table.c.owner == owner, kind=kind)
    except AmbiguousId as exc:
        raise HTTPException(409, detail=str(exc)) from None


async def resolve_path_ids(request: Request) -> None:
    """A router dependency: each id in the path given as a prefix is replaced, in the
    request's path parameters, by the one id of the caller's it begins, before the route
    reads them; so every route, its queries, events and records included, sees whole ids.

    A whole id costs nothing here; a prefix costs one query on the owner's rows. 409 when a
    prefix begins several ids (see :func:`resolve_id`); one that begins none is left for
    the route to answer 404.

    It depends on nothing but the request: FastAPI walks a dependency's own dependencies
    on every request before it looks in its cache, and every request with an id passes
    here. The caller is authenticated only when there is a prefix to resolve (the route
    authenticates every request itself).
    """
    params = request.path_params
    given = {name: params[name] for name in ID_PARAMS.keys() & params.keys()}
    if not any(is_prefix(value) for value in given.values()):
        return
    owner = (await get_principal(request, await bearer(request))).owner

    def lookup() -> dict[str, str]:
        with get_autocommit_engine().connect() as conn:
            return {
                name: resolve_id(conn, ID_PARAMS[name], owner, value)
                for name, value in given.items()
            }

    request.scope["path_params"] = {**params, **await run_in_threadpool(lookup)}


def document_ambiguous_prefixes(routes: Iterable[Any]) -> None:
    """Add the 409 of an ambiguous id prefix to the OpenAPI responses of every route with
    an id in its path (to its own 409's description when it has one). Idempotent: the
    routers are the modules' own, shared by every app made."""
    for route in routes:
        if not isinstance(route, APIRoute) or not ID_PARAMS.keys() & route.param_convertors:
            continue
        own = route.responses.get(409)
        if own is None:
            route.responses[409] = error_responses((409, AMBIGUOUS_PREFIX))[409]
        elif AMBIGUOUS_PREFIX not in own.get("description", ""):
            route.responses[409] = {
                **own,
                "description": f"{own['description']} Or: {AMBIGUOUS_PREFIX}",
            }


#: The resource routers' dependency that turns id prefixes in paths into ids.
RESOLVE_PATH_IDS = Depends(resolve_path_ids)
