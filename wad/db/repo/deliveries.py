"""Plugin deliveries: notifications (such as webhooks) that must survive restarts and be retried."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from wad.db.models import PluginDelivery
from wad.db.pool import Executor
from wad.db.repo import columns, many, one, returned

_COLS = columns(PluginDelivery)


async def enqueue(db: Executor, *, plugin: str, event: str, payload: dict[str, Any],
                  organization_id: uuid.UUID | None = None,
                  next_attempt_at: datetime | None = None) -> PluginDelivery:
    """A delivery to attempt at `next_attempt_at` (default now). `payload` is a JSON object."""
    row = await db.fetchrow(
        f"""INSERT INTO plugin_deliveries (organization_id, plugin, event, payload, next_attempt_at)
            VALUES ($1, $2, $3, $4, coalesce($5, now())) RETURNING {_COLS}""",
        organization_id, plugin, event, payload, next_attempt_at)
    return returned(PluginDelivery, row)


async def due(db: Executor, *, plugin: str, limit: int = 50) -> list[PluginDelivery]:
    """The plugin's pending deliveries whose time has come, earliest first."""
    rows = await db.fetch(
        f"""SELECT {_COLS} FROM plugin_deliveries
            WHERE plugin = $1 AND status = 'PENDING' AND next_attempt_at <= now()
            ORDER BY next_attempt_at, id LIMIT $2""",
        plugin, limit)
    return many(PluginDelivery, rows)


async def claim(db: Executor, *, delivery_id: int, lease_s: float = 300.0, early_s: float = 60.0
                ) -> PluginDelivery | None:
    """Take a pending delivery for one attempt, so that no other daemon attempts it meanwhile:
    its `next_attempt_at` moves `lease_s` ahead (recording the outcome sets it again; a daemon
    that dies mid-attempt leaves it to be retried after the lease). Succeeds only when the
    delivery is due (or due within `early_s`: the caller's timer may run ahead of the
    database's); None when it is not pending, not due, or another daemon holds it."""
    row = await db.fetchrow(
        f"""UPDATE plugin_deliveries
            SET next_attempt_at = now() + make_interval(secs => $2)
            WHERE id = $1 AND status = 'PENDING'
              AND next_attempt_at <= now() + make_interval(secs => $3)
            RETURNING {_COLS}""", delivery_id, lease_s, early_s)
    return one(PluginDelivery, row)


async def mark_delivered(db: Executor, *, delivery_id: int) -> PluginDelivery | None:
    """The attempt succeeded."""
    row = await db.fetchrow(
        f"""UPDATE plugin_deliveries SET status = 'DELIVERED', attempts = attempts + 1,
                delivered_at = now(), last_error = NULL
            WHERE id = $1 AND status = 'PENDING' RETURNING {_COLS}""", delivery_id)
    return one(PluginDelivery, row)


async def mark_retry(db: Executor, *, delivery_id: int, error: str, next_attempt_at: datetime
                     ) -> PluginDelivery | None:
    """The attempt failed; try again at `next_attempt_at`."""
    row = await db.fetchrow(
        f"""UPDATE plugin_deliveries SET attempts = attempts + 1, last_error = $2,
                next_attempt_at = $3
            WHERE id = $1 AND status = 'PENDING' RETURNING {_COLS}""",
        delivery_id, error, next_attempt_at)
    return one(PluginDelivery, row)


async def mark_failed(db: Executor, *, delivery_id: int, error: str) -> PluginDelivery | None:
    """The attempt failed and no more will be made."""
    row = await db.fetchrow(
        f"""UPDATE plugin_deliveries SET status = 'FAILED', attempts = attempts + 1,
                last_error = $2
            WHERE id = $1 AND status = 'PENDING' RETURNING {_COLS}""", delivery_id, error)
    return one(PluginDelivery, row)


async def pending_by_plugin(db: Executor) -> dict[str, int]:
    """How many deliveries wait, per plugin (plugins with none are absent)."""
    rows = await db.fetch(
        """SELECT plugin, count(*) AS pending FROM plugin_deliveries WHERE status = 'PENDING'
           GROUP BY plugin""")
    return {row["plugin"]: int(row["pending"]) for row in rows}
