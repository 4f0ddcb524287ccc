"""What WhatsApp answered when the outbound actor asked whether a number uses it
(`number_checks`), per organization, and whether the organization has written to a number."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec

from wad.db.pool import Executor


class NumberCheck(msgspec.Struct, frozen=True, kw_only=True):
    phone: str
    on_whatsapp: bool
    wa_id: str | None
    checked_at: datetime


async def get(db: Executor, *, organization_id: uuid.UUID, phone: str) -> NumberCheck | None:
    """The latest answer about `phone` (E.164), or None when it was never asked."""
    row = await db.fetchrow(
        """SELECT phone, on_whatsapp, wa_id, checked_at FROM number_checks
           WHERE organization_id = $1 AND phone = $2""", organization_id, phone)
    return None if row is None else NumberCheck(**dict(row))


async def store(db: Executor, *, organization_id: uuid.UUID, phone: str, wa_id: str | None,
                at: datetime) -> None:
    """Keep WhatsApp's answer (`wa_id` None: the number does not use WhatsApp)."""
    await db.execute(
        """INSERT INTO number_checks (organization_id, phone, on_whatsapp, wa_id, checked_at)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (organization_id, phone) DO UPDATE
           SET on_whatsapp = EXCLUDED.on_whatsapp, wa_id = EXCLUDED.wa_id,
               checked_at = EXCLUDED.checked_at""",
        organization_id, phone, wa_id is not None, wa_id, at)


async def known_chat(db: Executor, *, organization_id: uuid.UUID, wa_chat_id: str) -> bool:
    """Whether the organization has any message in the chat (written to, or written by, the
    number): then it uses WhatsApp and needs no asking."""
    return bool(await db.fetchval(
        """SELECT EXISTS (SELECT 1 FROM messages
                          WHERE organization_id = $1 AND wa_chat_id = $2)""",
        organization_id, wa_chat_id))
