"""`GET /api/whatsapp/changes/{org}`: the organization's durable change feed, page by page.

The CRM keeps the cursor of the last change it handled and asks for the changes after it
(`?after=CURSOR&limit=N`); any daemon of the database answers the same. Cursors are per
organization, start at 1 and grow by one in commit order, so a reader that pages on from
`nextAfter` sees every change once, in order. A cursor older than the retention (its next
entries were pruned) answers 410 `cursor_expired`: resynchronise through the read API, then
follow the feed from its newest cursor (`GET ...?after=0&limit=1` answers `lastCursor`).

What a token sees depends on its role (`visible`): `VIEWER` the session's and the messages'
changes without their text (`body`, `caption`); `AGENT` and `ADMIN` every change.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

import msgspec
from flask.sansio.blueprints import BlueprintSetupState
from msgspec import Meta
from quart import Blueprint, Response
from quart_schema import tag

from wad.api import auth
from wad.api.auth import Principal, org_route
from wad.api.context import AppContext, current
from wad.api.errors import ApiError
from wad.api.routes.whatsapp import require_org
from wad.api.validation import query, reply, responds
from wad.db.pool import Executor
from wad.db.repo import changes as changes_repo
from wad.feed import ChangeFeed

bp = Blueprint("changes", __name__, url_prefix="/api/whatsapp")

MAX_LIMIT = 1000
_CONTENT_FIELDS = ("body", "caption")
VIEWER_KINDS = ("session.", "message.")
"""The kinds a VIEWER follows (as on the event stream before the feed): the session, and
messages without their text."""


@bp.record_once
def _make_feed(state: BlueprintSetupState) -> None:
    # The daemon hands in its own (run in its supervision tree); else made here, and run by
    # whoever serves the app (`wad.api.context.run_services`).
    ctx: AppContext = state.app.config["wad"]
    if ctx.feed is None:
        ctx.feed = ChangeFeed(ctx.db, ctx.settings.feed)


class ChangesQuery(msgspec.Struct, kw_only=True):
    after: Annotated[int, Meta(ge=0)] = 0
    """The cursor of the last change handled (0: from the oldest kept)."""
    limit: Annotated[int, Meta(ge=1, le=MAX_LIMIT)] = 100


class ChangeOut(msgspec.Struct, kw_only=True, rename="camel"):
    """One change: its cursor, kind (e.g. `message.stored`), when it was committed, and its
    payload (camelCase keys; see docs/api.md, Change feed)."""

    cursor: int
    kind: str
    organization_id: uuid.UUID
    at: datetime
    data: dict[str, Any]


class ChangesPage(msgspec.Struct, kw_only=True, rename="camel"):
    """A page of changes, oldest first; ask again with `after=nextAfter`."""

    changes: list[ChangeOut]
    next_after: int
    """The cursor to ask after next time (the last change's, or `after` when none came)."""
    last_cursor: int
    """The organization's newest cursor now: caught up when `nextAfter` reaches it."""


def visible(principal: Principal, kind: str, data: dict[str, Any]) -> dict[str, Any] | None:
    """What `principal` may see of a change's payload; None when it may not see the change."""
    if auth.has_rank(principal, "AGENT"):
        return data
    if auth.has_rank(principal, "VIEWER") and kind.startswith(VIEWER_KINDS):
        return without_content(data)
    return None


def without_content(data: dict[str, Any]) -> dict[str, Any]:
    """`data` without the messages' text (`body`, `caption`, at any depth)."""
    return {name: without_content(value) if isinstance(value, dict) else value
            for name, value in data.items() if name not in _CONTENT_FIELDS}


async def check_cursor(db: Executor, org_id: uuid.UUID, after: int) -> None:
    """410 `cursor_expired` when the changes after `after` were pruned already."""
    if await changes_repo.expired(db, organization_id=org_id, after=after):
        first = await changes_repo.first_kept(db, organization_id=org_id)
        raise ApiError(
            410, "cursor_expired",
            f"cursor {after} is older than the change feed keeps (the oldest kept is "
            f"{first}): resynchronise through the read API, then follow the feed from its "
            "newest cursor")


@bp.get("/changes/<org>")
@tag(["events"])
@responds(ChangesPage, errors=(400, 401, 403, 404, 410))
@query(ChangesQuery)
@org_route("VIEWER")
async def changes_page(org_id: uuid.UUID, query: ChangesQuery) -> Response:
    """The organization's changes after cursor `after`, oldest first, at most `limit`
    (default 100, at most 1000). 410 `cursor_expired` when `after` is older than the
    retention: resynchronise through the read API."""
    await require_org(org_id)
    db = current().db
    principal = auth.current()
    page = await changes_repo.page(db, organization_id=org_id, after=query.after,
                                   limit=query.limit)
    # Checked after reading: a prune between the two cannot slip a gap through unnoticed.
    await check_cursor(db, org_id, query.after)
    out = []
    for change in page:
        data = visible(principal, change.kind, change.data)
        if data is not None:
            out.append(ChangeOut(cursor=change.seq, kind=change.kind,
                                 organization_id=change.organization_id, at=change.at,
                                 data=data))
    next_after = page[-1].seq if page else query.after
    last = await changes_repo.last(db, organization_id=org_id)
    return reply(ChangesPage(changes=out, next_after=next_after, last_cursor=last))
