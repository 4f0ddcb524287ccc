"""Super-admin endpoints: organizations, tokens, kept session data, the supervision tree."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import msgspec
from quart import Blueprint, Response, request
from quart_schema import tag

import wad
from wad import log
from wad.api import audit, auth, session_data
from wad.api.auth import Handler
from wad.api.context import current
from wad.api.errors import ApiError
from wad.api.routes.whatsapp import manager, require_org
from wad.api.schemas import (
    ArchiveOut,
    AuditEntryOut,
    AuditPage,
    AuditQuery,
    Backups,
    CreateOrganizationRequest,
    CreateTokenRequest,
    NewToken,
    OrganizationList,
    OrganizationOut,
    PurgeRequest,
    PurgeResult,
    RotateRequest,
    TokenList,
    TokenOut,
    Tree,
)
from wad.api.validation import body, query, reply, responds
from wad.browser import profile as archive
from wad.db.models import ORGLESS_ROLES, ApiToken, Organization
from wad.db.pool import Database
from wad.db.repo import audit as audit_repo
from wad.db.repo import organizations as orgs_repo
from wad.db.repo import sessions as sessions_repo
from wad.db.repo import tokens as tokens_repo
from wad.org import rotation
from wad.org.rotation import RotationResult

bp = Blueprint("admin", __name__, url_prefix="/api")
_log = log.get("api")


def _db() -> Database:
    db = current().db
    return db


def _super_admin_route(method: str, path: str, answer: type[msgspec.Struct], status: int = 200,
                       *, errors: tuple[int, ...],
                       body_model: type[msgspec.Struct] | None = None
                       ) -> Callable[[Handler], Handler]:
    """A route only the super admin may call: `method path` answering `answer` with `status`
    (documented with its `errors`), tagged `admin`, given its `data` decoded from the body when
    `body_model` names one."""

    def decorate(handler: Handler) -> Handler:
        if body_model is not None:
            handler = body(body_model)(handler)
        handler = responds(answer, status, errors=errors)(auth.super_admin_route(handler))
        return bp.route(path, methods=[method])(tag(["admin"])(handler))

    return decorate


def _org_out(org: Organization) -> OrganizationOut:
    return OrganizationOut(id=org.id, name=org.name, settings=org.settings,
                           created_at=org.created_at)


def _token_out(token: ApiToken) -> TokenOut:
    return TokenOut(id=token.id, prefix=token.prefix, role=token.role,
                    organization_id=token.organization_id, name=token.name,
                    created_at=token.created_at, last_used_at=token.last_used_at,
                    revoked_at=token.revoked_at)


# Organizations ----------------------------------------------------------------------------


@_super_admin_route("POST", "/organizations", OrganizationOut, 201,
                    errors=(400, 401, 403), body_model=CreateOrganizationRequest)
async def create_organization(data: CreateOrganizationRequest) -> Response:
    """Create an organization; the answer carries its new `id`."""
    name = data.name.strip()
    if not name:
        raise ApiError(400, "invalid", "`name`: must not be blank", field="name")
    org = await orgs_repo.create(_db(), name=name)
    _log.info("organization created", org=str(org.id))
    await audit.record("organization.created", org.id, name=org.name)
    return reply(_org_out(org), 201)


@_super_admin_route("GET", "/organizations", OrganizationList, errors=(401, 403))
async def list_organizations() -> Response:
    """Every organization, oldest first."""
    orgs = await orgs_repo.list_all(_db())
    return reply(OrganizationList(organizations=[_org_out(o) for o in orgs]))


# Tokens -----------------------------------------------------------------------------------


@_super_admin_route("POST", "/tokens", NewToken, 201,
                    errors=(400, 401, 403), body_model=CreateTokenRequest)
async def create_token(data: CreateTokenRequest) -> Response:
    """Create a token. The answer's `token` is shown this once; only its hash is stored."""
    if data.role in ORGLESS_ROLES and data.organization_id is not None:
        raise ApiError(400, "invalid", f"`organizationId`: a {data.role} token belongs to no "
                       "organization", field="organizationId")
    if data.role not in ORGLESS_ROLES:
        if data.organization_id is None:
            raise ApiError(400, "invalid", f"`organizationId`: required for a {data.role} "
                           "token", field="organizationId")
        if await orgs_repo.get(_db(), organization_id=data.organization_id) is None:
            raise ApiError(400, "invalid", f"`organizationId`: no such organization: "
                           f"{data.organization_id}", field="organizationId")
    token, digest, prefix = auth.new_token()
    record = await tokens_repo.create(_db(), token_hash=digest, prefix=prefix, role=data.role,
                                      organization_id=data.organization_id, name=data.name)
    _log.info("token created", token_id=str(record.id), role=record.role,
              org=str(record.organization_id) if record.organization_id else None)
    await audit.record("token.created", record.organization_id, token_id=str(record.id),
                       role=record.role, name=record.name)
    out = _token_out(record)
    return reply(NewToken(**{f: getattr(out, f) for f in TokenOut.__struct_fields__},
                          token=token), 201)


@_super_admin_route("GET", "/tokens", TokenList, errors=(400, 401, 403))
async def list_tokens() -> Response:
    """Tokens (revoked ones too), oldest first; `?organizationId=` narrows to one organization.
    Tokens themselves are never shown, only their prefixes."""
    org_id: uuid.UUID | None = None
    raw = request.args.get("organizationId")
    if raw:
        try:
            org_id = uuid.UUID(raw)
        except ValueError:
            raise ApiError(400, "invalid", "`organizationId`: not a valid id",
                           field="organizationId") from None
    found = await tokens_repo.list_all(_db(), organization_id=org_id)
    return reply(TokenList(tokens=[_token_out(t) for t in found]))


@_super_admin_route("DELETE", "/tokens/<token_id>", TokenOut, errors=(401, 403, 404))
async def revoke_token(token_id: str) -> Response:
    """Revoke a token: it stops working at once."""
    tid = auth.parse_uuid(token_id, what="token")
    if not await tokens_repo.revoke(_db(), token_id=tid):
        raise ApiError(404, "not_found", f"no active token with id {tid}")
    # Other daemons hear of it within a second (`wad.api.token_cache`); this one at once.
    current().token_cache().forget(str(tid))
    _log.info("token revoked", token_id=str(tid))
    record = await tokens_repo.get(_db(), token_id=tid)
    assert record is not None  # just revoked, and tokens are never deleted
    await audit.record("token.revoked", record.organization_id, token_id=str(tid),
                       role=record.role, name=record.name)
    return reply(_token_out(record))


# Kept session data --------------------------------------------------------------------------


@bp.get("/sessions/<org>/backups")
@tag(["admin"])
@responds(Backups, errors=(401, 403, 404))
@auth.org_route("SUPER_ADMIN")
async def backups(org_id: uuid.UUID) -> Response:
    """What is kept of the organization's login: archive versions in the database, the live
    profile and the trash folders on this daemon's disk."""
    await require_org(org_id)
    archives = await sessions_repo.list_archives(_db(), organization_id=org_id)
    profile, trash, importer = await session_data.folders(_state_dir(), org_id)
    return reply(Backups(
        organization_id=org_id,
        archives=[ArchiveOut(id=a.id, size=a.size, sha256=a.sha256.hex(),
                             created_at=a.created_at, key_id=a.key_id,
                             restored_at=a.restored_at) for a in archives],
        profile=profile, trash=trash, import_profile=importer))


@bp.post("/sessions/<org>/purge")
@tag(["admin"])
@responds(PurgeResult, errors=(400, 401, 403, 404, 409))
@auth.org_route("SUPER_ADMIN")
@body(PurgeRequest)
async def purge(org_id: uuid.UUID, data: PurgeRequest) -> Response:
    """Delete every kept copy of the organization's login: the archive versions, its browser
    profiles on this daemon (the session's and the importer's) and the trash folders. The only
    way session data is ever deleted; refused while the session should run or a browser uses
    a profile (disconnect or log out first). A `connect` meanwhile waits for the purge."""
    if not data.confirm:
        raise ApiError(400, "invalid", "`confirm`: must be true to delete session data",
                       field="confirm")
    await require_org(org_id)
    orgs = current().services.orgs
    try:
        deleted, folders = await session_data.purge(
            _db(), _state_dir(), org_id,
            running_here=lambda: orgs is not None and orgs.is_running(org_id))
    except session_data.PurgeRefused as exc:
        raise ApiError(409, "session_active", str(exc)) from None
    _log.warning("session data purged", org=str(org_id), archives_deleted=deleted,
                 folders_deleted=folders)
    await audit.record("session.purged", org_id, archives_deleted=deleted,
                       folders_deleted=folders)
    return reply(PurgeResult(organization_id=org_id, archives_deleted=deleted,
                             folders_deleted=folders))


@_super_admin_route("POST", "/secret/rotate", RotationResult,
                    errors=(400, 401, 403), body_model=RotateRequest)
async def rotate_secret(data: RotateRequest) -> Response:
    """Re-seal a batch of login archives (ids after `afterId`) under the daemon's current key
    (`WAD_SECRET_KEY`); the previous key (`WAD_SECRET_KEY_OLD`) keeps opening archives until
    every batch is done."""
    settings = current().settings
    keys = archive.keyring(_state_dir(), settings.secret_key, [settings.secret_key_old])
    result = await rotation.rotate(_db(), keys, archive.sessions_dir(_state_dir()),
                                   after_id=data.after_id, limit=data.limit)
    return reply(result)


# The audit trail ---------------------------------------------------------------------------


@bp.get("/audit")
@tag(["admin"])
@responds(AuditPage, errors=(400, 401, 403))
@query(AuditQuery)
async def audit_trail(query: AuditQuery) -> Response:
    """The audit trail, newest first: organization settings changed, tokens created and
    revoked, connects, disconnects, logouts, pairing codes, purges, with who did it and when.
    The super admin reads every entry, or one organization's with `organizationId`; an ADMIN
    token reads its own organization's. Page with `before` (the answer's `nextBefore`)."""
    principal = auth.current()
    org_id = query.organization_id if query.organization_id is not msgspec.UNSET else None
    if org_id is None and not principal.is_super_admin:
        org_id = principal.organization_id
    auth.authorize(org_id, "ADMIN")
    before = query.before if query.before is not msgspec.UNSET else None
    entries = await audit_repo.page(_db(), organization_id=org_id, before=before,
                                    limit=query.limit + 1)  # one more: is there a next page?
    more = len(entries) > query.limit
    entries = entries[:query.limit]
    return reply(AuditPage(
        entries=[AuditEntryOut(id=e.id, at=e.at, organization_id=e.organization_id,
                               action=e.action, actor=e.actor, token_id=e.token_id,
                               detail=e.detail) for e in entries],
        next_before=entries[-1].id if more else None))


def _state_dir() -> Path:
    return current().settings.state_path.absolute()


# The daemon -------------------------------------------------------------------------------


@_super_admin_route("GET", "/tree", Tree, errors=(401, 403, 503))
async def tree() -> Response:
    """The live supervision tree: the daemon's children and every organization's actors with
    their state, restart counts and last restart reason."""
    ctx = current()
    orgs = manager().tree()
    root = ctx.services.supervisor
    return reply(Tree(node=ctx.settings.node, version=wad.__version__,
                      uptime_s=round(time.monotonic() - ctx.started_at, 3),
                      daemon=root.tree() if root is not None else None,
                      organizations=orgs))
