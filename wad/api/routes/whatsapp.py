"""`/api/whatsapp/...`: linking, status and the life of an organization's WhatsApp session.

The bodies are the CRM's plan's (`wad.api.schemas`): status `{organizationId, status,
lastConnectedAt, lastDisconnectedAt, errorMessage, ...}`, QR `{qrCode, ...}` (null when there is
none), connect, disconnect and logout `{success, organizationId, status, shouldRun}`.

Status and QR answers come from the database (`whatsapp_sessions`), so any daemon sharing it can
answer them; the actions (connect, disconnect, logout, pairing code) go to this daemon's
organization manager.
"""

from __future__ import annotations

import io
import uuid
from typing import Any, Protocol

import msgspec
import segno
from quart import Blueprint, Response, request
from quart_schema import tag

from wad.api import audit, auth
from wad.api.auth import org_route
from wad.api.context import AppContext, current
from wad.api.errors import ApiError
from wad.api.schemas import (
    ConnectRequest,
    PairingCode,
    PairingCodeRequest,
    QrCode,
    SessionAction,
    SessionStatus,
    StatusList,
)
from wad.api.validation import body, reply, responds
from wad.db.models import WhatsAppSession
from wad.db.pool import Database
from wad.db.repo import organizations as orgs_repo
from wad.db.repo import overview as overview_repo
from wad.db.repo import sessions as sessions_repo
from wad.errors import Conflict, NotFound, WadError
from wad.org.manager import OrgNotRunning
from wad.whatsapp import phone

bp = Blueprint("whatsapp", __name__, url_prefix="/api/whatsapp")


class OrgManager(Protocol):
    """What these routes call on `services.orgs` (see `wad.org.manager.OrgManagerAPI`)."""

    async def connect(self, org_id: uuid.UUID) -> None: ...
    async def disconnect(self, org_id: uuid.UUID) -> None: ...
    async def logout(self, org_id: uuid.UUID) -> None: ...
    async def request_pairing_code(self, org_id: uuid.UUID, phone_e164: str) -> str: ...
    def tree(self) -> dict[str, Any]: ...


def _db() -> Database:
    db = current().db
    return db


def manager() -> OrgManager:
    """This daemon's organization manager, or 503 when it runs none."""
    found = current().services.orgs
    if found is None:
        raise ApiError(503, "unavailable", "this daemon runs no organization manager")
    return found


async def require_org(org_id: uuid.UUID) -> None:
    """404 when the organization does not exist (only a super admin can get this far with an
    organization that is not its own)."""
    if await orgs_repo.get(_db(), organization_id=org_id) is None:
        raise ApiError(404, "not_found", f"no such organization: {org_id}")


async def _manager_call(what: str, call: Any) -> Any:
    """Run a manager call, turning its domain errors into answers."""
    try:
        return await call
    except NotFound as exc:
        raise ApiError(404, "not_found", str(exc) or f"{what}: not found") from None
    except OrgNotRunning as exc:
        raise ApiError(409, "not_running", str(exc) or "connect the organization first"
                       ) from None
    except (Conflict, WadError) as exc:
        raise ApiError(409, "conflict", str(exc) or f"{what} is not possible now") from None


def _status(org_id: uuid.UUID, row: WhatsAppSession | None) -> SessionStatus:
    if row is None:
        return SessionStatus(
            organization_id=org_id, status="DISCONNECTED", last_connected_at=None,
            last_disconnected_at=None, error_message=None, should_run=False,
            phone_number=None, push_name=None, qr_available=False, qr_issued_at=None,
            pairing_code_issued_at=None, sending_paused=False, sending_paused_reason=None,
            node_id=None, updated_at=None)
    return SessionStatus(
        organization_id=org_id, status=row.state, last_connected_at=row.last_connected_at,
        last_disconnected_at=row.last_disconnected_at, error_message=row.last_error,
        should_run=row.should_run, phone_number=row.phone_number, push_name=row.push_name,
        qr_available=row.state == "QR_CODE_PENDING" and row.qr_payload is not None,
        qr_issued_at=row.qr_issued_at, pairing_code_issued_at=row.pairing_code_issued_at,
        sending_paused=row.sending_paused, sending_paused_reason=row.sending_paused_reason,
        node_id=row.node_id, updated_at=row.updated_at)


async def _action_result(org_id: uuid.UUID, status: int) -> Response:
    row = await sessions_repo.get(_db(), organization_id=org_id)
    return reply(SessionAction(organization_id=org_id,
                               status=row.state if row else "DISCONNECTED",
                               should_run=row.should_run if row else False), status)


@bp.post("/connect")
@tag(["whatsapp"])
@responds(SessionAction, 202, errors=(400, 401, 403, 404, 409, 503))
@body(ConnectRequest, optional=True)
async def connect(data: ConnectRequest) -> Response:
    """Start (or keep) the organization's WhatsApp session. Needs ADMIN. The state then moves by
    itself: `CONNECTING`, then `QR_CODE_PENDING` (or `CONNECTED` when the login was kept)."""
    org_id = auth.body_org(data.organization_id, "ADMIN")
    await require_org(org_id)
    await _manager_call("connect", manager().connect(org_id))
    await audit.record("session.connect", org_id)
    return await _action_result(org_id, 202)


@bp.get("/status")
@tag(["whatsapp"])
@responds(StatusList, errors=(401, 403))
@auth.super_admin_route
async def status_all() -> Response:
    """Every organization with its session state (super admin)."""
    return reply(StatusList(organizations=await overview_repo.organizations(_db())))


@bp.get("/status/<org>")
@tag(["whatsapp"])
@responds(SessionStatus, errors=(401, 403, 404))
@org_route("VIEWER")
async def status(org_id: uuid.UUID) -> Response:
    """The session's state, linked number, last error and times, from the database (one
    round trip)."""
    return reply(await session_status(current(), org_id))


async def session_status(ctx: AppContext, org_id: uuid.UUID) -> SessionStatus:
    """What `GET /status/{org}` answers (404 for an unknown organization); the fast lane
    (`wad.api.lane`) answers it too. Concurrent requests share round trips."""
    found = await ctx.session_statuses()(org_id)
    if found is None:
        raise ApiError(404, "not_found", f"no such organization: {org_id}")
    return msgspec.structs.replace(_status(org_id, found.session),
                                   parked_messages=found.parked.count,
                                   last_parked_error=found.parked.last_error)


@bp.get("/qr/<org>")
@tag(["whatsapp"])
@responds(QrCode, errors=(400, 401, 403, 404, 409))
@org_route("VIEWER")
async def qr(org_id: uuid.UUID) -> Response:
    """The current QR payload: `{qrCode, ...}`, with `qrCode` null when the session is not
    waiting for a scan. Any token of the organization. With `?format=png` or `?format=svg`, the
    code as an image instead; 409 `no_qr_code` for an image when there is no code."""
    fmt = request.args.get("format", "json").lower()
    if fmt not in ("json", "png", "svg"):
        raise ApiError(400, "invalid", "`format`: expected json, png or svg", field="format")
    await require_org(org_id)
    row = await sessions_repo.get(_db(), organization_id=org_id)
    state = row.state if row else "DISCONNECTED"
    pending = row is not None and state == "QR_CODE_PENDING" and bool(row.qr_payload)
    payload = row.qr_payload if row is not None and pending else None
    headers = {"Cache-Control": "no-store"}
    if fmt == "json":
        return reply(QrCode(qr_code=payload, organization_id=org_id, status=state,
                            issued_at=row.qr_issued_at if row is not None and pending else None),
                     headers=headers)
    if not payload:
        hint = " (connect it first)" if state in ("DISCONNECTED", "LOGGED_OUT", "ERROR") else ""
        raise ApiError(409, "no_qr_code",
                       f"no QR code to show: the session is {state}{hint}")
    return _qr_image(payload, fmt, headers)


def _qr_image(payload: str, fmt: str, headers: dict[str, str]) -> Response:
    code = segno.make(payload, error="m")
    out = io.BytesIO()
    if fmt == "png":
        code.save(out, kind="png", scale=8, border=4)
        mime = "image/png"
    else:
        code.save(out, kind="svg", scale=8, border=4, xmldecl=False)
        mime = "image/svg+xml"
    response = Response(out.getvalue(), status=200, content_type=mime)
    response.headers.update(headers)
    return response


@bp.post("/pairing-code/<org>")
@tag(["whatsapp"])
@responds(PairingCode, errors=(400, 401, 403, 404, 409, 503))
@org_route("ADMIN")
@body(PairingCodeRequest)
async def pairing_code(org_id: uuid.UUID, data: PairingCodeRequest) -> Response:
    """Link by phone number instead of QR: answers the 8-character code to type on the phone.
    Needs ADMIN and a running session (connect first)."""
    try:
        number = phone.normalize(data.phone_number)
    except phone.InvalidPhoneNumber as exc:
        raise ApiError(400, "invalid", f"`phoneNumber`: {exc}", field="phoneNumber") from None
    await require_org(org_id)
    code = await _manager_call("pairing code",
                               manager().request_pairing_code(org_id, number))
    await audit.record("session.pairing_code", org_id)
    return reply(PairingCode(organization_id=org_id, phone_number=number, code=code))


@bp.post("/disconnect/<org>")
@tag(["whatsapp"])
@responds(SessionAction, errors=(401, 403, 404, 409, 503))
@org_route("ADMIN")
async def disconnect(org_id: uuid.UUID) -> Response:
    """Stop the session and keep the login (it comes back without a QR). Needs ADMIN."""
    await require_org(org_id)
    await _manager_call("disconnect", manager().disconnect(org_id))
    await audit.record("session.disconnect", org_id)
    return await _action_result(org_id, 200)


@bp.post("/logout/<org>")
@tag(["whatsapp"])
@responds(SessionAction, errors=(401, 403, 404, 409, 503))
@org_route("ADMIN")
async def logout(org_id: uuid.UUID) -> Response:
    """Unlink this device from the WhatsApp account; the profile is moved aside, never deleted.
    Needs ADMIN and a running session."""
    await require_org(org_id)
    await _manager_call("logout", manager().logout(org_id))
    await audit.record("session.logout", org_id)
    return await _action_result(org_id, 200)
