"""The change feed's entries for sends (`wad.db.repo.changes`): every one written with the
connection of the transaction that makes the change it describes.

Each entry about a message carries `sendId`, the id the `202` answer gave (the queue item's),
and `to`. Kinds and their `data` (camelCase, ids as strings, times ISO 8601):

- `message.sent`: `sendId`, `to`, `messageId` (the stored message), `waMessageId`,
  `conversationId`, `clientId`, `attempts`;
- `send.failed`: `sendId`, `to`, `reason` (a `FailReason` code), `error`, `attempts`;
- `send.cancelled`: `sendId`, `to`;
- `send.expired`: `sendId`, `to`, `expiresAt`;
- `sending.paused`: `reason`; `sending.resumed`: `previousReason`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from wad.bus import OutboxStatus
from wad.db.models import OutboxItem
from wad.db.pool import Executor
from wad.db.repo import changes


def _id(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _send(item: OutboxItem, **extra: Any) -> dict[str, Any]:
    return {"sendId": str(item.id), "to": item.to_phone, **extra}


async def sent(tx: Executor, item: OutboxItem, *, wa_message_id: str) -> int:
    return await changes.record(tx, organization_id=item.organization_id, kind="message.sent",
                                data=_send(item, messageId=_id(item.message_id),
                                           waMessageId=wa_message_id,
                                           conversationId=_id(item.conversation_id),
                                           clientId=_id(item.client_id),
                                           attempts=item.attempts))


async def failed(tx: Executor, item: OutboxItem, *, reason: str) -> int:
    return await changes.record(tx, organization_id=item.organization_id, kind="send.failed",
                                data=_send(item, reason=reason, error=item.last_error,
                                           attempts=item.attempts))


async def cancelled(tx: Executor, item: OutboxItem) -> int:
    return await changes.record(tx, organization_id=item.organization_id,
                                kind="send.cancelled", data=_send(item))


async def expired(tx: Executor, item: OutboxItem) -> int:
    return await changes.record(tx, organization_id=item.organization_id, kind="send.expired",
                                data=_send(item, expiresAt=_time(item.expires_at)))


async def paused(tx: Executor, organization_id: uuid.UUID, *, reason: str) -> int:
    return await changes.record(tx, organization_id=organization_id, kind="sending.paused",
                                data={"reason": reason})


async def resumed(tx: Executor, organization_id: uuid.UUID, *,
                  previous_reason: str | None) -> int:
    return await changes.record(tx, organization_id=organization_id, kind="sending.resumed",
                                data={"previousReason": previous_reason})


def outbox_status(item: OutboxItem, status: str | None = None) -> OutboxStatus:
    """The `outbox.status` event of a queue item (its `id` is the send's id)."""
    return OutboxStatus(org_id=item.organization_id, id=str(item.id),
                        status=status or item.status, attempts=item.attempts,
                        wa_message_id=item.wa_message_id, error=item.last_error,
                        reason=item.fail_reason)
