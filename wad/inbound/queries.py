"""The few statements the inbound pipeline needs that the repositories do not offer (yet).

Plain SQL with `$n` parameters and keyword-only functions, like `wad.db.repo`; candidates to
move there.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from wad.db.models import Client, Message, MessageStatus, OutboxSender
from wad.db.pool import Executor
from wad.db.repo import columns, one

# Errors that mean "the database is not there" (server down, restarting, connections cut), as
# opposed to "this statement is wrong": events wait in the spool for the first kind only.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, no socket, timed out (TimeoutError is an OSError)
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash, cannot connect now
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.InterfaceError,  # connection closed underneath, pool closing
)


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc` (or every error of a group) says the database cannot be reached now."""
    if isinstance(exc, BaseExceptionGroup):
        return all(database_unavailable(e) for e in exc.exceptions)
    return isinstance(exc, _UNAVAILABLE)


_CLIENT_COLS = columns(Client)
_MESSAGE_COLS = columns(Message)


async def merge_client_metadata(db: Executor, *, client_id: uuid.UUID, metadata: dict[str, Any]
                                ) -> Client | None:
    """Add or replace keys of the client's metadata (other keys are kept)."""
    row = await db.fetchrow(
        f"""UPDATE clients SET metadata = metadata || $2::jsonb
            WHERE id = $1 AND NOT (metadata @> $2::jsonb) RETURNING {_CLIENT_COLS}""",
        client_id, metadata)
    if row is None:
        return one(Client, await db.fetchrow(
            f"SELECT {_CLIENT_COLS} FROM clients WHERE id = $1", client_id))
    return one(Client, row)


async def outbox_senders(db: Executor, *, organization_id: uuid.UUID, wa_ids: Sequence[str]
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


async def edit_caption(db: Executor, *, organization_id: uuid.UUID, wa_message_id: str,
                       caption: str | None, edited_at: Any) -> Message | None:
    """Replace the caption of an edited media message. An older edit arriving late is ignored."""
    row = await db.fetchrow(
        f"""UPDATE messages SET caption = $3, edited_at = $4
            WHERE organization_id = $1 AND wa_message_id = $2
              AND (edited_at IS NULL OR edited_at <= $4)
            RETURNING {_MESSAGE_COLS}""",
        organization_id, wa_message_id, caption, edited_at)
    return one(Message, row)


async def status_of(db: Executor, *, organization_id: uuid.UUID, wa_message_id: str
                    ) -> MessageStatus | None:
    """A stored message's status (before an ack moves it), None when it is not stored."""
    value = await db.fetchval(
        "SELECT status FROM messages WHERE organization_id = $1 AND wa_message_id = $2",
        organization_id, wa_message_id)
    return value  # type: ignore[no-any-return]


async def has_later_message(db: Executor, *, message: Message) -> bool:
    """Whether the message's chat holds a later message (by WhatsApp's time, then by arrival),
    processed or not: an agent answers only the latest one."""
    value = await db.fetchval(
        """SELECT EXISTS (SELECT 1 FROM messages
                          WHERE organization_id = $1 AND wa_chat_id = $2 AND id <> $3
                            AND (sent_at > $4 OR (sent_at = $4 AND created_at > $5)))""",
        message.organization_id, message.wa_chat_id, message.id, message.sent_at,
        message.created_at)
    return bool(value)
