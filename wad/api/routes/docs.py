"""`/docs`: the API's documentation page (Swagger UI over `/openapi.json`), served from the
daemon's own files.

Swagger UI's files (5.x: the document is OpenAPI 3.1) come from the `flask-swagger-ui` package,
installed with wad for them alone, and are served under `/docs/swagger/`; the page is in
`templates/` (with the status page's head), its start script in `static/`. Nothing is loaded
from another host, so the page works on a server without internet access, and it is sent under
the status page's content security policy (its own files only, requests to this daemon only).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from quart import Blueprint, Response, send_from_directory
from quart_schema import hide

from wad.api.routes.status_page import send_page

bp = Blueprint("docs", __name__)

SWAGGER_UI_DIR = Path(str(resources.files("flask_swagger_ui") / "dist"))
"""Swagger UI's distribution files, as the package ships them."""


@bp.get("/docs")
@hide
async def docs() -> Response:
    """The documentation page (no token needed: it shows what `/openapi.json` says)."""
    return await send_page("docs.html")


@bp.get("/docs/swagger/<path:name>")
@hide
async def swagger_file(name: str) -> Response:
    """One of Swagger UI's files (404 for anything outside its folder)."""
    response = await send_from_directory(SWAGGER_UI_DIR, name)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
