"""The audit trail of the control API: what an administrator changed, by whom and when.

`record` is called by a route after its change succeeded: organizations created, settings
changed, tokens created and revoked, session connects, disconnects, logouts and pairing codes,
sending resumed, session data purged. Each entry is written to `audit_log` (read with
`GET /api/audit`) and logged. The actor is the request's caller: its token's id, or the control
socket. Details never hold a secret: tokens are named by their id, never by the token or its
prefix.
"""

from __future__ import annotations

import uuid
from typing import Any

from wad import log
from wad.api import auth
from wad.api.context import current
from wad.db.models import AuditEntry
from wad.db.pool import Database
from wad.db.repo import audit as audit_repo

_log = log.get("audit")


def camel(name: str) -> str:
    """A Python name as the API names it: `token_id` is `tokenId`."""
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


async def record(action: str, organization_id: uuid.UUID | None, **detail: Any) -> AuditEntry:
    """Store and log that the current caller did `action` (e.g. `token.created`) on
    `organization_id` (None: on no organization), with `detail` (JSON-able; its keys are stored
    camelCase, as the API answers them)."""
    principal = auth.current()
    db: Database = current().db
    entry = await audit_repo.record(
        db, action=action, organization_id=organization_id,
        actor="socket" if principal.token_id is None else "token",
        token_id=principal.token_id, detail={camel(key): value for key, value in detail.items()})
    _log.info("audit", action=action, org=str(organization_id) if organization_id else None,
              by=principal.describe(), entry=entry.id, detail=detail)
    return entry
