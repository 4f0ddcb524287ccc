"""The inbound channel's settings (`[inbound]` in the config file)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from wad.language import DEFAULT_LANGUAGES

Seconds = Annotated[float, Meta(ge=0, le=3600)]


class InboundSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """How incoming messages are stored and processed. Delays are drawn uniformly from
    [min, max]; tests set them to 0."""

    processing_delay_min_s: Seconds = 2.0
    """Processing of a stored message starts after a random delay in this range."""
    processing_delay_max_s: Seconds = 5.0
    reply_delay_min_s: Seconds = 2.0
    """An agent's reply is queued to be sent after a random delay in this range."""
    reply_delay_max_s: Seconds = 10.0
    enrichment_per_minute: Annotated[int, Meta(ge=1, le=60)] = 5
    """Extra WhatsApp requests (contact, profile picture) per minute per organization."""
    enrichment_pause_min_s: Seconds = 0.5
    """Random pause between two enrichment requests."""
    enrichment_pause_max_s: Seconds = 2.0
    languages: Annotated[list[str], Meta(min_length=1)] = msgspec.field(
        default_factory=lambda: list(DEFAULT_LANGUAGES))
    """Candidate languages (ISO 639-1) for messages and clients."""
    conversation_window: Annotated[int, Meta(ge=1, le=500)] = 30
    """Recent messages of a conversation handed to language, status and agent decisions."""
    store_groups: bool = False
    """Store messages of group chats (they are never processed into clients)."""
    store_status: bool = False
    """Store status broadcasts (stories) and broadcast lists."""
    store_newsletters: bool = False
    """Store channel (newsletter) posts."""
    catch_up_page_size: Annotated[int, Meta(ge=1, le=500)] = 50
    catch_up_max_pages: Annotated[int, Meta(ge=1, le=1000)] = 20
    """Per chat and reconnect; older gaps are the importer's business."""
    spool_max_events: Annotated[int, Meta(ge=1, le=1_000_000)] = 10_000
    """Events held while the database is unreachable before the session is made to wait."""
    db_retry_s: Annotated[float, Meta(gt=0, le=300)] = 1.0
    """How often an unreachable database is tried again."""
    max_concurrent_chats: Annotated[int, Meta(ge=1, le=256)] = 8
    """Chats processed at the same time (each chat's messages are processed in order)."""

    def __post_init__(self) -> None:
        for name in ("processing_delay", "reply_delay", "enrichment_pause"):
            low, high = getattr(self, f"{name}_min_s"), getattr(self, f"{name}_max_s")
            if low > high:
                raise ValueError(f"{name}_min_s must not exceed {name}_max_s")


def inbound_settings(settings: object) -> InboundSettings:
    """The `inbound` part of the daemon's settings, or the defaults while `Settings` has none."""
    found = getattr(settings, "inbound", None)
    return found if isinstance(found, InboundSettings) else InboundSettings()
