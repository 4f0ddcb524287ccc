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
    """How many deliveries wait, per plugin (plugins with none are absent): pending rows, and
    for the webhook the changes of the feed it has not delivered yet."""
    rows = await db.fetch(
        """SELECT plugin, count(*) AS pending FROM plugin_deliveries WHERE status = 'PENDING'
           GROUP BY plugin
           UNION ALL
           SELECT 'webhook', coalesce(sum(c.last - w.after), 0) FROM webhook_cursors w
           JOIN change_cursors c ON c.organization_id = w.organization_id
           WHERE c.last > w.after""")
    found: dict[str, int] = {}
    for row in rows:
        if row["pending"]:
            found[row["plugin"]] = found.get(row["plugin"], 0) + int(row["pending"])
    return found


async def record_failed(db: Executor, *, plugin: str, event: str, payload: dict[str, Any],
                        organization_id: uuid.UUID | None, attempts: int, error: str
                        ) -> PluginDelivery:
    """A delivery given up on (kept for the operator to see), FAILED at once."""
    row = await db.fetchrow(
        f"""INSERT INTO plugin_deliveries (organization_id, plugin, event, payload, status,
                                           attempts, last_error)
            VALUES ($1, $2, $3, $4, 'FAILED', $5, $6) RETURNING {_COLS}""",
        organization_id, plugin, event, payload, attempts, error)
    return returned(PluginDelivery, row)


# -- webhooks' cursors in the change feed ------------------------------------------------------


async def register_webhook(db: Executor, *, webhook: str) -> datetime:
    """When `webhook` (a key naming it) was first seen: it delivers the changes made since."""
    since: datetime = await db.fetchval(
        """WITH added AS (INSERT INTO webhooks (webhook) VALUES ($1)
                          ON CONFLICT (webhook) DO NOTHING RETURNING since)
           SELECT since FROM added UNION ALL SELECT since FROM webhooks WHERE webhook = $1
           LIMIT 1""", webhook)
    return since


async def webhook_due(db: Executor, *, webhook: str) -> list[uuid.UUID]:
    """The organizations with changes `webhook` has not delivered, whose next attempt is due
    and that no worker holds."""
    rows = await db.fetch(
        """SELECT c.organization_id FROM change_cursors c
           LEFT JOIN webhook_cursors w
                  ON w.webhook = $1 AND w.organization_id = c.organization_id
           WHERE w.organization_id IS NULL
              OR (c.last > w.after AND w.next_attempt_at <= now()
                  AND (w.leased_until IS NULL OR w.leased_until < now()))
           ORDER BY c.organization_id""", webhook)
    return [r["organization_id"] for r in rows]


async def webhook_claim(db: Executor, *, webhook: str, organization_id: uuid.UUID,
                        since: datetime, lease_s: float, early_s: float = 60.0
                        ) -> tuple[int, int] | None:
    """Hold the organization's feed for `webhook` for `lease_s` seconds (one worker, of any
    daemon, at a time; a worker that dies leaves it after the lease). Answers (the cursor
    delivered up to, failed attempts at the next change), or None when another worker holds
    it or its next attempt is not due (within `early_s`: the caller's timer may run ahead of
    the database's). A first claim starts after the changes made before `since`."""
    row = await db.fetchrow(
        """INSERT INTO webhook_cursors AS w (webhook, organization_id, after, leased_until)
           VALUES ($1, $2, (SELECT coalesce(max(seq), 0) FROM changes
                            WHERE organization_id = $2 AND at < $3),
                   now() + make_interval(secs => $4))
           ON CONFLICT (webhook, organization_id) DO UPDATE
               SET leased_until = now() + make_interval(secs => $4)
               WHERE (w.leased_until IS NULL OR w.leased_until < now())
                 AND w.next_attempt_at <= now() + make_interval(secs => $5)
           RETURNING after, attempts""", webhook, organization_id, since, lease_s, early_s)
    return None if row is None else (int(row["after"]), int(row["attempts"]))


async def webhook_advance(db: Executor, *, webhook: str, organization_id: uuid.UUID,
                          after: int, lease_s: float) -> None:
    """Changes up to cursor `after` are delivered (or given up on); the lease is renewed."""
    await db.execute(
        """UPDATE webhook_cursors SET after = greatest(after, $3), attempts = 0,
               last_error = NULL, next_attempt_at = now(),
               leased_until = now() + make_interval(secs => $4)
           WHERE webhook = $1 AND organization_id = $2""",
        webhook, organization_id, after, lease_s)


async def webhook_failed(db: Executor, *, webhook: str, organization_id: uuid.UUID,
                         error: str, next_attempt_at: datetime) -> None:
    """An attempt at the next change failed; try again at `next_attempt_at` (lease let go)."""
    await db.execute(
        """UPDATE webhook_cursors SET attempts = attempts + 1, last_error = $3,
               next_attempt_at = $4, leased_until = NULL
           WHERE webhook = $1 AND organization_id = $2""",
        webhook, organization_id, error, next_attempt_at)


async def webhook_release(db: Executor, *, webhook: str, organization_id: uuid.UUID) -> None:
    """Let go of the organization's feed (another worker may take it)."""
    await db.execute(
        """UPDATE webhook_cursors SET leased_until = NULL
           WHERE webhook = $1 AND organization_id = $2""", webhook, organization_id)


async def webhook_lag(db: Executor, *, webhook: str) -> int:
    """Changes not yet delivered by `webhook`, over every organization it has started on."""
    found = await db.fetchval(
        """SELECT coalesce(sum(c.last - w.after), 0) FROM webhook_cursors w
           JOIN change_cursors c ON c.organization_id = w.organization_id
           WHERE w.webhook = $1 AND c.last > w.after""", webhook)
    return int(found)
