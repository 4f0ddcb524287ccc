"""Typed bus events for tests, built from the few fields a test cares about."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from tests.support.plugin_helpers import client, message
from wad import bus
from wad.bus import Event


def event(kind: str, org: uuid.UUID | None, fields: dict[str, Any]) -> Event:
    """The `kind` event of `org`: for messages, one whose `body` is `fields["body"]` (other
    fields of the message may be given too); for status changes, one to `fields["to_status"]`;
    otherwise the event's own fields."""
    at = datetime.now(UTC)
    owner = org or uuid.uuid4()
    match kind:
        case "message.received" | "message.sent":
            fields = dict(fields)
            body = fields.pop("body", "")
            direction = "IN" if kind == "message.received" else "OUT"
            cls = bus.MessageReceived if kind == "message.received" else bus.MessageSent
            return cls(org_id=org, message=message(body, direction=direction,
                                                   organization_id=owner, **fields))
        case "message.stored":
            return bus.MessageStored(org_id=org, **{
                "wa_message_id": f"wamid.{uuid.uuid4().hex}", "wa_chat_id": "996555123456@c.us",
                "direction": "IN", "sender": "CLIENT", "type": "text", **fields})
        case "message.status_changed":
            return bus.MessageStatusChanged(org_id=org, change=bus.payloads.MessageStatusChange(
                organization_id=owner, message=message("", direction="OUT"), from_status=None,
                to_status=fields["to_status"], at=at))
        case "client.status_changed":
            return bus.ClientStatusChanged(org_id=org, change=bus.payloads.ClientStatusChange(
                organization_id=owner, client=client(organization_id=owner), from_status=None,
                to_status=fields["to_status"], detector="test", at=at))
    kinds = {cls.__struct_config__.tag: cls for cls in bus.AnyEvent.__args__}  # type: ignore[attr-defined]
    made: Event = kinds[kind](org_id=org, **fields)
    return made
