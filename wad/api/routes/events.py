"""`GET /api/whatsapp/events[/{org}]`: an organization's live events as server-sent events.

A CRM page follows its organization without polling: session status changes (with the QR
payload while a scan is awaited), messages received and sent, message status changes and client
status changes. Reconnecting with `Last-Event-ID` resumes exactly after that event within the
window that `wad.observe.eventlog` keeps; when it cannot, the stream says `stream.reset` first.

What a token sees depends on its role: `VIEWER` session status changes without the QR payload
and pairing code, and messages' comings and statuses without their text (`body`, `caption`);
`AGENT` every event, still without the QR payload and pairing code; `ADMIN` (and the super admin)
everything, as whoever may fetch the QR code may see it here.

A stream outlives the check of its token made when it opened: the token is checked again at
least every `api.stream_token_check_s` seconds, and a revoked token's stream ends (after a
`stream.end` event saying why).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime
from typing import Any

import msgspec
import trio
from flask.sansio.blueprints import BlueprintSetupState
from quart import Blueprint, Response, current_app, request
from quart_schema import tag

from wad import log
from wad.api import auth
from wad.api.auth import Principal, org_route
from wad.api.context import AppContext, current
from wad.api.errors import ApiError
from wad.api.routes.whatsapp import require_org
from wad.api.validation import streams
from wad.bus import Event, MessageReceived, MessageSent, MessageStatusChanged, SessionStatus
from wad.db.pool import Database
from wad.observe.eventlog import EventLog, Item

bp = Blueprint("events", __name__, url_prefix="/api/whatsapp")
_log = log.get("api")

KEEPALIVE_S = 15.0
"""A comment line after this long without events keeps proxies from closing the stream and
finds readers that went away."""
RETRY_MS = 2000
"""How long a browser's `EventSource` waits before reconnecting."""

_SECRET_FIELDS = ("qr", "pairing_code")
_CONTENT_FIELDS = ("body", "caption")
_VIEWER_KINDS = (SessionStatus, MessageReceived, MessageSent, MessageStatusChanged)
"""What a VIEWER follows: the session, and messages without their text."""


def event_log(app: Any = None) -> EventLog | None:
    """The app's event log (None when the daemon gave it no bus)."""
    found: EventLog | None = (app or current_app).config["wad"].event_log
    return found


@bp.record_once
def _make_log(state: BlueprintSetupState) -> None:
    # Subscribe at app creation, before the daemon starts any organization: the events of
    # those first moments wait in the subscription until the log's task runs.
    ctx: AppContext = state.app.config["wad"]
    bus = ctx.services.bus
    if bus is not None and ctx.event_log is None:  # else the daemon's
        ctx.event_log = EventLog(bus)


def visible_payload(principal: Principal, event: Event) -> dict[str, Any] | None:
    """What `principal` may see of `event`'s payload; None when it may not see the event."""
    if auth.has_rank(principal, "AGENT"):
        payload = event.payload()
    elif auth.has_rank(principal, "VIEWER") and isinstance(event, _VIEWER_KINDS):
        payload = without_content(event.payload())
    else:
        return None
    if isinstance(event, SessionStatus) and not auth.has_rank(principal, "ADMIN"):
        for name in _SECRET_FIELDS:
            if name in payload:
                payload[name] = None
    return payload


def without_content(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` with every message's text (`body`, `caption`, at any depth) set to null."""
    out: dict[str, Any] = {}
    for name, value in payload.items():
        if name in _CONTENT_FIELDS:
            out[name] = None
        elif isinstance(value, dict):
            out[name] = without_content(value)
        else:
            out[name] = value
    return out


def _frame(kind: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {kind}")
    lines.append("data: " + msgspec.json.encode(data).decode())
    return ("\n".join(lines) + "\n\n").encode()


def _event_data(log_: EventLog, event: Event, payload: dict[str, Any], *,
                snapshot: bool) -> dict[str, Any]:
    return {
        "id": log_.event_id(event),
        "seq": event.seq,
        "kind": event.kind,
        "organization_id": str(event.org_id),
        "at": datetime.fromtimestamp(event.at, UTC).isoformat(),
        "snapshot": snapshot,
        "payload": payload,
    }


async def _stream(log_: EventLog, principal: Principal, orgs: frozenset[uuid.UUID] | None,
                  last_id: str | None, db: Database, check_s: float) -> AsyncIterator[bytes]:
    yield f"retry: {RETRY_MS}\n\n".encode()
    # The log wakes this reader twice per `check_s` at least (an `idle` item), so the token is
    # checked on time however quiet the organization (a revocation ends the stream within about
    # 1.5 `check_s`); a keep-alive goes out every KEEPALIVE_S.
    next_check = trio.current_time() + check_s
    last_sent = trio.current_time()
    wake_s = min(check_s / 2, KEEPALIVE_S)
    async with aclosing(log_.follow(orgs, last_id, idle_s=wake_s)) as items:
        async for item in items:
            now = trio.current_time()
            if now >= next_check:
                reason = await _revoked(db, principal)
                if reason:
                    yield _frame("stream.end", {"reason": reason})
                    return
                next_check = now + check_s
            if item.type == "idle":
                if now - last_sent < KEEPALIVE_S:
                    continue
                frame = b": keep-alive\n\n"
            else:
                frame = _item_frame(log_, principal, orgs, item)
            if frame:
                last_sent = now
                yield frame


async def _revoked(db: Database, principal: Principal) -> str | None:
    """Why the stream must end now (its token was revoked, or cannot be checked), or None."""
    try:
        if await auth.still_valid(db, principal):
            return None
    except Exception as exc:  # the database is away: the token cannot be vouched for
        _log.warning("event stream ended: its token could not be checked", error=repr(exc),
                     by=principal.describe())
        return "token_unverified"
    _log.info("event stream ended: its token was revoked", by=principal.describe())
    return "token_revoked"


def _item_frame(log_: EventLog, principal: Principal, orgs: frozenset[uuid.UUID] | None,
                item: Item) -> bytes:
    position = f"{log_.boot}-{item.cursor}"
    if item.type == "start":
        data = {"resumed": item.resumed, "window": log_.capacity,
                "organization_ids": sorted(str(o) for o in orgs) if orgs is not None else None}
        # A resumed stream keeps the reader's own position; a new one tells it where it is.
        return _frame("stream.start", data, None if item.resumed else position)
    if item.type == "reset":
        return _frame("stream.reset", {"reason": item.reason}, position)
    event = item.event
    assert event is not None
    payload = visible_payload(principal, event)
    if payload is None:
        return b""
    data = _event_data(log_, event, payload, snapshot=item.type == "snapshot")
    # A snapshot is older than the position already given: it carries no `id:` line, so the
    # reader's resume position does not move back.
    return _frame(event.kind, data, None if item.type == "snapshot" else log_.event_id(event))


def _respond(principal: Principal, orgs: frozenset[uuid.UUID] | None) -> Response:
    log_ = event_log()
    if log_ is None:
        raise ApiError(503, "unavailable", "this daemon has no event bus")
    last_id = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    ctx = current()
    response = Response(_stream(log_, principal, orgs, last_id, ctx.db,
                                ctx.settings.api.stream_token_check_s),
                        status=200, content_type="text/event-stream")
    response.timeout = None  # a stream lasts as long as the reader stays
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass events through at once
    return response


@bp.get("/events/<org>")
@tag(["events"])
@streams("text/event-stream", errors=(401, 403, 404, 503))
@org_route("VIEWER")
async def org_events(org_id: uuid.UUID) -> Response:
    """The organization's events as `text/event-stream` (see `docs/api.md`, Event stream).
    Send `Last-Event-ID` (or `?last_event_id=`) to resume after an event."""
    await require_org(org_id)
    return _respond(auth.current(), frozenset({org_id}))


@bp.get("/events")
@tag(["events"])
@streams("text/event-stream", errors=(401, 503))
async def all_events() -> Response:
    """The super admin: every organization's events; an organization's token: its own."""
    principal = auth.current()
    if principal.is_super_admin:
        return _respond(principal, None)
    assert principal.organization_id is not None
    return _respond(principal, frozenset({principal.organization_id}))
