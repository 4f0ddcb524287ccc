"""The durable change feed (`changes`): what the CRM follows, per organization, in order.

`record` is called with the connection of the transaction that makes the change, so the change
and its feed entry commit (or vanish) together. Cursors (`seq`) are per organization, start at 1
and grow by one in commit order: the next cursor is taken by updating the organization's row of
`change_cursors`, which stays locked until the transaction ends. Every commit notifies the
`wad_changes` channel with the organization's id, so readers wake without polling. The entries
are written by one SQL function, `wad_record_changes` (migration 0015), which the statements that
make a change and record it in one call use too; `message_data` and `client_data` have SQL twins
there (`wad_message_data`, `wad_client_data`) that must give the same payloads.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from wad.db.models import Client, ClientStatusChange, ImportRun, Message, WhatsAppSession
from wad.db.pool import Executor

CHANNEL = "wad_changes"
"""The `LISTEN/NOTIFY` channel; the payload is the organization's id."""

KINDS = (
    "message.stored", "message.sent", "message.status", "message.edited", "message.revoked",
    "client.created", "client.updated", "client.status",
    "session.state",
    "send.failed", "send.cancelled", "send.expired", "sending.paused", "sending.resumed",
    "import.started", "import.progress", "import.finished",
)
"""Every kind of change the feed carries (docs/api.md, Change feed, gives their payloads)."""


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
        "SELECT wad_record_changes($1, ARRAY[$2::text], ARRAY[$3::jsonb])",
        organization_id, kind, data)
    return seq


async def hold_cursor(tx: Executor, *, organization_id: uuid.UUID) -> None:
    """Lock the organization's cursor now, until the transaction ends. A transaction that will
    record a change after locking another row that concurrent writers of the feed also lock
    takes the cursor first, so that every writer locks in the same order (no deadlock)."""
    await tx.execute(
        """INSERT INTO change_cursors AS c (organization_id, last) VALUES ($1, 0)
           ON CONFLICT (organization_id) DO UPDATE SET last = c.last""", organization_id)


async def page(db: Executor, *, organization_id: uuid.UUID, after: int,
               limit: int) -> list[Change]:
    """At most `limit` changes of `organization_id` with a cursor above `after`, oldest first."""
    rows = await db.fetch(
        """SELECT organization_id, seq, kind, at, data FROM changes
           WHERE organization_id = $1 AND seq > $2 ORDER BY seq LIMIT $3""",
        organization_id, after, limit)
    return [Change(organization_id=r["organization_id"], seq=r["seq"], kind=r["kind"],
                   at=r["at"], data=r["data"]) for r in rows]


async def round_trip(db: Executor) -> None:
    """A statement that does nothing: finds a connection that died silently."""
    await db.fetchval("SELECT 1")


async def first_kept(db: Executor, *, organization_id: uuid.UUID) -> int:
    """The lowest cursor still kept for `organization_id`: 1 when nothing was ever pruned (or
    nothing written), the last cursor + 1 when every entry was pruned."""
    row = await db.fetchrow(
        """SELECT (SELECT min(seq) FROM changes WHERE organization_id = $1) AS first,
                  (SELECT last FROM change_cursors WHERE organization_id = $1) AS last""",
        organization_id)
    assert row is not None
    if row["first"] is not None:
        return int(row["first"])
    return int(row["last"] or 0) + 1


async def expired(db: Executor, *, organization_id: uuid.UUID, after: int) -> bool:
    """Whether resuming after cursor `after` would miss pruned entries (`after` is older than
    the retention kept): the reader must resynchronise through the read API."""
    return after < await first_kept(db, organization_id=organization_id) - 1


async def last(db: Executor, *, organization_id: uuid.UUID) -> int:
    """The organization's newest cursor (0 before its first change)."""
    found = await db.fetchval(
        "SELECT last FROM change_cursors WHERE organization_id = $1", organization_id)
    return int(found or 0)


async def lasts(db: Executor) -> dict[uuid.UUID, int]:
    """Every organization's newest cursor."""
    rows = await db.fetch("SELECT organization_id, last FROM change_cursors")
    return {r["organization_id"]: int(r["last"]) for r in rows}


async def last_before(db: Executor, *, organization_id: uuid.UUID, at: datetime) -> int:
    """The newest cursor of a change made before `at` (0 when none is kept)."""
    found = await db.fetchval(
        "SELECT max(seq) FROM changes WHERE organization_id = $1 AND at < $2",
        organization_id, at)
    return int(found or 0)


async def prune(db: Executor, *, older_than: datetime, batch: int = 10_000) -> int:
    """Delete entries made before `older_than`, at most `batch` of them; answers how many
    (call again while it answers `batch`). Cursors never go back: `change_cursors` stays."""
    done = await db.execute(
        """DELETE FROM changes WHERE ctid IN (
               SELECT ctid FROM changes WHERE at < $1 LIMIT $2)""", older_than, batch)
    return int(done.split()[-1])


async def send_of(db: Executor, *, organization_id: uuid.UUID, wa_ids: list[str]
                  ) -> uuid.UUID | None:
    """The queue id (the `202` answer's) of the send that became the message with one of
    `wa_ids`, None for a message typed on the phone."""
    found: uuid.UUID | None = await db.fetchval(
        """SELECT id FROM outbox WHERE organization_id = $1 AND wa_message_id = ANY($2::text[])
           LIMIT 1""", organization_id, wa_ids)
    return found


# -- the payloads of each kind (camelCase keys, ids as strings, times ISO 8601) ----------------


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _id(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def message_data(row: Message, *, client_id: uuid.UUID | None = None) -> dict[str, Any]:
    """`message.stored`, `message.edited`: a stored message with its content."""
    return {
        "messageId": str(row.id), "waMessageId": row.wa_message_id,
        "conversationId": _id(row.conversation_id), "clientId": _id(client_id),
        "waChatId": row.wa_chat_id, "direction": row.direction, "sender": row.sender,
        "type": row.type, "body": row.body, "caption": row.caption,
        "timestamp": _iso(row.sent_at), "status": row.status, "language": row.language,
        "editedAt": _iso(row.edited_at),
    }


def message_status_data(row: Message, *, before: str | None, send_id: uuid.UUID | None = None
                        ) -> dict[str, Any]:
    """`message.status`, `message.revoked`: a stored message's status moved."""
    data: dict[str, Any] = {
        "messageId": str(row.id), "waMessageId": row.wa_message_id,
        "conversationId": _id(row.conversation_id), "status": row.status, "from": before}
    if send_id is not None:
        data["sendId"] = str(send_id)
    return data


def client_data(row: Client) -> dict[str, Any]:
    """`client.created`, `client.updated`: the client as stored now."""
    return {
        "clientId": str(row.id), "phone": row.phone, "name": row.name,
        "pushName": row.push_name, "savedName": row.saved_name,
        "profilePictureUrl": row.profile_picture_url,
        "preferredLanguage": row.preferred_language, "status": row.status,
        "metadata": row.metadata, "createdAt": _iso(row.created_at),
        "updatedAt": _iso(row.updated_at),
    }


def client_status_data(change: ClientStatusChange) -> dict[str, Any]:
    """`client.status`: a move in the sales funnel."""
    return {"clientId": str(change.client_id), "from": change.from_status,
            "to": change.to_status, "detector": change.detector, "reason": change.reason,
            "historyId": change.id, "at": _iso(change.created_at)}


def session_data(row: WhatsAppSession) -> dict[str, Any]:
    """`session.state`: the session's state, never its QR payload or pairing code (only when
    one was issued, so a reader knows to fetch it)."""
    return {
        "status": row.state, "errorMessage": row.last_error,
        "lastConnectedAt": _iso(row.last_connected_at),
        "lastDisconnectedAt": _iso(row.last_disconnected_at),
        "phoneNumber": row.phone_number, "qrIssuedAt": _iso(row.qr_issued_at),
        "pairingCodeIssuedAt": _iso(row.pairing_code_issued_at),
    }


def import_data(run: ImportRun) -> dict[str, Any]:
    """`import.started`, `import.progress`, `import.finished`: an import run's counts."""
    return {
        "importId": str(run.id), "source": run.source, "status": run.status,
        "chatsTotal": run.chats_total, "chatsDone": run.chats_done,
        "messagesStored": run.messages_stored, "duplicates": run.duplicates,
        "errors": len(run.errors), "startedAt": _iso(run.started_at),
        "finishedAt": _iso(run.finished_at),
    }
