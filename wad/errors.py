"""Domain exceptions: one module, so callers know what they may catch."""


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
