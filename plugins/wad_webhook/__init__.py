"""Webhook notifier: posts each notification event to the CRM as JSON, signed, retried, durable.

Every event first becomes a row of `plugin_deliveries` (so it survives a restart); a delivery
worker, which the daemon runs as this plugin's background task, sends pending rows. A request is

    POST <url>
    Content-Type: application/json
    X-Wad-Event: message.received
    X-Wad-Delivery: 42
    X-Wad-Timestamp: 1760000000
    X-Wad-Signature: sha256=<hex HMAC-SHA256 of the exact body, keyed with the shared secret>

    {"id": 42, "event": "message.received", "organization_id": "...", "created_at": "...",
     "timestamp": 1760000000, "attempt": 1, "data": {...}}

The timestamp is inside the signed body too, so a receiver can refuse old replays. Any 2xx
answer delivers; anything else (or no answer) is retried with exponential backoff
(`backoff_initial_s`, doubling, capped at `backoff_max_s`) up to `max_attempts`, then the row is
FAILED with the last error. Each attempt first claims the delivery in the database, so workers
of several daemons never post the same one at once; delivery is still at least once (a worker
can die after the answer and before recording it): a receiver should ignore a delivery id it
has seen. Deliveries that fail are retried independently, so events may arrive out of order;
`id` and `created_at` give the order.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
import msgspec
import trio
from msgspec import Meta

from wad import environment, hookimpl, log
from wad.db.models import PluginDelivery
from wad.db.pool import Database
from wad.db.repo import deliveries
from wad.payloads import (
    BackgroundTask,
    Client,
    ClientStatusChange,
    Message,
    MessageStatusChange,
    NotificationEvent,
    SessionStatusChange,
)
from wad.plugins import PluginContext
from wad.supervise import Backoff

NAME = "webhook"
SIGNATURE_PREFIX = "sha256="

_log = log.get("plugin.webhook")


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[plugins.config.webhook]`. Without `url` the plugin does nothing."""

    url: str = ""
    """Where to POST events (http or https)."""
    secret: str = ""
    """The shared HMAC key. Empty: `WAD_WEBHOOK_SECRET` from the environment (better)."""
    events: list[NotificationEvent] = []
    """Only these events (empty: all)."""
    timeout_s: Annotated[float, Meta(gt=0, le=300)] = 10.0
    max_attempts: Annotated[int, Meta(ge=1, le=1000)] = 12
    backoff_initial_s: Annotated[float, Meta(gt=0, le=3600)] = 1.0
    backoff_max_s: Annotated[float, Meta(gt=0, le=86400)] = 600.0
    poll_interval_s: Annotated[float, Meta(gt=0, le=3600)] = 5.0
    """How often the worker looks for deliveries written by others (another daemon, a previous
    run) and for retries that came due; new events wake it at once."""

    def __post_init__(self) -> None:
        if not self.secret:
            self.secret = environment.secret("WAD_WEBHOOK_SECRET")
        if self.url:
            if not self.url.startswith(("http://", "https://")):
                raise ValueError("url: must start with http:// or https://")
            if not self.secret:
                raise ValueError("secret: required when url is set "
                                 "(or set WAD_WEBHOOK_SECRET)")
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError("backoff_initial_s: must not exceed backoff_max_s")


def sign(secret: str, body: bytes) -> str:
    """The signature header's value for `body`."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, signature: str) -> bool:
    """Whether `signature` (the header's value) is right for `body`; for receivers and tests."""
    return hmac.compare_digest(sign(secret, body), signature)


def backoff(failures: int, config: Config) -> float:
    """Seconds to wait after the `failures`-th failed attempt (1, 2, 3, ...)."""
    return Backoff(initial=config.backoff_initial_s, max=config.backoff_max_s).delay(failures)


class Doorbell:
    """Wakes the worker when an event was written, so it need not wait for its next poll."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def ring(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        """Until rung or `timeout` seconds passed."""
        with trio.move_on_after(timeout):
            await self._event.wait()
        self._event = trio.Event()


def _body(row: PluginDelivery, attempt: int, now: int) -> bytes:
    return msgspec.json.encode({
        "id": row.id,
        "event": row.event,
        "organization_id": row.organization_id,
        "created_at": row.created_at,
        "timestamp": now,
        "attempt": attempt,
        "data": row.payload,
    })


async def post(http: httpx.AsyncClient, config: Config, row: PluginDelivery) -> str | None:
    """One attempt to deliver `row`: None when delivered, else what went wrong."""
    now = int(datetime.now(UTC).timestamp())
    body = _body(row, row.attempts + 1, now)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "wad-webhook",
        "X-Wad-Event": row.event,
        "X-Wad-Delivery": str(row.id),
        "X-Wad-Timestamp": str(now),
        "X-Wad-Signature": sign(config.secret, body),
    }
    try:
        response = await http.post(config.url, content=body, headers=headers)
    except httpx.TimeoutException:
        return f"no answer within {config.timeout_s} s"
    except httpx.TransportError as exc:
        return f"cannot reach the webhook: {type(exc).__name__}: {exc}"
    if 200 <= response.status_code < 300:
        return None
    return f"the webhook answered {response.status_code}"


CLAIM_LEASE_S = 300.0
"""How long an attempt holds a delivery against other daemons' workers (longer than any HTTP
timeout); a worker that dies mid-attempt leaves the delivery to be retried after it."""


async def run_delivery_worker(
    db: Database, config: Config, *, doorbell: Doorbell | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Send this plugin's pending deliveries until cancelled: those written before it started
    (by a previous run or another daemon) included. Retries wait in memory on Trio's clock and
    are recorded in the row (`attempts`, `next_attempt_at`, `last_error`), so a restart resumes
    them. Database errors propagate (the daemon restarts the task)."""
    doorbell = doorbell or Doorbell()
    scheduled: set[int] = set()  # the deliveries in `timeline`
    timeline: list[tuple[float, int]] = []  # (trio time when due, delivery id)
    async with httpx.AsyncClient(timeout=httpx.Timeout(config.timeout_s)) as http:
        task_status.started()
        while True:
            for row in await deliveries.due(db, plugin=NAME, limit=100):
                if row.id not in scheduled:
                    scheduled.add(row.id)
                    heapq.heappush(timeline, (trio.current_time(), row.id))
            while timeline and timeline[0][0] <= trio.current_time():
                _, delivery_id = heapq.heappop(timeline)
                scheduled.remove(delivery_id)
                # Several daemons may run this worker on one database: one attempt at a time.
                claimed = await deliveries.claim(db, delivery_id=delivery_id,
                                                 lease_s=CLAIM_LEASE_S)
                if claimed is None:
                    continue  # delivered meanwhile, or another daemon is attempting it
                retry_at = await _attempt(db, http, config, claimed)
                if retry_at is not None:
                    scheduled.add(delivery_id)
                    heapq.heappush(timeline, (retry_at, delivery_id))
            wait = config.poll_interval_s
            if timeline:
                wait = min(wait, max(0.0, timeline[0][0] - trio.current_time()))
            await doorbell.wait(wait)


async def _attempt(db: Database, http: httpx.AsyncClient, config: Config, row: PluginDelivery
                   ) -> float | None:
    """Attempt one delivery and record the outcome; the trio time of the retry, if any."""
    error = await post(http, config, row)
    answered_at = trio.current_time()  # the backoff counts from the failure, not the bookkeeping
    # Once the CRM has answered, record it even if we are being stopped: an unrecorded success
    # would be sent again after the restart.
    with trio.CancelScope(shield=True), trio.move_on_after(10):
        return await _record(db, config, row, error, answered_at)
    return None


async def _record(db: Database, config: Config, row: PluginDelivery, error: str | None,
                  answered_at: float) -> float | None:
    if error is None:
        await deliveries.mark_delivered(db, delivery_id=row.id)
        _log.debug("webhook delivered", delivery=row.id, webhook_event=row.event,
                   attempts=row.attempts + 1)
        return None
    failures = row.attempts + 1
    if failures >= config.max_attempts:
        await deliveries.mark_failed(db, delivery_id=row.id, error=error)
        _log.error("webhook delivery failed for good", delivery=row.id, webhook_event=row.event,
                   attempts=failures, error=error)
        return None
    delay = backoff(failures, config)
    updated = await deliveries.mark_retry(
        db, delivery_id=row.id, error=error,
        next_attempt_at=datetime.now(UTC) + timedelta(seconds=delay))
    _log.warning("webhook delivery failed; will retry", delivery=row.id, webhook_event=row.event,
                 attempts=failures, retry_in_s=delay, error=error)
    if updated is None:  # delivered or given up by someone else meanwhile
        return None
    return answered_at + delay


class WebhookPlugin:
    """The plugin object (one per plugin manager, so each has its own doorbell)."""

    def __init__(self) -> None:
        self.doorbell = Doorbell()

    @staticmethod
    def _config(ctx: PluginContext) -> Config:
        config = ctx.plugin_config(NAME)
        return config if isinstance(config, Config) else msgspec.convert(config or {}, Config)

    async def _record(self, ctx: PluginContext, event: NotificationEvent,
                      organization_id: uuid.UUID, data: dict[str, Any]) -> None:
        config = self._config(ctx)
        if not config.url or (config.events and event not in config.events):
            return
        if ctx.db is None:
            _log.warning("no database to record the webhook delivery; event dropped",
                         webhook_event=event)
            return
        await deliveries.enqueue(ctx.db, plugin=NAME, event=event,
                                 payload=msgspec.to_builtins(data),
                                 organization_id=organization_id)
        self.doorbell.ring()

    @hookimpl
    def wad_plugin_config_type(self) -> type[Any]:
        return Config

    @hookimpl
    def wad_background_tasks(self, ctx: PluginContext) -> Sequence[BackgroundTask]:
        config = self._config(ctx)
        if not config.url or ctx.db is None:
            return []
        db = ctx.db

        async def deliver(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                          ) -> None:
            await run_delivery_worker(db, config, doorbell=self.doorbell,
                                      task_status=task_status)

        return [BackgroundTask(name="deliveries", run=deliver)]

    @hookimpl
    async def wad_message_received(self, ctx: PluginContext, message: Message,
                                   client: Client | None) -> None:
        await self._record(ctx, "message.received", message.organization_id,
                           {"message": message, "client": client})

    @hookimpl
    async def wad_message_sent(self, ctx: PluginContext, message: Message,
                               client: Client | None) -> None:
        await self._record(ctx, "message.sent", message.organization_id,
                           {"message": message, "client": client})

    @hookimpl
    async def wad_message_status_changed(self, ctx: PluginContext,
                                         change: MessageStatusChange) -> None:
        await self._record(ctx, "message.status_changed", change.organization_id,
                           msgspec.structs.asdict(change))

    @hookimpl
    async def wad_session_status_changed(self, ctx: PluginContext,
                                         change: SessionStatusChange) -> None:
        await self._record(ctx, "session.status_changed", change.organization_id,
                           msgspec.structs.asdict(change))

    @hookimpl
    async def wad_client_status_changed(self, ctx: PluginContext,
                                        change: ClientStatusChange) -> None:
        await self._record(ctx, "client.status_changed", change.organization_id,
                           msgspec.structs.asdict(change))
