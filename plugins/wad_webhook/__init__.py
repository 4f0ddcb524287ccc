"""Webhook notifier: posts the change feed to the CRM as JSON, signed, in order, retried, durable.

The webhook delivers the durable change feed (`wad.db.repo.changes`, as
`GET /api/whatsapp/changes/{org}` pages it): per organization, each change once it commits, in
cursor order. Its position in each organization's feed (`webhook_cursors`, keyed by a hash of
the URL) is in the database, so a restart, a crash or another daemon of the database carries on
exactly where it stopped; a webhook first seen starts with the changes made from then on. A
worker, which the daemon runs as this plugin's background task, is woken by the feed's
`LISTEN/NOTIFY` channel (and looks every `poll_interval_s` in any case). A request is

    POST <url>
    Content-Type: application/json
    X-Wad-Event: message.stored
    X-Wad-Delivery: <organization id>:<cursor>
    X-Wad-Timestamp: 1760000000
    X-Wad-Signature: sha256=<hex HMAC-SHA256 of the exact body, keyed with the shared secret>

    {"cursor": 42, "kind": "message.stored", "organizationId": "...", "at": "...",
     "timestamp": 1760000000, "attempt": 1, "data": {...}}

The timestamp is inside the signed body too, so a receiver can refuse old replays. Any 2xx
answer delivers; anything else (or no answer) is retried with exponential backoff
(`backoff_initial_s`, doubling, capped at `backoff_max_s`) up to `max_attempts`, then that change
is given up on (a FAILED row of `plugin_deliveries` keeps it for the operator, and the error is
logged) and the next one follows. An organization's changes wait behind its change being
retried, so they arrive in order; other organizations' go on. Each attempt first holds the
organization's feed in the database (a lease), so workers of several daemons never post the
same change at once; delivery is still at least once (a worker can die after the answer and
before recording it): a receiver should ignore a (organization, cursor) it has handled.
"""

from __future__ import annotations

import hashlib
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
from wad.db.pool import Database
from wad.db.repo import changes, deliveries
from wad.feed import Wakeup
from wad.payloads import BackgroundTask
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
    events: list[str] = []
    """Only changes of these kinds (e.g. `message.stored`; empty: all); the others are passed
    over."""
    timeout_s: Annotated[float, Meta(gt=0, le=300)] = 10.0
    max_attempts: Annotated[int, Meta(ge=1, le=1000)] = 12
    backoff_initial_s: Annotated[float, Meta(gt=0, le=3600)] = 1.0
    backoff_max_s: Annotated[float, Meta(gt=0, le=86400)] = 600.0
    poll_interval_s: Annotated[float, Meta(gt=0, le=3600)] = 5.0
    """How often the worker looks at the feed in any case; new changes wake it at once (the
    feed's notifications)."""

    def __post_init__(self) -> None:
        if not self.secret:
            self.secret = environment.secret("WAD_WEBHOOK_SECRET")
        if self.url:
            if not self.url.startswith(("http://", "https://")):
                raise ValueError("url: must start with http:// or https://")
            if not self.secret:
                raise ValueError("secret: required when url is set "
                                 "(or set WAD_WEBHOOK_SECRET)")
        unknown = sorted(set(self.events) - set(changes.KINDS))
        if unknown:
            raise ValueError(f"events: unknown change kinds {unknown}; known: "
                             f"{', '.join(changes.KINDS)}")
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


def webhook_key(url: str) -> str:
    """What names a webhook in the database (its URL may carry a secret: only a hash is kept)."""
    return "sha256:" + hashlib.sha256(url.encode()).hexdigest()[:32]


def _body(change: changes.Change, attempt: int, now: int) -> bytes:
    return msgspec.json.encode({
        "cursor": change.seq,
        "kind": change.kind,
        "organizationId": change.organization_id,
        "at": change.at,
        "timestamp": now,
        "attempt": attempt,
        "data": change.data,
    })


async def post(http: httpx.AsyncClient, config: Config, change: changes.Change, attempt: int
               ) -> str | None:
    """One attempt to deliver `change`: None when delivered, else what went wrong."""
    now = int(datetime.now(UTC).timestamp())
    body = _body(change, attempt, now)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "wad-webhook",
        "X-Wad-Event": change.kind,
        "X-Wad-Delivery": f"{change.organization_id}:{change.seq}",
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
"""How long a worker holds an organization's feed against other daemons' workers (longer than
any HTTP timeout; renewed after each delivery); a worker that dies leaves it after the lease."""
PAGE = 50
"""Changes read from the feed at a time."""


async def run_delivery_worker(
    db: Database, config: Config, *, wakeup: Wakeup | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Deliver the feed's changes until cancelled, from where this webhook stopped (in a
    previous run or on another daemon). Retries wait in memory on Trio's clock and are recorded
    in the database (`attempts`, `next_attempt_at`, `last_error`), so a restart resumes them.
    Database errors propagate (the daemon restarts the task)."""
    key = webhook_key(config.url)
    since = await deliveries.register_webhook(db, webhook=key)
    wakeup = wakeup or Wakeup(config.poll_interval_s)
    timeline: dict[uuid.UUID, float] = {}  # organization -> trio time its next attempt is due
    async with (httpx.AsyncClient(timeout=httpx.Timeout(config.timeout_s)) as http,
                trio.open_nursery() as nursery):
        await nursery.start(wakeup.listen, db)
        task_status.started()
        while True:
            for org in await deliveries.webhook_due(db, webhook=key):
                timeline.setdefault(org, trio.current_time())
            for org, due in sorted(timeline.items(), key=lambda item: item[1]):
                if due > trio.current_time():
                    continue
                del timeline[org]
                retry_at = await _deliver(db, http, config, key, since, org)
                if retry_at is not None:
                    timeline[org] = retry_at
            wait = config.poll_interval_s
            if timeline:
                wait = min(wait, max(0.0, min(timeline.values()) - trio.current_time()))
            await wakeup.wait(wait)


async def _deliver(db: Database, http: httpx.AsyncClient, config: Config, key: str,
                   since: datetime, org: uuid.UUID) -> float | None:
    """Deliver the organization's pending changes in order, holding its feed meanwhile; the
    trio time of the retry when one fails (the rest wait behind it)."""
    claimed = await deliveries.webhook_claim(db, webhook=key, organization_id=org, since=since,
                                             lease_s=CLAIM_LEASE_S)
    if claimed is None:
        return None  # another daemon's worker holds it, or its retry is not due
    after, attempts = claimed
    try:
        while True:
            page = await changes.page(db, organization_id=org, after=after, limit=PAGE)
            if not page:
                return None
            for change in page:
                if config.events and change.kind not in config.events:
                    after = change.seq
                    continue
                error = await post(http, config, change, attempts + 1)
                answered_at = trio.current_time()  # the backoff counts from the failure
                # Once the CRM has answered, record it even if we are being stopped: an
                # unrecorded success would be sent again after the restart.
                with trio.CancelScope(shield=True), trio.move_on_after(10):
                    retry_in = await _record(db, config, key, change, attempts + 1, error)
                if retry_in is not None:
                    return answered_at + retry_in
                after, attempts = change.seq, 0
            await deliveries.webhook_advance(db, webhook=key, organization_id=org, after=after,
                                             lease_s=CLAIM_LEASE_S)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await deliveries.webhook_release(db, webhook=key, organization_id=org)


async def _record(db: Database, config: Config, key: str, change: changes.Change, failures: int,
                  error: str | None) -> float | None:
    """Record an attempt's outcome; the seconds until the retry, if there is one."""
    org = change.organization_id
    if error is None:
        await deliveries.webhook_advance(db, webhook=key, organization_id=org, after=change.seq,
                                         lease_s=CLAIM_LEASE_S)
        _log.debug("webhook delivered", cursor=change.seq, kind=change.kind,
                   attempts=failures)
        return None
    if failures >= config.max_attempts:
        await deliveries.record_failed(
            db, plugin=NAME, event=change.kind, organization_id=org, attempts=failures,
            error=error, payload={"cursor": change.seq, "data": change.data})
        await deliveries.webhook_advance(db, webhook=key, organization_id=org, after=change.seq,
                                         lease_s=CLAIM_LEASE_S)
        _log.error("webhook delivery failed for good", cursor=change.seq, kind=change.kind,
                   attempts=failures, error=error)
        return None
    delay = backoff(failures, config)
    await deliveries.webhook_failed(db, webhook=key, organization_id=org, error=error,
                                    next_attempt_at=datetime.now(UTC) + timedelta(seconds=delay))
    _log.warning("webhook delivery failed; will retry", cursor=change.seq, kind=change.kind,
                 attempts=failures, retry_in_s=delay, error=error)
    return delay


class WebhookPlugin:
    """The plugin object."""

    @staticmethod
    def _config(ctx: PluginContext) -> Config:
        config = ctx.plugin_config(NAME)
        return config if isinstance(config, Config) else msgspec.convert(config or {}, Config)

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
            await run_delivery_worker(db, config, task_status=task_status)

        return [BackgroundTask(name="deliveries", run=deliver)]
