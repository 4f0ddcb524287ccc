"""The webhook plugin: signed events to a local HTTP server, retries with backoff, and deliveries
that survive a restart (real PostgreSQL, real HTTP on 127.0.0.1)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import trio
import trio.testing
import wad_webhook
from quart import Response, request
from quart_trio import QuartTrio
from structlog.testing import capture_logs

from tests.support.plugin_helpers import ORG, client, message, serving
from wad.db.pool import Database
from wad.payloads import ClientStatusChange, MessageStatusChange, SessionStatusChange
from wad.plugins import (
    PluginManager,
    PluginSettings,
    get_plugin_manager,
    notify,
    run_background_tasks,
)

SECRET = "whsec-test-secret"
OPENSSL_HMAC = "98bf1d8a41eb9f5e4a38d8399f0541d6fe3f9130933bfb419c3a3dc2a15bfab5"


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
                              "body": body, "status": status})
        self.arrived.set()
        return Response("{}", status=status, content_type="application/json")

    async def wait_for(self, count: int) -> None:
        while len(self.received) < count:
            self.arrived = trio.Event()
            await self.arrived.wait()


@pytest.fixture
async def crm() -> AsyncIterator[tuple[FakeCrm, str]]:
    fake = FakeCrm()
    async with serving(fake.app) as url:
        yield fake, url + "/hooks/wad"


@pytest.fixture
async def org_db(db: Database) -> Database:
    await db.execute("INSERT INTO organizations (id, name) VALUES ($1, 'Issyk-Kul Tours')", ORG)
    return db


def manager(db: Database, url: str, **config: Any) -> PluginManager:
    pm = get_plugin_manager(PluginSettings(
        entry_points=False,
        config={"webhook": {"url": url, "secret": SECRET, **config}}),
        builtins=False, bundled=False)
    pm.register(wad_webhook.WebhookPlugin, "webhook")
    pm.bind(db=db)
    return pm


async def settled(db: Database) -> None:
    """Until no delivery is pending."""
    while await db.fetchval("SELECT count(*) FROM plugin_deliveries WHERE status = 'PENDING'"):
        await trio.sleep(0.02)


async def rows(db: Database) -> list[tuple[str, str, int, str | None]]:
    records = await db.fetch(
        "SELECT event, status, attempts, last_error FROM plugin_deliveries ORDER BY id")
    return [(r["event"], r["status"], r["attempts"], r["last_error"]) for r in records]


AT = datetime(2025, 7, 1, 9, 30, tzinfo=UTC)
EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("wad_message_received", {"message": message("Здравствуйте, сколько стоит тур?"),
                              "client": client()}),
    ("wad_message_sent", {"message": message("450 USD", direction="OUT"), "client": client()}),
    ("wad_message_status_changed", {"change": MessageStatusChange(
        organization_id=ORG, message=message("450 USD", direction="OUT", status="READ"),
        from_status="DELIVERED", to_status="READ", at=AT)}),
    ("wad_session_status_changed", {"change": SessionStatusChange(
        organization_id=ORG, from_state="CONNECTED", to_state="LOGGED_OUT",
        reason="logged out from the phone", at=AT)}),
    ("wad_client_status_changed", {"change": ClientStatusChange(
        organization_id=ORG, client=client(status="SOLD"), from_status="NEGOTIATION",
        to_status="SOLD", detector="heuristic_status", reason="SOLD: matched «оплатил»",
        at=AT)}),
]


async def test_events_are_posted_signed(org_db: Database, crm: tuple[FakeCrm, str]) -> None:
    fake, url = crm
    pm = manager(org_db, url)
    async with trio.open_nursery() as nursery:
        names = await nursery.start(run_background_tasks, pm)
        assert names == ["webhook:deliveries"]
        for hook, kwargs in EVENTS:
            await notify(pm, hook, **kwargs)
        with trio.fail_after(10):
            await fake.wait_for(len(EVENTS))
            await settled(org_db)
        nursery.cancel_scope.cancel()

    assert len(fake.received) == len(EVENTS)
    bodies = []
    for got in fake.received:
        headers, body = got["headers"], got["body"]
        assert wad_webhook.verify(SECRET, body, headers["X-Wad-Signature"])
        assert not wad_webhook.verify("another secret", body, headers["X-Wad-Signature"])
        assert headers["X-Wad-Signature"].startswith("sha256=")
        assert headers["Content-Type"] == "application/json"
        decoded = json.loads(body)
        assert headers["X-Wad-Event"] == decoded["event"]
        assert headers["X-Wad-Delivery"] == str(decoded["id"])
        assert headers["X-Wad-Timestamp"] == str(decoded["timestamp"])
        assert abs(decoded["timestamp"] - datetime.now(UTC).timestamp()) < 60
        assert decoded["organization_id"] == str(ORG)
        assert decoded["attempt"] == 1
        bodies.append(decoded)
    by_event = {b["event"]: b["data"] for b in bodies}
    assert sorted(by_event) == sorted(["message.received", "message.sent",
                                       "message.status_changed", "session.status_changed",
                                       "client.status_changed"])
    received = by_event["message.received"]
    assert received["message"]["body"] == "Здравствуйте, сколько стоит тур?"
    assert received["message"]["direction"] == "IN"
    assert received["client"]["phone"] == "+996555123456"
    assert by_event["session.status_changed"]["to_state"] == "LOGGED_OUT"
    assert by_event["client.status_changed"]["to_status"] == "SOLD"
    assert by_event["client.status_changed"]["detector"] == "heuristic_status"
    assert by_event["message.status_changed"]["message"]["status"] == "READ"
    # A body tampered with no longer matches its signature.
    tampered = fake.received[0]["body"].replace(b'"attempt":1', b'"attempt":2')
    assert not wad_webhook.verify(SECRET, tampered, fake.received[0]["headers"]["X-Wad-Signature"])
    assert [status for _, status, _, _ in await rows(org_db)] == ["DELIVERED"] * len(EVENTS)


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


async def test_a_500_is_retried_with_exponential_backoff(
        mock_clock: trio.testing.MockClock, org_db: Database,
        crm: tuple[FakeCrm, str]) -> None:
    """Time stands still except when the test moves it, so the retries' timing is exact while
    the database and HTTP round trips run at their real pace."""
    fake, url = crm
    fake.statuses = [500, 502, 503]
    pm = manager(org_db, url, backoff_initial_s=4, backoff_max_s=10, poll_interval_s=60)

    async def attempts() -> int:
        return int(await org_db.fetchval("SELECT attempts FROM plugin_deliveries"))

    async def attempted(count: int) -> bool:
        return len(fake.received) == count and await attempts() == count

    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_background_tasks, pm)
            await notify(pm, "wad_message_received", message=message("Hello"), client=client())
            await real_wait(lambda: attempted(1))
            for number, delay in enumerate((4, 8, 10), start=2):  # doubled, capped at 10 s
                mock_clock.jump(delay - 0.1)
                await real_sleep(0.3)
                assert len(fake.received) == number - 1  # not retried early
                mock_clock.jump(0.1)
                await real_wait(lambda number=number: attempted(number))
            nursery.cancel_scope.cancel()

    times = [got["at"] for got in fake.received]
    assert [round(b - a, 3) for a, b in zip(times, times[1:], strict=False)] == [4, 8, 10]
    assert [got["status"] for got in fake.received] == [500, 502, 503, 200]
    assert [json.loads(got["body"])["attempt"] for got in fake.received] == [1, 2, 3, 4]
    assert len({got["headers"]["X-Wad-Delivery"] for got in fake.received}) == 1
    assert await rows(org_db) == [("message.received", "DELIVERED", 4, None)]
    retries = [line for line in logs if line["event"].startswith("webhook delivery failed")]
    assert [line["error"] for line in retries] == [
        "the webhook answered 500", "the webhook answered 502", "the webhook answered 503"]


async def test_a_pending_delivery_is_sent_after_a_restart(org_db: Database,
                                                         crm: tuple[FakeCrm, str]) -> None:
    fake, url = crm
    fake.statuses = [500]
    config = {"backoff_initial_s": 0.3, "poll_interval_s": 0.2}

    # First run: the CRM fails the first event; the worker stops before retrying it.
    pm = manager(org_db, url, **config)
    with capture_logs():
        async with trio.open_nursery() as nursery:
            await nursery.start(run_background_tasks, pm)
            await notify(pm, "wad_message_received", message=message("first"), client=client())
            with trio.fail_after(10):
                await fake.wait_for(1)
                while (await rows(org_db))[0][2] < 1:
                    await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
    # While the daemon is down, another event is recorded (by a daemon without a worker).
    await notify(manager(org_db, url, **config), "wad_message_sent",
                 message=message("second", direction="OUT"), client=client())
    assert await rows(org_db) == [
        ("message.received", "PENDING", 1, "the webhook answered 500"),
        ("message.sent", "PENDING", 0, None),
    ]

    # Second run: a new plugin manager and worker on the same database sends both.
    pm = manager(org_db, url, **config)
    async with trio.open_nursery() as nursery:
        await nursery.start(run_background_tasks, pm)
        with trio.fail_after(10):
            await fake.wait_for(3)
            await settled(org_db)
        await trio.sleep(0.5)  # time for a duplicate to show up, if there were one
        nursery.cancel_scope.cancel()

    bodies = [json.loads(got["body"]) for got in fake.received]
    # Retries are independent of each other, so the order of the second run is not fixed.
    assert sorted((b["data"]["message"]["body"], b["attempt"]) for b in bodies) == [
        ("first", 1), ("first", 2), ("second", 1)]
    assert all(wad_webhook.verify(SECRET, got["body"], got["headers"]["X-Wad-Signature"])
               for got in fake.received)
    assert await rows(org_db) == [("message.received", "DELIVERED", 2, None),
                                  ("message.sent", "DELIVERED", 1, None)]


async def test_a_delivery_fails_for_good_after_max_attempts(
        org_db: Database, crm: tuple[FakeCrm, str]) -> None:
    fake, url = crm
    fake.statuses = [500] * 10
    pm = manager(org_db, url, max_attempts=3, backoff_initial_s=0.05, poll_interval_s=0.1)
    with capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_background_tasks, pm)
            await notify(pm, "wad_client_status_changed", **EVENTS[-1][1])
            with trio.fail_after(10):
                while (await rows(org_db))[0][1] != "FAILED":
                    await trio.sleep(0.02)
            await trio.sleep(0.3)
            nursery.cancel_scope.cancel()
    assert len(fake.received) == 3
    assert await rows(org_db) == [("client.status_changed", "FAILED", 3,
                                   "the webhook answered 500")]
    assert any(line["event"] == "webhook delivery failed for good" for line in logs)


async def test_only_configured_events_are_recorded(org_db: Database) -> None:
    pm = manager(org_db, "http://127.0.0.1:9/unused", events=["client.status_changed"])
    for hook, kwargs in EVENTS:
        await notify(pm, hook, **kwargs)
    assert [event for event, *_ in await rows(org_db)] == ["client.status_changed"]

    # Without a URL the plugin records nothing and runs no worker.
    idle = get_plugin_manager(PluginSettings(entry_points=False), builtins=False, bundled=False)
    idle.register(wad_webhook.WebhookPlugin, "webhook")
    idle.bind(db=org_db)
    await notify(idle, "wad_message_received", **EVENTS[0][1])
    assert len(await rows(org_db)) == 1
    async with trio.open_nursery() as nursery:
        assert await nursery.start(run_background_tasks, idle) == []


def test_signature_is_hmac_sha256_of_the_body() -> None:
    body = b'{"id":1,"event":"message.received"}'
    # printf '%s' "$body" | openssl dgst -sha256 -hmac whsec-test-secret
    assert wad_webhook.sign(SECRET, body) == f"sha256={OPENSSL_HMAC}"
    assert wad_webhook.backoff(1, wad_webhook.Config()) == 1.0
    assert wad_webhook.backoff(4, wad_webhook.Config()) == 8.0
    assert wad_webhook.backoff(30, wad_webhook.Config()) == 600.0


async def test_two_daemons_deliver_each_event_once(org_db: Database,
                                                   crm: tuple[FakeCrm, str]) -> None:
    """Two workers (two daemons' plugins) on one database: every delivery is posted once."""
    fake, url = crm
    fake.statuses = [500, 500, 500]  # some retries in the mix
    config = {"backoff_initial_s": 0.2, "poll_interval_s": 0.05}
    first, second = manager(org_db, url, **config), manager(org_db, url, **config)
    with capture_logs():
        async with trio.open_nursery() as nursery:
            await nursery.start(run_background_tasks, first)
            await nursery.start(run_background_tasks, second)
            for n in range(30):
                await notify(first if n % 2 else second, "wad_message_received",
                             message=message(f"event {n}"), client=client())
            with trio.fail_after(20):
                await fake.wait_for(33)
                await settled(org_db)
            await trio.sleep(0.5)  # time for a duplicate to show up, if there were one
            nursery.cancel_scope.cancel()
    delivered = [(json.loads(got["body"])["id"], got["status"]) for got in fake.received]
    successes = [delivery for delivery, status in delivered if status == 200]
    assert len(successes) == 30
    assert len(set(successes)) == 30  # no delivery posted successfully twice
    assert len(delivered) == 33  # exactly the three failures were retried
    assert all(status == "DELIVERED" for _, status, _, _ in await rows(org_db))


async def test_each_failed_delivery_is_retried_on_its_own_backoff(
        org_db: Database, crm: tuple[FakeCrm, str]) -> None:
    """Two deliveries fail once each; both are retried after the backoff (not at the next poll,
    set far away here), each under its own id."""
    fake, url = crm
    fake.statuses = [500, 500]
    config = {"backoff_initial_s": 0.3, "poll_interval_s": 30.0}
    pm = manager(org_db, url, **config)
    with capture_logs() as logs:
        # Both are pending before the worker starts, so that one poll finds them together.
        await notify(pm, "wad_message_received", message=message("one"), client=client())
        await notify(pm, "wad_message_received", message=message("two"), client=client())
        async with trio.open_nursery() as nursery:
            await nursery.start(run_background_tasks, pm)
            with trio.fail_after(10):
                await fake.wait_for(4)
                await settled(org_db)
            nursery.cancel_scope.cancel()
    attempts = sorted((json.loads(got["body"])["data"]["message"]["body"],
                       json.loads(got["body"])["attempt"], got["status"])
                      for got in fake.received)
    assert attempts == [("one", 1, 500), ("one", 2, 200), ("two", 1, 500), ("two", 2, 200)]
    assert not [entry for entry in logs if entry["log_level"] == "error"]  # the worker never failed
    assert await rows(org_db) == [("message.received", "DELIVERED", 2, None),
                                  ("message.received", "DELIVERED", 2, None)]
