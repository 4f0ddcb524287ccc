"""WhatsApp's own "Export chat" files as an import source: `wad import --source export PATHS`.

Reads `.txt` exports and the `.zip` files phones share (with or without media), Android's and
iPhone's line formats in several locales (see `parser`). Options (from `wad import`): `--me NAME`
(the account owner's name in the files), `--timezone` (of the times; default this machine's),
`--date-order` (when a file cannot tell), `--phone NAME=NUMBER` (contacts shown by name).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from typing import Any

import trio

from wad import hookimpl
from wad.config import ImportSettings, import_settings
from wad.payloads import ImportedChat, ImportRequest, ImportSource
from wad_export_import.parser import (
    ExportedChat,
    ExportedMessage,
    ExportOptions,
    parse_chat,
    read_location,
)

NAME = "export"

__all__ = ["NAME", "ExportOptions", "ExportedChat", "ExportedMessage", "export_chats",
           "parse_chat", "read_location"]


async def export_chats(request: ImportRequest, *, limits: ImportSettings | None = None
                       ) -> AsyncIterator[ImportedChat]:
    """The chats at `request.location` (a file or a folder), read in a worker thread within
    LIMITS (wad's `[imports]` settings)."""
    if not request.location:
        raise ValueError("the export source needs the paths of exported chats")
    options = ExportOptions.from_options(request.options)
    chats = await trio.to_thread.run_sync(read_location, request.location, options, limits)
    for chat in chats:
        yield chat


@hookimpl
def wad_import_sources(ctx: Any) -> list[ImportSource]:
    limits = import_settings(getattr(ctx, "settings", None))
    return [ImportSource(
        name=NAME, description="WhatsApp's \"Export chat\" files (.txt or .zip, Android or "
        "iPhone, any of the usual locales)", chats=functools.partial(export_chats, limits=limits))]
