"""The FastAPI application factory: routers, error handlers, shared Redis clients.

The API docs (``/docs``, ``/redoc``) are pages of :mod:`api.routes.ui`, with assets
installed with the package (mounted at ``/ui/docs``), not FastAPI's CDN-loading defaults.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
import redis.asyncio as aioredis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import DataError

from api.deps import RESOLVE_PATH_IDS, document_ambiguous_prefixes
from api.json_depth import JSONDepthLimit
from api.limits import BodySizeLimit
from api.metrics import HTTPMetricsMiddleware, build_registry
from api.metrics import router as metrics_router
from api.routes import datasets, evaluation, health, plots, predictions, registry, runs, sweeps, ui
from core.db.session import TRANSIENT_ERRORS
from core.settings import get_settings
from core.spec import with_hints
from core.streams import EventPublisher

logger = logging.getLogger(__name__)


def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 for invalid values (with "did you mean" for near-miss names), 400 when the body
    is not even JSON."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(err.get("type") == "json_invalid" for err in errors):
        return JSONResponse(
            {"detail": "request body is not valid JSON: " + str(errors[0].get("ctx", ""))},
            status_code=400,
        )
    # A near miss the models did not hint at already, e.g. a query parameter's choice.
    errors = with_hints(errors) or errors
    cleaned: list[dict[str, Any]] = []
    for err in errors:
        item = {k: err[k] for k in ("type", "loc", "msg") if k in err}
        if "ctx" in err:
            item["ctx"] = {k: str(v) for k, v in err["ctx"].items()}
        cleaned.append(item)
    return JSONResponse({"detail": cleaned}, status_code=422)


def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database is away (not the client's fault): 503, and the client may retry."""
    logger.warning("database unavailable for %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"detail": "the database is unavailable; retry shortly"},
        status_code=503,
        headers={"Retry-After": "2"},
    )


def _unstorable_value(request: Request, exc: Exception) -> JSONResponse:
    """A value the database refuses (say NUL in text on PostgreSQL) came from the client: 422.

    The routes reject such values themselves, naming the field; this is the safety net.
    """
    logger.warning("value refused by the database in %s %s: %s", request.method,
                   request.url.path, exc)  # fmt: skip
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return JSONResponse(
        {"detail": f"a value of the request cannot be stored: {reason}"}, status_code=422
    )


def create_app() -> FastAPI:
    settings = get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.redis = aioredis.Redis.from_url(settings.redis_url)
        app.state.metrics_registry = build_registry(redis.Redis.from_url(settings.redis_url))
        app.state.events = EventPublisher(
            redis.Redis.from_url(settings.redis_url),
            maxlen=settings.stream_maxlen,
            ttl_s=settings.stream_ttl_s,
        )
        yield
        await app.state.redis.aclose()

    app = FastAPI(
        title="Backprop Service",
        version="0.1.0",
        summary="Train neural networks by backpropagation over HTTP.",
        lifespan=lifespan,
        docs_url=None,  # served by api.routes.ui from local assets
        redoc_url=None,
    )
    app.add_exception_handler(RequestValidationError, _validation_error)
    for error in TRANSIENT_ERRORS:
        app.add_exception_handler(error, _database_unavailable)
    app.add_exception_handler(DataError, _unstorable_value)
    # Added first, so it runs inside the size limit: an oversized body is a 413 unread.
    app.add_middleware(JSONDepthLimit, max_depth=settings.max_json_depth)
    app.add_middleware(
        BodySizeLimit,
        max_request_bytes=settings.max_request_bytes,
        max_upload_bytes=settings.max_upload_bytes,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Last-Event-ID"],
        )
    app.add_middleware(HTTPMetricsMiddleware)
    app.include_router(health.router)
    app.include_router(metrics_router)
    # The resource routers: an id prefix in a path stands for the id it begins (model names
    # in the registry's paths are no ids, and are left as they are).
    for resources in (datasets, runs, predictions, evaluation, sweeps, plots, registry):
        document_ambiguous_prefixes(resources.router.routes)
        app.include_router(resources.router, dependencies=[RESOLVE_PATH_IDS])
    app.include_router(ui.router)
    app.mount(ui.DOCS_ASSETS_URL, StaticFiles(directory=ui.DOCS_ASSETS_DIR), name="docs-assets")
    return app
