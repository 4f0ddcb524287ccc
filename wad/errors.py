"""Domain exceptions: one module, so callers know what they may catch."""

import re

_FIELD_IN_MESSAGE = re.compile(r"^Object (missing required|contains unknown) field `([^`]+)`")


def validation_problem(exc: Exception) -> tuple[str, str | None]:
    """A msgspec validation error as (what is wrong, the field's dotted path or None):
    `Expected int, got str - at `$.a.b`` becomes ("Expected int, got str", "a.b"), and an
    unknown or missing field is named in the path."""
    message = str(exc)
    path = ""
    if " - at `$" in message:
        message, _, at = message.partition(" - at `$")
        path = at.rstrip("`").lstrip(".")
    named = _FIELD_IN_MESSAGE.match(message)
    if named:
        kind, name = named.groups()
        path = f"{path}.{name}" if path else name
        message = "required field is missing" if kind.startswith("missing") else "unknown field"
    return message, path or None


class WadError(Exception):
    """Base of every error wad raises on purpose."""


class ConfigError(WadError):
    """The configuration is invalid; the message names the key and what is wrong."""


class EmbeddedPostgresError(WadError):
    """The private PostgreSQL cluster could not be found, created or started."""


class NotFound(WadError):
    """A requested row does not exist (or is not visible to the caller)."""


class Conflict(WadError):
    """The request conflicts with the current state."""
