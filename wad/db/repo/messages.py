"""Messages: stored first, keyed by (organization, WhatsApp message id), processed afterwards."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec

from wad.db.models import ChatLatest, Message, MessageStatus, NewMessage, ProcessingState
from wad.db.pool import Connection, Executor
from wad.db.repo import columns, many, one, returned

_COLS = columns(Message)
# The columns a NewMessage fills, with their SQL types (for the bulk insert's arrays).
_NEW_TYPES = {
    "organization_id": "uuid", "wa_message_id": "text", "wa_chat_id": "text",
    "direction": "text", "sender": "text", "sent_at": "timestamptz", "status": "text",
    "type": "text", "body": "text", "caption": "text", "media": "jsonb",
    "conversation_id": "uuid", "language": "text", "processing_state": "text",
}
if set(_NEW_TYPES) != set(NewMessage.__struct_fields__):
    raise RuntimeError("messages._NEW_TYPES is out of step with NewMessage")
_NEW_NAMES = ", ".join(_NEW_TYPES) + ", content_key"

# Direction marks and isolates that exports add around text, left out of the content key.
_MARKS = str.maketrans("", "", "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068"
                       "\u2069\ufeff")


def content_key(message: NewMessage) -> str:
    """What makes a message the same whichever way it was read (live, with WhatsApp's id, or
    from an exported file, without one): the minute of its time (exports show minutes), its
    direction, and its content: the text normalised (marks, case, spacing), or only the kind
    for media (exports often omit the file and its caption), locations and calls. Stored with
    every message; several messages may share one (two "ok"s in a minute), so the importer
    counts them (`wad.importer.duplicates`)."""
    when = message.sent_at if message.sent_at.tzinfo else message.sent_at.replace(tzinfo=UTC)
    minute = int(when.timestamp()) // 60
    if message.type == "text":
        content = "t:" + " ".join((message.body or "").translate(_MARKS).casefold().split())
    elif message.type in ("location", "call"):
        content = message.type
    else:
        content = "media"
    seed = f"{minute}\x1f{message.direction}\x1f{content}"
    return hashlib.sha256(seed.encode("utf-8")).hexdigest()[:24]


_INSERT_ONE = f"""
INSERT INTO messages ({_NEW_NAMES})
VALUES ({", ".join(f"${i}" for i in range(1, len(_NEW_TYPES) + 2))})
ON CONFLICT (organization_id, wa_message_id) DO NOTHING
RETURNING {_COLS}
"""

# One statement for a whole batch: each column travels as one array parameter (jsonb as text,
# decoded by the cast), and ON CONFLICT skips what is stored already, duplicates within the
# batch included. It runs on any Executor, so it joins the caller's transaction.
_INSERT_MANY = f"""
INSERT INTO messages ({_NEW_NAMES})
SELECT {", ".join(f"u.{n}::jsonb" if t == "jsonb" else f"u.{n}" for n, t in _NEW_TYPES.items())},
       u.content_key
FROM unnest({", ".join(
    f"${i}::text[]" if t == "jsonb" else f"${i}::{t}[]"
    for i, t in enumerate(_NEW_TYPES.values(), start=1))}, ${len(_NEW_TYPES) + 1}::text[])
    AS u({_NEW_NAMES})
ON CONFLICT (organization_id, wa_message_id) DO NOTHING
RETURNING {_COLS}
"""


async def insert_if_absent(db: Executor, *, message: NewMessage) -> tuple[Message, bool]:
    """Store the message unless one with its WhatsApp id is already stored in its organization.
    Answers (the stored row, whether it is new)."""
    row = await db.fetchrow(_INSERT_ONE, *(getattr(message, n) for n in _NEW_TYPES),
                            content_key(message))
    if row is not None:
        return returned(Message, row), True
    row = await db.fetchrow(
        f"SELECT {_COLS} FROM messages WHERE organization_id = $1 AND wa_message_id = $2",
        message.organization_id, message.wa_message_id)
    return returned(Message, row), False


def _when(message: NewMessage) -> datetime:
    """The message's time, naive times read as UTC (as the database reads them)."""
    at = message.sent_at
    return at if at.tzinfo else at.replace(tzinfo=UTC)


async def insert_many(db: Executor, *, messages: Sequence[NewMessage]) -> list[Message]:
    """Store a batch (for imports and catch-up), skipping messages already stored. Answers the
    rows that are new, in no particular order."""
    if not messages:
        return []
    # Rows get their `created_at` one by one, in this order: WhatsApp's, then the batch's.
    messages = sorted(messages, key=_when)
    arrays: list[list[object]] = []
    for name, sql_type in _NEW_TYPES.items():
        values = [getattr(m, name) for m in messages]
        if sql_type == "jsonb":
            values = [None if v is None else json.dumps(v) for v in values]
        arrays.append(values)
    arrays.append([content_key(m) for m in messages])
    return many(Message, await db.fetch(_INSERT_MANY, *arrays))


async def stored_in_chat(db: Executor, *, organization_id: uuid.UUID, wa_chat_id: str
                         ) -> list[tuple[str, str | None]]:
    """(WhatsApp id, content key) of every message stored for the chat: what an import checks
    its messages against."""
    rows = await db.fetch(
        "SELECT wa_message_id, content_key FROM messages "
        "WHERE organization_id = $1 AND wa_chat_id = $2", organization_id, wa_chat_id)
    return [(r["wa_message_id"], r["content_key"]) for r in rows]


async def get(db: Executor, *, message_id: uuid.UUID) -> Message | None:
    return one(Message, await db.fetchrow(f"SELECT {_COLS} FROM messages WHERE id = $1",
                                          message_id))


async def get_by_wa_id(db: Executor, *, organization_id: uuid.UUID, wa_message_id: str
                       ) -> Message | None:
    row = await db.fetchrow(
        f"SELECT {_COLS} FROM messages WHERE organization_id = $1 AND wa_message_id = $2",
        organization_id, wa_message_id)
    return one(Message, row)


async def set_processing_state(
    db: Executor, *, message_id: uuid.UUID, state: ProcessingState, error: str | None = None,
    conversation_id: uuid.UUID | None = None, language: str | None = None,
) -> Message | None:
    """Record the inbound pipeline's progress on a message: its state and error (an attempt is
    counted for every state but PENDING), and, when given, its conversation and language."""
    row = await db.fetchrow(
        f"""UPDATE messages SET
                processing_state = $2,
                processing_error = $3,
                processing_attempts = processing_attempts + CASE WHEN $2 = 'PENDING' THEN 0
                                                                 ELSE 1 END,
                conversation_id = coalesce($4, conversation_id),
                language = coalesce($5, language)
            WHERE id = $1 RETURNING {_COLS}""",
        message_id, state, error, conversation_id, language)
    return one(Message, row)


async def record_processing_failure(db: Executor, *, message_id: uuid.UUID, error: str,
                                    max_attempts: int) -> Message | None:
    """Count a failed processing attempt of a `PENDING` message with its error; the attempt
    that reaches `max_attempts` parks it (`FAILED`). Answers the row (None when it was not
    pending any more)."""
    row = await db.fetchrow(
        f"""UPDATE messages SET
                processing_attempts = processing_attempts + 1,
                processing_error = $2,
                processing_state = CASE WHEN processing_attempts + 1 >= $3 THEN 'FAILED'
                                        ELSE 'PENDING' END
            WHERE id = $1 AND processing_state = 'PENDING' RETURNING {_COLS}""",
        message_id, error, max_attempts)
    return one(Message, row)


class ParkedSummary(msgspec.Struct, frozen=True, kw_only=True):
    """An organization's parked messages: how many, and the latest one's error."""

    count: int
    last_error: str | None
    last_at: datetime | None


async def parked_summary(db: Executor, *, organization_id: uuid.UUID) -> ParkedSummary:
    """How many of the organization's messages are parked (processing failed repeatedly)."""
    row = await db.fetchrow(
        """SELECT (SELECT count(*) FROM messages
                   WHERE organization_id = $1 AND processing_state = 'FAILED')::int AS count,
                  latest.processing_error AS last_error, latest.created_at AS last_at
           FROM (SELECT 1) AS one LEFT JOIN LATERAL (
               SELECT processing_error, created_at FROM messages
               WHERE organization_id = $1 AND processing_state = 'FAILED'
               ORDER BY created_at DESC LIMIT 1) AS latest ON true""",
        organization_id)
    assert row is not None
    return ParkedSummary(count=row["count"], last_error=row["last_error"],
                         last_at=row["last_at"])


# Acks may arrive late or twice: a status only moves forward along this order. FAILED may only
# replace PENDING; a FAILED message may still be acked later (the send did get through);
# REVOKED replaces anything and is final.
_PROGRESS = "ARRAY['RECEIVED', 'PENDING', 'SENT', 'DELIVERED', 'READ', 'PLAYED']"


async def update_status(db: Executor, *, organization_id: uuid.UUID, wa_message_id: str,
                        status: MessageStatus) -> Message | None:
    """Apply an ack (or a revoke). Answers the updated row, or None when there is no such message
    or the status would not move forward."""
    row = await db.fetchrow(
        f"""UPDATE messages SET status = $3
            WHERE organization_id = $1 AND wa_message_id = $2
              AND status <> 'REVOKED' AND status <> $3
              AND ($3 = 'REVOKED'
                   OR ($3 = 'FAILED' AND status = 'PENDING')
                   OR (status = 'FAILED' AND $3 IN ('SENT', 'DELIVERED', 'READ', 'PLAYED'))
                   OR array_position({_PROGRESS}, $3) > array_position({_PROGRESS}, status))
            RETURNING {_COLS}""",
        organization_id, wa_message_id, status)
    return one(Message, row)


async def _edit(db: Executor, column: str, *, organization_id: uuid.UUID, wa_message_id: str,
                text: str | None, edited_at: datetime) -> Message | None:
    row = await db.fetchrow(
        f"""UPDATE messages SET {column} = $3, edited_at = $4
            WHERE organization_id = $1 AND wa_message_id = $2
              AND (edited_at IS NULL OR edited_at <= $4)
            RETURNING {_COLS}""",
        organization_id, wa_message_id, text, edited_at)
    return one(Message, row)


async def edit(db: Executor, *, organization_id: uuid.UUID, wa_message_id: str, body: str,
               edited_at: datetime) -> Message | None:
    """Replace the text of an edited message. An older edit arriving late is ignored."""
    return await _edit(db, "body", organization_id=organization_id, wa_message_id=wa_message_id,
                       text=body, edited_at=edited_at)


async def edit_caption(db: Executor, *, organization_id: uuid.UUID, wa_message_id: str,
                       caption: str | None, edited_at: datetime) -> Message | None:
    """Replace the caption of an edited media message. An older edit arriving late is ignored."""
    return await _edit(db, "caption", organization_id=organization_id,
                       wa_message_id=wa_message_id, text=caption, edited_at=edited_at)


async def status_of(db: Executor, *, organization_id: uuid.UUID, wa_message_id: str
                    ) -> MessageStatus | None:
    """A stored message's status (before an ack moves it), None when it is not stored."""
    value = await db.fetchval(
        "SELECT status FROM messages WHERE organization_id = $1 AND wa_message_id = $2",
        organization_id, wa_message_id)
    return value  # type: ignore[no-any-return]


async def revoke(db: Executor, *, organization_id: uuid.UUID, wa_message_id: str
                 ) -> Message | None:
    """Mark a message deleted for everyone (its text is kept for the CRM's record)."""
    return await update_status(db, organization_id=organization_id, wa_message_id=wa_message_id,
                               status="REVOKED")


async def latest_per_chat(db: Executor, *, organization_id: uuid.UUID) -> dict[str, ChatLatest]:
    """For each chat, the latest stored message (by WhatsApp's time): where catch-up resumes."""
    rows = await db.fetch(
        """SELECT DISTINCT ON (wa_chat_id) wa_chat_id, wa_message_id, sent_at FROM messages
           WHERE organization_id = $1 ORDER BY wa_chat_id, sent_at DESC, wa_message_id DESC""",
        organization_id)
    return {r["wa_chat_id"]: returned(ChatLatest, r) for r in rows}


async def latest_in_chat(db: Executor, *, organization_id: uuid.UUID, wa_chat_id: str
                         ) -> Message | None:
    """The chat's latest stored message (by WhatsApp's time)."""
    row = await db.fetchrow(
        f"""SELECT {_COLS} FROM messages WHERE organization_id = $1 AND wa_chat_id = $2
            ORDER BY sent_at DESC LIMIT 1""",
        organization_id, wa_chat_id)
    return one(Message, row)


async def list_unprocessed(db: Executor, *, organization_id: uuid.UUID, limit: int = 100
                           ) -> list[Message]:
    """Messages the inbound pipeline has not processed yet, in the order they were stored."""
    rows = await db.fetch(
        f"""SELECT {_COLS} FROM messages
            WHERE organization_id = $1 AND processing_state = 'PENDING'
            ORDER BY created_at, sent_at LIMIT $2""",
        organization_id, limit)
    return many(Message, rows)


async def list_for_conversation(db: Executor, *, conversation_id: uuid.UUID, limit: int = 50
                                ) -> list[Message]:
    """The conversation's latest `limit` messages, oldest first (for language and status
    detection over the whole conversation)."""
    rows = await db.fetch(
        f"""SELECT * FROM (
                SELECT {_COLS} FROM messages WHERE conversation_id = $1
                ORDER BY sent_at DESC LIMIT $2) latest
            ORDER BY sent_at""",
        conversation_id, limit)
    return many(Message, rows)


async def has_later(db: Executor, *, message: Message) -> bool:
    """Whether the message's chat holds a later message (by WhatsApp's time, then by arrival),
    processed or not: an agent answers only the latest one."""
    value = await db.fetchval(
        """SELECT EXISTS (SELECT 1 FROM messages
                          WHERE organization_id = $1 AND wa_chat_id = $2 AND id <> $3
                            AND (sent_at > $4 OR (sent_at = $4 AND created_at > $5)))""",
        message.organization_id, message.wa_chat_id, message.id, message.sent_at,
        message.created_at)
    return bool(value)


async def stored_wa_ids(db: Executor, *, organization_id: uuid.UUID, wa_ids: Sequence[str]
                        ) -> set[str]:
    """Which of these WhatsApp ids the organization has stored already."""
    if not wa_ids:
        return set()
    rows = await db.fetch(
        "SELECT wa_message_id FROM messages WHERE organization_id = $1 "
        "AND wa_message_id = ANY($2::text[])", organization_id, list(wa_ids))
    return {r["wa_message_id"] for r in rows}


async def count(db: Executor, *, organization_id: uuid.UUID, processed_only: bool = False
                ) -> int:
    """How many messages the organization has stored (only those processed to the end, with
    `processed_only`)."""
    return int(await db.fetchval(
        "SELECT count(*) FROM messages WHERE organization_id = $1"
        " AND (NOT $2 OR processing_state = 'DONE')", organization_id, processed_only) or 0)


async def list_for_organization(db: Executor, *, organization_id: uuid.UUID, limit: int = 100
                                ) -> list[Message]:
    """The organization's first messages, oldest first."""
    return many(Message, await db.fetch(
        f"SELECT {_COLS} FROM messages WHERE organization_id = $1 ORDER BY sent_at, id LIMIT $2",
        organization_id, limit))


_STAGE = "wad_import_stage"
_STAGE_SQL = f"""
CREATE TEMP TABLE IF NOT EXISTS {_STAGE} (
    {", ".join(f"{n} {'text' if t == 'jsonb' else t}" for n, t in _NEW_TYPES.items())},
    content_key text
) ON COMMIT DELETE ROWS;
TRUNCATE {_STAGE};
"""
_FROM_STAGE = f"""
INSERT INTO messages ({_NEW_NAMES})
SELECT {", ".join(f"{n}::jsonb" if t == "jsonb" else n for n, t in _NEW_TYPES.items())},
       content_key
FROM {_STAGE}
ON CONFLICT (organization_id, wa_message_id) DO NOTHING
RETURNING wa_message_id
"""


async def copy_new(conn: Connection, *, messages: Sequence[NewMessage]) -> set[str]:
    """Store a batch with COPY (into a temporary table of the connection, then one insert that
    skips the messages already stored): the import's fast path, inside the caller's
    transaction. Answers the WhatsApp ids that are new."""
    if not messages:
        return set()
    messages = sorted(messages, key=_when)  # as in `insert_many`
    await conn.execute(_STAGE_SQL)
    names = list(_NEW_TYPES)
    jsonb = {n for n, t in _NEW_TYPES.items() if t == "jsonb"}

    def value(message: NewMessage, name: str) -> object:
        found = getattr(message, name)
        return json.dumps(found) if name in jsonb and found is not None else found

    await conn.copy_records(
        _STAGE, [(*(value(m, n) for n in names), content_key(m)) for m in messages],
        columns=[*names, "content_key"])
    return {r["wa_message_id"] for r in await conn.fetch(_FROM_STAGE)}


# -- batched forms of the processing steps (one statement for many messages) -------------------

async def get_many(db: Executor, *, message_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Message]:
    """`get` for many messages at once: id -> row (ids not stored are absent)."""
    rows = await db.fetch(f"SELECT {_COLS} FROM messages WHERE id = ANY($1::uuid[])",
                          list(message_ids))
    return {m.id: m for m in many(Message, rows)}


async def finish_processing(db: Executor, *, organization_id: uuid.UUID,
                            done: Sequence[tuple[uuid.UUID, uuid.UUID | None, str | None,
                                                 uuid.UUID | None]]) -> int:
    """Many messages processed at once ((message id, conversation id, language, client id)
    each), in one call (`wad_finish_processing`, atomic): what `set_processing_state(state=
    "DONE", ...)` does (one attempt counted, the conversation and language kept when None),
    each conversation's `last_message_at` moved up to its messages, and a `message.stored`
    entry for each message in the feed, in the order given. Answers how many were found."""
    if not done:
        return 0
    found: int = await db.fetchval(
        "SELECT wad_finish_processing($1, $2::uuid[], $3::uuid[], $4::text[], $5::uuid[])",
        organization_id, *(list(column) for column in zip(*done, strict=True)))
    return found


async def windows(db: Executor, *, conversation_ids: Sequence[uuid.UUID], limit: int = 50
                  ) -> dict[uuid.UUID, list[Message]]:
    """`list_for_conversation` for many conversations at once: conversation id -> its latest
    `limit` messages, oldest first."""
    rows = await db.fetch(
        f"""SELECT latest.* FROM unnest($1::uuid[]) AS c(id)
            CROSS JOIN LATERAL (
                SELECT {_COLS} FROM messages WHERE conversation_id = c.id
                ORDER BY sent_at DESC LIMIT $2) latest
            ORDER BY latest.conversation_id, latest.sent_at""",
        list(dict.fromkeys(conversation_ids)), limit)
    found: dict[uuid.UUID, list[Message]] = {c: [] for c in conversation_ids}
    for m in many(Message, rows):
        if m.conversation_id is not None:
            found[m.conversation_id].append(m)
    return found
