"""The importer's own WhatsApp Web session, for when no daemon serves the organization.

It lives in its own browser profile (`STATE_DIR/sessions/import-<org>`), apart from the daemon's
(`org-<org>`), so the daemon's login is never touched; after the first link it is kept, so a
rerun needs no QR. While the import runs, the page's events are drained (live messages are the
inbound channel's business, not the importer's), and a logout, ban or crash makes the source
answer `SourceGone`, which ends the import as interrupted.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from wad import log
from wad.browser import events as ev
from wad.browser import profile as archive
from wad.errors import WadError
from wad.importer.options import DEFAULT_LINK_TIMEOUT_S
from wad.importer.sources import BrowserSessionLike, SourceGone

_log = log.get("import.session")


class LinkFailed(WadError):
    """The import's session could not be linked (no scan in time, logged out, banned)."""


def profile_dir(state_dir: Path, organization_id: uuid.UUID) -> Path:
    """Where the import's own session keeps its login: beside the daemon's, never the same."""
    return archive.import_profile_dir(state_dir.absolute(), organization_id)


class OwnSession:
    """A linked session of the importer's own. `get` answers it for the next request, or raises
    `SourceGone` once WhatsApp or the browser ended it."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.ready = trio.Event()
        self.settled = trio.Event()
        """Set once linked, or once the session ended before that."""
        self.gone: str | None = None
        self.phone: str | None = None

    async def get(self) -> BrowserSessionLike:
        if self.gone is not None:
            raise SourceGone(self.gone)
        session: BrowserSessionLike = self.session
        return session

    async def follow(self, on_qr: Callable[[str], None]) -> None:
        """Apply the page's events until it closes: draw QR codes until linked, note the end."""
        async for event in self.session.events:
            match event:
                case ev.QrChanged(payload=payload):
                    if not self.ready.is_set():
                        on_qr(payload)
                case ev.StateChanged(state="UNPAIRED_IDLE"):
                    try:
                        await self.session.refresh_qr()
                    except Exception as exc:
                        _log.warning("could not refresh the QR code", error=str(exc))
                case ev.StateChanged(state=state) if state in ("TOS_BLOCK", "SMB_TOS_BLOCK"):
                    self.gone = f"the account is banned ({state})"
                case ev.Ready(phone=phone):
                    self.phone = f"+{phone}" if phone else None
                    self.ready.set()
                case ev.Disconnected(reason=reason):
                    self.gone = f"WhatsApp ended the import's session ({reason})"
                case ev.BrowserClosed(reason=reason):
                    self.gone = f"the import's browser {reason.replace('_', ' ')}"
                case ev.PageIncompatible() as bad:
                    self.gone = bad.reason
                case _:
                    pass  # live traffic: the daemon's inbound channel catches up on it
            if self.ready.is_set() or self.gone is not None:
                self.settled.set()
        self.gone = self.gone or "the import's browser session ended"
        self.settled.set()


@asynccontextmanager
async def own_session(driver: Any, profile: Path, *, on_qr: Callable[[str], None],
                      link_timeout: float = DEFAULT_LINK_TIMEOUT_S) -> AsyncIterator[OwnSession]:
    """Open the profile's WhatsApp Web page and wait until it is linked and synced (drawing each
    QR code through `on_qr` until the phone scans one); the browser closes when the block
    ends. Raises `LinkFailed` when that does not happen within `link_timeout` seconds."""
    async with driver.open_session(profile) as session, trio.open_nursery() as nursery:
        own = OwnSession(session)
        nursery.start_soon(own.follow, on_qr)
        with trio.move_on_after(link_timeout):
            await own.settled.wait()
        if not own.ready.is_set():
            nursery.cancel_scope.cancel()
            raise LinkFailed(own.gone or f"the import's WhatsApp session was not linked within "
                             f"{link_timeout:g} s (scan the QR code with the phone: Settings > "
                             "Linked devices > Link a device)")
        _log.info("import session linked", phone=own.phone)
        try:
            yield own
        finally:
            nursery.cancel_scope.cancel()
