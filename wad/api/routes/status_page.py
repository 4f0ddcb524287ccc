"""The status page: `/` (every organization the token may see) and `/org/{org}` (one), served by
the daemon: the page from `wad/api/routes/templates/`, its script and style sheet from
`wad/api/routes/static/` (plain HTML, CSS and JavaScript; no build step).

The page itself needs no token; it asks for one and keeps it in the browser tab's session storage
only. Its data comes from `GET /api/overview` (below) and the event stream, with that token:
organizations with their state, linked number, send queue, messages today and last error; a live
QR code for an organization waiting to be linked (drawn from `GET /api/whatsapp/qr/{org}?format=svg`
whenever the stream brings a new payload, so only for ADMIN tokens); connect, disconnect and
pairing code buttons for ADMIN tokens (a VIEWER's page has none).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from quart import Blueprint, Response, render_template, request
from quart_schema import hide, tag

from wad.api import auth
from wad.api.context import current
from wad.api.errors import ApiError
from wad.api.schemas import Answer
from wad.api.validation import reply, responds
from wad.db.models import Role
from wad.db.pool import Database
from wad.db.repo import overview as overview_repo
from wad.db.repo.overview import SessionSummary, summary_fields

bp = Blueprint("status_page", __name__, static_folder="static", static_url_path="/assets",
               template_folder="templates")

# The page loads only its own files and talks only to this daemon; the QR image is a blob URL.
# The documentation page (`/docs`) is sent under the same policy; its style sheet draws a few
# icons as `data:` images (images cannot run code).
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


class MessagesToday(Answer, kw_only=True):
    """Messages since midnight (the database's time zone), by direction."""

    received: int
    sent: int


class OrganizationOverview(SessionSummary, frozen=True, kw_only=True):
    """One organization as the status page shows it."""

    queue_depth: int
    oldest_queued_s: float | None
    in_flight: int
    messages_today: MessagesToday
    updated_at: datetime | None


class Caller(Answer, kw_only=True):
    """Who asked: the token's role and organization (None for the super admin)."""

    role: Role
    organization_id: uuid.UUID | None


class Overview(Answer, kw_only=True):
    """`GET /api/overview`."""

    caller: Caller
    organizations: list[OrganizationOverview]


async def overview(db: Database, organization_id: uuid.UUID | None
                   ) -> list[OrganizationOverview]:
    """Every organization (or one) with what the status page shows."""
    return [OrganizationOverview(
        **summary_fields(r), queue_depth=r.queued,
        oldest_queued_s=round(max(0.0, r.oldest_s), 1) if r.oldest_s is not None else None,
        in_flight=r.sending,
        messages_today=MessagesToday(received=r.received, sent=r.sent),
        updated_at=r.updated_at)
        for r in await overview_repo.status_page(db, organization_id=organization_id)]


async def send_page(template: str) -> Response:
    """One of the daemon's pages, rendered from `templates/` (each extends `page.html`, the one
    head they share) and sent under `PAGE_HEADERS`."""
    response = Response(await render_template(template), mimetype="text/html")
    response.headers.update(PAGE_HEADERS)
    return response


@bp.get("/")
@hide
async def index() -> Response:
    """The status page: every organization the token may see."""
    return await send_page("status.html")


@bp.get("/org/<org>")
@hide
async def organization_page(org: str) -> Response:
    """The status page of one organization."""
    auth.parse_uuid(org, what="organization")
    return await send_page("status.html")


@bp.get("/api/overview")
@tag(["status"])
@responds(Overview, errors=(401, 403, 404))
async def get_overview() -> Response:
    """What the status page shows, for the organizations the token may see (the super admin:
    all; another token: its own). `?organizationId=` narrows it to one."""
    principal = auth.current()
    wanted = request.args.get("organizationId")
    org_id: uuid.UUID | None = None
    if wanted:
        org_id = auth.parse_uuid(wanted, what="organization")
        auth.authorize(org_id, "VIEWER")
    elif not principal.is_super_admin:
        org_id = principal.organization_id
    db = current().db
    found = await overview(db, org_id)
    if wanted and not found:
        raise ApiError(404, "not_found", f"no such organization: {org_id}")
    return reply(Overview(caller=Caller(role=principal.role,
                                        organization_id=principal.organization_id),
                          organizations=found))
