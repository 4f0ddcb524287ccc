"""`/api/whatsapp/send...`, `/messages/{id}`, `/settings/{org}`, `/queue/{org}`: the outbound
queue over HTTP (SPEC section 4).

Sending only puts messages into the durable queue (202 with the message's id); the organization's
outbound actor sends them within its limits. A send that the hour or day limit has no room for is
refused with 429, `Retry-After` and the limit in the error body; a send to an organization whose
sending is paused or whose account is banned is refused with 409 (`sending_paused`,
`account_banned`). A queued message can be cancelled (`DELETE /messages/{id}`) until it is
being sent, and may carry an expiry (`expiresAt`). Settings use the CRM's key names
(`rateLimiting.messagesPerMinute`, ...); every body is camelCase like the rest of the API.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta
from quart import Blueprint, Response
from quart_schema import tag

from wad.api import audit, auth
from wad.api.auth import org_route
from wad.api.context import AppContext, Services, current
from wad.api.errors import ApiError
from wad.api.routes.whatsapp import require_org
from wad.api.schemas import Answer, Outcome, PhoneText, Request
from wad.api.validation import body, reply, responds
from wad.bus import EventBus, OutboundResumed, SendingResumed, SettingsChanged
from wad.db.models import OutboxItem, OutboxSender, OutboxStatus
from wad.db.pool import Database
from wad.db.repo import outbox as outbox_repo
from wad.db.repo import sessions as sessions_repo
from wad.errors import NotFound
from wad.org.outbound import feed
from wad.org.outbound import settings as settings_mod
from wad.org.outbound.feed import outbox_status
from wad.org.outbound.limits import DAY, HOUR, MINUTE, Clock, in_window
from wad.org.outbound.queue import (
    BatchTooLarge,
    ConfirmationRequired,
    InvalidMessage,
    MassSendingDisabled,
    Outgoing,
    RateLimited,
    SendingStopped,
    queue_bulk,
    queue_message,
)
from wad.org.outbound.settings import (
    MAX_BULK,
    RateLimiting,
    Safety,
    SendSettings,
    SettingsInvalid,
    SettingsPatch,
)

bp = Blueprint("outbound", __name__, url_prefix="/api/whatsapp")

A = TypeVar("A", bound=Answer)

Content = Annotated[str, Meta(min_length=1, max_length=4096,
                              description="The text to send, 1-4096 characters")]
Priority = Annotated[int, Meta(ge=1, le=10,
                               description="1 normal, 5 agent, 10 urgent; higher goes first")]
IdempotencyKey = Annotated[str, Meta(min_length=1, max_length=200,
                                     description="Repeating it answers the first message")]
ExpiresAt = Annotated[datetime, Meta(
    tz=True, description="Not sent by then (ISO 8601 with a time zone, in the future, at most "
    "30 days ahead): the message becomes EXPIRED and is never sent")]


# Bodies -------------------------------------------------------------------------------------


class SendRequest(Request, forbid_unknown_fields=True, kw_only=True):
    """Body of `POST /api/whatsapp/send`. An organization's token may omit `organizationId`."""

    organization_id: uuid.UUID | None = None
    to: PhoneText
    content: Content
    conversation_id: uuid.UUID | None = None
    priority: Priority = 1
    idempotency_key: IdempotencyKey | None = None
    expires_at: ExpiresAt | None = None


class BulkMessage(Request, forbid_unknown_fields=True, kw_only=True):
    to: PhoneText
    content: Content
    conversation_id: uuid.UUID | None = None
    idempotency_key: IdempotencyKey | None = None
    expires_at: ExpiresAt | None = None
    """This message's expiry (else the batch's)."""


class BulkRequest(Request, forbid_unknown_fields=True, kw_only=True):
    """Body of `POST /api/whatsapp/send/bulk`."""

    organization_id: uuid.UUID | None = None
    messages: Annotated[list[BulkMessage], Meta(min_length=1, max_length=MAX_BULK)]
    confirm: bool = False
    """Needed for a batch larger than `safety.maxBatchSize` while `requireConfirmation`."""
    require_confirmation: bool | None = None
    """The CRM's plan's spelling of the same: `false` confirms the batch (as `confirm: true`);
    `true` or absent confirms nothing."""
    priority: Priority = 1
    expires_at: ExpiresAt | None = None
    """The expiry of every message that gives none of its own."""


class OutboxEntry(Answer, kw_only=True):
    """What every answer about one message in the send queue says of it."""

    id: uuid.UUID
    organization_id: uuid.UUID
    to: str
    status: OutboxStatus
    priority: int
    sender: OutboxSender
    agent_name: str | None
    conversation_id: uuid.UUID | None
    client_id: uuid.UUID | None
    not_before: datetime
    created_at: datetime
    expires_at: datetime | None = None


class QueuedMessage(OutboxEntry, kw_only=True):
    """A message in the send queue. `success` and `message` are the CRM's plan's answer;
    `id` names the message in every later answer and event about it."""

    success: bool = True
    message: str
    """"Message queued for sending", or "Message already queued" (the idempotency key was used
    before)."""
    created: bool
    """False when the idempotency key was used before: this is the first message."""


class StatusEvent(Answer, kw_only=True):
    status: OutboxStatus
    detail: str | None
    at: datetime


class MessageState(OutboxEntry, kw_only=True):
    """A queued message's status and history."""

    content: str | None
    """The text; null for a VIEWER token, which sees a message's status, not its content."""
    idempotency_key: str | None
    wa_message_id: str | None
    attempts: int
    last_error: str | None
    sending_started_at: datetime | None
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
    message_id: uuid.UUID | None
    """The stored message (`messages`) once sent."""
    events: list[StatusEvent]
    fail_reason: str | None = None
    """Why it failed for good: `NOT_ON_WHATSAPP`, `REFUSED`, `NOT_CONFIRMED`, `SEND_ERROR`."""


class BulkItem(Answer, kw_only=True):
    """Base of what a batch's answer says of one of its messages."""

    index: int
    """The message's place in the request's `messages` (from 0)."""


class BulkQueued(BulkItem, kw_only=True):
    id: uuid.UUID
    status: OutboxStatus
    not_before: datetime
    created: bool
    expires_at: datetime | None = None


class BulkFailed(BulkItem, kw_only=True):
    to: str
    error: str


class BulkAnswer(Outcome, kw_only=True):
    """What a batch did: how many were queued, each queued message, and which failed and why
    (`success`: the batch was accepted, even if some of its messages failed)."""

    queued: int
    failed: int
    messages: list[BulkQueued]
    errors: list[BulkFailed]


class SettingsOut(Answer, kw_only=True):
    """An organization's sending settings (the CRM's key names)."""

    organization_id: uuid.UUID
    rate_limiting: RateLimiting
    safety: Safety


class WindowUse(Answer, kw_only=True):
    window: str
    limit: int
    sent: int


class QueueState(Answer, kw_only=True):
    """An organization's send queue right now."""

    organization_id: uuid.UUID
    sending_paused: bool
    sending_paused_reason: str | None
    queued: int
    sending: int
    next_due_at: datetime | None
    windows: list[WindowUse]
    concurrency: int


class Resumed(Answer, kw_only=True):
    organization_id: uuid.UUID
    sending_paused: bool
    was_paused: bool
    previous_reason: str | None


class SendingStoppedError(ApiError):
    """409 when the organization's sending is paused or its account banned: `error.code` is
    `sending_paused` or `account_banned`, `error.reason` why, `error.resume` how sending
    resumes."""

    def __init__(self, exc: SendingStopped, org_id: uuid.UUID) -> None:
        super().__init__(409, exc.code, str(exc))
        self.reason = exc.reason
        self.org_id = org_id

    def body(self) -> dict[str, Any]:
        answer = super().body()
        answer["error"]["reason"] = self.reason
        answer["error"]["resume"] = f"POST /api/whatsapp/send/resume/{self.org_id}"
        return answer


class RateLimitedError(ApiError):
    """429 with the limit that refused: `error.limit` is `{window, limit, remaining,
    resetAt}`; `Retry-After` says the same in seconds."""

    def __init__(self, exc: RateLimited) -> None:
        refusal = exc.refusal
        super().__init__(429, "rate_limited", str(exc),
                         headers={"Retry-After": str(refusal.retry_after_s(exc.now))})
        self.limit = {"window": refusal.window, "limit": refusal.limit,
                      "remaining": refusal.remaining, "resetAt": refusal.reset_at.isoformat()}

    def body(self) -> dict[str, Any]:
        answer = super().body()
        answer["error"]["limit"] = self.limit
        return answer


# Helpers ------------------------------------------------------------------------------------


def _db() -> Database:
    db = current().db
    return db


def _services() -> Services:
    services = current().services
    return services


def _bus() -> EventBus | None:
    return _services().bus


def _clock() -> Clock:
    return _services().send_clock()


async def _load_settings(db: Database, org_id: uuid.UUID) -> SendSettings:
    """The organization's sending settings (defaults where none are stored); 404 for an
    unknown organization."""
    try:
        return await settings_mod.load(db, org_id)
    except NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None


def _settings_out(org_id: uuid.UUID, settings: SendSettings) -> SettingsOut:
    return SettingsOut(organization_id=org_id, rate_limiting=settings.rate_limiting,
                       safety=settings.safety)


_COPIED_COLUMNS = {name: name for name in OutboxItem.__struct_fields__ if name != "content"
                   } | {"to": "to_phone"}
"""An answer's field name -> the `OutboxItem` column it shows. Never `content`: whether the
caller may read the text is for each route to decide."""


def _describe(answer: type[A], item: OutboxItem, **given: Any) -> A:
    """An answer about the queued message `item`: the fields in `given` as given, and every
    other field that names a column of `item` (`to`: `to_phone`) copied from it."""
    copied = {name: getattr(item, _COPIED_COLUMNS[name]) for name in answer.__struct_fields__
              if name in _COPIED_COLUMNS and name not in given}
    return answer(**copied, **given)


def _queued(item: OutboxItem, created: bool) -> QueuedMessage:
    return _describe(QueuedMessage, item, created=created,
                     message="Message queued for sending" if created else "Message already queued")


def _refused(exc: Exception, org_id: uuid.UUID) -> ApiError:
    """The queue's refusals as answers."""
    if isinstance(exc, SendingStopped):
        return SendingStoppedError(exc, org_id)
    if isinstance(exc, RateLimited):
        return RateLimitedError(exc)
    if isinstance(exc, InvalidMessage):
        return ApiError(400, "invalid", str(exc), field=exc.field)
    if isinstance(exc, MassSendingDisabled):
        return ApiError(403, "mass_sending_disabled", str(exc))
    if isinstance(exc, ConfirmationRequired):
        return ApiError(400, "confirmation_required", str(exc), field="confirm")
    if isinstance(exc, BatchTooLarge):
        return ApiError(400, "invalid", str(exc), field="messages")
    if isinstance(exc, NotFound):
        return ApiError(404, "not_found", str(exc))
    raise exc


_QUEUE_ERRORS = (SendingStopped, RateLimited, InvalidMessage, MassSendingDisabled, ConfirmationRequired,
                 BatchTooLarge, NotFound)


# Routes -------------------------------------------------------------------------------------


@bp.post("/send")
@tag(["outbound"])
@responds(QueuedMessage, 202, errors=(400, 401, 403, 404, 409, 429))
@responds(QueuedMessage, 200)
@body(SendRequest)
async def send(data: SendRequest) -> Response:
    """Queue a message; 202 with its id (200 with the first message when `idempotencyKey` was
    used before). Needs AGENT. The id is the `sendId` of every later feed entry and event about
    the send. 409 `sending_paused` / `account_banned` while the organization's sending is
    stopped (`error.reason`, `error.resume`). 429 when the hour or day limit has no room
    (`Retry-After`, and `error.limit` says which limit, how many remain and when there is room
    again)."""
    queued, status = await queue_send(current(), auth.current(), data)
    return reply(queued, status)


async def queue_send(ctx: AppContext, principal: auth.Principal, data: SendRequest
                     ) -> tuple[QueuedMessage, int]:
    """What `POST /send` answers for `principal` (with its status: 202 queued, 200 queued
    before under the same idempotency key); the fast lane (`wad.api.lane`) answers it too."""
    org_id = auth.org_of_body(principal, data.organization_id, "AGENT")
    try:  # an unknown organization is the queue's NotFound (404): one round trip fewer
        item, created = await queue_message(
            ctx.db, organization_id=org_id, to=data.to, content=data.content,
            priority=data.priority, sender="HUMAN", conversation_id=data.conversation_id,
            idempotency_key=data.idempotency_key, expires_at=data.expires_at,
            clock=ctx.services.send_clock(), bus=ctx.services.bus)
    except _QUEUE_ERRORS as exc:
        raise _refused(exc, org_id) from None
    return _queued(item, created), 202 if created else 200


@bp.post("/send/bulk")
@tag(["outbound"])
@responds(BulkAnswer, 202, errors=(400, 401, 403, 404, 409, 429))
@body(BulkRequest)
async def send_bulk(data: BulkRequest) -> Response:
    """Queue 1-100 messages, spread over time. Needs ADMIN, and `safety.enableMassSending`
    (403 `mass_sending_disabled` otherwise); above `safety.maxBatchSize` it needs `confirm:
    true` while `requireConfirmation` (400 `confirmation_required`). The batch is checked as a
    whole against the day limit before anything is queued (429). Messages with a bad number are
    left out and listed in `errors`."""
    org_id = auth.body_org(data.organization_id, "ADMIN")
    await require_org(org_id)
    messages = [Outgoing(to=m.to, content=m.content, conversation_id=m.conversation_id,
                         idempotency_key=m.idempotency_key,
                         expires_at=m.expires_at or data.expires_at) for m in data.messages]
    try:
        result = await queue_bulk(_db(), organization_id=org_id, messages=messages,
                                  priority=data.priority, sender="HUMAN",
                                  confirm=data.confirm or data.require_confirmation is False,
                                  clock=_clock(), bus=_bus())
    except _QUEUE_ERRORS as exc:
        raise _refused(exc, org_id) from None
    return reply(BulkAnswer(
        organization_id=org_id, queued=len(result.queued), failed=len(result.failed),
        messages=[_describe(BulkQueued, item, index=i, created=created)
                  for i, item, created in result.queued],
        errors=[BulkFailed(index=i, to=to, error=why) for i, to, why in result.failed]), 202)


@bp.get("/messages/<message_id>")
@tag(["outbound"])
@responds(MessageState, errors=(401, 404))
async def message(message_id: str) -> Response:
    """A queued message's status and its history (oldest first). Any token of its
    organization (a VIEWER's answer has `content` null); another organization's message is not
    found."""
    return reply(await _state(message_id))


async def _state(message_id: str) -> MessageState:
    """The caller's organization's queued message (404 for another organization's)."""
    got = await outbox_repo.get_with_events(
        _db(), outbox_id=auth.parse_uuid(message_id, what="message"))
    caller = auth.current()
    if got is None or not (caller.is_super_admin
                           or caller.organization_id == got[0].organization_id):
        raise ApiError(404, "not_found", f"no such message: {message_id}")
    item, events = got
    return _describe(
        MessageState, item, content=item.content if auth.has_rank(caller, "AGENT") else None,
        events=[StatusEvent(status=e.status, detail=e.detail, at=e.at) for e in events])


@bp.delete("/messages/<message_id>")
@tag(["outbound"])
@responds(MessageState, errors=(401, 403, 404, 409))
async def cancel(message_id: str) -> Response:
    """Cancel a queued message: 200 with its record (status `CANCELLED`; a `send.cancelled`
    feed entry). Needs AGENT. 409 `not_cancellable` once it is being sent or is final (its
    status in the message); another organization's message is not found."""
    state = await _state(message_id)
    auth.authorize(state.organization_id, "AGENT")
    db = _db()
    async with db.transaction() as tx:
        cancelled = await outbox_repo.cancel(tx, outbox_id=state.id)
        if cancelled is not None:
            await feed.cancelled(tx, cancelled)
    if cancelled is None:
        now = await outbox_repo.get(db, outbox_id=state.id)
        status = now.status if now is not None else state.status
        raise ApiError(409, "not_cancellable", f"the message is {status}: only a QUEUED message "
                       "can be cancelled")
    await audit.record("send.cancelled", cancelled.organization_id, send_id=str(cancelled.id),
                       to=cancelled.to_phone)
    bus = _bus()
    if bus is not None:
        bus.publish(outbox_status(cancelled))
    return reply(await _state(message_id))


@bp.get("/settings/<org>")
@tag(["outbound"])
@responds(SettingsOut, errors=(401, 403, 404))
@org_route("VIEWER")
async def get_settings(org_id: uuid.UUID) -> Response:
    """The organization's sending limits and bulk rules (defaults where none are stored)."""
    return reply(_settings_out(org_id, await _load_settings(_db(), org_id)))


@bp.put("/settings/<org>")
@tag(["outbound"])
@responds(SettingsOut, errors=(400, 401, 403, 404))
@org_route("ADMIN")
@body(SettingsPatch)
async def put_settings(org_id: uuid.UUID, data: SettingsPatch) -> Response:
    """Change some of the settings (a partial update is merged). Needs ADMIN. 400 names the
    field that breaks a rule: at most 20 a minute, hour >= minute, day >= hour, concurrency
    1-10, maxBatchSize 1-100."""
    before = await _load_settings(_db(), org_id)
    try:
        merged = await settings_mod.update(_db(), org_id, data)
    except NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except SettingsInvalid as exc:
        raise ApiError(400, "invalid", str(exc), field=exc.field) from None
    await audit.record("settings.changed", org_id, changes=msgspec.to_builtins(data),
                       before=before.as_document(), after=merged.as_document())
    bus = _bus()
    if bus is not None:
        bus.signal(SettingsChanged(org_id=org_id, settings=merged.as_document()))
    return reply(_settings_out(org_id, merged))


@bp.get("/queue/<org>")
@tag(["outbound"])
@responds(QueueState, errors=(401, 403, 404))
@org_route("VIEWER")
async def queue_state(org_id: uuid.UUID) -> Response:
    """How many messages wait and are being sent, what the windows hold, and whether sending is
    paused (and why)."""
    db = _db()
    current = await _load_settings(db, org_id)
    now = _clock().now()
    sent = await outbox_repo.sent_times_since(db, organization_id=org_id, since=now - DAY)
    counts = await outbox_repo.count_queued_and_sending(db, organization_id=org_id)
    row = await sessions_repo.get(db, organization_id=org_id)
    limits = current.rate_limiting
    return reply(QueueState(
        organization_id=org_id, sending_paused=bool(row and row.sending_paused),
        sending_paused_reason=row.sending_paused_reason if row else None,
        queued=int(counts.get("QUEUED", 0)), sending=int(counts.get("SENDING", 0)),
        next_due_at=await outbox_repo.next_due_at(db, organization_id=org_id),
        windows=[WindowUse(window="minute", limit=limits.messages_per_minute,
                           sent=in_window(sent, now, MINUTE)),
                 WindowUse(window="hour", limit=limits.messages_per_hour,
                           sent=in_window(sent, now, HOUR)),
                 WindowUse(window="day", limit=limits.messages_per_day,
                           sent=in_window(sent, now, DAY))],
        concurrency=limits.concurrency))


@bp.post("/send/resume/<org>")
@tag(["outbound"])
@responds(Resumed, errors=(401, 403, 404))
@org_route("ADMIN")
async def resume(org_id: uuid.UUID) -> Response:
    """Close the circuit breaker: sending starts again (the queue was kept). Needs ADMIN."""
    await require_org(org_id)
    db = _db()
    async with db.transaction() as tx:
        row = await sessions_repo.get(tx, organization_id=org_id, for_update=True)
        was_paused = bool(row and row.sending_paused)
        await sessions_repo.set_sending_paused(tx, organization_id=org_id, paused=False)
        if was_paused:
            await feed.resumed(tx, org_id,
                               previous_reason=row.sending_paused_reason if row else None)
    await audit.record("sending.resumed", org_id, was_paused=was_paused,
                       previous_reason=row.sending_paused_reason if row else None)
    bus = _bus()
    if bus is not None:
        bus.signal(SendingResumed(org_id=org_id, was_paused=was_paused))
        if was_paused:
            bus.publish(OutboundResumed(
                org_id=org_id, previous_reason=row.sending_paused_reason if row else None))
    return reply(Resumed(organization_id=org_id, sending_paused=False, was_paused=was_paused,
                         previous_reason=row.sending_paused_reason if row else None))
