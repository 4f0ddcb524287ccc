"""The organization manager: one supervisor per organization whose session should run.

It starts an organization's supervisor when the organization is connected (and, at daemon start,
for every organization whose session should run), stops it when it is disconnected, and passes
commands (pairing code, logout) to the organization's session actor. A failure in one
organization never touches another: each runs under its own supervisor, and a supervisor that
gives up marks only its own organization `ERROR`.
"""

from __future__ import annotations

import uuid
from typing import Any

from wad.errors import WadError


class OrgNotRunning(WadError):
    """The organization's session is not running on this daemon (connect it first)."""


class OrgManagerAPI:
    """What the control API calls. Every method is safe to call concurrently."""

    async def connect(self, org_id: uuid.UUID) -> None:
        """Mark the session as wanted (`should_run`) and start its supervisor if not running.
        Returns once the supervisor has started; the state then moves by itself
        (`CONNECTING` -> `QR_CODE_PENDING` or `CONNECTED`)."""
        raise NotImplementedError

    async def disconnect(self, org_id: uuid.UUID) -> None:
        """Mark the session as not wanted, stop its supervisor (the login is kept: archive
        refreshed, browser closed), state `DISCONNECTED`."""
        raise NotImplementedError

    async def logout(self, org_id: uuid.UUID) -> None:
        """Log the linked device out of WhatsApp: state `LOGGED_OUT`, profile moved to the trash
        folder (never deleted). Raises `OrgNotRunning` when the session is not running."""
        raise NotImplementedError

    async def request_pairing_code(self, org_id: uuid.UUID, phone_e164: str) -> str:
        """Ask the page for an 8-character pairing code for that phone; state
        `PAIRING_CODE_PENDING`. Raises `OrgNotRunning`, or `WadError` when already linked."""
        raise NotImplementedError

    def tree(self) -> dict[str, Any]:
        """The live supervision tree of every organization (for `wad status --tree`)."""
        raise NotImplementedError
