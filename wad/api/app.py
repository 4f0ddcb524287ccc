"""The Quart-Trio application: routes, the error shape, request limits, the OpenAPI document."""

from __future__ import annotations

import time

import msgspec
from quart import Response, g, jsonify, request
from quart_schema import QuartSchema, RequestSchemaValidationError
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

import wad
from wad import log
from wad.api import auth
from wad.api.context import AppContext
from wad.api.errors import ApiError
from wad.api.openapi import WadOpenAPIProvider
from wad.api.routes import BLUEPRINTS
from wad.api.schemas import Health
from wad.api.validation import reply, responds, validation_error
from wad.db.pool import database_unavailable

_log = log.get("api")

RETRY_AFTER_S = 5
"""What a 503 `database_unavailable` answer's `Retry-After` asks the caller to wait, seconds."""


def failure_answer(ctx: AppContext, err: Exception, path: str) -> ApiError:
    """What a request that failed with `err` (not an `ApiError`) answers: 503
    `database_unavailable` when the database cannot be reached (an outage, not a bug: the
    caller may try again shortly), else 500 `internal`, the error logged with its stack."""
    if database_unavailable(err):
        ctx.db.availability.failed(err)
        since = ctx.db.availability.describe() or "database unavailable"
        _log.warning("request answered 503: database unavailable", path=path,
                     error=f"{type(err).__name__}: {err}")
        return ApiError(503, "database_unavailable", f"{since}; try again in a few seconds",
                        headers={"Retry-After": str(RETRY_AFTER_S)})
    _log.error("request failed", error=repr(err), exc_info=err)
    return ApiError(500, "internal", "internal error; see the daemon's log")


def create_app(ctx: AppContext) -> QuartTrio:
    """Build the control API for one daemon."""
    app = QuartTrio("wad")
    app.config["MAX_CONTENT_LENGTH"] = ctx.settings.api.max_body_bytes
    app.config["wad"] = ctx
    tokens = ctx.token_cache()
    QuartSchema(
        app,
        conversion_preference="msgspec",
        info={"title": "wad control API", "version": wad.__version__},
        redoc_ui_path=None,
        scalar_ui_path=None,
        swagger_ui_path=None,  # served from the daemon's own files: `wad.api.routes.docs`
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        security=[{"bearer": []}],
        openapi_provider_class=WadOpenAPIProvider,
    )

    @app.before_request
    async def _authenticate() -> None:
        # Everything under /api/ needs a caller; /healthz and the documentation do not.
        if request.path.startswith("/api/"):
            g.principal = await auth.authenticate_api(tokens)

    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)

    @app.errorhandler(ApiError)
    async def _api_error(err: ApiError) -> Response:
        response = jsonify(err.body())
        response.status_code = err.status
        response.headers.update(err.headers)
        return response

    @app.errorhandler(RequestSchemaValidationError)
    async def _schema_error(err: RequestSchemaValidationError) -> Response:
        # For routes that use quart-schema's own validators: the same answer as ours.
        cause = err.validation_error
        if isinstance(cause, msgspec.ValidationError):
            return await _api_error(validation_error(cause))
        return await _api_error(ApiError(400, "invalid", str(cause)))

    @app.errorhandler(HTTPException)
    async def _http_error(err: HTTPException) -> Response:
        status = err.code or 500
        codes = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
                 408: "request_timeout", 413: "body_too_large", 415: "unsupported_media_type"}
        message = err.description or err.name
        if status == 413:
            message = f"request body larger than {ctx.settings.api.max_body_bytes} bytes"
        response = jsonify({"error": {"code": codes.get(status, "http_error"),
                                      "message": message, "field": None}})
        response.status_code = status
        return response

    @app.errorhandler(Exception)
    async def _unexpected(err: Exception) -> Response:
        return await _api_error(failure_answer(ctx, err, request.path))

    @app.get("/healthz")
    @responds(Health, 200)
    @responds(Health, 503)
    async def healthz() -> Response:
        """Liveness and readiness: the database answers (else since when it has not);
        version, node and uptime."""
        db_ok = await ctx.db.ping()
        since = ctx.db.availability.unavailable_since
        return reply(Health(
            status="ok" if db_ok else "degraded", database=db_ok,
            database_unavailable_since=None if db_ok or since is None else since.isoformat(),
            message=None if db_ok else (ctx.db.availability.describe()
                                        or "database unavailable"),
            version=wad.__version__, node=ctx.settings.node,
            uptime_s=round(time.monotonic() - ctx.started_at, 3)), 200 if db_ok else 503)

    return app
