"""Conversations: at most one active WhatsApp conversation per client."""

from __future__ import annotations

import uuid
from datetime import datetime

from wad.db.models import Conversation
from wad.db.pool import Executor
from wad.db.repo import columns, one, returned

_COLS = columns(Conversation)


async def get_or_create_active(db: Executor, *, organization_id: uuid.UUID, client_id: uuid.UUID,
                               wa_chat_id: str | None = None) -> tuple[Conversation, bool]:
    """The client's active WhatsApp conversation, created when there is none. Answers
    (conversation, created). Safe against a concurrent caller (the partial unique index decides)."""
    row = await db.fetchrow(
        f"""INSERT INTO conversations (organization_id, client_id, wa_chat_id)
            VALUES ($1, $2, $3)
            ON CONFLICT (client_id) WHERE status = 'ACTIVE' AND channel = 'WHATSAPP' DO NOTHING
            RETURNING {_COLS}""",
        organization_id, client_id, wa_chat_id)
    if row is not None:
        return returned(Conversation, row), True
    row = await db.fetchrow(
        f"""SELECT {_COLS} FROM conversations
            WHERE client_id = $1 AND status = 'ACTIVE' AND channel = 'WHATSAPP'""", client_id)
    return returned(Conversation, row), False


async def get(db: Executor, *, conversation_id: uuid.UUID) -> Conversation | None:
    row = await db.fetchrow(f"SELECT {_COLS} FROM conversations WHERE id = $1", conversation_id)
    return one(Conversation, row)


async def touch(db: Executor, *, conversation_id: uuid.UUID, at: datetime) -> None:
    """Note a message at `at`: `last_message_at` only moves forward."""
    await db.execute(
        "UPDATE conversations SET last_message_at = greatest(last_message_at, $2) WHERE id = $1",
        conversation_id, at)


async def close(db: Executor, *, conversation_id: uuid.UUID) -> bool:
    """Close an active conversation; True when it was active."""
    done = await db.fetchval(
        "UPDATE conversations SET status = 'CLOSED' WHERE id = $1 AND status = 'ACTIVE' "
        "RETURNING true", conversation_id)
    return bool(done)
