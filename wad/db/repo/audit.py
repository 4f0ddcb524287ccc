"""The audit trail (`audit_log`): rows are added, never changed; read newest first."""

from __future__ import annotations

import uuid
from typing import Any

from wad.db.models import AuditActor, AuditEntry
from wad.db.pool import Executor
from wad.db.repo import columns, many, returned

_COLS = columns(AuditEntry)


async def record(db: Executor, *, action: str, organization_id: uuid.UUID | None,
                 actor: AuditActor, token_id: uuid.UUID | None,
                 detail: dict[str, Any] | None = None) -> AuditEntry:
    """Add one entry (`action` like `token.created`; `token_id` set exactly when the actor is a
    token)."""
    row = await db.fetchrow(
        f"""INSERT INTO audit_log (organization_id, actor, token_id, action, detail)
            VALUES ($1, $2, $3, $4, $5) RETURNING {_COLS}""",
        organization_id, actor, token_id, action, detail or {})
    return returned(AuditEntry, row)


async def page(db: Executor, *, organization_id: uuid.UUID | None, before: int | None,
               limit: int) -> list[AuditEntry]:
    """At most `limit` entries, newest first, with ids below `before` (None: from the newest):
    of one organization, or of all (and of none) when `organization_id` is None."""
    where: list[str] = []
    args: list[Any] = [limit]
    if organization_id is not None:
        args.append(organization_id)
        where.append(f"organization_id = ${len(args)}")
    if before is not None:
        args.append(before)
        where.append(f"id < ${len(args)}")
    # Two indexes serve it: the primary key, and (organization_id, id) for one organization.
    rows = await db.fetch(
        f"""SELECT {_COLS} FROM audit_log {"WHERE " + " AND ".join(where) if where else ""}
            ORDER BY id DESC LIMIT $1""", *args)
    return many(AuditEntry, rows)
