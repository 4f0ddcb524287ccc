"""The OpenAPI document, with every Struct the bodies refer to.

quart-schema (0.25) builds each body's schema with msgspec but keeps only the top-level one, so a
body that nests another Struct (a list of tokens, the error shape) would point at components the
document never defines. This provider adds them, and marks the endpoints that need no token.
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

PUBLIC_PATHS = ("/healthz", "/openapi.json", "/docs")


class WadOpenAPIProvider(OpenAPIProvider):
    def schema(self) -> dict[str, Any]:
        document = super().schema()
        models: set[type[msgspec.Struct]] = set()
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
