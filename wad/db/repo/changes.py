"""The durable change feed (`changes`): what the CRM follows, per organization, in order.

`record` is called with the connection of the transaction that makes the change, so the change
and its feed entry commit (or vanish) together. Cursors (`seq`) are per organization, start at 1
and grow by one in commit order: the next cursor is taken by updating the organization's row of
`change_cursors`, which stays locked until the transaction ends. Every commit notifies the
`wad_changes` channel with the organization's id, so readers wake without polling.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from wad.db.pool import Executor

CHANNEL = "wad_changes"
"""The `LISTEN/NOTIFY` channel; the payload is the organization's id."""


class Change(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of the feed: `kind` like `message.stored`, `data` its camelCase payload."""

    organization_id: uuid.UUID
    seq: int
    kind: str
    at: datetime
    data: dict[str, Any]


async def record(db: Executor, *, organization_id: uuid.UUID, kind: str,
                 data: dict[str, Any]) -> int:
    """Add one change of `organization_id` and answer its cursor. Pass the connection of the
    transaction that makes the change (the pool only for a change that is nothing else)."""
    seq: int = await db.fetchval(
        """WITH next AS (
               INSERT INTO change_cursors AS c (organization_id, last) VALUES ($1, 1)
               ON CONFLICT (organization_id) DO UPDATE SET last = c.last + 1
               RETURNING last),
           added AS (
               INSERT INTO changes (organization_id, seq, kind, data)
               SELECT $1, last, $2, $3 FROM next RETURNING seq)
           SELECT seq FROM added, pg_notify('wad_changes', $1::text)""",
        organization_id, kind, data)
    return seq


async def page(db: Executor, *, organization_id: uuid.UUID, after: int,
               limit: int) -> list[Change]:
    """At most `limit` changes of `organization_id` with a cursor above `after`, oldest first."""
    rows = await db.fetch(
        """SELECT organization_id, seq, kind, at, data FROM changes
           WHERE organization_id = $1 AND seq > $2 ORDER BY seq LIMIT $3""",
        organization_id, after, limit)
    return [Change(organization_id=r["organization_id"], seq=r["seq"], kind=r["kind"],
                   at=r["at"], data=r["data"]) for r in rows]
