"""What wad hands to plugins and what plugins hand back: msgspec Structs, immutable.

They are deliberately separate from the database rows (`wad.db.models`): a plugin sees a stable,
documented shape, and the schema can change under it. Every Struct here encodes to JSON with
`msgspec.json.encode` (the webhook plugin sends them as they are), and decodes back with
validation, so a plugin that talks to a remote service can check what it got.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

import msgspec
from msgspec import Meta

from wad.db.models import (
    ClientStatus,
    Direction,
    MessageBasics,
    MessageSender,
    MessageStatus,
    MessageType,
    SessionState,
)

__all__ = [
    "FUNNEL",
    "AgentReply",
    "BackgroundTask",
    "Client",
    "ClientStatus",
    "ClientStatusChange",
    "Confidence",
    "ImportRequest",
    "ImportSource",
    "ImportedChat",
    "ImportedMessage",
    "LanguageGuess",
    "Message",
    "MessageStatusChange",
    "NotificationEvent",
    "SessionStatusChange",
    "StatusDecision",
    "funnel_index",
]

FUNNEL: tuple[ClientStatus, ...] = get_args(ClientStatus)
"""The sales funnel in its order, from first contact to a closed deal."""

Confidence = Annotated[float, Meta(ge=0.0, le=1.0)]


def funnel_index(status: ClientStatus) -> int:
    """The position of `status` in the funnel (NEW_LEAD is 0)."""
    return FUNNEL.index(status)


class Payload(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every payload: immutable, keyword-only."""


# Things wad knows -------------------------------------------------------------------------------


class Client(Payload, frozen=True, kw_only=True):
    """A client of the organization, as stored. `metadata` holds enrichment such as the country
    and region of the number (`{"country": "KG", "region": "Bishkek"}`)."""

    id: uuid.UUID
    organization_id: uuid.UUID
    phone: str
    """E.164, for example `+996555123456`."""
    name: str | None = None
    push_name: str | None = None
    saved_name: str | None = None
    preferred_language: str | None = None
    status: ClientStatus = "NEW_LEAD"
    metadata: dict[str, Any] = {}


class Message(MessageBasics, Payload, frozen=True, kw_only=True):
    """One stored WhatsApp message, incoming (`direction="IN"`, `sender="CLIENT"`) or outgoing
    (`sender` `HUMAN` for one typed on the phone or sent through the API, `AI` for an agent's).
    Its chat, way, sender, time, status and text are `MessageBasics`'."""

    id: uuid.UUID
    conversation_id: uuid.UUID | None = None
    client_id: uuid.UUID | None = None
    language: str | None = None
    send_id: uuid.UUID | None = None
    """For a message wad sent from its queue: the send's id (the `202` answer's)."""

    @property
    def text(self) -> str:
        """The words of the message: its body, else its caption, else empty."""
        return self.body or self.caption or ""


# Notifications (what happened) ----------------------------------------------------------------


class MessageStatusChange(Payload, frozen=True, kw_only=True):
    """A stored message's status moved (an ack, an edit's revoke, a failure)."""

    organization_id: uuid.UUID
    message: Message
    """The message after the change."""
    from_status: MessageStatus | None
    to_status: MessageStatus
    at: datetime


class SessionStatusChange(Payload, frozen=True, kw_only=True):
    """An organization's WhatsApp session changed state."""

    organization_id: uuid.UUID
    from_state: SessionState | None
    to_state: SessionState
    reason: str | None = None
    """Why, when wad knows: the last error, "logged out from the phone", ..."""
    at: datetime


class ClientStatusChange(Payload, frozen=True, kw_only=True):
    """A client moved in the funnel; the same facts as its `client_status_history` row."""

    organization_id: uuid.UUID
    client: Client
    """The client after the change."""
    from_status: ClientStatus | None
    to_status: ClientStatus
    detector: str
    reason: str | None = None
    at: datetime


NotificationEvent = Literal[
    "message.received",
    "message.sent",
    "message.status_changed",
    "session.status_changed",
    "client.status_changed",
]
"""The names of the notification hooks' events (`hookspecs.NOTIFICATION_HOOKS`); webhooks carry
the change feed's kinds instead (`wad.db.repo.changes.KINDS`)."""


# Answers plugins give -------------------------------------------------------------------------


class StatusDecision(Payload, frozen=True, kw_only=True):
    """A status detector's answer: where the client stands, how sure it is, and why.
    `detector` may be left empty; wad fills in the plugin's name."""

    status: ClientStatus
    confidence: Confidence
    reason: str = ""
    detector: str = ""


class AgentReply(Payload, frozen=True, kw_only=True):
    """An agent's reply to a client. `agent` may be left empty; wad fills in the plugin's name.
    A hook may also answer a plain string, which wad wraps in this."""

    text: Annotated[str, Meta(min_length=1, max_length=4096)]
    agent: str = ""


class LanguageGuess(Payload, frozen=True, kw_only=True):
    """The language of a text as an ISO 639-1 code (`"ru"`), or None when it cannot be told
    (too short, only emoji or numbers, or no candidate is likely enough)."""

    language: str | None
    probability: Confidence = 0.0


# Importing ------------------------------------------------------------------------------------


class ImportedMessage(Payload, frozen=True, kw_only=True):
    """A message from an import source. Without a `wa_message_id` wad derives a stable one from
    the chat, the time, the direction and the text, so that a second import skips it."""

    direction: Direction
    sender: MessageSender
    sent_at: datetime
    body: str | None = None
    type: MessageType = "text"
    caption: str | None = None
    wa_message_id: str | None = None
    media: dict[str, Any] | None = None


class ImportedChat(Payload, frozen=True, kw_only=True):
    """One chat from an import source: who it is with and its messages, oldest first."""

    key: str
    """Identifies the chat within its source (a chat id, a file name); import runs remember
    finished chats by it so that a resumed import skips them."""
    phone: str | None = None
    """The client's number in any international form; wad normalises it to E.164."""
    name: str | None = None
    messages: list[ImportedMessage] = []
    is_group: bool = False
    """A group chat: wad skips it and counts it (groups are not clients)."""
    problems: list[str] = []
    """What the source could not read (e.g. `file:line: unparsable line`), reported, never
    dropped silently."""


class ImportRequest(Payload, frozen=True, kw_only=True):
    """What `wad import --source NAME` asks of a source."""

    organization_id: uuid.UUID
    location: str | None = None
    """A path or URL the source reads (for example an exported chat file or folder)."""
    limit: int | None = None
    """At most this many chats; None for all."""
    options: dict[str, str] = {}


class ImportSource(msgspec.Struct, frozen=True, kw_only=True):
    """A named source of chats for `wad import --source NAME`. `chats(request)` is an async
    iterator of `ImportedChat`; wad stores each chat as it arrives."""

    name: Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_-]*$")]
    description: str
    chats: Callable[[ImportRequest], AsyncIterator[ImportedChat]]


class BackgroundTask(msgspec.Struct, frozen=True, kw_only=True):
    """A long-running task a plugin asks the daemon to run, such as a delivery worker.
    `run(task_status=...)` must call `task_status.started()` once ready, then run until
    cancelled; if it raises, wad logs it with the plugin's name and its supervisor starts it
    again later (`wad.plugins.task_supervisor`), up to `plugins.task_max_restarts` times."""

    name: str
    run: Callable[..., Awaitable[None]]
