"""Rows of wad's tables as msgspec Structs (one per table), and the closed sets of values that the
schema's check constraints enforce. Repositories in `wad.db.repo` return these."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal, get_args

import msgspec

Role = Literal["SUPER_ADMIN", "ADMIN", "AGENT", "VIEWER", "METRICS"]
SessionState = Literal[
    "DISCONNECTED", "CONNECTING", "QR_CODE_PENDING", "PAIRING_CODE_PENDING", "CONNECTED",
    "ERROR", "LOGGED_OUT", "BANNED",
]
ClientStatus = Literal[
    "NEW_LEAD", "QUALIFIED", "WARMED", "PROPOSAL_SENT", "NEGOTIATION", "SOLD", "SERVICE", "CLOSED",
]
ConversationStatus = Literal["ACTIVE", "CLOSED"]
Direction = Literal["IN", "OUT"]
MessageSender = Literal["CLIENT", "HUMAN", "AI"]
MessageType = Literal[
    "text", "image", "video", "audio", "document", "sticker", "location", "vcard", "call",
    "other",
]
MessageStatus = Literal[
    "RECEIVED", "PENDING", "SENT", "DELIVERED", "READ", "PLAYED", "FAILED", "REVOKED",
]
ProcessingState = Literal["PENDING", "DONE", "FAILED", "SKIPPED"]
OutboxSender = Literal["HUMAN", "AI"]
OutboxStatus = Literal["QUEUED", "SENDING", "SENT", "DELIVERED", "READ", "FAILED", "CANCELLED",
                       "EXPIRED"]
ImportStatus = Literal["RUNNING", "COMPLETED", "FAILED", "INTERRUPTED"]
DeliveryStatus = Literal["PENDING", "DELIVERED", "FAILED"]
AuditActor = Literal["socket", "token"]

# The same sets as tuples, for validation at the edges (API, CLI).
ROLES: tuple[Role, ...] = get_args(Role)
ORGLESS_ROLES: tuple[Role, ...] = ("SUPER_ADMIN", "METRICS")
"""Roles whose tokens belong to no organization (every other token belongs to exactly one)."""
SESSION_STATES: tuple[SessionState, ...] = get_args(SessionState)
CLIENT_STATUSES: tuple[ClientStatus, ...] = get_args(ClientStatus)
MESSAGE_TYPES: tuple[MessageType, ...] = get_args(MessageType)
MESSAGE_STATUSES: tuple[MessageStatus, ...] = get_args(MessageStatus)
OUTBOX_STATUSES: tuple[OutboxStatus, ...] = get_args(OutboxStatus)

E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"
"""The phone number format the schema accepts (E.164 with a leading `+`)."""


class Row(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every row: immutable; build a new one with `msgspec.structs.replace`. (Subclasses
    repeat the options because type checkers do not inherit them.)"""


class Organization(Row, frozen=True, kw_only=True):
    id: uuid.UUID
    name: str
    settings: dict[str, Any]
    created_at: datetime


class ApiToken(Row, frozen=True, kw_only=True):
    """A token's record. The hash is deliberately not part of it: nothing needs it after lookup."""

    id: uuid.UUID
    organization_id: uuid.UUID | None
    role: Role
    prefix: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class WhatsAppSession(Row, frozen=True, kw_only=True):
    organization_id: uuid.UUID
    state: SessionState
    should_run: bool
    qr_payload: str | None
    qr_issued_at: datetime | None
    pairing_code: str | None
    pairing_code_issued_at: datetime | None
    last_error: str | None
    last_connected_at: datetime | None
    last_disconnected_at: datetime | None
    wa_version: str | None
    phone_number: str | None
    push_name: str | None
    node_id: str | None
    sending_paused: bool
    sending_paused_reason: str | None
    updated_at: datetime
    link_started_at: datetime | None = None
    """When the current login began to be linked (its first QR or pairing code)."""


class SessionArchiveInfo(Row, frozen=True, kw_only=True):
    """An archive version without its bytes (for listings)."""

    id: int
    organization_id: uuid.UUID
    sha256: bytes
    size: int
    created_at: datetime
    key_id: str | None = None
    """Id of the key that sealed it (`wad.browser.profile`); None: format 1, before key ids."""
    restored_at: datetime | None = None
    """When it last restored a profile successfully."""


class SessionArchive(SessionArchiveInfo, frozen=True, kw_only=True):
    """An archive version with its (encrypted) bytes."""

    archive: bytes


class ClientColumns(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The columns of a client that the read API shows as they are (all of them); camelCase
    in JSON, as the API answers them."""

    id: uuid.UUID
    organization_id: uuid.UUID
    phone: str
    name: str | None
    push_name: str | None
    saved_name: str | None
    profile_picture_url: str | None
    preferred_language: str | None
    status: ClientStatus
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class Client(ClientColumns, Row, frozen=True, kw_only=True):
    """A row of `clients`."""


class StatusChangeColumns(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The columns of a client's status change that the read API shows (all but the
    organization); camelCase in JSON, as the API answers them."""

    id: int
    client_id: uuid.UUID
    from_status: ClientStatus | None
    to_status: ClientStatus
    detector: str
    reason: str | None
    created_at: datetime


class ClientStatusChange(StatusChangeColumns, Row, frozen=True, kw_only=True):
    organization_id: uuid.UUID


class ConversationColumns(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The columns of a conversation that the read API shows as they are (all of them);
    camelCase in JSON, as the API answers them."""

    id: uuid.UUID
    organization_id: uuid.UUID
    client_id: uuid.UUID
    channel: str
    status: ConversationStatus
    wa_chat_id: str | None
    last_message_at: datetime | None
    created_at: datetime


class Conversation(ConversationColumns, Row, frozen=True, kw_only=True):
    """A row of `conversations`."""


class MessageBasics(msgspec.Struct, frozen=True, kw_only=True):
    """What every message wad handles has: whose it is, its chat, its way, who wrote it, when,
    its status and its text. Shared by the message to store (`NewMessage`) and the one that
    plugins are given (`wad.payloads.Message`)."""

    organization_id: uuid.UUID
    wa_message_id: str
    wa_chat_id: str
    direction: Direction
    sender: MessageSender
    sent_at: datetime
    status: MessageStatus
    type: MessageType = "text"
    body: str | None = None
    caption: str | None = None


class NewMessage(MessageBasics, Row, frozen=True, kw_only=True):
    """A message to store (input of `repo.messages.insert_if_absent` and `insert_many`)."""

    media: dict[str, Any] | None = None
    conversation_id: uuid.UUID | None = None
    language: str | None = None
    processing_state: ProcessingState = "PENDING"


class MessageColumns(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The columns of a stored message that the read API shows (all but its processing);
    camelCase in JSON, as the API answers them."""

    id: uuid.UUID
    organization_id: uuid.UUID
    conversation_id: uuid.UUID | None
    wa_message_id: str
    wa_chat_id: str
    direction: Direction
    sender: MessageSender
    type: MessageType
    body: str | None
    caption: str | None
    media: dict[str, Any] | None
    sent_at: datetime
    """WhatsApp's time of the message."""
    status: MessageStatus
    edited_at: datetime | None
    language: str | None
    created_at: datetime
    """When wad stored it."""


class Message(MessageColumns, Row, frozen=True, kw_only=True):
    """A row of `messages`."""

    processing_state: ProcessingState
    processing_error: str | None
    processing_attempts: int


class ChatLatest(Row, frozen=True, kw_only=True):
    """The latest stored message of a chat: where inbound catch-up resumes."""

    wa_chat_id: str
    wa_message_id: str
    sent_at: datetime


class OutboxItem(Row, frozen=True, kw_only=True):
    id: uuid.UUID
    organization_id: uuid.UUID
    client_id: uuid.UUID | None
    conversation_id: uuid.UUID | None
    message_id: uuid.UUID | None
    to_phone: str
    content: str
    priority: int
    sender: OutboxSender
    agent_name: str | None
    idempotency_key: str | None
    status: OutboxStatus
    wa_message_id: str | None
    attempts: int
    not_before: datetime
    last_error: str | None
    created_at: datetime
    sending_started_at: datetime | None
    sent_at: datetime | None
    delivered_at: datetime | None
    read_at: datetime | None
    updated_at: datetime
    expires_at: datetime | None = None
    """Not sent by then: `EXPIRED`, never sent after."""
    fail_reason: str | None = None
    """Why it failed for good, as a code (`wad.org.outbound.actor.FailReason`)."""


class OutboxEvent(Row, frozen=True, kw_only=True):
    id: int
    outbox_id: uuid.UUID
    status: OutboxStatus
    detail: str | None
    at: datetime


class ImportRunColumns(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The columns of an import run that the read API shows (all but the chats it has
    done); camelCase in JSON, as the API answers them."""

    id: uuid.UUID
    organization_id: uuid.UUID
    source: str
    status: ImportStatus
    options: dict[str, Any]
    chats_total: int | None
    chats_done: int
    messages_stored: int
    duplicates: int
    errors: list[dict[str, Any]]
    started_at: datetime
    finished_at: datetime | None
    updated_at: datetime


class ImportRun(ImportRunColumns, Row, frozen=True, kw_only=True):
    """A row of `import_runs`."""

    done_chats: list[str]


class PluginDelivery(Row, frozen=True, kw_only=True):
    id: int
    organization_id: uuid.UUID | None
    plugin: str
    event: str
    payload: dict[str, Any]
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class AuditEntry(Row, frozen=True, kw_only=True):
    """One line of the audit trail: `action` done on `organization_id` (None: on none) by the
    control socket or the token `token_id`, at `at`, with what it changed in `detail`."""

    id: int
    at: datetime
    organization_id: uuid.UUID | None
    actor: AuditActor
    token_id: uuid.UUID | None
    action: str
    detail: dict[str, Any]
