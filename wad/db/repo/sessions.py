"""WhatsApp sessions (one row per organization) and their encrypted login archives.

Archives are deleted only by `delete_archives` (the retention policy of `wad.browser.profile`, applied
by the session actor after each new version) and `purge_archives` (an explicit admin command).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from wad.db.models import SessionArchive, SessionArchiveInfo, SessionState, WhatsAppSession
from wad.db.pool import Executor, atomic
from wad.db.repo import changes, columns, many, one, returned

_COLS = columns(WhatsAppSession)
_ARCHIVE_INFO_COLS = columns(SessionArchiveInfo)
_ARCHIVE_COLS = columns(SessionArchive)


async def ensure(db: Executor, *, organization_id: uuid.UUID) -> WhatsAppSession:
    """The organization's session row, created (DISCONNECTED) when missing."""
    await db.execute(
        "INSERT INTO whatsapp_sessions (organization_id) VALUES ($1) ON CONFLICT DO NOTHING",
        organization_id)
    row = await db.fetchrow(
        f"SELECT {_COLS} FROM whatsapp_sessions WHERE organization_id = $1", organization_id)
    return returned(WhatsAppSession, row)


async def lock(db: Executor, *, organization_id: uuid.UUID) -> WhatsAppSession:
    """Inside a transaction: the organization's session row (created when missing), locked
    until the transaction ends. A `connect` meanwhile (`set_should_run`) waits for it."""
    await ensure(db, organization_id=organization_id)
    row = await db.fetchrow(
        f"SELECT {_COLS} FROM whatsapp_sessions WHERE organization_id = $1 FOR UPDATE",
        organization_id)
    return returned(WhatsAppSession, row)


async def get(db: Executor, *, organization_id: uuid.UUID, for_update: bool = False
              ) -> WhatsAppSession | None:
    """The organization's session row; `for_update` locks it until the transaction ends."""
    lock = " FOR UPDATE" if for_update else ""
    row = await db.fetchrow(
        f"SELECT {_COLS} FROM whatsapp_sessions WHERE organization_id = $1{lock}",
        organization_id)
    return one(WhatsAppSession, row)


_SET_STATE = f"""
UPDATE whatsapp_sessions SET
    state = $2,
    qr_payload = CASE WHEN $2 = 'QR_CODE_PENDING' THEN coalesce($3, qr_payload) END,
    qr_issued_at = CASE
        WHEN $2 <> 'QR_CODE_PENDING' THEN NULL
        WHEN $3 IS NOT NULL AND $3 IS DISTINCT FROM qr_payload THEN coalesce($9, now())
        ELSE qr_issued_at END,
    pairing_code = CASE WHEN $2 = 'PAIRING_CODE_PENDING' THEN coalesce($4, pairing_code) END,
    pairing_code_issued_at = CASE
        WHEN $2 <> 'PAIRING_CODE_PENDING' THEN NULL
        WHEN $4 IS NOT NULL AND $4 IS DISTINCT FROM pairing_code THEN coalesce($9, now())
        ELSE pairing_code_issued_at END,
    last_error = CASE WHEN $2 = 'CONNECTED' THEN NULL ELSE coalesce($5, last_error) END,
    last_connected_at = CASE WHEN $2 = 'CONNECTED' AND state <> 'CONNECTED'
                             THEN coalesce($9, now())
                             ELSE last_connected_at END,
    last_disconnected_at = CASE WHEN state = 'CONNECTED' AND $2 <> 'CONNECTED'
                                THEN coalesce($9, now())
                                ELSE last_disconnected_at END,
    wa_version = coalesce($6, wa_version),
    phone_number = coalesce($7, phone_number),
    push_name = coalesce($8, push_name),
    should_run = coalesce($10, should_run),
    link_started_at = CASE
        WHEN $2 IN ('QR_CODE_PENDING', 'PAIRING_CODE_PENDING')
             AND state NOT IN ('QR_CODE_PENDING', 'PAIRING_CODE_PENDING')
        THEN coalesce($9, now())
        ELSE link_started_at END
WHERE organization_id = $1
RETURNING {_COLS}
"""


async def set_state(
    db: Executor, *, organization_id: uuid.UUID, state: SessionState,
    qr_payload: str | None = None, pairing_code: str | None = None,
    last_error: str | None = None, wa_version: str | None = None,
    phone_number: str | None = None, push_name: str | None = None,
    at: datetime | None = None, should_run: bool | None = None,
) -> WhatsAppSession:
    """Record a state change (creating the row if needed) and answer the new row. `at` is
    when it happened (default: now), for a change written late (after a database outage);
    `should_run`, when given, changes with the state (a session that ended says so at once).

    The QR payload is kept only in QR_CODE_PENDING and the pairing code only in
    PAIRING_CODE_PENDING (cleared in every other state); their `*_issued_at` move when the value
    changes, and entering either (from another state) stamps `link_started_at`. `last_error` is
    kept until given anew or until CONNECTED clears it. Entering CONNECTED
    stamps `last_connected_at`; leaving it stamps `last_disconnected_at`. `wa_version`,
    `phone_number` and `push_name` are updated when given, kept otherwise. Each call is in
    the feed (`session.state`, without the QR payload and pairing code) with it.
    """
    args = (organization_id, state, qr_payload, pairing_code, last_error, wa_version,
            phone_number, push_name, at, should_run)
    async with atomic(db) as tx:
        row = await tx.fetchrow(_SET_STATE, *args)
        if row is None:  # the first state of a new organization: create the row, then set it
            await ensure(tx, organization_id=organization_id)
            row = await tx.fetchrow(_SET_STATE, *args)
        session = returned(WhatsAppSession, row)
        await changes.record(tx, organization_id=organization_id, kind="session.state",
                             data=changes.session_data(session))
    return session


async def set_should_run(db: Executor, *, organization_id: uuid.UUID, should_run: bool) -> None:
    """Record the desired state: True on connect, False on an explicit disconnect or logout."""
    await db.execute(
        """INSERT INTO whatsapp_sessions (organization_id, should_run) VALUES ($1, $2)
           ON CONFLICT (organization_id) DO UPDATE SET should_run = EXCLUDED.should_run""",
        organization_id, should_run)


async def list_should_run(db: Executor) -> list[uuid.UUID]:
    """Organizations whose session should be running (started at daemon start)."""
    rows = await db.fetch(
        "SELECT organization_id FROM whatsapp_sessions WHERE should_run ORDER BY organization_id")
    return [r["organization_id"] for r in rows]


async def set_node(db: Executor, *, organization_id: uuid.UUID, node_id: str | None) -> None:
    """Record which daemon runs the session (None: no one)."""
    await ensure(db, organization_id=organization_id)
    await db.execute("UPDATE whatsapp_sessions SET node_id = $2 WHERE organization_id = $1",
                     organization_id, node_id)


async def set_sending_paused(db: Executor, *, organization_id: uuid.UUID, paused: bool,
                             reason: str | None = None) -> None:
    """Open or close the outbound circuit breaker; the reason is cleared when sending resumes."""
    await ensure(db, organization_id=organization_id)
    await db.execute(
        """UPDATE whatsapp_sessions
           SET sending_paused = $2, sending_paused_reason = CASE WHEN $2 THEN $3 END
           WHERE organization_id = $1""",
        organization_id, paused, reason)


async def add_archive(db: Executor, *, organization_id: uuid.UUID, archive: bytes,
                      sha256: bytes, size: int, key_id: str | None = None
                      ) -> SessionArchiveInfo:
    """Store a new archive version: `archive` encrypted by the caller with key `key_id`,
    `sha256` and `size` of the plaintext."""
    row = await db.fetchrow(
        f"""INSERT INTO session_archives (organization_id, archive, sha256, size, key_id)
            VALUES ($1, $2, $3, $4, $5) RETURNING {_ARCHIVE_INFO_COLS}""",
        organization_id, archive, sha256, size, key_id)
    return returned(SessionArchiveInfo, row)


async def get_archive(db: Executor, *, archive_id: int) -> SessionArchive | None:
    """One archive version with its bytes (fetched one at a time: they can be large)."""
    row = await db.fetchrow(
        f"SELECT {_ARCHIVE_COLS} FROM session_archives WHERE id = $1", archive_id)
    return one(SessionArchive, row)


async def mark_restored(db: Executor, *, archive_id: int) -> None:
    """Record that this archive restored a profile successfully (now)."""
    await db.execute("UPDATE session_archives SET restored_at = now() WHERE id = $1", archive_id)


async def delete_archives(db: Executor, *, organization_id: uuid.UUID, ids: list[int]) -> int:
    """Delete these archive versions of the organization (retention); answer how many."""
    status = await db.execute(
        "DELETE FROM session_archives WHERE organization_id = $1 AND id = ANY($2::bigint[])",
        organization_id, ids)
    return int(status.split()[-1])


async def archives_not_under(db: Executor, *, key_id: str, after_id: int = 0,
                             limit: int | None = None) -> list[tuple[int, uuid.UUID]]:
    """(id, organization) of the archives not sealed with `key_id` whose id is greater than
    `after_id`, oldest first, at most `limit` (None: all)."""
    rows = await db.fetch(
        """SELECT id, organization_id FROM session_archives
           WHERE key_id IS DISTINCT FROM $1 AND id > $2 ORDER BY id LIMIT $3""",
        key_id, after_id, limit)
    return [(r["id"], r["organization_id"]) for r in rows]


async def replace_archive(db: Executor, *, archive_id: int, archive: bytes, key_id: str,
                          previous_key_id: str | None) -> bool:
    """Swap an archive's bytes for the same content sealed with another key (rotation); only
    if it is still sealed with `previous_key_id`. Answers whether it was replaced."""
    status = await db.execute(
        """UPDATE session_archives SET archive = $2, key_id = $3
           WHERE id = $1 AND key_id IS NOT DISTINCT FROM $4""",
        archive_id, archive, key_id, previous_key_id)
    return status.split()[-1] == "1"


async def latest_archive_info(db: Executor, *, organization_id: uuid.UUID
                              ) -> SessionArchiveInfo | None:
    """The newest archive version without its bytes (to compare digests)."""
    row = await db.fetchrow(
        f"""SELECT {_ARCHIVE_INFO_COLS} FROM session_archives WHERE organization_id = $1
            ORDER BY id DESC LIMIT 1""", organization_id)
    return one(SessionArchiveInfo, row)


async def latest_archive(db: Executor, *, organization_id: uuid.UUID) -> SessionArchive | None:
    """The newest archive version: the one to restore."""
    row = await db.fetchrow(
        f"""SELECT {_ARCHIVE_COLS} FROM session_archives WHERE organization_id = $1
            ORDER BY id DESC LIMIT 1""", organization_id)
    return one(SessionArchive, row)


async def list_archives(db: Executor, *, organization_id: uuid.UUID) -> list[SessionArchiveInfo]:
    """Every archive version, newest first, without the bytes."""
    rows = await db.fetch(
        f"""SELECT {_ARCHIVE_INFO_COLS} FROM session_archives WHERE organization_id = $1
            ORDER BY id DESC""", organization_id)
    return many(SessionArchiveInfo, rows)


async def purge_archives(db: Executor, *, organization_id: uuid.UUID, keep_latest: int = 0
                         ) -> int:
    """Delete archive versions but the newest `keep_latest`; answer how many were deleted.
    Only for an explicit admin command."""
    if keep_latest < 0:
        raise ValueError("keep_latest must be >= 0")
    status = await db.execute(
        """DELETE FROM session_archives WHERE organization_id = $1 AND id NOT IN (
               SELECT id FROM session_archives WHERE organization_id = $1
               ORDER BY id DESC LIMIT $2)""",
        organization_id, keep_latest)
    return int(status.split()[-1])
