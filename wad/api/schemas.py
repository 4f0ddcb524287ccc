"""Request and response bodies of the control API, as msgspec Structs.

Request bodies forbid unknown fields and carry their limits as `Meta` constraints, so decoding is
validation (see `wad.api.validation`). The same Structs document the API in `/openapi.json`.

JSON field names are camelCase throughout, as the CRM's plan speaks: the two bases below name
every field with msgspec's `rename="camel"` (`organization_id` is `organizationId` on the wire),
so no Struct maps a name by hand. A request naming a field the old (snake_case) way is refused as
an unknown field.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from wad.db.models import Role, SessionState
from wad.db.repo.overview import OrgOverview

OrgName = Annotated[str, Meta(min_length=1, max_length=200,
                              description="A person's name for the organization")]
TokenName = Annotated[str, Meta(max_length=200, description="What the token is for")]
PhoneText = Annotated[str, Meta(min_length=1, max_length=40, examples=["+996555123456"],
                                description="International phone number; stored as E.164")]


class Request(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename="camel"):
    """Base of request bodies (and query strings): camelCase names; an unknown field is an
    error, never silently ignored."""


class Answer(msgspec.Struct, kw_only=True, rename="camel"):
    """Base of response bodies: camelCase names."""


# WhatsApp sessions ------------------------------------------------------------------------


class ConnectRequest(Request, forbid_unknown_fields=True, kw_only=True):
    """Body of `POST /api/whatsapp/connect`. An organization token may omit it (its own
    organization is meant); a super admin must name the organization."""

    organization_id: uuid.UUID | None = None


class PairingCodeRequest(Request, forbid_unknown_fields=True, kw_only=True):
    """Body of `POST /api/whatsapp/pairing-code/{org}`: the account's phone number."""

    phone_number: PhoneText


class SessionStatus(Answer, kw_only=True):
    """An organization's WhatsApp session as the database records it. The CRM's plan names
    the first five (`organizationId`, `status`, `lastConnectedAt`, `lastDisconnectedAt`,
    `errorMessage`); the rest are wad's."""

    organization_id: uuid.UUID
    status: SessionState
    """The session's state."""
    last_connected_at: datetime | None
    last_disconnected_at: datetime | None
    error_message: str | None
    """The last error (a failed start, a lost link); null once connected again."""
    should_run: bool
    phone_number: str | None
    push_name: str | None
    qr_available: bool
    qr_issued_at: datetime | None
    pairing_code_issued_at: datetime | None
    sending_paused: bool
    sending_paused_reason: str | None
    node_id: str | None
    updated_at: datetime | None
    parked_messages: int = 0
    """Incoming messages whose processing failed repeatedly (`processing_state` `FAILED`)."""
    last_parked_error: str | None = None
    """The error of the latest parked message."""


class StatusList(Answer, kw_only=True):
    """Every organization with its session state (super admin)."""

    organizations: list[OrgOverview]


class QrCode(Answer, kw_only=True):
    """The QR payload to scan with the phone (it rotates about every 20 s), or `qrCode` null
    when the session is not waiting for a scan (`status` says what it is doing instead)."""

    qr_code: str | None
    organization_id: uuid.UUID
    status: SessionState
    issued_at: datetime | None


class PairingCode(Answer, kw_only=True):
    """The 8-character code to type on the phone (Linked devices > Link with phone number)."""

    organization_id: uuid.UUID
    phone_number: str
    code: str


class Outcome(Answer, kw_only=True):
    """Base of the answers to an action on one organization that was done."""

    success: bool = True
    """Always true: an action that failed answers the error shape instead."""
    organization_id: uuid.UUID


class SessionAction(Outcome, kw_only=True):
    """What a connect, disconnect or logout left behind (`success` is always true: a failure
    answers the error shape)."""

    status: SessionState
    """The session's state right after the action."""
    should_run: bool


# Organizations and tokens -------------------------------------------------------------------


class CreateOrganizationRequest(Request, forbid_unknown_fields=True, kw_only=True):
    """Body of `POST /api/organizations`."""

    name: OrgName


class OrganizationOut(Answer, kw_only=True):
    id: uuid.UUID
    name: str
    settings: dict[str, Any]
    created_at: datetime


class OrganizationList(Answer, kw_only=True):
    organizations: list[OrganizationOut]


class CreateTokenRequest(Request, forbid_unknown_fields=True, kw_only=True):
    """Body of `POST /api/tokens`. `organizationId` is required for every role but
    `SUPER_ADMIN` and `METRICS` (which reads `/metrics` only), and forbidden for those."""

    role: Role
    organization_id: uuid.UUID | None = None
    name: TokenName = ""


class TokenOut(Answer, kw_only=True):
    """A token's record; the token itself is never shown again after creation."""

    id: uuid.UUID
    prefix: str
    role: Role
    organization_id: uuid.UUID | None
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class NewToken(TokenOut, kw_only=True):
    """A created token: `token` is shown this once; only its hash is stored."""

    token: str


class TokenList(Answer, kw_only=True):
    tokens: list[TokenOut]


# Session data: backups and purge -------------------------------------------------------------


class ArchiveOut(Answer, kw_only=True):
    """One stored version of the encrypted login archive."""

    id: int
    size: int
    sha256: str
    created_at: datetime
    key_id: str | None = None
    """Id of the key that sealed it; null: the format before key ids (re-sealed by
    `wad secret rotate`)."""
    restored_at: datetime | None = None
    """When it last restored a profile (the newest such archive is never pruned)."""


class FolderOut(Answer, kw_only=True):
    """A browser profile folder on this daemon's disk."""

    path: str
    size: int
    modified_at: datetime


class Backups(Answer, kw_only=True):
    """What is kept of an organization's login: archive versions in the database, the live
    profile and the trash folders that logouts and unrecoverable sessions moved aside."""

    organization_id: uuid.UUID
    archives: list[ArchiveOut]
    profile: FolderOut | None
    trash: list[FolderOut]
    import_profile: FolderOut | None = None
    """The importer's own browser profile (`wad import` without a running session)."""


class PurgeRequest(Request, forbid_unknown_fields=True, kw_only=True):
    """Body of `POST /api/sessions/{org}/purge`: deleting needs an explicit yes."""

    confirm: Annotated[bool, Meta(description="Must be true")]


class RotateRequest(Request, forbid_unknown_fields=True, kw_only=True):
    """Body of `POST /api/secret/rotate`: one batch of archives, by id (`wad secret rotate`
    calls it until `done`)."""

    after_id: Annotated[int, Meta(ge=0, le=2**63 - 1,
                                  description="Archives with a greater id")] = 0
    limit: Annotated[int, Meta(ge=1, le=1000, description="Most archives in this batch")] = 20


class PurgeResult(Answer, kw_only=True):
    organization_id: uuid.UUID
    archives_deleted: int
    folders_deleted: list[str]


# Daemon -------------------------------------------------------------------------------------


# The audit trail -------------------------------------------------------------------------


MAX_BIGINT = 2**63 - 1


class AuditQuery(Request, kw_only=True):
    """The query of `GET /api/audit`."""

    organization_id: uuid.UUID | msgspec.UnsetType = msgspec.UNSET
    """One organization's trail; without it, the super admin reads every entry (an
    organization's ADMIN token, its own organization's)."""
    limit: Annotated[int, Meta(ge=1, le=500, description="Entries per page")] = 100
    before: Annotated[int, Meta(ge=1, le=MAX_BIGINT, description=(
        "The cursor: entries older than this id (the previous page's `nextBefore`)"))
    ] | msgspec.UnsetType = msgspec.UNSET


class AuditEntryOut(Answer, kw_only=True):
    """Who did what, when: `actor` is `socket` (the control socket) or `token` (then
    `tokenId` names it)."""

    id: int
    at: datetime
    organization_id: uuid.UUID | None
    action: str
    actor: Literal["socket", "token"]
    token_id: uuid.UUID | None
    detail: dict[str, Any]


class AuditPage(Answer, kw_only=True):
    """`GET /api/audit`: entries newest first; `nextBefore` is the cursor of the next (older)
    page, null when this page reached the oldest entry."""

    entries: list[AuditEntryOut]
    next_before: int | None


class Tree(Answer, kw_only=True):
    """The live supervision tree: the daemon's own supervisor (see
    `wad.supervise.Supervisor.tree`) and the organization manager's view of every running
    organization (its session state and its supervisor's tree)."""

    node: str
    version: str
    uptime_s: float
    daemon: dict[str, Any] | None
    organizations: dict[str, Any]


class Health(Answer, kw_only=True):
    status: Literal["ok", "degraded"]
    database: bool
    database_unavailable_since: str | None = None
    """While the database does not answer: since when (ISO 8601, UTC)."""
    message: str | None = None
    """While degraded: "database unavailable since ..."."""
    version: str
    node: str
    uptime_s: float
