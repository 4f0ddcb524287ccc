"""What one import is asked to do."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import Meta

WHATSAPP_SOURCE = "whatsapp"
"""The live WhatsApp session: the built-in source."""

DEFAULT_PACE_S = 1.0
DEFAULT_PAGE_SIZE = 200
DEFAULT_LINK_TIMEOUT_S = 300.0
"""How long an import's own session waits for the QR scan."""


class ImportOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The options of `wad import` (and of `POST /api/whatsapp/import/{org}`). Secrets (the
    OpenRouter key) are not part of them: the options are stored with the run."""

    source: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_-]*$")] = WHATSAPP_SOURCE
    """`whatsapp` (the live session) or the name of an importer plugin's source (`export`)."""
    limit: Annotated[int, Meta(ge=1)] | None = None
    """At most this many one-to-one chats (the most recent first); None for all."""
    dry_run: bool = False
    """Do everything but write: nothing is stored, not even the run."""
    use_llm: bool = False
    """Decide statuses with the OpenRouter plugin (the heuristic one decides when it cannot)."""
    skip_duplicates: bool = True
    """Skip a chat whose client is in the CRM already. False: update the client and add the
    messages it lacks (a stored message is never stored twice)."""
    pace_s: Annotated[float, Meta(ge=0, le=60)] = DEFAULT_PACE_S
    """At least this long between two WhatsApp requests; 0 turns pacing off."""
    page_size: Annotated[int, Meta(ge=1, le=1000)] = DEFAULT_PAGE_SIZE
    """Messages asked for per history request (a whole chat usually fits in one)."""
    paths: list[str] = []
    """Files or folders a plugin source reads (exported chats)."""
    me: str | None = None
    """The account owner's name as it appears in exported chats (their messages are outgoing)."""
    timezone: str | None = None
    """The time zone of exported chats' times (IANA name); None: this machine's."""
    date_order: Annotated[str, Meta(pattern=r"^(DMY|MDY|YMD)$")] | None = None
    """The order of exported dates when the files cannot tell (`DMY`, `MDY`, `YMD`)."""
    phones: dict[str, str] = {}
    """Exported chats whose contact is shown by name: name -> phone number."""

    def stored(self) -> dict[str, Any]:
        """The options as kept with the run (JSON)."""
        raw: dict[str, Any] = msgspec.to_builtins(self)
        return raw

    def source_options(self) -> dict[str, str]:
        """What a plugin source gets as `ImportRequest.options`."""
        out: dict[str, str] = {}
        if self.me:
            out["me"] = self.me
        if self.timezone:
            out["timezone"] = self.timezone
        if self.date_order:
            out["date_order"] = self.date_order
        for name, number in self.phones.items():
            out[f"phone:{name}"] = number
        return out
