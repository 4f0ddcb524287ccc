"""What the control API reaches of the daemon: its settings, database and live parts, typed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio
from quart import current_app

from wad.api.token_cache import TokenCache
from wad.bus import EventBus
from wad.config import Settings
from wad.db.coalesce import Coalesced
from wad.db.pool import Database
from wad.db.repo import session_status as session_status_repo
from wad.db.repo.session_status import SessionStatusRow
from wad.feed import ChangeFeed
from wad.importer.service import ImportService
from wad.observe.metrics import Metrics
from wad.org.outbound.limits import Clock, WallClock
from wad.supervise import ChildSpec, Restart, Supervisor

if TYPE_CHECKING:
    from wad.org.manager import OrgManagerAPI


@dataclass
class Services:
    """The daemon's live parts that the API calls. A server made without one (tests, tools)
    answers 503 where a route needs it."""

    orgs: OrgManagerAPI | None = None
    """The organization manager: connect, disconnect, QR and pairing, the live tree."""
    bus: EventBus | None = None
    """The event bus: the event stream, the metrics and queued sends publish through it."""
    supervisor: Supervisor | None = None
    """The root of the daemon's supervision tree (`GET /api/admin/tree`)."""
    addresses: list[str] = field(default_factory=list)
    """Where the API listens, once it does."""
    outbound_clock: Clock | None = None
    """The wall clock the send queue's limits read (tests put a fixed one here)."""

    def send_clock(self) -> Clock:
        """The clock the send queue's limits read: `outbound_clock`, else the wall clock."""
        return self.outbound_clock or WallClock()


@dataclass
class LaneCounts:
    """What the fast lane (`wad.api.lane`) did since the server started."""

    answered: int = 0
    """Requests it answered itself."""
    handed_off: int = 0
    """Connections it handed to Hypercorn (at their first request it does not take)."""


@dataclass
class AppContext:
    """What request handlers reach: settings, the database, the daemon's live parts.

    The change feed, the metrics and the import service are long-lived tasks. The app makes the
    missing ones when it is created, and never runs them: the daemon runs them as children of
    its supervision tree (`service_specs`), a server without the daemon with `run_services`."""

    settings: Settings
    db: Database
    started_at: float = field(default_factory=time.monotonic)
    services: Services = field(default_factory=Services)
    feed: ChangeFeed | None = None
    """The change feed's wake-ups and pruning (the event stream follows the feed)."""
    metrics: Metrics | None = None
    imports: ImportService | None = None
    tokens: TokenCache | None = None
    """The tokens kept in memory (`token_cache`); its listener is a service like the others."""
    statuses: Coalesced[uuid.UUID, SessionStatusRow | None] | None = None
    """See `session_statuses`."""
    lane: LaneCounts | None = None
    """What the fast lane did, when one serves this app (`wad.api.server`)."""

    def session_statuses(self) -> Coalesced[uuid.UUID, SessionStatusRow | None]:
        """Session status rows by organization (None: no such organization), lookups made
        together sharing one query (`wad.db.coalesce`); made on first use, run as a service."""
        if self.statuses is None:
            self.statuses = Coalesced(self._statuses_many)
        return self.statuses

    async def _statuses_many(self, org_ids: Sequence[uuid.UUID]
                             ) -> list[SessionStatusRow | None]:
        found = await session_status_repo.get_many(self.db, list(org_ids))
        return [found.get(org_id) for org_id in org_ids]

    def token_cache(self) -> TokenCache:
        """The API's token cache, made on first use."""
        if self.tokens is None:
            self.tokens = TokenCache(self.db)
        return self.tokens


def service_specs(ctx: AppContext, *, grace: float) -> list[ChildSpec]:
    """The API's long-lived services as children of a supervision tree, each stopped within
    `grace`: the change feed (wake-ups, pruning), the token cache's listener, the status
    lookups (`session_statuses`), the metrics and
    the import service. A normal exit of the metrics (their bus subscription closed) is
    final."""
    if ctx.metrics is None or ctx.imports is None or ctx.feed is None:
        raise RuntimeError("create_app(ctx) makes the API's services; call it first")
    specs = [ChildSpec("change-feed", ctx.feed.run, shutdown=grace),
             ChildSpec("token-cache", ctx.token_cache().run, shutdown=grace),
             # It holds nothing between batches: a short grace keeps the root's within bounds.
             ChildSpec("status-lookups", ctx.session_statuses().run, shutdown=min(grace, 0.5))]
    specs.append(ChildSpec("metrics", ctx.metrics.run, restart=Restart.TRANSIENT,
                           shutdown=grace))
    specs.append(ChildSpec("imports", ctx.imports.run, shutdown=grace))
    return specs


async def run_services(ctx: AppContext, *, grace: float = 2.0,
                       task_status: trio.TaskStatus[Supervisor] = trio.TASK_STATUS_IGNORED
                       ) -> None:
    """Run the API's services (`service_specs`) under their own supervisor until cancelled:
    for an app served without the daemon, whose tree runs them otherwise."""
    await Supervisor("api", service_specs(ctx, grace=grace)).run(task_status=task_status)


def current() -> AppContext:
    """The context of the app answering the current request: how a route reaches the
    daemon."""
    ctx: AppContext = current_app.config["wad"]
    return ctx
