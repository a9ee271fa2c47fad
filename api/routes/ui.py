"""The web dashboard: ``/`` serves the page, ``/ui/<file>`` its script and stylesheet.

The page itself is static (``api/static/``): everything it shows it reads from the public
API in the browser, with the API key the user typed (kept in ``localStorage``), so these
routes need no authentication and hold no data. Nothing is loaded from other origins; the
Content-Security-Policy header says so to the browser too.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(tags=["ui"], include_in_schema=False)


@router.get("/")
def index() -> FileResponse:
    """The dashboard page (a single page app routed by the URL fragment, e.g. ``#/runs/<id>``)."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=HEADERS)


@router.get("/ui/{name}")
def asset(name: str) -> FileResponse:
    """One file of ``api/static/`` by name (no subfolders, so no path can leave it)."""
    path = STATIC_DIR / name
    if name.startswith(".") or name == "__init__.py" or not path.is_file():
        raise HTTPException(404, detail=f"no dashboard file {name!r}")
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if name.endswith(".js"):
        media_type = "text/javascript"
    return FileResponse(path, media_type=media_type, headers=HEADERS)
