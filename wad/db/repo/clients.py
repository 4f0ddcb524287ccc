"""Clients (one per phone number per organization) and their sales-funnel status history."""

from __future__ import annotations

import uuid
from typing import Any

from wad.db.models import Client, ClientStatus, ClientStatusChange
from wad.db.pool import Executor
from wad.db.repo import columns, many, one, returned
from wad.errors import NotFound

_COLS = columns(Client)
_HISTORY_COLS = columns(ClientStatusChange)

# Inserts, or refreshes the names given; when nothing would change the row is left alone (no
# write, no updated_at bump) and RETURNING answers nothing, so the caller reads it.
# `xmax = 0` holds only for a freshly inserted row version: that is how we tell "created".
_UPSERT = f"""
INSERT INTO clients AS c (organization_id, phone, name, push_name) VALUES ($1, $2, $3, $4)
ON CONFLICT (organization_id, phone) DO UPDATE
    SET name = coalesce(EXCLUDED.name, c.name), push_name = coalesce(EXCLUDED.push_name, c.push_name)
    WHERE (EXCLUDED.name IS NOT NULL AND EXCLUDED.name IS DISTINCT FROM c.name)
       OR (EXCLUDED.push_name IS NOT NULL AND EXCLUDED.push_name IS DISTINCT FROM c.push_name)
RETURNING {_COLS}, (xmax = 0) AS created
"""


async def upsert(db: Executor, *, organization_id: uuid.UUID, phone: str,
                 name: str | None = None, push_name: str | None = None) -> tuple[Client, bool]:
    """The client with this phone (E.164), created when missing; `name` and `push_name` are
    updated when given. Answers (client, created)."""
    row = await db.fetchrow(_UPSERT, organization_id, phone, name, push_name)
    if row is not None:
        return returned(Client, row), bool(row["created"])
    found = await get_by_phone(db, organization_id=organization_id, phone=phone)
    if found is None:
        raise NotFound(f"client {phone} vanished while being upserted")
    return found, False


async def get(db: Executor, *, client_id: uuid.UUID) -> Client | None:
    return one(Client, await db.fetchrow(f"SELECT {_COLS} FROM clients WHERE id = $1", client_id))


async def get_by_phone(db: Executor, *, organization_id: uuid.UUID, phone: str) -> Client | None:
    row = await db.fetchrow(
        f"SELECT {_COLS} FROM clients WHERE organization_id = $1 AND phone = $2",
        organization_id, phone)
    return one(Client, row)


async def update_profile(
    db: Executor, *, client_id: uuid.UUID, name: str | None = None,
    push_name: str | None = None, saved_name: str | None = None,
    profile_picture_url: str | None = None, preferred_language: str | None = None,
) -> Client | None:
    """Set the profile fields that are given (None keeps the stored value)."""
    row = await db.fetchrow(
        f"""UPDATE clients SET
                name = coalesce($2, name),
                push_name = coalesce($3, push_name),
                saved_name = coalesce($4, saved_name),
                profile_picture_url = coalesce($5, profile_picture_url),
                preferred_language = coalesce($6, preferred_language)
            WHERE id = $1 RETURNING {_COLS}""",
        client_id, name, push_name, saved_name, profile_picture_url, preferred_language)
    return one(Client, row)


async def merge_metadata(db: Executor, *, client_id: uuid.UUID, metadata: dict[str, Any]
                         ) -> Client | None:
    """Add or replace keys of the client's metadata (other keys are kept); no write when they
    are there already."""
    row = await db.fetchrow(
        f"""UPDATE clients SET metadata = metadata || $2::jsonb
            WHERE id = $1 AND NOT (metadata @> $2::jsonb) RETURNING {_COLS}""",
        client_id, metadata)
    if row is None:
        return await get(db, client_id=client_id)
    return one(Client, row)


# One statement, so the change and its history row are written atomically; the row lock makes
# concurrent detectors record the status they actually replaced.
_SET_STATUS = f"""
WITH old AS (
    SELECT id, status FROM clients WHERE id = $1 FOR UPDATE
), changed AS (
    UPDATE clients c SET status = $2 FROM old
    WHERE c.id = old.id AND old.status <> $2
    RETURNING c.id, c.organization_id, old.status AS from_status
)
INSERT INTO client_status_history (client_id, organization_id, from_status, to_status, detector,
                                   reason)
SELECT id, organization_id, from_status, $2, $3, $4 FROM changed
RETURNING {_HISTORY_COLS}
"""


async def set_status(db: Executor, *, client_id: uuid.UUID, status: ClientStatus, detector: str,
                     reason: str | None = None) -> ClientStatusChange | None:
    """Move the client to `status`, writing the history row with who decided and why. Answers the
    change, or None when the client already had that status. Raises NotFound for no client."""
    row = await db.fetchrow(_SET_STATUS, client_id, status, detector, reason)
    if row is None:
        if await db.fetchval("SELECT 1 FROM clients WHERE id = $1", client_id) is None:
            raise NotFound(f"no client {client_id}")
        return None
    return one(ClientStatusChange, row)


async def status_history(db: Executor, *, client_id: uuid.UUID) -> list[ClientStatusChange]:
    """The client's status changes, oldest first."""
    rows = await db.fetch(
        f"SELECT {_HISTORY_COLS} FROM client_status_history WHERE client_id = $1 ORDER BY id",
        client_id)
    return many(ClientStatusChange, rows)


async def first(db: Executor, *, organization_id: uuid.UUID) -> Client | None:
    """The organization's oldest client."""
    return one(Client, await db.fetchrow(
        f"SELECT {_COLS} FROM clients WHERE organization_id = $1 ORDER BY created_at, id LIMIT 1",
        organization_id))
