"""`GET /api/whatsapp/events[/{org}]`: an organization's change feed as server-sent events.

The stream is the durable change feed (`wad.db.repo.changes`, as `GET /api/whatsapp/changes`
pages it) read live: each event's name is the change's kind (`message.stored`,
`session.state`, ...), its `id:` the change's cursor. Reconnecting with `Last-Event-ID` (or
`?last_event_id=`) resumes exactly after that change, after a restart, a failover, or on any
other daemon of the database: the feed is in PostgreSQL, and a stream wakes on its
`LISTEN/NOTIFY` channel (with a slow poll as a safety net, `feed.poll_s`). A cursor older than
the retention answers 410 `cursor_expired` at open (a stream that falls that far behind ends
with a `stream.end` event saying so).

A new stream (no id) starts at the present, after a `stream.start` event and a snapshot of the
session's state (a `session.state` event without an `id:`, so the position does not move).

What a token sees depends on its role, as on `GET /api/whatsapp/changes`: `VIEWER` the
session's and the messages' changes without their text (`body`, `caption`); `AGENT` and
`ADMIN` every change. No QR payload or pairing code is ever in the feed (fetch them from
`/api/whatsapp/qr/{org}` when `session.state` says one was issued).

The super admin's `GET /api/whatsapp/events` follows every organization from the present: its
events carry no `id:` and it does not resume (follow an organization's own stream to resume).

A stream outlives the check of its token made when it opened: the token is checked again at
least every `api.stream_token_check_s` seconds, and a revoked token's stream ends (after a
`stream.end` event saying why).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import trio
from quart import Blueprint, Response, request
from quart_schema import tag

from wad import log
from wad.api import auth
from wad.api.auth import Principal, org_route
from wad.api.context import current
from wad.api.errors import ApiError
from wad.api.routes.changes import check_cursor, visible
from wad.api.routes.whatsapp import require_org
from wad.api.validation import streams
from wad.db.pool import Database, database_unavailable
from wad.db.repo import changes as changes_repo
from wad.db.repo import sessions as sessions_repo
from wad.feed import Wakeup

bp = Blueprint("events", __name__, url_prefix="/api/whatsapp")
_log = log.get("api")

KEEPALIVE_S = 15.0
"""A comment line after this long without events keeps proxies from closing the stream and
finds readers that went away."""
RETRY_MS = 2000
"""How long a browser's `EventSource` waits before reconnecting."""
PAGE = 200
"""Changes read from the feed at a time."""


def _frame(kind: str, data: dict[str, Any], event_id: str | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"event: {kind}")
    lines.append("data: " + msgspec.json.encode(data).decode())
    return ("\n".join(lines) + "\n\n").encode()


def _change_frame(principal: Principal, change: changes_repo.Change, *, with_id: bool,
                  snapshot: bool = False) -> bytes:
    data = visible(principal, change.kind, change.data)
    if data is None:
        return b""
    body: dict[str, Any] = {
        "cursor": None if snapshot else change.seq, "kind": change.kind,
        "organizationId": str(change.organization_id), "at": change.at.isoformat(),
        "data": data}
    if snapshot:
        body["snapshot"] = True
    return _frame(change.kind, body, str(change.seq) if with_id and not snapshot else None)


class _Position:
    """Where a stream is in each organization's feed."""

    def __init__(self, org: uuid.UUID | None, cursors: dict[uuid.UUID, int]) -> None:
        self.org = org  # None: every organization (the super admin's stream)
        self.cursors = cursors

    async def next_changes(self, db: Database) -> list[changes_repo.Change]:
        """The changes after the position (a page per organization), in commit order per
        organization; the position moves past them."""
        if self.org is not None:
            orgs = [self.org]
        else:
            lasts = await changes_repo.lasts(db)
            orgs = [o for o, last in lasts.items() if last > self.cursors.get(o, 0)]
        found = []
        for org in orgs:
            page = await changes_repo.page(db, organization_id=org,
                                           after=self.cursors.get(org, 0), limit=PAGE)
            if page:
                if page[0].seq != self.cursors.get(org, 0) + 1 and self.org is not None:
                    # Pruned under a reader that fell more than the retention behind.
                    raise _Expired
                self.cursors[org] = page[-1].seq
                found.extend(page)
        return found


class _Expired(Exception):
    pass


async def _stream(wakeup: Wakeup, db: Database, principal: Principal, position: _Position,
                  start: dict[str, Any], snapshot: bytes, check_s: float
                  ) -> AsyncIterator[bytes]:
    yield f"retry: {RETRY_MS}\n\n".encode()
    yield _frame("stream.start", start)
    if snapshot:
        yield snapshot
    # Woken by the feed's notifications, and at least twice per `check_s`, so the token is
    # checked on time however quiet the organization (a revocation ends the stream within about
    # 1.5 `check_s`); a keep-alive goes out every KEEPALIVE_S.
    next_check = trio.current_time() + check_s
    last_sent = trio.current_time()
    wake_s = min(check_s / 2, KEEPALIVE_S)
    with_id = position.org is not None
    while True:
        now = trio.current_time()
        if now >= next_check:
            reason = await _revoked(db, principal)
            if reason:
                yield _frame("stream.end", {"reason": reason})
                return
            next_check = now + check_s
        try:
            found = await position.next_changes(db)
        except _Expired:
            yield _frame("stream.end", {"reason": "cursor_expired"})
            return
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            # Reconnecting with the last id resumes once the database is back.
            yield _frame("stream.end", {"reason": "database_unavailable"})
            return
        for change in found:
            frame = _change_frame(principal, change, with_id=with_id)
            if frame:
                last_sent = trio.current_time()
                yield frame
        if len(found) >= PAGE:
            continue  # more to read at once
        if trio.current_time() - last_sent >= KEEPALIVE_S:
            last_sent = trio.current_time()
            yield b": keep-alive\n\n"
        await wakeup.wait(wake_s)


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


def _wakeup() -> Wakeup:
    feed = current().feed
    if feed is None:
        raise ApiError(503, "unavailable", "this server does not follow the change feed")
    return feed.wakeup


def _last_event_id() -> int | None:
    """The cursor to resume after (None: start at the present). 400 for one that is not a
    cursor."""
    raw = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    if raw is None or raw.strip() == "":
        return None
    value = raw.strip()
    if not value.isdigit() or len(value) > 18:
        raise ApiError(400, "invalid", "`Last-Event-ID`: expected a change cursor (a whole "
                       "number) as this stream's `id:` lines give", field="Last-Event-ID")
    return int(value)


async def _snapshot(db: Database, principal: Principal, org_id: uuid.UUID) -> bytes:
    """The session's state now, as a `session.state` event without an `id:`."""
    session = await sessions_repo.get(db, organization_id=org_id)
    if session is None:
        return b""
    change = changes_repo.Change(organization_id=org_id, seq=0, kind="session.state",
                                 at=session.updated_at or datetime.now(UTC),
                                 data=changes_repo.session_data(session))
    return _change_frame(principal, change, with_id=False, snapshot=True)


def _respond(wakeup: Wakeup, principal: Principal, position: _Position,
             start: dict[str, Any], snapshot: bytes) -> Response:
    ctx = current()
    response = Response(_stream(wakeup, ctx.db, principal, position, start, snapshot,
                                ctx.settings.api.stream_token_check_s),
                        status=200, content_type="text/event-stream")
    response.timeout = None  # a stream lasts as long as the reader stays
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass events through at once
    return response


async def _org_stream(principal: Principal, org_id: uuid.UUID) -> Response:
    wakeup = _wakeup()
    db = current().db
    after = _last_event_id()
    if after is not None:
        await check_cursor(db, org_id, after)
        cursor, snapshot = after, b""
    else:
        cursor = await changes_repo.last(db, organization_id=org_id)
        snapshot = await _snapshot(db, principal, org_id)
    start = {"resumed": after is not None, "cursor": cursor,
             "organizationIds": [str(org_id)]}
    return _respond(wakeup, principal, _Position(org_id, {org_id: cursor}), start, snapshot)


@bp.get("/events/<org>")
@tag(["events"])
@streams("text/event-stream", errors=(400, 401, 403, 404, 410, 503))
@org_route("VIEWER")
async def org_events(org_id: uuid.UUID) -> Response:
    """The organization's change feed as `text/event-stream` (see `docs/api.md`, Event
    stream). Send `Last-Event-ID` (or `?last_event_id=`) to resume after a change; 410
    `cursor_expired` when it is older than the retention."""
    await require_org(org_id)
    return await _org_stream(auth.current(), org_id)


@bp.get("/events")
@tag(["events"])
@streams("text/event-stream", errors=(400, 401, 503))
async def all_events() -> Response:
    """The super admin: every organization's changes from the present (no resuming); an
    organization's token: its own organization's stream."""
    principal = auth.current()
    if not principal.is_super_admin:
        assert principal.organization_id is not None
        return await _org_stream(principal, principal.organization_id)
    wakeup = _wakeup()
    cursors = await changes_repo.lasts(current().db)
    start = {"resumed": False, "cursor": None, "organizationIds": None}
    return _respond(wakeup, principal, _Position(None, cursors), start, b"")
