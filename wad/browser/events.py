"""What the browser session reports: a tagged union of msgspec Structs.

The bridge (`bridge.js`) posts each event as one JSON object through the page binding (events
that queue up while Python takes the previous call travel together, as a JSON array); its
`event` field names the kind. `decode` turns that JSON into one of the Structs below, so a
malformed event fails with a message that names the field. `BrowserClosed` is the only event
made on the Python side (the page crashed or the browser went away).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class Message(msgspec.Struct, kw_only=True, frozen=True):
    """One WhatsApp message as the page holds it.

    `id` is the serialized key (`fromMe_remote_id`, plus `_participant` in some groups);
    `body` is the text of text-like messages and empty for media (whose text is `caption`).
    """

    id: str
    from_me: bool
    chat_id: str
    author: str | None = None
    """The sender inside a group (`NUMBER@c.us` or `ID@lid`); None in one-to-one chats."""
    sender: str | None = None
    """Who wrote it: the chat's other party, the group author, or None for own messages."""
    type: str
    body: str = ""
    caption: str | None = None
    timestamp: int = 0
    """Unix seconds (the page's `t`)."""
    push_name: str | None = None
    ack: int = 0
    is_group: bool = False
    is_status: bool = False
    is_broadcast: bool = False
    is_newsletter: bool = False
    has_media: bool = False
    mimetype: str | None = None
    filename: str | None = None
    size: int | None = None
    quoted_id: str | None = None


class BridgeReady(msgspec.Struct, tag_field="event", tag="bridge_ready", kw_only=True, frozen=True):
    """The bridge was (re-)injected into a freshly loaded page."""

    version: str
    """The page's `Debug.VERSION`."""
    url: str = ""


class QrChanged(msgspec.Struct, tag_field="event", tag="qr", kw_only=True, frozen=True):
    """A new QR payload to show (five comma-separated fields, `ref` first)."""

    payload: str


class PairingCode(msgspec.Struct, tag_field="event", tag="pairing_code", kw_only=True, frozen=True):
    """An 8-character code to type on the phone (valid about 3 minutes)."""

    code: str
    phone: str = ""


class StateChanged(msgspec.Struct, tag_field="event", tag="state", kw_only=True, frozen=True):
    """The raw `Socket.state` string changed (`CONNECTED`, `UNPAIRED`, `CONFLICT`, ...)."""

    state: str


class Ready(msgspec.Struct, tag_field="event", tag="ready", kw_only=True, frozen=True):
    """The initial sync after login is done (`hasSynced`); the account is usable."""

    wid: str
    """The linked account's own id (`NUMBER@c.us`)."""
    phone: str
    """The linked account's number, digits only."""
    push_name: str = ""
    platform: str = ""
    is_business: bool = False
    lid: str | None = None


class MessageReceived(msgspec.Struct, tag_field="event", tag="message", kw_only=True, frozen=True):
    """An incoming message (not from this account), reported once, when readable."""

    message: Message


class OwnMessage(msgspec.Struct, tag_field="event", tag="own_message", kw_only=True, frozen=True):
    """A message from this account: sent by wad or typed on the phone."""

    message: Message


class AckChanged(msgspec.Struct, tag_field="event", tag="ack", kw_only=True, frozen=True):
    """A message's ack changed: -1 error, 0 pending, 1 server, 2 delivered, 3 read, 4 played."""

    id: str
    chat_id: str
    ack: int
    from_me: bool = True


class MessageEdited(msgspec.Struct, tag_field="event", tag="edited", kw_only=True, frozen=True):
    """A message's text or caption changed after it was reported."""

    id: str
    chat_id: str
    from_me: bool
    body: str = ""
    caption: str | None = None


class MessageRevoked(msgspec.Struct, tag_field="event", tag="revoked", kw_only=True, frozen=True):
    """A message was deleted for everyone."""

    id: str
    chat_id: str
    from_me: bool


DisconnectReason = Literal[
    "logout", "conflict", "banned", "deprecated_version", "proxy_block", "unpaired", "other"
]


class Disconnected(msgspec.Struct, tag_field="event", tag="disconnected", kw_only=True,
                   frozen=True):
    """The session is gone (logged out, opened elsewhere, banned, outdated); not transient."""

    reason: DisconnectReason
    state: str = ""
    """The `Socket.state` at that moment."""


class BridgeErrorEvent(msgspec.Struct, tag_field="event", tag="error", kw_only=True, frozen=True):
    """Something in the page failed outside a call (a listener, a background send, injection)."""

    where: str
    message: str


class PageIncompatible(msgspec.Struct, tag_field="event", tag="page_incompatible", kw_only=True,
                       frozen=True):
    """The page lacks modules or members the bridge relies on (a WhatsApp Web build the bridge
    does not know); the bridge was not installed. Posted by the driver after an injection."""

    version: str
    missing: list[str]
    """One line per problem, e.g. `WAWebSendMsgChatAction.addAndSendMsgToChat is missing`."""

    @property
    def reason(self) -> str:
        """The whole story in one line: the build and everything missing."""
        return f"WhatsApp Web {self.version or '(unknown build)'}: {'; '.join(self.missing)}"


class BrowserClosed(msgspec.Struct, tag_field="event", tag="browser_closed", kw_only=True,
                   frozen=True):
    """The page crashed or the browser/context closed without being asked to; the session is
    dead and must be reopened. Always the last event of a session."""

    reason: Literal["crash", "page_closed", "browser_closed"]


Event = (
    BridgeReady
    | QrChanged
    | PairingCode
    | StateChanged
    | Ready
    | MessageReceived
    | OwnMessage
    | AckChanged
    | MessageEdited
    | MessageRevoked
    | Disconnected
    | BridgeErrorEvent
    | PageIncompatible
    | BrowserClosed
)

def scrub(value: Any) -> Any:
    """The page's data with U+0000 replaced by U+FFFD in every string. A client can send a NUL
    character, and PostgreSQL text cannot hold one: the replacement keeps the message (and
    everything around the NUL) storable instead of losing it."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    if isinstance(value, dict):
        return {scrub(k): scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def may_hold_nul(raw: str | bytes) -> bool:
    """Whether JSON text `raw` can decode to a string with a NUL: JSON writes U+0000 as the
    escape `\u0000` (a raw NUL is not valid JSON), so without that escape there is none and
    `scrub` has nothing to do."""
    return (b"\\u0000" in raw) if isinstance(raw, bytes) else ("\\u0000" in raw)


def decode_json(raw: str | bytes) -> Any:
    """`raw` decoded, scrubbed (see `scrub`) when it may hold a NUL."""
    value = msgspec.json.decode(raw)
    return scrub(value) if may_hold_nul(raw) else value


def decode(raw: str | bytes) -> Event:
    """Decode one event posted by the bridge (scrubbed, see `scrub`); raises
    `msgspec.ValidationError` naming the field."""
    return msgspec.convert(decode_json(raw), Event)


def decode_each(raw: str | bytes) -> list[Event | msgspec.ValidationError]:
    """Decode what one binding call carried: one event, or a JSON array of the events that
    queued up in the page meanwhile, in order (scrubbed, see `scrub`). An element that does not
    validate stands as its `msgspec.ValidationError` (naming the field); the others still count.
    Text that is not JSON raises `msgspec.DecodeError`."""
    value = decode_json(raw)
    out: list[Event | msgspec.ValidationError] = []
    for item in value if isinstance(value, list) else [value]:
        try:
            out.append(msgspec.convert(item, Event))
        except msgspec.ValidationError as exc:
            out.append(exc)
    return out


class ChatInfo(msgspec.Struct, kw_only=True, frozen=True):
    """One chat of `list_chats`."""

    id: str
    name: str | None = None
    is_group: bool = False
    unread: int = 0
    t: int = 0
    """Last activity, unix seconds."""
    archived: bool = False


class MessagePage(msgspec.Struct, kw_only=True, frozen=True):
    """A page of `fetch_messages`: messages oldest first, and the cursor for the page before
    them (None once the start of the history is reached)."""

    messages: list[Message]
    next_cursor: str | None


class SentInfo(msgspec.Struct, kw_only=True, frozen=True):
    """What `send_text` answers once the page added the message locally."""

    id: str
    """The serialized message id (`true_CHAT_ID`)."""
    chat_id: str
    timestamp: int
    already_existed: bool = False
    """True when a message with that id was already in the page, so nothing was sent again."""


class Contact(msgspec.Struct, kw_only=True, frozen=True):
    """A contact as the page knows it."""

    id: str
    number: str | None = None
    push_name: str | None = None
    saved_name: str | None = None
    short_name: str | None = None
    verified_name: str | None = None
    is_business: bool = False
    is_enterprise: bool = False
    is_my_contact: bool = False
    is_me: bool = False
    is_group: bool = False


class SessionState(msgspec.Struct, kw_only=True, frozen=True):
    """A snapshot of the page's connection."""

    state: str | None
    has_synced: bool
    qr: str | None
    version: str
    wid: str | None = None
