"""SQL the control API needs that the shared repositories (`wad.db.repo`) do not offer.

Kept here rather than in the repositories because only the API uses it: the token lookup that
also answers the stored hash (for the constant-time comparison), and the one-query overview of
every organization with its session.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from wad.db.models import ApiToken, SessionState
from wad.db.pool import Executor
from wad.db.repo import columns, many, one

_TOKEN_COLS = columns(ApiToken)


class FoundToken(msgspec.Struct, frozen=True):
    token: ApiToken
    token_hash: bytes


async def active_token_by_hash(db: Executor, *, token_hash: bytes) -> FoundToken | None:
    """The unrevoked token with this hash, with the hash as stored."""
    row = await db.fetchrow(
        f"""SELECT {_TOKEN_COLS}, token_hash FROM api_tokens
            WHERE token_hash = $1 AND revoked_at IS NULL""", token_hash)
    token = one(ApiToken, row)
    if row is None or token is None:
        return None
    return FoundToken(token=token, token_hash=bytes(row["token_hash"]))


async def token_by_id(db: Executor, *, token_id: uuid.UUID) -> ApiToken | None:
    """A token's record, revoked or not."""
    return one(ApiToken, await db.fetchrow(f"SELECT {_TOKEN_COLS} FROM api_tokens WHERE id = $1",
                                           token_id))


class OrgOverview(msgspec.Struct, frozen=True, kw_only=True):
    """One line of `wad status`: an organization and its session (DISCONNECTED if none yet)."""

    organization_id: uuid.UUID
    name: str
    state: SessionState
    should_run: bool
    phone_number: str | None
    push_name: str | None
    last_error: str | None
    last_connected_at: datetime | None
    last_disconnected_at: datetime | None
    node_id: str | None
    updated_at: datetime | None


async def overview(db: Executor, *, organization_id: uuid.UUID | None = None
                   ) -> list[OrgOverview]:
    """Every organization (or one) with its session state, oldest organization first."""
    rows = await db.fetch(
        """SELECT o.id AS organization_id, o.name,
                  coalesce(s.state, 'DISCONNECTED') AS state,
                  coalesce(s.should_run, false) AS should_run,
                  s.phone_number, s.push_name, s.last_error, s.last_connected_at,
                  s.last_disconnected_at, s.node_id, s.updated_at
           FROM organizations o LEFT JOIN whatsapp_sessions s ON s.organization_id = o.id
           WHERE $1::uuid IS NULL OR o.id = $1
           ORDER BY o.created_at, o.id""", organization_id)
    return many(OrgOverview, rows)
