"""The daemon's in-process bus, and everything that travels on it, as typed msgspec Structs.

Two channels, each a fan-out to bounded subscriber buffers:

- **events** (`publish` / `subscribe`): facts, for whoever listens in the process (metrics,
  the plugins' session notifications, tests). Each `Event` subclass is one kind, its `kind` its
  tag (`session.status`, `message.received`, ...); every published event gets a sequence
  number, increasing for the life of the bus. (The CRM follows the durable change feed,
  `wad.db.repo.changes`, written with the database's changes, not these.)
- **signals** (`signal` / `listen`): what an actor must act on (a send's ack, a wake-up after
  queueing, an administrator's resume, the session's new state). They never reach the events'
  subscribers, so that the metrics and the actors each follow only their own.

Publishing never blocks: a subscriber that falls behind loses the overflow (counted in `dropped`
and logged), so that a slow listener cannot stall an actor.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import msgspec
import trio

from wad import log, payloads

_log = log.get("bus")

# -- events -----------------------------------------------------------------------------------


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    """One published fact about an organization (`org_id`, None for the daemon's own), stamped
    with the bus's sequence number `seq` when published and the time `at` it happened."""

    org_id: uuid.UUID | None
    seq: int = 0
    at: float = msgspec.field(default_factory=time.time)

    carries: ClassVar[str | None] = None
    """For an event that carries one object (a message, a change): that field, whose value
    alone is the payload."""

    @property
    def kind(self) -> str:
        """The event's name on the event stream, e.g. `session.status`."""
        return str(type(self).__struct_config__.tag)

    def payload(self) -> dict[str, Any]:
        """The event's own fields as JSON-able data (or the object it `carries`): what the
        event stream shows as `payload`."""
        if self.carries is not None:
            carried: dict[str, Any] = msgspec.to_builtins(getattr(self, self.carries))
            return carried
        data: dict[str, Any] = msgspec.to_builtins(self)
        for name in ("kind", "org_id", "seq", "at"):
            data.pop(name, None)
        return data


class SessionStatus(Event, frozen=True, kw_only=True, tag="session.status"):
    """The session's state changed, or a new QR payload or pairing code was issued."""

    state: payloads.SessionState
    previous: payloads.SessionState | None = None
    qr: str | None = None
    pairing_code: str | None = None
    last_error: str | None = None
    phone_number: str | None = None


class MessageStored(Event, frozen=True, kw_only=True, tag="message.stored"):
    """A message was stored (its processing follows)."""

    id: str
    wa_message_id: str
    wa_chat_id: str
    direction: str
    sender: str
    type: str


class _CarriesMessage(Event, frozen=True, kw_only=True):
    """Base of the events whose payload is one message (never published itself)."""

    message: payloads.Message
    carries = "message"


class MessageReceived(_CarriesMessage, frozen=True, kw_only=True, tag="message.received"):
    """A client's message was stored and processed."""


class MessageSent(_CarriesMessage, frozen=True, kw_only=True, tag="message.sent"):
    """A message typed on the linked phone, or sent from wad's queue."""


Change = TypeVar("Change", bound=payloads.Payload)


class _CarriesChange(Event, Generic[Change], frozen=True, kw_only=True):
    """Base of the events whose payload is one change record (never published itself)."""

    change: Change
    carries = "change"


class MessageStatusChanged(_CarriesChange[payloads.MessageStatusChange], frozen=True,
                           kw_only=True, tag="message.status_changed"):
    """A stored message's status moved (acks, a failure, a revoke)."""


class ClientStatusChanged(_CarriesChange[payloads.ClientStatusChange], frozen=True,
                          kw_only=True, tag="client.status_changed"):
    """A client moved in the sales funnel (after its status history row was written)."""


class MessageEdited(Event, frozen=True, kw_only=True, tag="message.edited"):
    """A stored message's text was edited on WhatsApp."""

    id: str
    wa_message_id: str


class AgentReplyQueued(Event, frozen=True, kw_only=True, tag="agent.reply_queued"):
    """An agent plugin's reply to a message was queued for sending."""

    outbox_id: str
    message_id: str
    agent: str | None
    not_before: str


class OutboxStatus(Event, frozen=True, kw_only=True, tag="outbox.status"):
    """A queued message's sending status moved (SENDING, SENT, a retry, FAILED, CANCELLED,
    EXPIRED). `id` is the send's id (the `202` answer's)."""

    id: str
    status: str
    attempts: int
    wa_message_id: str | None
    error: str | None
    reason: str | None = None
    """Why it failed for good, as a code (e.g. `NOT_ON_WHATSAPP`)."""


class SendingPaused(Event, frozen=True, kw_only=True, tag="outbound.paused"):
    """Sending stopped for the organization until an administrator resumes it."""

    reason: str


class OutboundResumed(Event, frozen=True, kw_only=True, tag="outbound.resumed"):
    """An administrator resumed the organization's sending (it had been paused for
    `previous_reason`)."""

    previous_reason: str | None


class SendsRefused(Event, frozen=True, kw_only=True, tag="outbox.refused"):
    """`count` sends were refused at the door by the `limit` window (hour or day)."""

    limit: str
    count: int = 1


class PluginFailed(Event, frozen=True, kw_only=True, tag="plugin.error"):
    """A plugin's hook implementation raised or took too long."""

    plugin: str
    hook: str


class SessionIncompatible(Event, frozen=True, kw_only=True, tag="session.incompatible"):
    """The WhatsApp Web page (build `version`) lacks modules or members the bridge relies on;
    the session stopped in ERROR with `reason` and is not retried."""

    version: str
    missing: list[str]
    reason: str


class ProcessingFailed(Event, frozen=True, kw_only=True, tag="message.processing_failed"):
    """Processing a stored message (client, conversation, language, status, agent) failed for
    the `attempts`-th time with `error`: it is tried again after `retry_in_s`, or, when
    `parked`, not any more (`processing_state` `FAILED`)."""

    id: str
    wa_message_id: str
    attempts: int
    error: str
    parked: bool
    retry_in_s: float | None = None


AnyEvent = (SessionStatus | MessageStored | MessageReceived | MessageSent | MessageStatusChanged
            | ClientStatusChanged | MessageEdited | AgentReplyQueued | OutboxStatus
            | SendingPaused | OutboundResumed | SendsRefused | PluginFailed | SessionIncompatible
            | ProcessingFailed)
"""Every event kind, as one tagged union (`msgspec.convert(data, AnyEvent)` decodes one)."""


# -- control signals --------------------------------------------------------------------------


class Signal(msgspec.Struct, frozen=True, kw_only=True, tag_field="signal"):
    """Something one of the organization's actors must act on."""

    org_id: uuid.UUID


class Ack(Signal, frozen=True, kw_only=True, tag="ack"):
    """WhatsApp acknowledged one of the organization's own messages (`ack` as the page gives
    it: -1 refused, 1 sent, 2 delivered, 3 read, 4 played): it finishes a send in flight."""

    wa_message_id: str
    wa_chat_id: str
    ack: int
    status: str
    changed: bool


class Queued(Signal, frozen=True, kw_only=True, tag="queued"):
    """`count` messages were queued (by the API, the CLI or an agent): wakes the sender."""

    count: int


class SendingResumed(Signal, frozen=True, kw_only=True, tag="resumed"):
    """An administrator resumed sending (`was_paused`: it had been paused)."""

    was_paused: bool


class SettingsChanged(Signal, frozen=True, kw_only=True, tag="settings"):
    """The organization's sending settings changed (the CRM's document, merged)."""

    settings: dict[str, Any]


class SessionChanged(Signal, frozen=True, kw_only=True, tag="session"):
    """The session reached `state` (inbound catches up on CONNECTED; outbound pauses on
    BANNED)."""

    state: payloads.SessionState


AnySignal = Ack | Queued | SendingResumed | SettingsChanged | SessionChanged
"""Every control signal, as one tagged union."""


# -- the bus ----------------------------------------------------------------------------------

M = TypeVar("M", bound=msgspec.Struct)


@dataclass
class _Subscriber(Generic[M]):
    send: trio.MemorySendChannel[M]
    org_id: uuid.UUID | None
    kinds: tuple[type[M], ...] | None
    dropped: int = 0


class _Fanout(Generic[M]):
    """Delivers each message to the subscribers of its organization and kinds, without
    blocking."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._subscribers: list[_Subscriber[M]] = []

    def deliver(self, message: M, org_id: uuid.UUID | None) -> None:
        for sub in list(self._subscribers):
            if sub.org_id is not None and sub.org_id != org_id:
                continue
            if sub.kinds is not None and not isinstance(message, sub.kinds):
                continue
            try:
                sub.send.send_nowait(message)
            except trio.WouldBlock:
                sub.dropped += 1
                if sub.dropped in (1, 10, 100) or sub.dropped % 1000 == 0:
                    _log.warning(f"bus subscriber falling behind; {self._what} dropped",
                                 dropped=sub.dropped, kind=type(message).__name__)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(sub)

    @contextmanager
    def subscribe(self, org_id: uuid.UUID | None, kinds: Iterable[type[M]] | None,
                  buffer: int) -> Iterator[trio.MemoryReceiveChannel[M]]:
        send, receive = trio.open_memory_channel[M](buffer)
        sub = _Subscriber(send=send, org_id=org_id,
                          kinds=tuple(kinds) if kinds is not None else None)
        self._subscribers.append(sub)
        try:
            yield receive
        finally:
            if sub in self._subscribers:
                self._subscribers.remove(sub)
            send.close()


E = TypeVar("E", bound=Event)


class EventBus:
    """The two channels: events and control signals."""

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self._events: _Fanout[Event] = _Fanout("events")
        self._signals: _Fanout[Signal] = _Fanout("signals")

    def publish(self, event: E) -> E:
        """Stamp `event` with the next sequence number and deliver it; answers it stamped."""
        stamped = msgspec.structs.replace(event, seq=next(self._seq))
        self._events.deliver(stamped, stamped.org_id)
        return stamped

    def subscribe(self, *, org_id: uuid.UUID | None = None,
                  kinds: Iterable[type[Event]] | None = None, buffer: int = 1000
                  ) -> AbstractContextManager[trio.MemoryReceiveChannel[Event]]:
        """Receive events (of one organization and/or of some `Event` classes) for the block's
        duration."""
        return self._events.subscribe(org_id, kinds, buffer)

    def signal(self, signal: Signal) -> None:
        """Deliver a control signal to the organization's listeners."""
        self._signals.deliver(signal, signal.org_id)

    def listen(self, *, org_id: uuid.UUID | None = None,
               kinds: Iterable[type[Signal]] | None = None, buffer: int = 1000
               ) -> AbstractContextManager[trio.MemoryReceiveChannel[Signal]]:
        """Receive control signals (of one organization and/or of some `Signal` classes) for
        the block's duration."""
        return self._signals.subscribe(org_id, kinds, buffer)
