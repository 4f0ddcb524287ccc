"""API tokens. Only a hash of each token is stored; the caller hashes."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import msgspec

from wad.db.models import ApiToken, Role
from wad.db.pool import Executor
from wad.db.repo import columns, many, one, returned

_COLS = columns(ApiToken)

CHANNEL = "wad_api_tokens"
"""The `LISTEN/NOTIFY` channel on which a token's revocation (or deletion, or change of role or
organization) is announced; the payload is the token's id (migration 0012's trigger)."""


async def create(db: Executor, *, token_hash: bytes, prefix: str, role: Role,
                 organization_id: uuid.UUID | None, name: str = "") -> ApiToken:
    """A new token record. SUPER_ADMIN and METRICS tokens have no organization; every other one
    has one."""
    row = await db.fetchrow(
        f"""INSERT INTO api_tokens (token_hash, prefix, role, organization_id, name)
            VALUES ($1, $2, $3, $4, $5) RETURNING {_COLS}""",
        token_hash, prefix, role, organization_id, name,
    )
    return returned(ApiToken, row)


async def find_by_hash(db: Executor, *, token_hash: bytes) -> ApiToken | None:
    """The token with this hash, unless it is revoked."""
    row = await db.fetchrow(
        f"SELECT {_COLS} FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL", token_hash)
    return one(ApiToken, row)


async def list_all(db: Executor, *, organization_id: uuid.UUID | None = None) -> list[ApiToken]:
    """Tokens (revoked ones included), oldest first: of one organization, or all when None."""
    if organization_id is None:
        rows = await db.fetch(f"SELECT {_COLS} FROM api_tokens ORDER BY created_at, id")
    else:
        rows = await db.fetch(
            f"SELECT {_COLS} FROM api_tokens WHERE organization_id = $1 ORDER BY created_at, id",
            organization_id)
    return many(ApiToken, rows)


async def revoke(db: Executor, *, token_id: uuid.UUID) -> bool:
    """Revoke a token; True when it was active until now."""
    done = await db.fetchval(
        """UPDATE api_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL
           RETURNING true""", token_id)
    return bool(done)


async def is_active(db: Executor, *, token_id: uuid.UUID) -> bool:
    """Whether the token exists and is not revoked."""
    return bool(await db.fetchval(
        "SELECT true FROM api_tokens WHERE id = $1 AND revoked_at IS NULL", token_id))


class FoundToken(msgspec.Struct, frozen=True):
    """An active token with its hash as stored (for the API's constant-time comparison)."""

    token: ApiToken
    token_hash: bytes


async def use(db: Executor, *, token_hash: bytes) -> FoundToken | None:
    """The unrevoked token with this hash, with the hash as stored; its use is recorded in
    `last_used_at` (written at most once a minute per token, to keep requests cheap). One round
    trip: the lookup and the record are one statement. The answer's `last_used_at` is the one
    before this use."""
    row = await db.fetchrow(
        f"""WITH found AS (SELECT {_COLS}, token_hash FROM api_tokens
                           WHERE token_hash = $1 AND revoked_at IS NULL),
                 used AS (UPDATE api_tokens SET last_used_at = now()
                          WHERE id = (SELECT id FROM found)
                            AND (last_used_at IS NULL
                                 OR last_used_at < now() - interval '1 minute'))
            SELECT * FROM found""", token_hash)
    token = one(ApiToken, row)
    if row is None or token is None:
        return None
    return FoundToken(token=token, token_hash=bytes(row["token_hash"]))


async def record_use(db: Executor, *, token_ids: Sequence[uuid.UUID]) -> None:
    """Record that these tokens were used now, in `last_used_at`, as `use` does (at most once a
    minute per token): for uses answered without the database (the API's token cache)."""
    if token_ids:
        await db.execute(
            """UPDATE api_tokens SET last_used_at = now()
               WHERE id = ANY($1::uuid[])
                 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')""",
            list(token_ids))


async def get(db: Executor, *, token_id: uuid.UUID) -> ApiToken | None:
    """A token's record, revoked or not."""
    return one(ApiToken, await db.fetchrow(f"SELECT {_COLS} FROM api_tokens WHERE id = $1",
                                           token_id))


async def round_trip(db: Executor) -> None:
    """One trivial round trip (the token cache proves its listening connection current with
    it: notifications committed before it started arrive ahead of its answer)."""
    await db.fetchval("SELECT 1")
