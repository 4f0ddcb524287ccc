"""The webhook plugin delivers the change feed: signed changes to a local HTTP server, in cursor
order per organization, retried with backoff, resumed after a restart from the webhook's
durable cursor, never twice at once by two daemons (real PostgreSQL, real HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
import wad_webhook
from quart import Response, request
from quart_trio import QuartTrio
from structlog.testing import capture_logs

from tests.support.plugin_helpers import ORG, serving
from wad.db.pool import Database
from wad.db.repo import changes, deliveries
from wad.db.repo import outbox as outbox_repo
from wad.org.outbound import feed as outbound_feed
from wad.plugins import (
    PluginManager,
    PluginSettings,
    get_plugin_manager,
    run_background_tasks,
)

SECRET = "whsec-test-secret"
OPENSSL_HMAC = "98bf1d8a41eb9f5e4a38d8399f0541d6fe3f9130933bfb419c3a3dc2a15bfab5"
OTHER = uuid.UUID("00000000-0000-4000-8000-000000000002")


class FakeCrm:
    """Receives webhooks; answers the statuses in `statuses` in turn, then 200."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.arrived = trio.Event()
        self.app = QuartTrio("fake-crm")
        self.app.add_url_rule("/hooks/wad", "hook", self._hook, methods=["POST"])

    async def _hook(self) -> Response:
        body = await request.get_data()
        status = self.statuses.pop(0) if self.statuses else 200
        self.received.append({"at": trio.current_time(), "headers": dict(request.headers),
                              "body": body, "status": status, "json": json.loads(body)})
        self.arrived.set()
        return Response("{}", status=status, content_type="application/json")

    async def wait_for(self, count: int) -> None:
        while len(self.received) < count:
            self.arrived = trio.Event()
            await self.arrived.wait()

    def delivered(self) -> list[tuple[str, int, str]]:
        """(organization, cursor, text) of each change the CRM accepted, in arrival order."""
        return [(got["json"]["organizationId"], got["json"]["cursor"],
                 got["json"]["data"].get("body", ""))
                for got in self.received if got["status"] == 200]


@pytest.fixture
async def crm() -> AsyncIterator[tuple[FakeCrm, str]]:
    fake = FakeCrm()
    async with serving(fake.app) as url:
        yield fake, url + "/hooks/wad"


@pytest.fixture
async def org_db(db: Database) -> Database:
    await db.execute("INSERT INTO organizations (id, name) VALUES ($1, 'Issyk-Kul Tours'), "
                     "($2, 'Osh Travel')", ORG, OTHER)
    return db


def manager(db: Database, url: str, **config: Any) -> PluginManager:
    pm = get_plugin_manager(PluginSettings(
        entry_points=False,
        config={"webhook": {"url": url, "secret": SECRET, **config}}),
        builtins=False, bundled=False)
    pm.register(wad_webhook.WebhookPlugin, "webhook")
    pm.bind(db=db)
    return pm


async def said(db: Database, body: str, org: uuid.UUID = ORG, kind: str = "message.stored"
               ) -> int:
    return await changes.record(db, organization_id=org, kind=kind,
                                data={"body": body, "direction": "IN"})


async def position(db: Database, url: str, org: uuid.UUID = ORG
                   ) -> tuple[int, int, str | None] | None:
    """(cursor delivered up to, failed attempts at the next, last error) of the webhook."""
    row = await db.fetchrow(
        "SELECT after, attempts, last_error FROM webhook_cursors "
        "WHERE webhook = $1 AND organization_id = $2", wad_webhook.webhook_key(url), org)
    return None if row is None else (row["after"], row["attempts"], row["last_error"])


async def caught_up(db: Database, url: str) -> None:
    """Until the webhook has delivered every change of the organizations it started on."""
    while await deliveries.webhook_lag(db, webhook=wad_webhook.webhook_key(url)):
        await trio.sleep(0.02)


async def settled(fake: FakeCrm, db: Database, url: str, posts: int, *,
                  timeout: float = 10.0) -> None:
    """Until the CRM has received `posts` posts and the webhook has caught up (within
    `timeout` seconds)."""
    with trio.fail_after(timeout):
        await fake.wait_for(posts)
        await caught_up(db, url)


@asynccontextmanager
async def delivering(*managers: PluginManager) -> AsyncIterator[list[str]]:
    """The background tasks of each plugin manager run for the block (cancelled after it);
    yields their names."""
    async with trio.open_nursery() as nursery:
        names: list[str] = []
        for pm in managers:
            names += await nursery.start(run_background_tasks, pm)
        yield names
        nursery.cancel_scope.cancel()


async def test_changes_are_posted_signed_and_in_order(org_db: Database,
                                                      crm: tuple[FakeCrm, str]) -> None:
    fake, url = crm
    pm = manager(org_db, url)
    async with delivering(pm) as names:
        assert names == ["webhook:deliveries"]
        await said(org_db, "Здравствуйте, сколько стоит тур?")
        await changes.record(org_db, organization_id=ORG, kind="client.status",
                             data={"clientId": "c1", "from": "NEGOTIATION", "to": "SOLD"})
        await changes.record(org_db, organization_id=ORG, kind="session.state",
                             data={"status": "LOGGED_OUT", "errorMessage": "logged out"})
        await said(org_db, "из Оша", OTHER)
        await settled(fake, org_db, url, 4)

    assert len(fake.received) == 4
    for got in fake.received:
        headers, body, decoded = got["headers"], got["body"], got["json"]
        assert wad_webhook.verify(SECRET, body, headers["X-Wad-Signature"])
        assert not wad_webhook.verify("another secret", body, headers["X-Wad-Signature"])
        assert headers["X-Wad-Signature"].startswith("sha256=")
        assert headers["Content-Type"] == "application/json"
        assert headers["X-Wad-Event"] == decoded["kind"]
        assert headers["X-Wad-Delivery"] == f"{decoded['organizationId']}:{decoded['cursor']}"
        assert headers["X-Wad-Timestamp"] == str(decoded["timestamp"])
        assert abs(decoded["timestamp"] - datetime.now(UTC).timestamp()) < 60
        assert decoded["attempt"] == 1
    ours = [got["json"] for got in fake.received if got["json"]["organizationId"] == str(ORG)]
    assert [(b["cursor"], b["kind"]) for b in ours] == [
        (1, "message.stored"), (2, "client.status"), (3, "session.state")]
    assert ours[0]["data"]["body"] == "Здравствуйте, сколько стоит тур?"
    assert ours[1]["data"]["to"] == "SOLD"
    assert ours[2]["data"]["status"] == "LOGGED_OUT"
    assert ("00000000-0000-4000-8000-000000000002", 1, "из Оша") in fake.delivered()
    # A body tampered with no longer matches its signature.
    tampered = fake.received[0]["body"].replace(b'"attempt":1', b'"attempt":2')
    assert not wad_webhook.verify(SECRET, tampered, fake.received[0]["headers"]["X-Wad-Signature"])
    assert await position(org_db, url) == (3, 0, None)


async def real_sleep(seconds: float) -> None:
    """Sleep in real time, whatever Trio's clock does."""
    await trio.to_thread.run_sync(time.sleep, seconds)


async def real_wait(predicate: Any, *, limit: float = 10.0) -> None:
    """Until `await predicate()` is true, for at most `limit` real seconds."""
    deadline = time.monotonic() + limit
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("gave up waiting")
        await real_sleep(0.01)


async def test_a_500_is_retried_with_exponential_backoff_and_the_next_change_waits(
        mock_clock: trio.testing.MockClock, org_db: Database,
        crm: tuple[FakeCrm, str]) -> None:
    """Time stands still except when the test moves it, so the retries' timing is exact while
    the database and HTTP round trips run at their real pace."""
    fake, url = crm
    fake.statuses = [500, 502, 503]
    pm = manager(org_db, url, backoff_initial_s=4, backoff_max_s=10, poll_interval_s=60)

    async def attempted(count: int) -> bool:
        found = await position(org_db, url)
        return len(fake.received) == count and found is not None and found[1] == count

    with capture_logs() as logs:
        async with delivering(pm):
            await said(org_db, "Hello")
            await said(org_db, "Are you there?")  # must wait behind the first
            await real_wait(lambda: attempted(1))
            for number, delay in enumerate((4, 8, 10), start=2):  # doubled, capped at 10 s
                mock_clock.jump(delay - 0.1)
                await real_sleep(0.3)
                assert len(fake.received) == number - 1  # not retried early
                mock_clock.jump(0.1)
                if number < 4:
                    await real_wait(lambda number=number: attempted(number))
            async def all_five() -> bool:
                return len(fake.received) == 5

            await real_wait(all_five)

    times = [got["at"] for got in fake.received[:4]]
    assert [round(b - a, 3) for a, b in zip(times, times[1:], strict=False)] == [4, 8, 10]
    assert [got["status"] for got in fake.received] == [500, 502, 503, 200, 200]
    assert [got["json"]["attempt"] for got in fake.received] == [1, 2, 3, 4, 1]
    assert [got["json"]["data"]["body"] for got in fake.received] == ["Hello"] * 4 + [
        "Are you there?"]
    assert await position(org_db, url) == (2, 0, None)
    retries = [line for line in logs if line["event"].startswith("webhook delivery failed")]
    assert [line["error"] for line in retries] == [
        "the webhook answered 500", "the webhook answered 502", "the webhook answered 503"]


async def test_a_restart_resumes_from_the_webhooks_cursor(org_db: Database,
                                                          crm: tuple[FakeCrm, str]) -> None:
    fake, url = crm
    fake.statuses = [500]
    config = {"backoff_initial_s": 0.3, "poll_interval_s": 0.2}

    # First run: the CRM fails the first change; the worker stops before retrying it.
    pm = manager(org_db, url, **config)
    with capture_logs():
        async with delivering(pm):
            await said(org_db, "first")
            with trio.fail_after(10):
                await fake.wait_for(1)
                while (await position(org_db, url) or (0, 0, None))[1] < 1:
                    await trio.sleep(0.02)
    # While no worker runs, another change is made.
    await said(org_db, "second")
    assert await position(org_db, url) == (0, 1, "the webhook answered 500")
    assert await deliveries.pending_by_plugin(org_db) == {"webhook": 2}  # what the gauge shows

    # Second run: a new plugin manager and worker on the same database sends both, in order.
    pm = manager(org_db, url, **config)
    async with delivering(pm):
        await settled(fake, org_db, url, 3)
        await trio.sleep(0.5)  # time for a duplicate to show up, if there were one

    assert [(got["json"]["data"]["body"], got["json"]["attempt"]) for got in fake.received] == [
        ("first", 1), ("first", 2), ("second", 1)]
    assert all(wad_webhook.verify(SECRET, got["body"], got["headers"]["X-Wad-Signature"])
               for got in fake.received)
    assert await position(org_db, url) == (2, 0, None)
    assert await deliveries.pending_by_plugin(org_db) == {}


async def test_a_new_webhook_starts_with_the_changes_made_from_then_on(
        org_db: Database, crm: tuple[FakeCrm, str]) -> None:
    fake, url = crm
    await said(org_db, "before the webhook existed")
    await said(org_db, "also before", OTHER)
    pm = manager(org_db, url)
    async with delivering(pm):
        await said(org_db, "after")
        await settled(fake, org_db, url, 1)
        await trio.sleep(0.3)
    assert fake.delivered() == [(str(ORG), 2, "after")]


async def test_a_change_is_given_up_after_max_attempts_and_the_next_follows(
        org_db: Database, crm: tuple[FakeCrm, str]) -> None:
    fake, url = crm
    fake.statuses = [500] * 3
    pm = manager(org_db, url, max_attempts=3, backoff_initial_s=0.05, poll_interval_s=0.1)
    with capture_logs() as logs:
        async with delivering(pm):
            await changes.record(org_db, organization_id=ORG, kind="client.status",
                                 data={"to": "SOLD"})
            await said(org_db, "next")
            await settled(fake, org_db, url, 4)
    assert [(got["json"]["kind"], got["status"]) for got in fake.received] == [
        ("client.status", 500), ("client.status", 500), ("client.status", 500),
        ("message.stored", 200)]
    failed = await org_db.fetch("SELECT event, status, attempts, last_error, payload "
                                "FROM plugin_deliveries")
    assert [(r["event"], r["status"], r["attempts"], r["last_error"]) for r in failed] == [
        ("client.status", "FAILED", 3, "the webhook answered 500")]
    assert failed[0]["payload"] == {"cursor": 1, "data": {"to": "SOLD"}}
    assert any(line["event"] == "webhook delivery failed for good" for line in logs)


async def test_only_configured_kinds_are_delivered(org_db: Database,
                                                   crm: tuple[FakeCrm, str]) -> None:
    fake, url = crm
    pm = manager(org_db, url, events=["client.status"])
    async with delivering(pm):
        await said(org_db, "not wanted")
        await changes.record(org_db, organization_id=ORG, kind="client.status",
                             data={"to": "SOLD"})
        await said(org_db, "not wanted either")
        await settled(fake, org_db, url, 1)
    assert [(got["json"]["cursor"], got["json"]["kind"]) for got in fake.received] == [
        (2, "client.status")]
    assert await position(org_db, url) == (3, 0, None)

    with pytest.raises(msgspec.ValidationError, match="unknown change kinds"):
        msgspec.convert({"url": url, "secret": SECRET, "events": ["message.received"]},
                        wad_webhook.Config)
    # Without a URL the plugin runs no worker.
    idle = get_plugin_manager(PluginSettings(entry_points=False), builtins=False, bundled=False)
    idle.register(wad_webhook.WebhookPlugin, "webhook")
    idle.bind(db=org_db)
    async with delivering(idle) as names:
        assert names == []


def test_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"id":1,"event":"message.received"}'
    # printf '%s' "$body" | openssl dgst -sha256 -hmac whsec-test-secret
    assert wad_webhook.sign(SECRET, body) == f"sha256={OPENSSL_HMAC}"
    assert wad_webhook.backoff(1, wad_webhook.Config()) == 1.0
    assert wad_webhook.backoff(4, wad_webhook.Config()) == 8.0
    assert wad_webhook.backoff(30, wad_webhook.Config()) == 600.0
    assert wad_webhook.webhook_key("https://crm.example/hook?token=s3cret").startswith("sha256:")
    assert "s3cret" not in wad_webhook.webhook_key("https://crm.example/hook?token=s3cret")


async def test_two_daemons_deliver_each_change_once_in_order(org_db: Database,
                                                             crm: tuple[FakeCrm, str]) -> None:
    """Two workers (two daemons' plugins) on one database: every change is delivered once,
    each organization's in cursor order."""
    fake, url = crm
    fake.statuses = [500, 500, 500]  # some retries in the mix
    config = {"backoff_initial_s": 0.2, "poll_interval_s": 0.05}
    first, second = manager(org_db, url, **config), manager(org_db, url, **config)
    with capture_logs():
        async with delivering(first, second):
            for n in range(30):
                await said(org_db, f"change {n}", ORG if n % 2 else OTHER)
            await settled(fake, org_db, url, 33, timeout=20)
            await trio.sleep(0.5)  # time for a duplicate to show up, if there were one
    delivered = fake.delivered()
    assert len(delivered) == 30
    assert len(set(delivered)) == 30  # no change posted successfully twice
    assert len(fake.received) == 33  # exactly the three failures were retried
    for org in (ORG, OTHER):
        cursors = [cursor for who, cursor, _ in delivered if who == str(org)]
        assert cursors == list(range(1, 16))


async def test_the_final_state_of_every_send_reaches_the_webhook_with_its_send_id(
        org_db: Database, crm: tuple[FakeCrm, str]) -> None:
    """Sent, failed, cancelled, expired: each final state of a queued send is written to the feed
    with the send's id by the outbound path (`wad.org.outbound.feed`, as the actor and the API
    write it: tests/db/test_outbound_actor.py, test_outbound_api.py), and the webhook posts it."""
    fake, url = crm
    past = datetime(2020, 1, 1, tzinfo=UTC)
    sends = [(await outbox_repo.enqueue(org_db, organization_id=ORG, to_phone=f"+99655500000{n}",
                                        content=f"offer {n}", expires_at=past if n == 3 else None)
              )[0] for n in range(4)]
    pm = manager(org_db, url)
    async with delivering(pm):  # the webhook starts from here
        await _finish_every_way(org_db, sends)
        with trio.fail_after(10):
            await fake.wait_for(4)
    posted = [(got["json"]["kind"], got["json"]["data"]["sendId"]) for got in fake.received]
    assert posted == [("message.sent", str(sends[0].id)), ("send.failed", str(sends[1].id)),
                      ("send.cancelled", str(sends[2].id)), ("send.expired", str(sends[3].id))]
    assert fake.received[1]["json"]["data"]["reason"] == "NOT_ON_WHATSAPP"


async def _finish_every_way(org_db: Database, sends: list[Any]) -> None:
    """Send the first, fail the second, cancel the third, expire the fourth."""
    async with org_db.transaction() as tx:
        claimed = await outbox_repo.claim_next(tx, organization_id=ORG, wa_message_id="3EB0AA01")
        assert claimed is not None and claimed.id == sends[0].id
        done = await outbox_repo.mark_sent(tx, outbox_id=claimed.id)
        assert done is not None
        await outbound_feed.sent(tx, done, wa_message_id="996555000000@c.us_3EB0AA01")
    async with org_db.transaction() as tx:
        failed = await outbox_repo.mark_failed(tx, outbox_id=sends[1].id, error="no WhatsApp",
                                               reason="NOT_ON_WHATSAPP")
        assert failed is not None
        await outbound_feed.failed(tx, failed, reason="NOT_ON_WHATSAPP")
    async with org_db.transaction() as tx:
        cancelled = await outbox_repo.cancel(tx, outbox_id=sends[2].id)
        assert cancelled is not None
        await outbound_feed.cancelled(tx, cancelled)
    async with org_db.transaction() as tx:
        expired = await outbox_repo.expire_due(tx, organization_id=ORG,
                                               now=datetime.now(UTC))
        assert [item.id for item in expired] == [sends[3].id]
        await outbound_feed.expired(tx, expired[0])
