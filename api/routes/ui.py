"""The web dashboard and the API docs, all served by the API itself.

``/`` serves the dashboard, ``/ui/<file>`` its scripts and stylesheet, and
``/ui/vendor/<package>/<file>`` the third-party code it uses, vendored into
``api/static/vendor/`` (uPlot, which draws the charts; its README says where it came from).
The page itself is
static (``api/static/``): everything it shows it reads from the public API in the browser,
with the API key the user typed (kept in ``localStorage``), so these routes need no
authentication and hold no data.

``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) render ``/openapi.json`` with the scripts
and styles that the ``fastapi-offline`` package installs (:data:`DOCS_ASSETS_DIR`, mounted
at ``/ui/docs/`` by the app factory), never from a CDN, so they work offline.

Nothing is loaded from other origins; the Content-Security-Policy header says so to the
browser too. (ReDoc always asks ``cdn.redoc.ly`` for its "API docs by Redocly" logo: the
policy stops that request in the browser, and ReDoc then draws no logo.)
"""

from __future__ import annotations

import html
import mimetypes
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# swagger-ui-bundle.js, swagger-ui.css, redoc.standalone.js and favicon.png.
DOCS_ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
DOCS_ASSETS_URL = "/ui/docs"

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

# Swagger UI and ReDoc set inline styles, and ReDoc runs a web worker from a blob: URL.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
DOCS_HEADERS = {**HEADERS, "Content-Security-Policy": DOCS_CSP}

SWAGGER_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title} - Swagger UI</title>
  <link rel="icon" href="{assets}/favicon.png">
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui" data-openapi-url="{openapi}"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script src="/ui/swagger-init.js"></script>
</body>
</html>
"""
REDOC_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{title} - ReDoc</title>
  <link rel="icon" href="{assets}/favicon.png">
  <style>body {{ margin: 0; padding: 0; }}</style>
</head>
<body>
  <noscript>ReDoc needs JavaScript; the OpenAPI document is at {openapi}.</noscript>
  <redoc spec-url="{openapi}"></redoc>
  <script src="{assets}/redoc.standalone.js"></script>
</body>
</html>
"""

router = APIRouter(tags=["ui"], include_in_schema=False)


def _docs_page(request: Request, template: str) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    page = template.format(
        title=html.escape(request.app.title),
        assets=html.escape(root + DOCS_ASSETS_URL),
        openapi=html.escape(root + (request.app.openapi_url or "/openapi.json")),
    )
    return HTMLResponse(page, headers=DOCS_HEADERS)


@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI: every operation of ``/openapi.json``, with "Try it out"."""
    return _docs_page(request, SWAGGER_PAGE)


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    """ReDoc: the same operations as a reference document."""
    return _docs_page(request, REDOC_PAGE)


@router.get("/")
def index() -> FileResponse:
    """The dashboard page (a single page app routed by the URL fragment, e.g. ``#/runs/<id>``)."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=HEADERS)


def _static_file(folder: Path, name: str) -> FileResponse:
    path = folder / name
    if name.startswith(".") or name == "__init__.py" or not path.is_file():
        raise HTTPException(404, detail=f"no dashboard file {name!r}")
    media_type = mimetypes.guess_type(name)[0] or "text/plain"
    if name.endswith(".js"):
        media_type = "text/javascript"
    return FileResponse(path, media_type=media_type, headers=HEADERS)


@router.get("/ui/{name}")
def asset(name: str) -> FileResponse:
    """One file of ``api/static/`` by name (no subfolders, so no path can leave it)."""
    return _static_file(STATIC_DIR, name)


@router.get("/ui/vendor/{package}/{name}")
def vendored(package: str, name: str) -> FileResponse:
    """One file of a vendored package, ``api/static/vendor/<package>/<name>`` (each path
    segment is one name: none starts with a dot, so no path can leave the folder)."""
    if package.startswith("."):
        raise HTTPException(404, detail=f"no vendored package {package!r}")
    return _static_file(STATIC_DIR / "vendor" / package, name)
