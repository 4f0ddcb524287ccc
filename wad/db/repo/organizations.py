"""Organizations: the tenants of wad."""

from __future__ import annotations

import uuid
from typing import Any

from wad.db.models import Organization
from wad.db.pool import Executor
from wad.db.repo import columns, many, one, returned

_COLS = columns(Organization)


async def create(db: Executor, *, name: str, settings: dict[str, Any] | None = None
                 ) -> Organization:
    """A new organization (name 1-200 characters)."""
    row = await db.fetchrow(
        f"INSERT INTO organizations (name, settings) VALUES ($1, $2) RETURNING {_COLS}",
        name, settings if settings is not None else {},
    )
    return returned(Organization, row)


async def get(db: Executor, *, organization_id: uuid.UUID) -> Organization | None:
    row = await db.fetchrow(f"SELECT {_COLS} FROM organizations WHERE id = $1", organization_id)
    return one(Organization, row)


async def list_all(db: Executor) -> list[Organization]:
    """Every organization, oldest first."""
    return many(Organization, await db.fetch(
        f"SELECT {_COLS} FROM organizations ORDER BY created_at, id"))


async def update_settings(db: Executor, *, organization_id: uuid.UUID, settings: dict[str, Any]
                          ) -> Organization | None:
    """Replace the organization's settings (the caller validates and merges)."""
    row = await db.fetchrow(
        f"UPDATE organizations SET settings = $2 WHERE id = $1 RETURNING {_COLS}",
        organization_id, settings,
    )
    return one(Organization, row)


async def settings_for_update(db: Executor, *, organization_id: uuid.UUID
                              ) -> dict[str, Any] | None:
    """The organization's settings, its row locked until the caller's transaction ends (so that
    two partial updates at once do not lose each other's change); None for no such one."""
    row = await db.fetchrow("SELECT settings FROM organizations WHERE id = $1 FOR UPDATE",
                            organization_id)
    return dict(row["settings"]) if row is not None else None
