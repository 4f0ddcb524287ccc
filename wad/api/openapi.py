"""The OpenAPI document, with every Struct the bodies refer to.

quart-schema (0.25) builds each body's schema with msgspec but keeps only the top-level one, so a
body that nests another Struct (a list of tokens, the error shape) would point at components the
document never defines. This provider adds them, and marks the endpoints that need no token.

It also documents what holds for routes as a group rather than one by one: every `/api/` path
can answer 401 (callers are authenticated before any route runs) and 503
`database_unavailable` with `Retry-After` (every one needs the database, if only to check the
token), and a route marked with `wad.api.validation.streams` answers 200 with its stream's
media type instead of JSON.
"""

from __future__ import annotations

from typing import Any

import msgspec
from quart_schema import OpenAPIProvider
from quart_schema.conversion import MSGSPEC_REF_TEMPLATE
from quart_schema.validation import (
    QUART_SCHEMA_REQUEST_ATTRIBUTE,
    QUART_SCHEMA_RESPONSE_ATTRIBUTE,
)
from werkzeug.routing import Rule

from wad.api.errors import ErrorResponse
from wad.api.validation import STREAM_ATTRIBUTE

PUBLIC_PATHS = ("/healthz", "/openapi.json", "/docs")


def _item_schema(media_type: str) -> dict[str, Any]:
    """What each item of a stream is: for server-sent events, one event's fields."""
    if media_type == "text/event-stream":
        return {"type": "object", "required": ["data"], "properties": {
            "event": {"type": "string"}, "data": {"type": "string"},
            "id": {"type": "string"}, "retry": {"type": "integer"}}}
    return {"type": "string"}


class WadOpenAPIProvider(OpenAPIProvider):
    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        func = self._app.view_functions[rule.endpoint]
        media_type: str | None = getattr(func, STREAM_ATTRIBUTE, None)
        for path, operations in paths.items():
            for operation in operations.values():
                answers = operation["responses"]
                # Keys are ints, as quart-schema's own: the document is rendered with sorted keys.
                if media_type is not None and 200 not in answers:
                    answers[200] = {"description": f"a `{media_type}` stream",
                                    "content": {media_type: {"schema": _item_schema(media_type)}}}
                if path.startswith("/api/") and 401 not in answers:
                    unauthenticated, extra = self.build_response_object(ErrorResponse, None)
                    answers[401] = unauthenticated
                    components.update(extra)
                if path.startswith("/api/") and 503 not in answers:
                    unavailable, extra = self.build_response_object(ErrorResponse, None)
                    unavailable["description"] = (
                        "`database_unavailable`: the database does not answer; try again "
                        "after `Retry-After` seconds")
                    unavailable["headers"] = {"Retry-After": {
                        "description": "seconds to wait before trying again",
                        "schema": {"type": "integer"}}}
                    answers[503] = unavailable
                    components.update(extra)
        return paths, components

    def schema(self) -> dict[str, Any]:
        document = super().schema()
        models: set[type[msgspec.Struct]] = {ErrorResponse}
        for view in self._app.view_functions.values():
            request = getattr(view, QUART_SCHEMA_REQUEST_ATTRIBUTE, None)
            if request is not None:
                models.add(request[0])
            for model, _headers in getattr(view, QUART_SCHEMA_RESPONSE_ATTRIBUTE, {}).values():
                models.add(model)
        structs = sorted((m for m in models if isinstance(m, type)
                          and issubclass(m, msgspec.Struct)), key=lambda m: m.__name__)
        _, components = msgspec.json.schema_components(structs,
                                                       ref_template=MSGSPEC_REF_TEMPLATE)
        document["components"]["schemas"].update(components)
        for path in PUBLIC_PATHS:
            for operation in document["paths"].get(path, {}).values():
                operation["security"] = []
        return document
