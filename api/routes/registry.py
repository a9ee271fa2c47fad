"""/api/v1/models: the model registry, stable names that other services call.

A registered model is a name of its owner's (``RegisteredModel``) with numbered versions
(``ModelVersion``), each a succeeded run; one version is current. ``PUT /models/{name}``
registers a run as the next version and makes it current; given the run of an older
version, it makes that version current again (a rollback moves the pointer and adds no
number, so a version number always names the same run). ``POST /models/{name}/predict``
answers with the current version, or with ``?version=k``, and says which it used.

It copies no model: a version refers to its run's stored artifact. The run cannot be
deleted while it is a version (``DELETE /runs/{id}`` answers 409, through
:func:`refuse_if_registered`), and deleting a name leaves its runs alone.

Names are not ids: the id-prefix resolution of :mod:`api.deps` reads only the path
parameters that hold ids, and this router's is ``name``. A predict resolves the name with
one indexed query per request (owner and name → version → run id, joined), then takes the
network from the run-keyed ``model_cache`` of :mod:`api.routes.predictions`; a run's
artifact never changes, so nothing cached can go stale, and every API process sees another
one's ``PUT`` or ``DELETE`` at its next request.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response
from pydantic import AfterValidator, WithJsonSchema
from pydantic_core import PydanticCustomError
from sqlalchemy import Select, and_, bindparam, delete, func, select
from sqlalchemy.orm import Session, aliased

from api.deps import OwnerDep, SessionDep
from api.pagination import Sort, keyset_page
from api.routes.predictions import model_cache, predict_with
from api.schemas import (
    BAD_CURSOR,
    ModelDetailRecord,
    ModelList,
    ModelPredictOut,
    ModelRecord,
    ModelRegisterIn,
    ModelVersionRecord,
    PredictIn,
    error_responses,
)
from core.db.locks import serialise_model_name
from core.db.models import ModelVersion, RegisteredModel, Run, RunStatus

router = APIRouter(prefix="/api/v1/models", tags=["models"])

NAME_MAX_LENGTH = 100
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
NAME_RULE = (
    f"a model name is 1 to {NAME_MAX_LENGTH} characters: letters, digits, '.', '_' and '-', "
    "beginning with a letter or a digit"
)
_NAME = re.compile(NAME_PATTERN.strip("^$"))


def _check_name(value: str) -> str:
    if len(value) > NAME_MAX_LENGTH or not _NAME.fullmatch(value):
        raise PydanticCustomError("model_name", NAME_RULE)
    return value


#: A model name in a path: checked here (a 422 that states the rule), never resolved as an
#: id prefix. Case matters: `Iris` and `iris` are two names.
ModelName = Annotated[
    str,
    Path(description=f"The model's name: {NAME_RULE}.", examples=["iris-classifier"]),
    AfterValidator(_check_name),
    WithJsonSchema(
        {"type": "string", "minLength": 1, "maxLength": NAME_MAX_LENGTH, "pattern": NAME_PATTERN}
    ),
]

BAD_NAME = (422, f"Invalid request: {NAME_RULE}, or another value is invalid.")
NO_MODEL = (404, "You have no model of this name.")


def _not_found(name: str) -> HTTPException:
    return HTTPException(404, detail=f"model {name} not found")


def _owned_model(db: Session, owner: str, name: str) -> RegisteredModel:
    model = db.scalar(
        select(RegisteredModel).where(RegisteredModel.owner == owner, RegisteredModel.name == name)
    )
    if model is None:
        raise _not_found(name)
    return model


def _versions(db: Session, model: RegisteredModel) -> list[ModelVersionRecord]:
    """The model's versions, oldest first, with their runs' names, times and metrics."""
    rows = db.execute(
        select(
            ModelVersion.version,
            ModelVersion.run_id,
            ModelVersion.created_at,
            Run.name,
            Run.finished_at,
            Run.metrics,
            Run.test_metrics,
        )
        .outerjoin(Run, Run.id == ModelVersion.run_id)
        .where(ModelVersion.model_id == model.id)
        .order_by(ModelVersion.version)
    )
    return [
        ModelVersionRecord(
            version=row.version,
            run_id=row.run_id,
            run_name=row.name,
            current=row.version == model.current_version,
            created_at=row.created_at,
            trained_at=row.finished_at,
            metrics=row.metrics or {"loss": None},
            test_metrics=row.test_metrics,
        )
        for row in rows
    ]


def _detail(db: Session, model: RegisteredModel) -> ModelDetailRecord:
    versions = _versions(db, model)
    current = next(v for v in versions if v.current)
    return ModelDetailRecord(
        name=model.name,
        current_version=model.current_version,
        run_id=current.run_id,
        latest_version=versions[-1].version,
        created_at=model.created_at,
        updated_at=model.updated_at,
        versions=versions,
    )


def refuse_if_registered(db: Session, run_id: str) -> None:
    """409 naming the model(s) when the run is a version of one (for ``DELETE /runs/{id}``,
    after it locked the run: see :func:`core.db.locks.lock_run_for_delete`)."""
    rows = db.execute(
        select(RegisteredModel.name, ModelVersion.version)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.model_id)
        .where(ModelVersion.run_id == run_id)
        .order_by(RegisteredModel.name, ModelVersion.version)
    ).all()
    if rows:
        versions = " and ".join(f"version {row.version} of model {row.name}" for row in rows)
        names = sorted({row.name for row in rows})
        raise HTTPException(
            409,
            detail=f"run {run_id} is {versions}; a model's version cannot be deleted: delete "
            f"the model first ({', '.join(f'DELETE /api/v1/models/{n}' for n in names)})",
        )


@router.put(
    "/{name}",
    response_model=ModelDetailRecord,
    summary="Register a run under a name, or roll back to an earlier version",
    responses={
        201: {"model": ModelDetailRecord, "description": "The name is new: the run is version 1."},
        **error_responses(
            (400, "Malformed request: the body is not JSON, or nests deeper than "
             "BACKPROP_MAX_JSON_DEPTH."),
            401,
            (409, "The run has not succeeded, so it has no model to register."),
            413,
            (422, f"Invalid request: {NAME_RULE}; `run_id` names no run of yours; or the "
             "body is not `{\"run_id\": ...}`."),
            503,
        ),
    },
)  # fmt: skip
def register_model(
    name: ModelName, body: ModelRegisterIn, response: Response, db: SessionDep, owner: OwnerDep
) -> ModelDetailRecord:
    """Make a succeeded run of yours the current version of the model `name`: 201 with the
    model when the name is new (the run is version 1), else 200.

    - A run that is not yet a version of this model becomes the next version (the highest
      number plus one) and current.
    - The run of an older version makes that version current again: a rollback. It adds no
      version number, so a number always names the same run, and `?version=k` of predict
      answers the same for ever.
    - The current version's run again changes nothing (`PUT` is idempotent).

    `run_id` is a whole id (the run's record shows it). A run may be a version of several
    models. It cannot be deleted while it is one.
    """
    serialise_model_name(db.connection(), owner, name)
    # FOR SHARE (PostgreSQL): the run's delete waits for this commit, then sees the version.
    run = db.scalar(
        select(Run).where(Run.id == body.run_id, Run.owner == owner).with_for_update(read=True)
    )
    if run is None:
        raise HTTPException(422, detail=f"run_id: no run with id {body.run_id}")
    if run.status != RunStatus.succeeded.value:
        raise HTTPException(
            409, detail=f"run {run.id} is {run.status}; only a succeeded run can be registered"
        )
    model = db.scalar(
        select(RegisteredModel).where(RegisteredModel.owner == owner, RegisteredModel.name == name)
    )
    if model is None:
        model = RegisteredModel(owner=owner, name=name, current_version=1)
        db.add(model)
        db.flush()
        db.add(ModelVersion(model_id=model.id, version=1, run_id=run.id))
        response.status_code = 201
        response.headers["Location"] = f"{router.prefix}/{name}"
    else:
        version = db.scalar(
            select(ModelVersion.version).where(
                ModelVersion.model_id == model.id, ModelVersion.run_id == run.id
            )
        )
        if version is None:  # a new version
            latest = db.scalar(
                select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
            )
            version = (latest or 0) + 1
            db.add(ModelVersion(model_id=model.id, version=version, run_id=run.id))
        if model.current_version != version:
            model.current_version = version
    db.commit()
    return _detail(db, model)


@router.get(
    "",
    response_model=ModelList,
    summary="List your models",
    responses=error_responses((400, BAD_CURSOR), 401, 422, 503),
)
def list_models(
    db: SessionDep,
    owner: OwnerDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Your models, the most recently created name first, `limit` (default 50) at a time:
    each with its current version and that version's run.

    `next_cursor` is null on the last page; otherwise pass it as `cursor` for the next one.
    """
    others = aliased(ModelVersion)
    latest = (
        select(func.max(others.version))
        .where(others.model_id == RegisteredModel.id)
        .scalar_subquery()
    )
    stmt: Select[Any] = (
        select(
            RegisteredModel.id,
            RegisteredModel.name,
            RegisteredModel.current_version,
            RegisteredModel.created_at,
            RegisteredModel.updated_at,
            ModelVersion.run_id,
            latest.label("latest_version"),
        )
        .join(
            ModelVersion,
            and_(
                ModelVersion.model_id == RegisteredModel.id,
                ModelVersion.version == RegisteredModel.current_version,
            ),
        )
        .where(RegisteredModel.owner == owner)
    )
    rows, next_cursor = keyset_page(
        db, stmt, RegisteredModel, Sort(), cursor, limit, entities=False
    )
    items = [ModelRecord.model_validate(row, from_attributes=True) for row in rows]
    return {"items": items, "next_cursor": next_cursor}


@router.get(
    "/{name}",
    response_model=ModelDetailRecord,
    summary="Read a model and its versions",
    responses=error_responses(401, NO_MODEL, BAD_NAME, 503),
)
def get_model(name: ModelName, db: SessionDep, owner: OwnerDep) -> ModelDetailRecord:
    """The model's current version and every version, oldest first: its run id, when it
    was registered, when its run finished training, the run's metrics (and `test_metrics`
    when it held rows out), and whether it is current.
    """
    return _detail(db, _owned_model(db, owner, name))


# A predict's lookup of owner and name → version → run: prebuilt Core statements over the
# unique indexes (owner, name) and (model, version), one round trip, no per-request statement
# building. The run's row is not read: a version's run has succeeded for good (a terminal
# status, and it cannot be deleted), so the run-keyed model cache needs only its id.
_model_table = RegisteredModel.__table__
_version_table = ModelVersion.__table__
_BY_NAME = and_(
    _model_table.c.owner == bindparam("owner"), _model_table.c.name == bindparam("name")
)
_LOOKUP = select(_version_table.c.run_id, _version_table.c.version)
_OF_MODEL = _model_table.c.id == _version_table.c.model_id
CURRENT_RUN = _LOOKUP.join(
    _model_table, and_(_OF_MODEL, _version_table.c.version == _model_table.c.current_version)
).where(_BY_NAME)
VERSION_RUN = _LOOKUP.join(
    _model_table, and_(_OF_MODEL, _version_table.c.version == bindparam("version"))
).where(_BY_NAME)


def _no_such_version(db: Session, owner: str, name: str, version: int | None) -> HTTPException:
    """The 404 of a predict that found no run: no such model, or no such version."""
    model = _owned_model(db, owner, name)
    latest = db.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.model_id == model.id)
    )
    return HTTPException(
        404, detail=f"model {name} has no version {version} (its versions are 1 to {latest})"
    )


@router.post(
    "/{name}/predict",
    response_model=ModelPredictOut,
    response_model_exclude_none=True,
    summary="Predict with a model's current version (or another)",
    responses=error_responses(
        (400, "Malformed request: the body is not JSON, or nests deeper than "
         "BACKPROP_MAX_JSON_DEPTH."),
        401,
        (404, "You have no model of this name, or it has no such `version`."),
        413,
        (422, f"Invalid request, e.g. `inputs` empty, not finite numbers, of the wrong width "
         f"for the network; `version` not a number from 1 to 2^31-1; or {NAME_RULE}."),
        503,
    ),
)  # fmt: skip
def predict_model(
    name: ModelName,
    body: PredictIn,
    db: SessionDep,
    owner: OwnerDep,
    version: Annotated[
        int | None,
        Query(ge=1, le=2**31 - 1, description="A version number; default the current version."),
    ] = None,
) -> dict[str, Any]:
    """The answer of `POST /runs/{id}/predict` for the run of the current version (or of
    `version`): `outputs`, and `labels` for a classifier, with `model`, `version` and
    `run_id` naming what answered. The name is looked up at every request, so a `PUT` or
    `DELETE` counts from the next request on, in every API process.
    """
    params = {"owner": owner, "name": name, "version": version}
    found = db.connection().execute(CURRENT_RUN if version is None else VERSION_RUN, params)
    row = found.first()
    if row is None:
        raise _no_such_version(db, owner, name, version)
    result = predict_with(model_cache.get_by_id(db, row.run_id), body)
    return {**result, "model": name, "version": row.version, "run_id": row.run_id}


@router.delete(
    "/{name}",
    status_code=204,
    summary="Delete a model name (not its runs)",
    responses=error_responses(401, NO_MODEL, BAD_NAME, 503),
)
def delete_model(name: ModelName, db: SessionDep, owner: OwnerDep) -> Response:
    """Remove the name and its versions; 204, no body. The runs stay, and can be deleted
    once no other model has them as a version. A `PUT` of the name later starts again at
    version 1.
    """
    serialise_model_name(db.connection(), owner, name)
    model = _owned_model(db, owner, name)
    db.execute(delete(ModelVersion).where(ModelVersion.model_id == model.id))
    db.delete(model)
    db.commit()
    return Response(status_code=204)
