"""/api/v1/datasets: upload (CSV, NPZ, JSON), list, read and delete datasets."""

from __future__ import annotations

import json
from typing import Annotated, Any, cast

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy import CursorResult, delete, exists, select
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile

from api import idempotency
from api.deps import OwnerDep, ResourceId, SessionDep, SettingsDep, edit_owned, get_owned
from api.listing import Filters, SearchQuery, TagQuery, parse_tags
from api.pagination import Sort, keyset_page
from api.schemas import (
    BAD_CURSOR,
    DatasetCreateJSON,
    DatasetList,
    DatasetRecord,
    OrganiseEdit,
    error_responses,
)
from core.data import (
    DatasetError,
    ParsedDataset,
    parse_json,
    parse_upload,
    sha256_hex,
    to_npz_bytes,
)
from core.db.locks import lock_dataset_for_delete, serialise_dataset_content
from core.db.models import ACTIVE_STATUSES, Dataset, Run
from core.db.session import get_sessionmaker
from core.settings import Settings

router = APIRouter(prefix="/api/v1/datasets", tags=["datasets"])

UPLOAD_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "target": {
                            "type": "string",
                            "description": "Target column(s) of a CSV, comma-separated.",
                        },
                        "name": {"type": "string"},
                        "task": {"type": "string", "enum": ["classification", "regression"]},
                    },
                }
            },
            "application/json": {"schema": DatasetCreateJSON.model_json_schema()},
        },
    }
}


UPLOAD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": DatasetRecord,
        "description": "This owner uploaded the same content before: that dataset's record, "
        "nothing stored (unless `dedupe=false`).",
    },
    **error_responses(
        (
            400,
            "Malformed upload: a multipart body, CSV or NPZ file that cannot be read, "
            "ragged rows, a JSON body that is not JSON or nests deeper than "
            "BACKPROP_MAX_JSON_DEPTH, or a bad Idempotency-Key header.",
        ),
        401,
        (
            413,
            "The upload is larger than BACKPROP_MAX_UPLOAD_BYTES, or has more cells than "
            "BACKPROP_MAX_DATASET_CELLS.",
        ),
        (
            415,
            "The body is neither multipart/form-data nor application/json, or the file is "
            "neither a .csv nor a .npz.",
        ),
        (
            422,
            "Invalid data, naming the row and column: a missing value, NaN or infinity, "
            "text where a number belongs, a `target` that names no column, zero rows, a bad "
            "`task`; or an `Idempotency-Key` reused with another body.",
        ),
        503,
    ),
}


def dataset_record(ds: Dataset) -> dict[str, Any]:
    return {
        "id": ds.id,
        "name": ds.name,
        "n_samples": ds.n_samples,
        "n_features": ds.n_features,
        "n_targets": ds.n_targets,
        "task": ds.task,
        "classes": ds.classes,
        "sha256": ds.sha256,
        "size_bytes": ds.size_bytes,
        "created_at": ds.created_at,
        "tags": ds.tags or {},
        "notes": ds.notes,
    }


def _too_large(settings: Settings) -> HTTPException:
    return HTTPException(
        413,
        detail=f"request body is larger than the limit of {settings.max_upload_bytes} bytes "
        "(BACKPROP_MAX_UPLOAD_BYTES)",
    )


async def _read_limited_body(request: Request, settings: Settings) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes + 65536:
        raise _too_large(settings)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > settings.max_upload_bytes + 65536:
            raise _too_large(settings)
        chunks.append(chunk)
    return b"".join(chunks)


async def _parse_multipart(
    request: Request, settings: Settings
) -> tuple[str | None, ParsedDataset, str]:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_upload_bytes + 65536:
        raise _too_large(settings)
    try:
        form = await request.form(max_files=1, max_fields=10)
    except Exception as exc:  # malformed multipart bodies raise several error types
        raise HTTPException(400, detail=f"malformed multipart body: {exc}") from exc
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise HTTPException(422, detail="file: a form field 'file' holding the dataset is required")
    data = await upload.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise _too_large(settings)
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    req_hash = idempotency.request_hash(
        data + repr(sorted(fields.items())).encode() + (upload.filename or "").encode()
    )
    name = fields.get("name") or upload.filename
    task = fields.get("task") or None
    target = fields.get("target") or None
    parsed = await run_in_threadpool(
        parse_upload,
        upload.filename,
        upload.content_type,
        data,
        target=target,
        task=task,
        max_bytes=settings.max_upload_bytes,
        max_cells=settings.max_dataset_cells,
    )
    return name, parsed, req_hash


async def _parse_json(
    request: Request, settings: Settings
) -> tuple[str | None, ParsedDataset, str]:
    body = await _read_limited_body(request, settings)
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HTTPException(400, detail=f"body is not valid JSON: {exc}") from exc
    try:
        req = DatasetCreateJSON.model_validate(payload)
    except ValidationError as exc:
        raise HTTPException(
            422, detail=exc.errors(include_url=False, include_context=False, include_input=False)
        ) from exc
    parsed = await run_in_threadpool(
        parse_json, req.X, req.y, task=req.task, max_cells=settings.max_dataset_cells
    )
    return req.name, parsed, idempotency.request_hash(body)


@router.post(
    "",
    status_code=201,
    response_model=DatasetRecord,
    responses=UPLOAD_RESPONSES,
    openapi_extra=UPLOAD_OPENAPI,
    summary="Upload a dataset (multipart CSV/NPZ file, or JSON arrays)",
    response_description="The dataset's record; its URL in the `Location` header.",
)  # fmt: skip
async def create_dataset(
    request: Request,
    response: Response,
    owner: OwnerDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    dedupe: Annotated[
        bool,
        Query(
            description="Answer with your existing dataset of the same content (200) "
            "instead of storing a copy; `false` always stores a new one (201)."
        ),
    ] = True,
) -> Any:
    """Store a dataset and answer 201 with its record and a `Location` header.

    The same content uploaded again by the same owner is not stored twice: the answer is
    200 with the existing dataset's record (its id, name and time). The same content means
    the same parsed data, so the same `sha256`: `X`, `y`, the task, the classes and a CSV's
    column names; the file's name and the `name` field do not count. `?dedupe=false`
    stores a copy anyway (201). Another owner's identical upload is a dataset of its own.
    Simultaneous identical uploads of one owner make one dataset: they take turns.

    Two kinds of body:

    - `multipart/form-data` with a `file`: a `.csv` with a header row (the form field
      `target` names the target column(s), comma-separated), or a `.npz` holding the arrays
      `X` and `y` (loaded without pickle); optional fields `name` and `task`.
    - `application/json`: `{"name"?, "X": [[...], ...], "y": [...], "task"?}`; `y` may be
      1-D.

    A non-numeric target column holds class labels (one-hot for training; prediction
    answers the labels). Numeric targets mean regression unless `task` says
    `classification`; a one-hot `y` is accepted for classification as it is. Anything
    wrong is refused with a 4xx naming the row, column or limit.

    With an `Idempotency-Key` header, a retry with the same key and body gets the first
    answer (marked `Idempotent-Replayed: true`) instead of a second dataset.
    """
    idempotency.check_key(idempotency_key)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if content_type == "multipart/form-data":
            name, parsed, req_hash = await _parse_multipart(request, settings)
        elif content_type == "application/json":
            name, parsed, req_hash = await _parse_json(request, settings)
        else:
            raise HTTPException(
                415,
                detail=f"unsupported content type {content_type or '(none)'!r}; send "
                "multipart/form-data with a 'file' field, or application/json",
            )
    except DatasetError as exc:
        raise HTTPException(exc.status_code, detail=str(exc)) from exc
    if name and "\x00" in name:  # PostgreSQL cannot store it (was a 500)
        raise HTTPException(422, detail="name: must not contain NUL (\\u0000) characters")

    if not dedupe:  # the same body and key with and without dedupe are two requests
        req_hash = idempotency.request_hash(req_hash.encode() + b"&dedupe=false")

    def create(db: Session) -> tuple[dict[str, Any], str, int]:
        blob = to_npz_bytes(parsed)
        digest = sha256_hex(blob)
        if dedupe:
            # A twin upload of the same owner and content waits here until this one
            # commits, then finds its dataset.
            serialise_dataset_content(db.connection(), owner, digest)
            existing = db.scalar(
                select(Dataset)
                .where(Dataset.owner == owner, Dataset.sha256 == digest)
                .order_by(Dataset.created_at, Dataset.id)
                .limit(1)
            )
            if existing is not None:
                return dataset_record(existing), f"/api/v1/datasets/{existing.id}", 200
        ds = Dataset(
            owner=owner,
            name=(name or "dataset")[:200],
            n_samples=parsed.n_samples,
            n_features=parsed.n_features,
            n_targets=parsed.n_targets,
            task=parsed.task,
            classes=parsed.classes,
            sha256=digest,
            size_bytes=len(blob),
            data=blob,
        )
        db.add(ds)
        db.flush()
        return dataset_record(ds), f"/api/v1/datasets/{ds.id}", 201

    def store() -> Any:
        with get_sessionmaker()() as db:
            return idempotency.create_or_find_once(
                db, owner=owner, endpoint="datasets", key=idempotency_key, req_hash=req_hash,
                response_model=DatasetRecord, create=create,
            )  # fmt: skip

    result = await run_in_threadpool(store)
    if isinstance(result, Response):
        return result
    record, location, status_code = result
    response.status_code = status_code
    response.headers["Location"] = location
    return record


@router.get(
    "",
    response_model=DatasetList,
    summary="List datasets",
    responses=error_responses((400, BAD_CURSOR), 401, 422, 503),
)
def list_datasets(
    db: SessionDep,
    owner: OwnerDep,
    tag: TagQuery = None,
    q: SearchQuery = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """Your datasets' records (without their data), newest first, `limit` (default 50) at
    a time; `tag` and `q` narrow the list as for runs. `next_cursor` is null on the last
    page; otherwise pass it as `cursor` (with the same filters) for the next one.
    """
    stmt = Filters(tags=parse_tags(tag), q=q).apply(
        select(Dataset).where(Dataset.owner == owner), Dataset, db.get_bind().dialect.name
    )
    rows, next_cursor = keyset_page(db, stmt, Dataset, Sort(), cursor, limit)
    return {"items": [dataset_record(d) for d in rows], "next_cursor": next_cursor}


@router.get(
    "/{dataset_id}",
    response_model=DatasetRecord,
    summary="Read a dataset's record",
    responses=error_responses(401, 404, 422, 503),
)
def get_dataset(dataset_id: ResourceId, db: SessionDep, owner: OwnerDep) -> dict[str, Any]:
    """The dataset's shape (`n_samples`, `n_features`, `n_targets`), its `task`, its
    `classes` for classification, and the `sha256` and `size_bytes` of the stored data.
    """
    return dataset_record(get_owned(db, Dataset, owner, dataset_id))


@router.patch(
    "/{dataset_id}",
    response_model=DatasetRecord,
    summary="Rename, tag or annotate a dataset",
    responses=error_responses(400, 401, 404, 413, 422, 503),
)
def edit_dataset(
    dataset_id: ResourceId, body: OrganiseEdit, db: SessionDep, owner: OwnerDep
) -> dict[str, Any]:
    """Change the dataset's `name`, `tags` or `notes` as for a run (a dataset keeps a name:
    `"name": null` is 422). Its data never changes. 200 with its record."""
    return dataset_record(edit_owned(db, Dataset, owner, dataset_id, body))


@router.delete(
    "/{dataset_id}",
    status_code=204,
    summary="Delete a dataset",
    responses=error_responses(
        401, 404, (409, "A queued or running run uses the dataset."), 422, 503
    ),
)
def delete_dataset(dataset_id: ResourceId, db: SessionDep, owner: OwnerDep) -> Response:
    """Remove the dataset; 204, no body. Refused with 409 while a queued or running run
    uses it; a run submitted at the same moment either counts (409) or finds the dataset
    gone (its submit is 422).
    """
    get_owned(db, Dataset, owner, dataset_id)
    # The row lock before the check: a submit that read this dataset commits before we look
    # for its run, and later submits wait for us, then find no dataset.
    lock_dataset_for_delete(db.connection(), dataset_id)
    deleted = cast(
        CursorResult[Any],
        db.execute(
            delete(Dataset).where(
                Dataset.id == dataset_id,
                ~exists().where(
                    Run.dataset_id == dataset_id, Run.status.in_([s.value for s in ACTIVE_STATUSES])
                ),
            )
        ),
    ).rowcount
    db.commit()
    if not deleted:
        raise HTTPException(409, detail=f"dataset {dataset_id} is used by a queued or running run")
    return Response(status_code=204)
