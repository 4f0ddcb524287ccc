"""Conversations: at most one active WhatsApp conversation per client."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
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


async def active_for_many(db: Executor, *, organization_id: uuid.UUID,
                          chats: Sequence[tuple[uuid.UUID, str | None]]) -> dict[uuid.UUID, uuid.UUID]:
    """`get_or_create_active` for many clients at once ((client id, WhatsApp chat id) each; of
    a client given twice the first chat counts). Answers client id -> active conversation id."""
    if not chats:
        return {}
    chats = list(dict(reversed(chats)).items())
    ids = [c for c, _ in chats]
    # One statement: the conversations that exist (as its snapshot sees them) and those it
    # makes. A conversation made meanwhile by another transaction is in neither: then the two
    # statements below, the second of which sees it.
    rows = await db.fetch(
        """WITH u AS (SELECT * FROM unnest($2::uuid[], $3::text[]) AS u(client_id, wa_chat_id)),
                found AS (SELECT c.id, c.client_id FROM conversations c JOIN u USING (client_id)
                          WHERE c.status = 'ACTIVE' AND c.channel = 'WHATSAPP'),
                made AS (INSERT INTO conversations (organization_id, client_id, wa_chat_id)
                         SELECT $1, u.client_id, u.wa_chat_id FROM u
                         WHERE u.client_id NOT IN (SELECT client_id FROM found)
                         ON CONFLICT (client_id) WHERE status = 'ACTIVE' AND channel = 'WHATSAPP'
                         DO NOTHING RETURNING id, client_id)
           SELECT id, client_id FROM found UNION ALL SELECT id, client_id FROM made""",
        organization_id, ids, [w for _, w in chats])
    answered = {r["client_id"]: r["id"] for r in rows}
    if len(answered) == len(ids):
        return answered
    await db.execute(
        """INSERT INTO conversations (organization_id, client_id, wa_chat_id)
           SELECT $1, u.client_id, u.wa_chat_id
           FROM unnest($2::uuid[], $3::text[]) AS u(client_id, wa_chat_id)
           ON CONFLICT (client_id) WHERE status = 'ACTIVE' AND channel = 'WHATSAPP' DO NOTHING""",
        organization_id, ids, [w for _, w in chats])
    rows = await db.fetch(
        """SELECT id, client_id FROM conversations
           WHERE client_id = ANY($1::uuid[]) AND status = 'ACTIVE' AND channel = 'WHATSAPP'""",
        ids)
    return {r["client_id"]: r["id"] for r in rows}


async def touch_many(db: Executor, *, latest: Sequence[tuple[uuid.UUID, datetime]]) -> None:
    """`touch` for many conversations at once ((conversation id, time) each)."""
    if latest:
        await db.execute(
            """UPDATE conversations c SET last_message_at = greatest(c.last_message_at, u.at)
               FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at) WHERE c.id = u.id""",
            [c for c, _ in latest], [at for _, at in latest])
