"""What `GET /api/whatsapp/status/{org}` answers, in one round trip: whether the organization
exists, its session row and its parked messages."""

from __future__ import annotations

import uuid

import msgspec

from wad.db.models import WhatsAppSession
from wad.db.pool import Executor
from wad.db.repo import columns, one
from wad.db.repo.messages import ParkedSummary


class SessionStatusRow(msgspec.Struct, frozen=True):
    """An existing organization's session (None before its first connect) and parked
    messages."""

    session: WhatsAppSession | None
    parked: ParkedSummary


_STATUS = f"""
SELECT o.id AS wanted_id, {columns(WhatsAppSession, "s")},
       s.organization_id IS NOT NULL AS has_session,
       (SELECT count(*) FROM messages
        WHERE organization_id = o.id AND processing_state = 'FAILED')::int AS parked_count,
       latest.processing_error AS parked_last_error, latest.created_at AS parked_last_at
FROM organizations o
LEFT JOIN whatsapp_sessions s ON s.organization_id = o.id
LEFT JOIN LATERAL (
    SELECT processing_error, created_at FROM messages
    WHERE organization_id = o.id AND processing_state = 'FAILED'
    ORDER BY created_at DESC LIMIT 1) AS latest ON true
WHERE o.id = ANY($1::uuid[])
"""


async def get(db: Executor, *, organization_id: uuid.UUID) -> SessionStatusRow | None:
    """The organization's session and parked messages; None when there is no such
    organization. The same answers as `sessions.get` and `messages.parked_summary`."""
    return (await get_many(db, [organization_id])).get(organization_id)


async def get_many(db: Executor, organization_ids: list[uuid.UUID]
                   ) -> dict[uuid.UUID, SessionStatusRow]:
    """`get` for several organizations in one round trip: those that exist, by id."""
    return {row["wanted_id"]: SessionStatusRow(
        session=one(WhatsAppSession, row) if row["has_session"] else None,
        parked=ParkedSummary(count=row["parked_count"], last_error=row["parked_last_error"],
                             last_at=row["parked_last_at"]))
        for row in await db.fetch(_STATUS, organization_ids)}
