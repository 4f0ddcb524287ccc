"""Request bodies in, response bodies out, both as msgspec Structs.

Bodies are decoded here with msgspec, strictly: quart-schema's own `validate_request` converts
leniently (the string "5" would pass for the number 5) and answers malformed JSON without saying
where. `body(Model)` still registers the Struct with quart-schema, so `/openapi.json` documents
it. Every failure becomes a 400 in the one error shape, naming the field.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from quart import Response, request
from quart_schema import document_querystring, document_request, document_response

from wad.api.errors import ApiError, ErrorResponse
from wad.errors import validation_problem

T = TypeVar("T", bound=msgspec.Struct)
Handler = Callable[..., Awaitable[Any]]


def describe(exc: msgspec.ValidationError) -> tuple[str, str | None]:
    """msgspec's message split into (what is wrong, the field's dotted path or None)."""
    return validation_problem(exc)


def validation_error(exc: msgspec.ValidationError) -> ApiError:
    message, field = describe(exc)
    text = f"`{field}`: {message}" if field else message
    return ApiError(400, "invalid", text, field=field)


def _is_json(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


async def decode_body(model: type[T], *, optional: bool = False) -> T:
    """The current Quart request's body as a `model` (`parse_body`); 413 past
    MAX_CONTENT_LENGTH."""
    raw = await request.get_data(cache=False)
    return parse_body(model, raw if isinstance(raw, bytes) else raw.encode(),
                      request.headers.get("Content-Type", ""), optional=optional)


def parse_body(model: type[T], raw: bytes, content_type: str, *, optional: bool = False) -> T:
    """`raw` (sent with `content_type`) as a `model`; 400/415 in the error shape otherwise.
    With `optional`, an empty body means the model's defaults."""
    if not raw.strip():
        if optional:
            return model()
        raise ApiError(400, "invalid", "the request needs a JSON object body")
    if not _is_json(content_type):
        raise ApiError(415, "unsupported_media_type",
                       "send the body as JSON with `Content-Type: application/json`")
    try:
        decoded = msgspec.json.decode(raw, type=model)
    except msgspec.ValidationError as exc:
        raise validation_error(exc) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    except UnicodeDecodeError as exc:  # msgspec's error for bad UTF-8 inside a string
        raise ApiError(400, "bad_json", f"the body is not valid UTF-8 (byte {exc.start} of a "
                       "string)") from None
    if b"\\u0000" in raw:  # JSON can carry U+0000 only escaped
        where = _nul_at(decoded, "")
        if where is not None:
            text = f"`{where}`: " if where else ""
            raise ApiError(400, "invalid", f"{text}must not contain the character U+0000 "
                           "(NUL), which PostgreSQL text cannot store", field=where or None)
    return decoded


def _nul_at(value: Any, path: str) -> str | None:
    """The dotted path of the first string in `value` holding U+0000 (`""` for `value`
    itself), or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, msgspec.Struct):  # named as in JSON
        items: Any = ((f"{path}.{wire}" if path else wire, getattr(value, name))
                      for wire, name in zip(value.__struct_encode_fields__,
                                            value.__struct_fields__, strict=True))
    elif isinstance(value, dict):
        for key in value:
            if isinstance(key, str) and "\x00" in key:
                return path
        items = ((f"{path}.{key}" if path else str(key), item) for key, item in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{path}[{i}]", item) for i, item in enumerate(value))
    else:
        return None
    for where, item in items:
        found = _nul_at(item, where)
        if found is not None:
            return found
    return None


def body(model: type[msgspec.Struct], *, optional: bool = False
         ) -> Callable[[Handler], Handler]:
    """Decode the request body into `model` and pass it as `data=`; document it in OpenAPI."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            data = await decode_body(model, optional=optional)
            return await handler(*args, data=data, **kwargs)

        return document_request(model)(wrapper)

    return decorate


def query(model: type[msgspec.Struct]) -> Callable[[Handler], Handler]:
    """Decode the query string into `model` (numbers, times and ids from their text, nothing
    else coerced; parameters named as `model` encodes its fields, camelCase; unknown parameters ignored,
    unless `model` forbids unknown fields) and pass it as `query=`; document the parameters in
    OpenAPI. 400 naming the parameter otherwise, or when it is given more than once."""
    names = [f.encode_name for f in msgspec.structs.fields(model)]
    strict = model.__struct_config__.forbid_unknown_fields
    choices = {f.encode_name: _literal_values(f.type) for f in msgspec.structs.fields(model)}

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            if strict:
                unknown = sorted(set(request.args) - set(names))
                if unknown:
                    raise ApiError(400, "invalid", f"`{unknown[0]}`: unknown query parameter; "
                                   f"known: {', '.join(names)}", field=unknown[0])
            wanted = {}
            for name in names:
                values = request.args.getlist(name)
                if len(values) > 1:
                    raise ApiError(400, "invalid", f"`{name}`: given more than once",
                                   field=name)
                if values:
                    wanted[name] = values[0]
            try:
                decoded = msgspec.convert(wanted, model, strict=False)
            except msgspec.ValidationError as exc:
                message, field = describe(exc)
                if message.endswith(", got `str`"):  # the text did not read as that type
                    message = message.removesuffix(", got `str`").replace("Expected", "expected")
                if message.startswith("Invalid enum value") and choices.get(field or ""):
                    message += f"; expected one of {', '.join(choices[field or ''])}"
                raise ApiError(400, "invalid", f"`{field}`: {message}" if field else message,
                               field=field) from None
            return await handler(*args, query=decoded, **kwargs)

        return document_querystring(model)(wrapper)

    return decorate


def _literal_values(annotation: Any) -> list[str]:
    """The values of a `Literal[...]` type (also inside `Annotated` or `| None`)."""
    if typing.get_origin(annotation) is typing.Literal:
        return [str(v) for v in typing.get_args(annotation)]
    return [v for arg in typing.get_args(annotation) for v in _literal_values(arg)]


def responds(model: type[msgspec.Struct], status: int = 200,
             errors: tuple[int, ...] = ()) -> Callable[[Handler], Handler]:
    """Document the success body (and the error statuses, all in the one error shape)."""

    def decorate(handler: Handler) -> Handler:
        handler = document_response(model, status)(handler)
        for code in errors:
            handler = document_response(ErrorResponse, code)(handler)
        return handler

    return decorate


STREAM_ATTRIBUTE = "_wad_stream_media_type"


def streams(media_type: str, errors: tuple[int, ...] = ()) -> Callable[[Handler], Handler]:
    """Document a route whose success is a stream of `media_type` (for example
    `text/event-stream`) rather than a JSON body, and its error statuses (in the one error
    shape). `wad.api.openapi` writes the 200 answer."""

    def decorate(handler: Handler) -> Handler:
        for code in errors:
            handler = document_response(ErrorResponse, code)(handler)
        setattr(handler, STREAM_ATTRIBUTE, media_type)
        return handler

    return decorate


def reply(value: msgspec.Struct, status: int = 200,
          headers: dict[str, str] | None = None) -> Response:
    """A JSON response encoded by msgspec (UUIDs and datetimes as ISO strings)."""
    response = Response(msgspec.json.encode(value), status=status,
                        content_type="application/json")
    response.headers.update(headers or {})
    return response
