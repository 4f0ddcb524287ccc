"""wad: the WhatsApp daemon of the CRM."""

__version__ = "0.1.0"

from wad.hookspecs import hookimpl as hookimpl  # noqa: E402  (plugins write `from wad import hookimpl`)
