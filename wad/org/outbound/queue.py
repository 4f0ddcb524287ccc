"""Putting messages into an organization's durable send queue (the `outbox` table).

Everything that sends goes through here: the API (`POST /api/whatsapp/send`, `.../send/bulk`),
the agent API (`wad.org.outbound.agent`) and the CLI (through the API). A message is checked at the
door: its number must be a valid international number, its text 1-4096 characters, and one more
message must fit in the organization's hour and day limits, counting what was sent (from the
database) and what is still queued; otherwise it is refused with `RateLimited` (HTTP 429). The
minute limit is not checked here: the outbound actor paces the queue, so a message waits instead.

An organization whose sending is paused (the circuit breaker, a ban) or whose account is banned
takes nothing new: `SendingStopped` (HTTP 409) says why and how sending resumes. A message may
carry an expiry (`expires_at`, in the future and at most `MAX_EXPIRY` ahead): not sent by then,
it becomes `EXPIRED` and is never sent.

The check and the insert run in one transaction under a per-organization advisory lock, so two
requests at once cannot both take the last place. A repeated idempotency key answers the message
queued first, whatever the limits say now.

One message is queued in one round trip when nothing stands in its way (`outbox.enqueue_at_door`:
the lock, the checks against the settings the full door last read, and the insert, in one
statement); otherwise, and for the first message of an organization or to a number without an
active conversation, the full door reads everything in one round trip (`outbox.door`) and
decides here, as before.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from wad import log
from wad.bus import EventBus, Queued, SendsRefused
from wad.db.models import OutboxItem, OutboxSender
from wad.db.pool import Database, Executor
from wad.db.repo import clients as clients_repo
from wad.db.repo import columns, locks
from wad.db.repo import conversations as conversations_repo
from wad.db.repo import outbox as outbox_repo
from wad.db.repo import sessions as sessions_repo
from wad.errors import NotFound, WadError
from wad.org.outbound import settings as settings_mod
from wad.org.outbound.limits import DAY, Clock, Refusal, WallClock, Window, door_check
from wad.org.outbound.settings import MAX_BULK, SendSettings
from wad.whatsapp import ids, phone

_log = log.get("outbound")

MAX_CONTENT = 4096
MAX_EXPIRY = timedelta(days=30)
"""The furthest ahead an expiry may be."""
PRIORITY_NORMAL, PRIORITY_AGENT, PRIORITY_URGENT = 1, 5, 10

_ITEM_COLS = columns(OutboxItem)


class QueueError(WadError):
    """A message (or batch) was not queued; the message says why."""


class InvalidMessage(QueueError):
    """A field of the message is wrong; `field` names it as the API does (`to`, `content`, `conversationId`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class RateLimited(QueueError):
    """The hour or day limit has no room: `refusal` says which, how many remain and when there
    is room again."""

    def __init__(self, refusal: Refusal, now: datetime) -> None:
        super().__init__(refusal.message(now))
        self.refusal = refusal
        self.now = now


class SendingStopped(QueueError):
    """The organization's sending is paused (`code` `sending_paused`: the circuit breaker or a
    ban recorded by it) or its account is banned (`account_banned`); `reason` says why."""

    def __init__(self, code: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class MassSendingDisabled(QueueError):
    """Bulk sending is off for the organization (`safety.enableMassSending`)."""


class ConfirmationRequired(QueueError):
    """The batch is larger than `safety.maxBatchSize` and needs `confirm`."""


class BatchTooLarge(QueueError):
    """More messages than one batch may carry (100; 20 for agents)."""


@dataclass(frozen=True)
class Outgoing:
    """One message of a batch."""

    to: str
    content: str
    conversation_id: uuid.UUID | None = None
    idempotency_key: str | None = None
    expires_at: datetime | None = None


@dataclass
class BulkResult:
    """What a batch did: the messages queued (`index` in the batch, the queue item, whether it is
    new or an earlier one with the same idempotency key) and those refused, with why."""

    queued: list[tuple[int, OutboxItem, bool]] = field(default_factory=list)
    failed: list[tuple[int, str, str]] = field(default_factory=list)
    """(index, `to` as given, why)."""


def check_content(content: str, *, field: str = "content") -> str:
    if not content or not content.strip():
        raise InvalidMessage(field, f"`{field}`: must not be empty")
    if len(content) > MAX_CONTENT:
        raise InvalidMessage(field, f"`{field}`: at most {MAX_CONTENT} characters "
                             f"(got {len(content)})")
    return content


def check_number(to: str, *, field: str = "to") -> str:
    """The number in E.164, or `InvalidMessage` saying what is wrong with it."""
    try:
        return phone.normalize(to)
    except phone.InvalidPhoneNumber as exc:
        raise InvalidMessage(field, f"`{field}`: {exc}") from None


def check_expiry(expires_at: datetime | None, now: datetime, *, field: str = "expiresAt"
                 ) -> datetime | None:
    """`expires_at` if it is in the future and at most `MAX_EXPIRY` ahead."""
    if expires_at is None:
        return None
    if expires_at.tzinfo is None:
        raise InvalidMessage(field, f"`{field}`: give a time zone (e.g. 2025-07-01T09:00:00Z)")
    if expires_at <= now:
        raise InvalidMessage(field, f"`{field}`: must be in the future (it is {now.isoformat()} "
                             "now)")
    if expires_at > now + MAX_EXPIRY:
        raise InvalidMessage(field, f"`{field}`: at most {MAX_EXPIRY.days} days ahead")
    return expires_at


async def _check_sending(tx: Executor, organization_id: uuid.UUID) -> None:
    """Raise `SendingStopped` when the organization's sending is paused or its account banned."""
    row = await sessions_repo.get(tx, organization_id=organization_id)
    if row is None:
        return
    _refuse_if_stopped(organization_id, state=row.state, last_error=row.last_error,
                       paused=row.sending_paused, paused_reason=row.sending_paused_reason)


def _refuse_if_stopped(organization_id: uuid.UUID, *, state: str | None, last_error: str | None,
                       paused: bool | None, paused_reason: str | None) -> None:
    """Raise `SendingStopped` for a session in this state (banned, or its sending paused)."""
    resume = (f"an administrator resumes it with POST /api/whatsapp/send/resume/"
              f"{organization_id} (or `wad send resume ORG`); the queue is kept")
    if state == "BANNED":
        why = last_error or "WhatsApp banned or restricted the account"
        raise SendingStopped("account_banned", why, f"sending is stopped: the account is banned "
                             f"({why}); link an account that may send, then {resume}")
    if paused:
        why = paused_reason or "paused"
        raise SendingStopped("sending_paused", why, f"sending is paused for this organization "
                             f"({why}): {resume}")


async def _lock(tx: Executor, organization_id: uuid.UUID) -> None:
    """Serialize queueing per organization until the transaction ends."""
    await locks.lock_in_transaction(tx, name=f"wad.outbox:{organization_id}")


async def _check_door(tx: Executor, organization_id: uuid.UUID, now: datetime, *, wanted: int,
                      limits: Sequence[Window], bus: EventBus | None) -> None:
    """Raise `RateLimited` (and publish `outbox.refused`) when `wanted` sends do not fit."""
    sent = await outbox_repo.sent_times_since(tx, organization_id=organization_id,
                                              since=now - DAY)
    pending = await outbox_repo.count_pending(tx, organization_id=organization_id)
    _refuse_if_full(organization_id, now, sent=sent, pending=pending, wanted=wanted,
                    limits=limits, bus=bus)


def _refuse_if_full(organization_id: uuid.UUID, now: datetime, *, sent: Sequence[datetime],
                    pending: int, wanted: int, limits: Sequence[Window],
                    bus: EventBus | None) -> None:
    """`_check_door` on counts already read."""
    refusal = door_check(sent, now, pending=pending, wanted=wanted, limits=limits)
    if refusal is not None:
        if bus is not None:
            bus.publish(SendsRefused(org_id=organization_id, limit=refusal.window, count=wanted))
        raise RateLimited(refusal, now)


async def _used_keys(tx: Executor, organization_id: uuid.UUID, keys: list[str]) -> set[str]:
    """Which of `keys` earlier messages of the organization already carry."""
    return await outbox_repo.used_idempotency_keys(tx, organization_id=organization_id,
                                                   keys=keys)


async def _conversation(tx: Executor, organization_id: uuid.UUID, number: str,
                        conversation_id: uuid.UUID | None) -> tuple[uuid.UUID, uuid.UUID]:
    """(client id, conversation id) for a message to `number`: the given conversation if it is
    that client's in this organization, else the client's active one (both created if needed)."""
    client, _ = await clients_repo.upsert(tx, organization_id=organization_id, phone=number)
    if conversation_id is not None:
        found = await conversations_repo.get(tx, conversation_id=conversation_id)
        if found is None or found.organization_id != organization_id:
            raise InvalidMessage("conversationId", "`conversationId`: no such conversation "
                                 "in this organization")
        if found.client_id != client.id:
            raise InvalidMessage("conversationId", f"`conversationId`: that conversation is "
                                 f"with another client, not {number}")
        return client.id, found.id
    conversation, _ = await conversations_repo.get_or_create_active(
        tx, organization_id=organization_id, client_id=client.id, wa_chat_id=ids.user_chat(number))
    return client.id, conversation.id


_settings_seen: dict[uuid.UUID, tuple[dict[str, Any], SendSettings]] = {}
"""Organization -> the settings document its last full door read, and what it means: what the
one-statement send (`outbox.enqueue_at_door`) decides on. Never trusted as such: the statement
queues only while the stored document is still this one."""
_SETTINGS_SEEN_MAX = 10_000


def _remember_settings(organization_id: uuid.UUID, document: dict[str, Any],
                       settings: SendSettings) -> None:
    if len(_settings_seen) >= _SETTINGS_SEEN_MAX:
        _settings_seen.clear()
    _settings_seen[organization_id] = (document, settings)


def _wake(bus: EventBus | None, organization_id: uuid.UUID, count: int) -> None:
    if bus is not None and count:
        bus.signal(Queued(org_id=organization_id, count=count))


async def queue_message(
    db: Database, *, organization_id: uuid.UUID, to: str, content: str,
    priority: int = PRIORITY_NORMAL, sender: OutboxSender = "HUMAN", agent_name: str | None = None,
    conversation_id: uuid.UUID | None = None, idempotency_key: str | None = None,
    delay_s: float = 0.0, expires_at: datetime | None = None, clock: Clock | None = None,
    bus: EventBus | None = None,
) -> tuple[OutboxItem, bool]:
    """Queue one message, sent no earlier than `delay_s` from now and never after `expires_at`.
    Answers (item, created): `created` is False when the idempotency key was used before (the
    earlier item is answered). Raises `InvalidMessage`, `SendingStopped` (paused or banned),
    `RateLimited` (hour or day limit) or `NotFound` (organization)."""
    number = check_number(to)
    check_content(content)
    if not 1 <= priority <= 10:
        raise InvalidMessage("priority", "`priority`: must be 1 to 10")
    now = (clock or WallClock()).now()
    check_expiry(expires_at, now)
    not_before = now + timedelta(seconds=max(0.0, delay_s))
    known = _settings_seen.get(organization_id)
    if known is not None and conversation_id is None:
        # The plain case in one statement; anything else is answered by the full door below.
        document, settings = known
        queued = await outbox_repo.enqueue_at_door(
            db, organization_id=organization_id, to_phone=number, content=content,
            priority=priority, sender=sender, agent_name=agent_name,
            idempotency_key=idempotency_key, now=now, not_before=not_before,
            expires_at=expires_at, settings_document=document,
            windows=[(w.length.total_seconds(), w.limit) for w in settings.door_windows()])
        if queued is not None:
            _wake(bus, organization_id, 1)
            return queued, True
    async with db.transaction() as tx:
        # The lock and everything the door decides on, in one round trip.
        door = await outbox_repo.door(tx, organization_id=organization_id,
                                      idempotency_key=idempotency_key, since=now - DAY,
                                      to_phone=number)
        if door is None:
            raise NotFound(f"no such organization: {organization_id}")
        if door.earlier_id is not None:
            earlier = await outbox_repo.get(tx, outbox_id=door.earlier_id)
            if earlier is not None:
                return earlier, False
        _refuse_if_stopped(organization_id, state=door.session_state,
                           last_error=door.session_error, paused=door.sending_paused,
                           paused_reason=door.sending_paused_reason)
        settings = settings_mod.effective(door.settings)
        _remember_settings(organization_id, door.settings, settings)
        _refuse_if_full(organization_id, now, sent=door.sent, pending=door.pending, wanted=1,
                        limits=settings.door_windows(), bus=bus)
        if conversation_id is None and door.conversation_id is not None:
            assert door.client_id is not None
            client_id, conv_id = door.client_id, door.conversation_id  # known: nothing to make
        else:
            client_id, conv_id = await _conversation(tx, organization_id, number,
                                                     conversation_id)
        item, created = await outbox_repo.enqueue(
            tx, organization_id=organization_id, to_phone=number, content=content,
            priority=priority, sender=sender, agent_name=agent_name,
            idempotency_key=idempotency_key, client_id=client_id, conversation_id=conv_id,
            not_before=not_before, expires_at=expires_at)
    _wake(bus, organization_id, int(created))
    return item, created


async def queue_bulk(
    db: Database, *, organization_id: uuid.UUID, messages: Sequence[Outgoing],
    priority: int = PRIORITY_NORMAL, sender: OutboxSender = "HUMAN",
    agent_name: str | None = None, confirm: bool = False, max_messages: int = MAX_BULK,
    clock: Clock | None = None, bus: EventBus | None = None,
) -> BulkResult:
    """Queue a batch, spread over time (one message per `60 / messagesPerMinute` seconds, so
    that later single messages are not stuck behind the whole batch).

    Refused as a whole (nothing queued) when mass sending is off (`MassSendingDisabled`), when
    it has more than `max_messages` (`BatchTooLarge`), when it is larger than `maxBatchSize`
    without `confirm` while `requireConfirmation` is on (`ConfirmationRequired`), and when its
    valid messages do not all fit in the day limit (`RateLimited`). A message with a bad number
    or text (or expiry) is left out and reported in `failed`; the others are queued. Nothing
    is queued while the organization's sending is stopped (`SendingStopped`)."""
    if len(messages) > max_messages:
        raise BatchTooLarge(f"a batch carries at most {max_messages} messages "
                            f"(got {len(messages)})")
    if not messages:
        raise InvalidMessage("messages", "`messages`: at least one message")
    now = (clock or WallClock()).now()
    result = BulkResult()
    valid: list[tuple[int, str, Outgoing]] = []
    for index, message in enumerate(messages):
        try:
            number = check_number(message.to, field=f"messages[{index}].to")
            check_content(message.content, field=f"messages[{index}].content")
            check_expiry(message.expires_at, now, field=f"messages[{index}].expiresAt")
        except InvalidMessage as exc:
            result.failed.append((index, message.to, str(exc)))
            continue
        valid.append((index, number, message))
    async with db.transaction() as tx:
        await _lock(tx, organization_id)
        await _check_sending(tx, organization_id)
        settings = await settings_mod.load(tx, organization_id)
        safety = settings.safety
        if not safety.enable_mass_sending:
            raise MassSendingDisabled(
                "bulk sending is off for this organization (safety.enableMassSending)")
        if (len(messages) > safety.max_batch_size and safety.require_confirmation
                and not confirm):
            raise ConfirmationRequired(
                f"this batch has {len(messages)} messages, more than safety.maxBatchSize "
                f"({safety.max_batch_size}): send it again with `confirm: true`")
        used = await _used_keys(tx, organization_id, [
            m.idempotency_key for _, _, m in valid if m.idempotency_key is not None])
        fresh = [v for v in valid if v[2].idempotency_key not in used]
        await _check_door(tx, organization_id, now, wanted=len(fresh),
                          limits=settings.day_window(), bus=bus)
        spacing = 60.0 / settings.rate_limiting.messages_per_minute
        slot = 0
        for index, number, message in valid:
            try:
                client_id, conv_id = await _conversation(tx, organization_id, number,
                                                         message.conversation_id)
            except InvalidMessage as exc:
                result.failed.append((index, message.to, str(exc)))
                continue
            item, created = await outbox_repo.enqueue(
                tx, organization_id=organization_id, to_phone=number, content=message.content,
                priority=priority, sender=sender, agent_name=agent_name,
                idempotency_key=message.idempotency_key, client_id=client_id,
                conversation_id=conv_id, not_before=now + timedelta(seconds=slot * spacing),
                expires_at=message.expires_at)
            slot += int(created)
            result.queued.append((index, item, created))
    result.failed.sort()
    _wake(bus, organization_id, sum(1 for _, _, created in result.queued if created))
    _log.info("batch queued", org=str(organization_id), queued=len(result.queued),
              failed=len(result.failed), sender=sender, agent=agent_name)
    return result

