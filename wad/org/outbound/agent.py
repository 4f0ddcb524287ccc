"""Sending for AI agents (plugins): the same queue, with the agent's priority and stricter limits.

Messages queued here have priority 5 (above a person's normal sends, below urgent ones), sender
AI and the agent's name (kept on the queue item and logged). An agent's batch carries at most 20
messages and follows the organization's bulk rules (mass sending must be on). Like every send,
they are refused at the door when the hour or day limit is full (`RateLimited`).

    from wad.org.outbound import send_message_for_agent

    item = await send_message_for_agent(ctx.db, organization_id=org, to="+996555123456",
                                        content="Спасибо! Тур на Иссык-Куль стоит 450 USD.",
                                        agent="sales-bot", delay_s=4.0)
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from wad import log
from wad.bus import EventBus
from wad.db.models import OutboxItem
from wad.db.pool import Database
from wad.org.outbound.limits import Clock
from wad.org.outbound.queue import (
    PRIORITY_AGENT,
    BulkResult,
    InvalidMessage,
    Outgoing,
    queue_bulk,
    queue_message,
)

_log = log.get("outbound.agent")

AGENT_MAX_BATCH = 20


def _agent_name(agent: str) -> str:
    name = agent.strip()
    if not name:
        raise InvalidMessage("agent", "`agent`: name the agent that sends")
    return name[:200]


async def send_message_for_agent(
    db: Database, *, organization_id: uuid.UUID, to: str, content: str, agent: str,
    conversation_id: uuid.UUID | None = None, idempotency_key: str | None = None,
    delay_s: float = 0.0, expires_at: datetime | None = None, clock: Clock | None = None,
    bus: EventBus | None = None,
) -> OutboxItem:
    """Queue an agent's message (priority 5, sender AI), sent no earlier than `delay_s` from now
    (and never after `expires_at`). A repeated `idempotency_key` answers the message queued
    first. Raises `InvalidMessage`, `SendingStopped` (the organization's sending is paused or
    its account banned), `RateLimited` or `NotFound` (organization). Pass the daemon's `bus` to wake the sender at
    once; without it the message is picked up within `outbound.poll_interval_s`."""
    name = _agent_name(agent)
    item, created = await queue_message(
        db, organization_id=organization_id, to=to, content=content, priority=PRIORITY_AGENT,
        sender="AI", agent_name=name, conversation_id=conversation_id,
        idempotency_key=idempotency_key, delay_s=delay_s, expires_at=expires_at, clock=clock,
        bus=bus)
    _log.info("agent message queued" if created else "agent message already queued",
              agent=name, org=str(organization_id), outbox=str(item.id), delay_s=delay_s)
    return item


async def send_bulk_messages_for_agent(
    db: Database, *, organization_id: uuid.UUID, messages: Sequence[Outgoing], agent: str,
    confirm: bool = False, clock: Clock | None = None, bus: EventBus | None = None,
) -> BulkResult:
    """Queue an agent's batch (at most 20 messages, priority 5, sender AI) under the
    organization's bulk rules; see `wad.org.outbound.queue.queue_bulk` for what is refused."""
    name = _agent_name(agent)
    result = await queue_bulk(
        db, organization_id=organization_id, messages=messages, priority=PRIORITY_AGENT,
        sender="AI", agent_name=name, confirm=confirm, max_messages=AGENT_MAX_BATCH,
        clock=clock, bus=bus)
    _log.info("agent batch queued", agent=name, org=str(organization_id),
              queued=len(result.queued), failed=len(result.failed))
    return result
