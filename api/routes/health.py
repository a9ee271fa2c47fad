"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.schemas import HealthOut
from core.db.session import get_engine

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut, summary="Liveness probe")
def healthz() -> dict[str, str]:
    """200 while the API process runs; it checks nothing else (`/readyz` does). Needs no
    API key."""
    return {"status": "ok"}


def _check_database() -> None:
    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))


@router.get(
    "/readyz",
    response_model=HealthOut,
    summary="Readiness probe",
    responses={
        503: {
            "model": HealthOut,
            "description": "The database or Redis does not answer: `status` and `checks` "
            "name which.",
        }
    },
)
async def readyz(request: Request) -> JSONResponse:
    """200 only when the database and Redis answer, with `checks` saying `ok` for each;
    else 503 naming what failed. Needs no API key."""
    checks: dict[str, str] = {}
    try:
        await run_in_threadpool(_check_database)
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        await request.app.state.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"unavailable: {type(exc).__name__}"
    failed = [name for name, state in checks.items() if state != "ok"]
    if failed:
        return JSONResponse(
            {"status": f"not ready: {', '.join(failed)} unavailable", "checks": checks},
            status_code=503,
        )
    return JSONResponse({"status": "ok", "checks": checks})
