"""From WhatsApp's messages (as the bridge reports them) to wad's rows: pure functions.

The inbound actor and the importer share these, so that a message stored live and the same
message imported later look the same (and the second is recognised as a duplicate by its id).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import phonenumbers
from phonenumbers import timezone

from wad.browser.events import Message as WaMessage
from wad.db.models import MessageSender, MessageStatus, MessageType, NewMessage
from wad.whatsapp import chats, places

# WhatsApp's message types and the schema's. Voice notes (`ptt`) are audio; contact cards
# (`vcard`, `multi_vcard`) are vcards; polls, events, orders and the like are `other`.
_TYPES: dict[str, MessageType] = {
    "chat": "text",
    "text": "text",
    "image": "image",
    "video": "video",
    "gif": "video",
    "ptv": "video",
    "audio": "audio",
    "ptt": "audio",
    "document": "document",
    "sticker": "sticker",
    "location": "location",
    "live_location": "location",
    "vcard": "vcard",
    "multi_vcard": "vcard",
}

SYSTEM_TYPES = frozenset({
    "e2e_notification", "notification", "notification_template", "gp2", "protocol", "revoked",
    "ciphertext", "debug", "broadcast_notification", "call_log", "initial_e2e",
})
"""Notices that nobody wrote (encryption notices, group changes, calls, deleted messages):
never stored as messages. The bridge filters them from live events; history pages contain them."""

_ACKS: dict[int, MessageStatus] = {
    -1: "FAILED", 0: "PENDING", 1: "SENT", 2: "DELIVERED", 3: "READ", 4: "PLAYED",
}


def message_type(wa_type: str) -> MessageType:
    """The stored type of a WhatsApp message type (`ptt` -> `audio`, unknown -> `other`)."""
    return _TYPES.get(wa_type, "other")


def is_system(message: WaMessage) -> bool:
    """True for notices that are not messages (see `SYSTEM_TYPES`)."""
    return message.type in SYSTEM_TYPES


def ack_status(ack: int) -> MessageStatus | None:
    """The stored status of an ack (-1 error ... 4 played); None for values WhatsApp never sends."""
    return _ACKS.get(ack)


def is_ignored(message: WaMessage, *, groups: bool = False, status: bool = False,
               newsletters: bool = False) -> bool:
    """Whether the inbound channel leaves the message alone: system notices always, other
    messages when their chat is not stored (`wad.whatsapp.chats`)."""
    if is_system(message):
        return True
    kind = chats.chat_kind(message.chat_id, is_group=message.is_group,
                           is_broadcast=message.is_status or message.is_broadcast,
                           is_newsletter=message.is_newsletter)
    return not chats.is_stored(kind, groups=groups, status=status, newsletters=newsletters)


def media_metadata(message: WaMessage) -> dict[str, Any] | None:
    """The file facts of a media message (WhatsApp type, MIME type, file name, size); None for
    text. Downloading the file is a later step; these say what there is to download."""
    if not message.has_media and message_type(message.type) in ("text", "other"):
        return None
    facts: dict[str, Any] = {"wa_type": message.type}
    if message.mimetype:
        facts["mimetype"] = message.mimetype
    if message.filename:
        facts["filename"] = message.filename
    if message.size is not None:
        facts["size"] = message.size
    return facts


def sent_at(message: WaMessage, *, fallback: datetime | None = None) -> datetime:
    """WhatsApp's time of the message (UTC); `fallback` (default now) when the page gave none."""
    if message.timestamp > 0:
        return datetime.fromtimestamp(message.timestamp, UTC)
    return fallback or datetime.now(UTC)


def new_message(organization_id: uuid.UUID, message: WaMessage, *,
                sender: MessageSender | None = None) -> NewMessage:
    """The row to store for a WhatsApp message. Incoming messages are from the client;
    own messages are from a human on the phone unless `sender` says otherwise (AI for an
    agent's reply that wad sent). Text is in `body`; a media message keeps its caption."""
    wa_type = message_type(message.type)
    if message.from_me:
        direction, who = "OUT", sender or "HUMAN"
        status = ack_status(message.ack) or "PENDING"
    else:
        direction, who, status = "IN", "CLIENT", "RECEIVED"
    body = message.body if message.body else None
    caption = message.caption or None
    if wa_type not in ("text", "other") and body is not None and caption is None:
        caption, body = body, None  # some pages put a media's caption in its body
    return NewMessage(
        organization_id=organization_id,
        wa_message_id=message.id,
        wa_chat_id=message.chat_id,
        direction=direction,  # type: ignore[arg-type]
        sender=who,  # type: ignore[arg-type]
        sent_at=sent_at(message),
        status=status,
        type=wa_type,
        body=body,
        caption=caption,
        media=media_metadata(message),
    )


def number_context(phone: str) -> dict[str, Any]:
    """What a number says about its owner, for the client's metadata (their cultural context):
    the country (ISO code and English name), the region when the number is specific enough,
    and the time zone when there is only one. Empty for a number phonenumbers cannot place."""
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return {}
    country = phonenumbers.region_code_for_number(parsed)
    if not country or country == "001":
        return {}
    context: dict[str, Any] = {"country": country}
    geocoder = places.geocoder()
    country_name = geocoder.country_name_for_number(parsed, "en")
    if country_name:
        context["country_name"] = country_name
    place = geocoder.description_for_number(parsed, "en")
    if place and place != country_name:
        context["region"] = place
    zones = [z for z in timezone.time_zones_for_number(parsed) if z != "Etc/Unknown"]
    if len(zones) == 1:
        context["time_zone"] = zones[0]
    return context
