"""``Idempotency-Key`` on POSTs that create things: a retry gets the first response.

The record is written in the same transaction as the thing created, so either both
exist or neither does; a concurrent duplicate loses the unique-constraint race and is
answered from the winner's record.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

from fastapi import HTTPException, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.db.models import IdempotencyRecord

MAX_KEY_LENGTH = 200


R = TypeVar("R")  # what a create answers: a record (a dict or a response model)


def request_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def check_key(key: str | None) -> None:
    if key is not None and not (0 < len(key) <= MAX_KEY_LENGTH):
        raise HTTPException(
            400, detail=f"Idempotency-Key: must be 1 to {MAX_KEY_LENGTH} characters"
        )


def find(db: Session, owner: str, endpoint: str, key: str, req_hash: str) -> JSONResponse | None:
    """The stored response for this key, or None; 422 if the key came with another body."""
    record = db.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.owner == owner,
            IdempotencyRecord.endpoint == endpoint,
            IdempotencyRecord.key == key,
        )
    )
    if record is None:
        return None
    if record.request_hash != req_hash:
        raise HTTPException(
            422,
            detail="Idempotency-Key: this key was already used with a different request body",
        )
    headers = {"Idempotent-Replayed": "true"}
    if record.location:
        headers["Location"] = record.location
    return JSONResponse(record.response, status_code=record.status_code, headers=headers)


def remember(
    db: Session,
    *,
    owner: str,
    endpoint: str,
    key: str,
    req_hash: str,
    status_code: int,
    body: BaseModel,
    location: str | None,
) -> None:
    """Add the record to ``db``'s transaction (the caller commits).

    ``body`` is the response model, stored as the API serialises it, so that a replay is
    byte-for-byte the first answer.
    """
    db.add(
        IdempotencyRecord(
            owner=owner,
            endpoint=endpoint,
            key=key,
            request_hash=req_hash,
            status_code=status_code,
            response=body.model_dump(mode="json"),
            location=location,
        )
    )


def create_once(
    db: Session,
    *,
    owner: str,
    endpoint: str,
    key: str | None,
    req_hash: str,
    status_code: int,
    response_model: type[BaseModel],
    create: Callable[[Session], tuple[R, str]],
) -> JSONResponse | tuple[R, str]:
    """Create something once per ``Idempotency-Key`` and commit; the one way every POST
    that creates does it.

    ``create(db)`` adds the thing to ``db``'s transaction and returns its record and
    location; the answer's status is ``status_code``. See :func:`create_or_find_once`.
    """
    result = create_or_find_once(
        db, owner=owner, endpoint=endpoint, key=key, req_hash=req_hash,
        response_model=response_model, create=lambda s: (*create(s), status_code),
    )  # fmt: skip
    if isinstance(result, JSONResponse):
        return result
    record, location, _ = result
    return record, location


def create_or_find_once(
    db: Session,
    *,
    owner: str,
    endpoint: str,
    key: str | None,
    req_hash: str,
    response_model: type[BaseModel],
    create: Callable[[Session], tuple[R, str, int]],
) -> JSONResponse | tuple[R, str, int]:
    """Create something once per ``Idempotency-Key`` and commit, where ``create`` may find
    the thing already there instead.

    ``create(db)`` adds the thing to ``db``'s transaction (or finds an existing one) and
    returns its record, its location and the answer's status (201 created, 200 found). With
    a ``key``, an earlier answer to it is returned instead (a replay), and the answer is
    remembered in the same transaction; a concurrent request with the same key that commits
    first makes this one return that request's answer.
    """
    if key is not None:
        replay = find(db, owner, endpoint, key, req_hash)
        if replay is not None:
            return replay
    record, location, status_code = create(db)
    if key is not None:
        remember(
            db, owner=owner, endpoint=endpoint, key=key, req_hash=req_hash,
            status_code=status_code, body=response_model.model_validate(record),
            location=location,
        )  # fmt: skip
    try:
        db.commit()
    except IntegrityError:
        db.rollback()
        replay = find(db, owner, endpoint, key, req_hash) if key is not None else None
        if replay is None:
            raise
        return replay
    return record, location, status_code


def respond(result: Response | tuple[R, str], response: Response) -> R | Response:
    """What a create route answers from :func:`create_once`'s result: a replay as it was
    first answered, or the new record with its ``Location`` header."""
    if isinstance(result, Response):
        return result
    record, location = result
    response.headers["Location"] = location
    return record
