"""The durable outbound queue and its status history (`outbox_events`).

Every status change writes its event in the same statement. A message is claimed with
`FOR UPDATE SKIP LOCKED`, gets its WhatsApp id before it is sent (kept across retries, so that a
send interrupted by a crash can be recognised in the chat), and only moves forward afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

from wad.db.models import OutboxEvent, OutboxItem, OutboxSender, OutboxStatus
from wad.db.pool import Executor
from wad.db.repo import columns, many, one, returned

_COLS = columns(OutboxItem)
_O_COLS = columns(OutboxItem, "o")
_EVENT_COLS = columns(OutboxEvent)

_ENQUEUE = f"""
WITH queued AS (
    INSERT INTO outbox (organization_id, to_phone, content, priority, sender, agent_name,
                        idempotency_key, client_id, conversation_id, not_before, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, coalesce($10, now()), $11)
    ON CONFLICT (organization_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING *
), event AS (
    INSERT INTO outbox_events (outbox_id, status) SELECT id, status FROM queued
)
SELECT {_COLS} FROM queued
"""


async def enqueue(
    db: Executor, *, organization_id: uuid.UUID, to_phone: str, content: str, priority: int = 1,
    sender: OutboxSender = "HUMAN", agent_name: str | None = None,
    idempotency_key: str | None = None, client_id: uuid.UUID | None = None,
    conversation_id: uuid.UUID | None = None, not_before: datetime | None = None,
    expires_at: datetime | None = None,
) -> tuple[OutboxItem, bool]:
    """Queue a message (sent no earlier than `not_before`, default now; never once `expires_at`
    passed). With an idempotency key already used in the organization, nothing is queued and the
    earlier item is answered. Answers (item, created)."""
    row = await db.fetchrow(_ENQUEUE, organization_id, to_phone, content, priority, sender,
                            agent_name, idempotency_key, client_id, conversation_id, not_before,
                            expires_at)
    if row is not None:
        return returned(OutboxItem, row), True
    row = await db.fetchrow(
        f"SELECT {_COLS} FROM outbox WHERE organization_id = $1 AND idempotency_key = $2",
        organization_id, idempotency_key)
    return returned(OutboxItem, row), False


class DoorState(msgspec.Struct, frozen=True, kw_only=True):
    """What the send queue's door decides on, read under the organization's queueing lock."""

    earlier_id: uuid.UUID | None
    """The message queued earlier with the same idempotency key."""
    session_state: str | None
    """The session's state (None: the organization has no session row yet)."""
    session_error: str | None
    sending_paused: bool | None
    sending_paused_reason: str | None
    settings: dict[str, Any]
    """The organization's settings document, as stored."""
    sent: list[datetime]
    """When each message sent since `since` counts as sent, oldest first."""
    pending: int
    """Messages queued or being sent."""
    client_id: uuid.UUID | None
    """The client with the number, if there is one..."""
    conversation_id: uuid.UUID | None
    """...and its active WhatsApp conversation, if it has one."""


async def door(db: Executor, *, organization_id: uuid.UUID, idempotency_key: str | None,
               since: datetime, to_phone: str) -> DoorState | None:
    """Take the organization's queueing lock (until the transaction ends: call it inside one)
    and read, after it, what the door decides on (see `DoorState`). One round trip. None when
    there is no such organization."""
    row = await db.fetchrow("SELECT * FROM wad_send_door($1, $2, $3, $4)", organization_id,
                            idempotency_key, since, to_phone)
    if row is None:
        return None
    return DoorState(earlier_id=row["earlier_id"], session_state=row["session_state"],
                     session_error=row["session_error"], sending_paused=row["sending_paused"],
                     sending_paused_reason=row["sending_paused_reason"],
                     settings=row["settings"], sent=list(row["sent"]),
                     pending=int(row["pending"]), client_id=row["client_id"],
                     conversation_id=row["conversation_id"])


async def enqueue_at_door(
    db: Executor, *, organization_id: uuid.UUID, to_phone: str, content: str, priority: int,
    sender: OutboxSender, agent_name: str | None, idempotency_key: str | None, now: datetime,
    not_before: datetime, expires_at: datetime | None, settings_document: dict[str, Any],
    windows: Sequence[tuple[float, int]],
) -> OutboxItem | None:
    """Queue a plain message in one statement (`wad_send`, migration 0013), under the same lock
    as the full door: answers the item queued, or None (nothing queued) whenever anything
    stands in the way (a used idempotency key, settings other than `settings_document`, sending
    stopped, a number without an active conversation, or a full window of `windows`: (length
    in seconds, limit) each, counting the sends up to `now` and every pending message). The
    caller then goes through the full door (`door`), which answers each of these cases."""
    row = await db.fetchrow(
        "SELECT * FROM wad_send($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        organization_id, idempotency_key, now, to_phone, settings_document,
        [length for length, _ in windows], [limit for _, limit in windows], content, priority,
        sender, agent_name, not_before, expires_at)
    return one(OutboxItem, row)


def _next_queued(now: str) -> str:
    """The due message to send next; `now` is the SQL for "now"."""
    return f"""
SELECT id FROM outbox
WHERE organization_id = $1 AND status = 'QUEUED' AND not_before <= {now}
  AND (expires_at IS NULL OR expires_at > {now})
ORDER BY priority DESC, created_at, id
LIMIT 1
"""


# Served by the partial index `outbox_next` (see 0001_initial.sql): same WHERE, same ORDER BY.
NEXT_QUEUED = _next_queued("now()")


def _claim(now: str) -> str:
    return f"""
WITH candidate AS (
    {_next_queued(now)} FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE outbox o SET status = 'SENDING', attempts = o.attempts + 1,
                        sending_started_at = {now},
                        wa_message_id = coalesce(o.wa_message_id, $2)
    FROM candidate WHERE o.id = candidate.id
    RETURNING {_O_COLS}
), event AS (
    INSERT INTO outbox_events (outbox_id, status, detail)
    SELECT id, 'SENDING', 'attempt ' || attempts FROM claimed
)
SELECT {_COLS} FROM claimed
"""


_CLAIM = _claim("now()")
# The same for a caller that keeps its own clock (the outbound actor): "now" is $3.
_CLAIM_AT = _claim("$3::timestamptz")


async def claim_next(db: Executor, *, organization_id: uuid.UUID, wa_message_id: str,
                     now: datetime | None = None) -> OutboxItem | None:
    """Take the next due message of the organization (highest priority, then oldest) and mark it
    SENDING. It keeps the WhatsApp id it got on an earlier attempt; otherwise it gets
    `wa_message_id`. None when nothing is due. Concurrent claimers never get the same message.
    `now` (default: the database's clock) decides what is due and stamps `sending_started_at`."""
    if now is None:
        return one(OutboxItem, await db.fetchrow(_CLAIM, organization_id, wa_message_id))
    return one(OutboxItem, await db.fetchrow(_CLAIM_AT, organization_id, wa_message_id, now))


async def next_due_priority(db: Executor, *, organization_id: uuid.UUID, now: datetime
                            ) -> int | None:
    """The priority of the message `claim_next` would take at `now`; None when nothing is due."""
    return await db.fetchval(
        f"SELECT priority FROM outbox WHERE id = ({_next_queued('$2::timestamptz')})",
        organization_id, now)


async def next_due_at(db: Executor, *, organization_id: uuid.UUID) -> datetime | None:
    """When the earliest queued message becomes due (maybe already past); None for none."""
    return await db.fetchval(
        "SELECT min(not_before) FROM outbox WHERE organization_id = $1 AND status = 'QUEUED'",
        organization_id)


async def list_in_flight(db: Executor, *, organization_id: uuid.UUID) -> list[OutboxItem]:
    """Messages left SENDING (by a crash): check their WhatsApp id in the chat before resending."""
    rows = await db.fetch(
        f"""SELECT {_COLS} FROM outbox WHERE organization_id = $1 AND status = 'SENDING'
            ORDER BY sending_started_at""", organization_id)
    return many(OutboxItem, rows)


def _transition(allowed_from: str, assignments: str) -> str:
    """An UPDATE of one item ($1) whose status is in `allowed_from`, writing an event ($2 is its
    detail) when the status changed."""
    return f"""
WITH old AS (
    SELECT id, status AS old_status FROM outbox
    WHERE id = $1 AND status IN ({allowed_from}) FOR UPDATE
), changed AS (
    UPDATE outbox o SET {assignments} FROM old WHERE o.id = old.id
    RETURNING {_O_COLS}, old.old_status
), event AS (
    INSERT INTO outbox_events (outbox_id, status, detail)
    SELECT id, status, $2 FROM changed WHERE status <> old_status
)
SELECT {_COLS} FROM changed
"""


# An ack can overtake the end of the send call: mark_sent then leaves the later status alone.
_MARK_SENT = _transition(
    "'SENDING', 'SENT', 'DELIVERED', 'READ'",
    """status = CASE WHEN o.status = 'SENDING' THEN 'SENT' ELSE o.status END,
       sent_at = coalesce(o.sent_at, $4::timestamptz, now()),
       message_id = coalesce($3, o.message_id), last_error = NULL""")
# A send that WhatsApp refused (ack -1) left its id in the chat: the next attempt needs a new one.
# FAILED too: that ack may have been applied (by whoever follows acks) before the retry.
# An attempt cut short (the browser went away, the daemon died) is not counted against the
# message: the claim's count is taken back.
_RETRY = _transition(
    "'SENDING', 'FAILED'",
    """status = 'QUEUED', last_error = $2, not_before = $3,
       wa_message_id = CASE WHEN $4 THEN NULL ELSE o.wa_message_id END,
       attempts = CASE WHEN $5 THEN o.attempts ELSE greatest(o.attempts - 1, 0) END""")
_MARK_FAILED = _transition(
    "'QUEUED', 'SENDING', 'FAILED'",
    "status = 'FAILED', last_error = $2, fail_reason = coalesce($3, o.fail_reason)")
_CANCEL = _transition("'QUEUED'", "status = 'CANCELLED'")


async def mark_sent(db: Executor, *, outbox_id: uuid.UUID, message_id: uuid.UUID | None = None,
                    at: datetime | None = None) -> OutboxItem | None:
    """The send went through; `message_id` is the stored `messages` row, `at` the time it counts
    as sent in the rate windows (default: the database's clock; an earlier ack's time is kept).
    None unless the item was being sent (or already acked)."""
    return one(OutboxItem, await db.fetchrow(_MARK_SENT, outbox_id, None, message_id, at))


async def retry(db: Executor, *, outbox_id: uuid.UUID, error: str, not_before: datetime,
                new_wa_message_id: bool = False, count_attempt: bool = True
                ) -> OutboxItem | None:
    """The send failed and will be tried again at `not_before`; with `new_wa_message_id` the
    next claim gives it a fresh WhatsApp id (the old one is spent: WhatsApp refused it); without
    `count_attempt` the attempt does not count (it was interrupted, not refused). None unless it
    was SENDING (or FAILED by an ack -1 meanwhile)."""
    return one(OutboxItem, await db.fetchrow(_RETRY, outbox_id, error, not_before,
                                             new_wa_message_id, count_attempt))


async def mark_failed(db: Executor, *, outbox_id: uuid.UUID, error: str,
                      reason: str | None = None) -> OutboxItem | None:
    """Give up on a queued or sending message, keeping the error (which also replaces the
    error of a message an ack -1 already marked FAILED) and why as a code (`reason`, e.g.
    `NOT_ON_WHATSAPP`)."""
    return one(OutboxItem, await db.fetchrow(_MARK_FAILED, outbox_id, error, reason))


async def cancel(db: Executor, *, outbox_id: uuid.UUID) -> OutboxItem | None:
    """Cancel a message that is still queued. None when it is not queued (any more)."""
    return one(OutboxItem, await db.fetchrow(_CANCEL, outbox_id, None))


_EXPIRE = f"""
WITH old AS (
    SELECT id FROM outbox
    WHERE organization_id = $1 AND status = 'QUEUED' AND expires_at <= $2
    ORDER BY expires_at LIMIT $3 FOR UPDATE SKIP LOCKED
), changed AS (
    UPDATE outbox o SET status = 'EXPIRED',
                        last_error = 'not sent before it expired at ' || o.expires_at
    FROM old WHERE o.id = old.id
    RETURNING {_O_COLS}
), event AS (
    INSERT INTO outbox_events (outbox_id, status, detail)
    SELECT id, status, 'expired' FROM changed
)
SELECT {_COLS} FROM changed
"""


async def expire_due(db: Executor, *, organization_id: uuid.UUID, now: datetime,
                     limit: int = 100) -> list[OutboxItem]:
    """Mark at most `limit` of the organization's queued messages whose expiry is at or before
    `now` `EXPIRED` (a message being sent is left alone); answers them."""
    return many(OutboxItem, await db.fetch(_EXPIRE, organization_id, now, limit))


async def next_expiry(db: Executor, *, organization_id: uuid.UUID) -> datetime | None:
    """The earliest expiry of the organization's queued messages (None: none expires)."""
    return await db.fetchval(
        """SELECT min(expires_at) FROM outbox
           WHERE organization_id = $1 AND status = 'QUEUED' AND expires_at IS NOT NULL""",
        organization_id)


_ACK = f"""
WITH old AS (
    SELECT id, status AS old_status FROM outbox
    WHERE organization_id = $1 AND wa_message_id = $2 FOR UPDATE
), changed AS (
    UPDATE outbox o SET
        status = $3,
        sent_at = CASE WHEN $3 <> 'FAILED' THEN coalesce(o.sent_at, now()) ELSE o.sent_at END,
        delivered_at = CASE WHEN $3 IN ('DELIVERED', 'READ') THEN coalesce(o.delivered_at, now())
                            ELSE o.delivered_at END,
        read_at = CASE WHEN $3 = 'READ' THEN coalesce(o.read_at, now()) ELSE o.read_at END,
        last_error = CASE WHEN $3 = 'FAILED' THEN 'WhatsApp reported an error' ELSE o.last_error END
    FROM old
    WHERE o.id = old.id AND (
        ($3 = 'FAILED' AND old.old_status IN ('SENDING', 'SENT'))
        OR array_position(ARRAY['SENDING', 'SENT', 'DELIVERED', 'READ'], $3)
           > array_position(ARRAY['SENDING', 'SENT', 'DELIVERED', 'READ'], old.old_status)
        OR (old.old_status = 'FAILED' AND $3 IN ('SENT', 'DELIVERED', 'READ')))
    RETURNING {_O_COLS}
), event AS (
    INSERT INTO outbox_events (outbox_id, status, detail) SELECT id, status, 'ack' FROM changed
)
SELECT {_COLS} FROM changed
"""


async def apply_ack(db: Executor, *, organization_id: uuid.UUID, wa_message_id: str,
                    status: OutboxStatus) -> OutboxItem | None:
    """Apply WhatsApp's ack (SENT, DELIVERED, READ or FAILED) to the queued item with that
    WhatsApp id. Statuses only move forward; answers the item when it changed, else None."""
    return one(OutboxItem, await db.fetchrow(_ACK, organization_id, wa_message_id, status))


async def count_sent_since(db: Executor, *, organization_id: uuid.UUID, since: datetime) -> int:
    """How many messages the organization actually sent at or after `since` (rate windows)."""
    return int(await db.fetchval(
        "SELECT count(*) FROM outbox WHERE organization_id = $1 AND sent_at >= $2",
        organization_id, since))


async def oldest_sent_since(db: Executor, *, organization_id: uuid.UUID, since: datetime
                            ) -> datetime | None:
    """The earliest send at or after `since`: a window's count drops when it leaves the window."""
    return await db.fetchval(
        "SELECT min(sent_at) FROM outbox WHERE organization_id = $1 AND sent_at >= $2",
        organization_id, since)


async def sent_times_since(db: Executor, *, organization_id: uuid.UUID, since: datetime
                           ) -> list[datetime]:
    """When each message the organization sent at or after `since` counts as sent, oldest first:
    what the rate windows are computed from."""
    rows = await db.fetch(
        """SELECT sent_at FROM outbox WHERE organization_id = $1 AND sent_at >= $2
           ORDER BY sent_at""", organization_id, since)
    return [r["sent_at"] for r in rows]


async def recent_results(db: Executor, *, organization_id: uuid.UUID, limit: int = 100,
                         since: datetime | None = None, ignored: Sequence[str] = ()
                         ) -> tuple[int, int]:
    """Of the organization's last `limit` finished sends (sent or failed for good, finished at or
    after `since` when given): (how many failed, how many there are). For the circuit breaker.
    Failures whose reason is in `ignored` are left out of both counts (they say nothing about
    the account: a number without WhatsApp, a page error)."""
    row = await db.fetchrow(
        """SELECT count(*) FILTER (WHERE status = 'FAILED') AS failed, count(*) AS total
           FROM (SELECT status FROM outbox
                 WHERE organization_id = $1
                   AND status IN ('SENT', 'DELIVERED', 'READ', 'FAILED')
                   AND NOT (status = 'FAILED' AND coalesce(fail_reason, '') = ANY($4::text[]))
                   AND coalesce(sent_at, updated_at) >= coalesce($3::timestamptz, '-infinity')
                 ORDER BY coalesce(sent_at, updated_at) DESC LIMIT $2) latest""",
        organization_id, limit, since, list(ignored))
    return (int(row["failed"]), int(row["total"])) if row is not None else (0, 0)


async def count_pending(db: Executor, *, organization_id: uuid.UUID) -> int:
    """Messages queued or being sent: they will count against the limits once sent. Read from
    the count the triggers keep (`outbox_pending`, migration 0014)."""
    return int(await db.fetchval(
        "SELECT coalesce((SELECT pending FROM outbox_pending WHERE organization_id = $1), 0)",
        organization_id))


async def get(db: Executor, *, outbox_id: uuid.UUID) -> OutboxItem | None:
    return one(OutboxItem, await db.fetchrow(f"SELECT {_COLS} FROM outbox WHERE id = $1",
                                             outbox_id))


async def get_with_events(db: Executor, *, outbox_id: uuid.UUID
                          ) -> tuple[OutboxItem, list[OutboxEvent]] | None:
    """The item and its status history, oldest event first."""
    item = await get(db, outbox_id=outbox_id)
    if item is None:
        return None
    events = many(OutboxEvent, await db.fetch(
        f"SELECT {_EVENT_COLS} FROM outbox_events WHERE outbox_id = $1 ORDER BY id", outbox_id))
    return item, events


async def senders(db: Executor, *, organization_id: uuid.UUID, wa_ids: Sequence[str]
                  ) -> dict[str, tuple[OutboxSender, str | None]]:
    """For own messages wad sent from its queue: WhatsApp id (as queued: serialized or bare) ->
    (sender, agent name). Messages absent from the queue were typed on the phone."""
    if not wa_ids:
        return {}
    rows = await db.fetch(
        """SELECT wa_message_id, sender, agent_name FROM outbox
           WHERE organization_id = $1 AND wa_message_id = ANY($2::text[])""",
        organization_id, list(wa_ids))
    return {r["wa_message_id"]: (r["sender"], r["agent_name"]) for r in rows}


async def by_idempotency_key(db: Executor, *, organization_id: uuid.UUID, key: str
                             ) -> OutboxItem | None:
    """The organization's message queued with this idempotency key."""
    return one(OutboxItem, await db.fetchrow(
        f"SELECT {_COLS} FROM outbox WHERE organization_id = $1 AND idempotency_key = $2",
        organization_id, key))


async def used_idempotency_keys(db: Executor, *, organization_id: uuid.UUID, keys: Sequence[str]
                                ) -> set[str]:
    """Which of `keys` earlier messages of the organization already carry."""
    if not keys:
        return set()
    rows = await db.fetch(
        """SELECT idempotency_key FROM outbox
           WHERE organization_id = $1 AND idempotency_key = ANY($2::text[])""",
        organization_id, list(keys))
    return {r["idempotency_key"] for r in rows}


async def count_queued_and_sending(db: Executor, *, organization_id: uuid.UUID
                                   ) -> dict[OutboxStatus, int]:
    """How many of the organization's messages are `QUEUED` and `SENDING` (absent: none)."""
    rows = await db.fetch(
        """SELECT status, count(*) AS n FROM outbox
           WHERE organization_id = $1 AND status IN ('QUEUED', 'SENDING') GROUP BY status""",
        organization_id)
    return {r["status"]: int(r["n"]) for r in rows}


async def latest_event_id(db: Executor) -> int:
    """The id of the newest status change of any message (0 when there is none)."""
    return int(await db.fetchval("SELECT coalesce(max(id), 0) FROM outbox_events"))


class StatusChange(msgspec.Struct, frozen=True, kw_only=True):
    """A status change of a queued message, with the message's times, for send latencies."""

    id: int
    status: OutboxStatus
    organization_id: uuid.UUID
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    """Delivered, or read when the delivery ack never came."""
    was_sent: bool
    """An earlier change had already made the message sent (or further)."""
    was_delivered: bool
    """An earlier change had already made it delivered (or read)."""


async def status_changes_after(db: Executor, *, after: int, limit: int) -> list[StatusChange]:
    """Every message's status changes with an id above `after`, in id order, at most `limit`."""
    return many(StatusChange, await db.fetch(
        """SELECT e.id, e.status, o.organization_id, o.created_at, o.sent_at,
                  coalesce(o.delivered_at, o.read_at) AS delivered_at,
                  EXISTS (SELECT 1 FROM outbox_events p WHERE p.outbox_id = e.outbox_id
                          AND p.id < e.id AND p.status IN ('SENT', 'DELIVERED', 'READ'))
                      AS was_sent,
                  EXISTS (SELECT 1 FROM outbox_events p WHERE p.outbox_id = e.outbox_id
                          AND p.id < e.id AND p.status IN ('DELIVERED', 'READ'))
                      AS was_delivered
           FROM outbox_events e JOIN outbox o ON o.id = e.outbox_id
           WHERE e.id > $1 ORDER BY e.id LIMIT $2""", after, limit))
