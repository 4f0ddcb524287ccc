"""Read-only views across tables: every organization with its session, its queue and its day,
for `wad status`, the status page and the metrics scrape."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from wad.db.models import SessionState
from wad.db.pool import Executor
from wad.db.repo import many


class SessionSummary(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """An organization and its session (DISCONNECTED if none yet): how every overview of
    organizations begins. The API answers these as they are, so their JSON names are camelCase
    and `status` and `error_message` are named as in `GET /api/whatsapp/status/{org}`."""

    organization_id: uuid.UUID
    name: str
    status: SessionState
    """The session's state."""
    should_run: bool
    phone_number: str | None
    push_name: str | None
    error_message: str | None


def summary_fields(line: SessionSummary) -> dict[str, Any]:
    """The `SessionSummary` fields of a line, to build another overview from it."""
    return {name: getattr(line, name) for name in SessionSummary.__struct_fields__}


class OrgOverview(SessionSummary, frozen=True, kw_only=True):
    """One line of `wad status`."""

    last_connected_at: datetime | None
    last_disconnected_at: datetime | None
    node_id: str | None
    updated_at: datetime | None
    parked_messages: int = 0
    """Incoming messages whose processing failed repeatedly (parked)."""


async def organizations(db: Executor, *, organization_id: uuid.UUID | None = None
                        ) -> list[OrgOverview]:
    """Every organization (or one) with its session state, oldest organization first."""
    rows = await db.fetch(
        """SELECT o.id AS organization_id, o.name,
                  coalesce(s.state, 'DISCONNECTED') AS status,
                  coalesce(s.should_run, false) AS should_run,
                  s.phone_number, s.push_name, s.last_error AS error_message, s.last_connected_at,
                  s.last_disconnected_at, s.node_id, s.updated_at,
                  (SELECT count(*) FROM messages m WHERE m.organization_id = o.id
                   AND m.processing_state = 'FAILED')::int AS parked_messages
           FROM organizations o LEFT JOIN whatsapp_sessions s ON s.organization_id = o.id
           WHERE $1::uuid IS NULL OR o.id = $1
           ORDER BY o.created_at, o.id""", organization_id)
    return many(OrgOverview, rows)


class StatusLine(SessionSummary, frozen=True, kw_only=True):
    """One organization on the status page: session, queue and today's messages."""

    updated_at: datetime | None
    queued: int
    oldest_s: float | None
    """Age of the oldest queued message in seconds; None when nothing is queued."""
    sending: int
    received: int
    """Messages received today (since midnight in the database's time zone)."""
    sent: int


_STATUS_PAGE = """
SELECT o.id AS organization_id, o.name, coalesce(s.state, 'DISCONNECTED') AS status,
       coalesce(s.should_run, false) AS should_run, s.phone_number, s.push_name,
       s.last_error AS error_message,
       s.updated_at,
       coalesce(q.queued, 0)::int AS queued, q.oldest_s::float8 AS oldest_s,
       coalesce(q.sending, 0)::int AS sending,
       coalesce(m.received, 0)::int AS received, coalesce(m.sent, 0)::int AS sent
FROM organizations o
LEFT JOIN whatsapp_sessions s ON s.organization_id = o.id
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE status = 'QUEUED') AS queued,
           count(*) FILTER (WHERE status = 'SENDING') AS sending,
           extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'QUEUED'))
               AS oldest_s
    FROM outbox WHERE organization_id = o.id AND status IN ('QUEUED', 'SENDING')
) q ON true
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE direction = 'IN') AS received,
           count(*) FILTER (WHERE direction = 'OUT') AS sent
    FROM messages WHERE organization_id = o.id AND sent_at >= date_trunc('day', now())
) m ON true
WHERE $1::uuid IS NULL OR o.id = $1
ORDER BY lower(o.name), o.id
"""


async def status_page(db: Executor, *, organization_id: uuid.UUID | None = None
                      ) -> list[StatusLine]:
    """Every organization (or one) with what the status page shows, by name."""
    return many(StatusLine, await db.fetch(_STATUS_PAGE, organization_id))


class OrgState(msgspec.Struct, frozen=True, kw_only=True):
    """An organization's session state and whether its sending is paused (for the metrics)."""

    id: uuid.UUID
    name: str
    state: SessionState
    paused: bool


async def states(db: Executor) -> list[OrgState]:
    """Every organization's session state (DISCONNECTED when it has no session yet)."""
    return many(OrgState, await db.fetch(
        """SELECT o.id, o.name, coalesce(s.state, 'DISCONNECTED') AS state,
                  coalesce(s.sending_paused, false) AS paused
           FROM organizations o LEFT JOIN whatsapp_sessions s ON s.organization_id = o.id"""))


class QueueDepth(msgspec.Struct, frozen=True, kw_only=True):
    """An organization's send queue: queued and sending messages, age of the oldest queued."""

    organization_id: uuid.UUID
    queued: int
    sending: int
    oldest_s: float | None


async def queue_depths(db: Executor) -> list[QueueDepth]:
    """The send queue of every organization that has messages queued or being sent."""
    return many(QueueDepth, await db.fetch(
        """SELECT organization_id, count(*) FILTER (WHERE status = 'QUEUED')::int AS queued,
                  count(*) FILTER (WHERE status = 'SENDING')::int AS sending,
                  extract(epoch FROM now() - min(created_at) FILTER (WHERE status = 'QUEUED'))
                      ::float8 AS oldest_s
           FROM outbox WHERE status IN ('QUEUED', 'SENDING') GROUP BY organization_id"""))
