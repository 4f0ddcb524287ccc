"""Metrics without a browser: bus events, supervisor restarts and the database at scrape time
turned into Prometheus metrics that `prometheus-client`'s own parser reads; `GET /metrics` over
real HTTP and who may scrape it. The run against the simulator is tests/live/test_metrics_live.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trio

from tests.support.bus_helpers import event
from tests.support.events import Served
from tests.support.metrics import Samples, parse, value
from wad import supervise
from wad.bus import EventBus
from wad.config import DaemonSettings, Settings
from wad.db.pool import Database
from wad.db.repo import organizations as orgs_repo
from wad.db.repo import outbox as outbox_repo
from wad.db.repo import sessions as sessions_repo
from wad.observe.metrics import Metrics, memory_by_kind
from wad.org.manager import OrgManager
from wad.supervise import Backoff, ChildSpec, Supervisor


async def scrape(metrics: Metrics) -> Samples:
    return parse((await metrics.render()).decode())


async def test_bus_events_and_the_database_become_metrics(db: Database,
                                                          nursery: trio.Nursery) -> None:
    bus = EventBus()
    metrics = Metrics(db=db, bus=bus, node="node-a", pool_max=5)
    await nursery.start(metrics.run)
    org = (await orgs_repo.create(db, name="Issyk-Kul Tours")).id
    idle = (await orgs_repo.create(db, name="Osh Travel")).id
    await sessions_repo.set_state(db, organization_id=org, state="CONNECTED")

    first = await scrape(metrics)
    # Every organization is there from the start, its counters at 0 and its state known.
    assert value(first, "wad_messages_received_total", organization=str(org)) == 0
    assert value(first, "wad_messages_sent_total", organization=str(idle)) == 0
    assert value(first, "wad_session_state", organization=str(org), state="CONNECTED") == 1
    assert value(first, "wad_session_state", organization=str(org), state="ERROR") == 0
    assert value(first, "wad_session_state", organization=str(idle), state="DISCONNECTED") == 1
    assert value(first, "wad_sessions", state="CONNECTED") == 1
    assert value(first, "wad_sessions", state="DISCONNECTED") == 1
    assert value(first, "wad_organization_info", organization=str(org),
                 name="Issyk-Kul Tours") == 1
    assert value(first, "wad_send_queue_depth", organization=str(org)) == 0
    assert value(first, "wad_sending_paused", organization=str(org)) == 0
    assert value(first, "wad_db_pool_max_connections") == 5
    assert value(first, "wad_db_up") == 1
    in_use = value(first, "wad_db_pool_connections", state="in_use")
    assert in_use is not None and in_use >= 0
    assert (value(first, "wad_memory_pss_bytes", kind="daemon") or 0) > 10 * 2**20
    assert value(first, "wad_processes", kind="daemon") == 1
    assert (value(first, "process_resident_memory_bytes") or 0) > 0
    assert any(name == "wad_build_info" and dict(labels)["node"] == "node-a"
               for name, labels in first)

    # Traffic: two messages in (one stored long before its processing ended), one out.
    m1, m2, m3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    bus.publish(event("message.stored", org, {"id": str(m1), "direction": "IN"}))
    bus.publish(event("message.received", org, {"id": m1}))
    bus.publish(event("message.received", org, {"id": m2}))  # stored before this daemon started
    bus.publish(event("message.stored", org, {"id": str(m3), "direction": "OUT"}))
    bus.publish(event("message.sent", org, {"id": m3}))
    bus.publish(event("outbox.refused", org, {"limit": "hour", "count": 3}))
    bus.publish(event("outbox.refused", org, {"limit": "day"}))
    bus.publish(event("plugin.error", org, {"plugin": "webhook", "hook": "wad_message_received"}))
    bus.publish(event("session.status", org, {
        "state": "CONNECTING", "last_error": "health check: the page did not answer"}))
    bus.publish(event("session.status", org, {"state": "CONNECTING",
                                              "last_error": "browser crashed"}))
    bus.publish(event("session.status", org, {"state": "CONNECTED", "last_error": None}))
    bus.publish(event("session.incompatible", org, {
        "version": "2.3000.9", "missing": ["X.y is missing"], "reason": "X.y is missing"}))
    await trio.testing.wait_all_tasks_blocked()

    # The queue: two waiting (the oldest queued an hour ago), one being sent, one done.
    for minutes in (60, 1):
        await outbox_repo.enqueue(db, organization_id=org, to_phone="+996555123456",
                                  content="Ваш тур подтверждён",
                                  not_before=datetime.now(UTC) - timedelta(minutes=minutes))
    await db.execute("UPDATE outbox SET created_at = now() - interval '1 hour' "
                     "WHERE organization_id = $1 AND not_before < now() - interval '30 minutes'",
                     org)
    sending, _ = await outbox_repo.enqueue(db, organization_id=idle, to_phone="+996555000111",
                                           content="Hello")
    assert await outbox_repo.claim_next(db, organization_id=idle, wa_message_id="3EB0AA") \
        is not None
    await db.execute(
        "INSERT INTO plugin_deliveries (organization_id, plugin, event, payload, status) VALUES "
        "($1, 'webhook', 'message.received', '{}', 'PENDING'), "
        "($1, 'webhook', 'message.received', '{}', 'PENDING'), "
        "($1, 'webhook', 'message.sent', '{}', 'DELIVERED')", org)

    after = await scrape(metrics)
    assert value(after, "wad_messages_received_total", organization=str(org)) == 2
    assert value(after, "wad_messages_sent_total", organization=str(org)) == 1
    assert value(after, "wad_messages_received_total", organization=str(idle)) == 0
    # Processing time: of clients' messages whose storing this daemon saw (m1 only).
    assert value(after, "wad_inbound_processing_seconds_count", organization=str(org)) == 1
    assert value(after, "wad_sends_refused_total", organization=str(org), limit="hour") == 3
    assert value(after, "wad_sends_refused_total", organization=str(org), limit="day") == 1
    assert value(after, "wad_plugin_errors_total", plugin="webhook",
                 hook="wad_message_received") == 1
    assert value(after, "wad_browser_health_check_failures_total", organization=str(org)) == 1
    assert value(after, "wad_page_incompatible_total", organization=str(org),
                 version="2.3000.9") == 1
    assert value(after, "wad_send_queue_depth", organization=str(org)) == 2
    age = value(after, "wad_send_queue_oldest_age_seconds", organization=str(org))
    assert age is not None and 3590 < age < 3700
    assert value(after, "wad_send_queue_depth", organization=str(idle)) == 0
    assert value(after, "wad_send_in_flight", organization=str(idle)) == 1
    assert value(after, "wad_plugin_deliveries_pending", plugin="webhook") == 2


async def test_send_latencies_come_from_the_queue_history_once_each(
        db: Database, nursery: trio.Nursery) -> None:
    org = (await orgs_repo.create(db, name="Tours")).id
    # Sent before the metrics started: never counted.
    old, _ = await outbox_repo.enqueue(db, organization_id=org, to_phone="+996555000001",
                                       content="old")
    await outbox_repo.claim_next(db, organization_id=org, wa_message_id="OLD")
    await outbox_repo.mark_sent(db, outbox_id=old.id)

    metrics = Metrics(db=db)
    await nursery.start(metrics.run)
    item, _ = await outbox_repo.enqueue(db, organization_id=org, to_phone="+996555000002",
                                        content="Ваш тур подтверждён")
    await db.execute("UPDATE outbox SET created_at = now() - interval '42 seconds' "
                     "WHERE id = $1", item.id)
    await outbox_repo.claim_next(db, organization_id=org, wa_message_id="NEW1")
    sent_at = datetime.now(UTC)
    await outbox_repo.mark_sent(db, outbox_id=item.id, at=sent_at)
    samples = await scrape(metrics)
    labels = {"organization": str(org), "stage": "queued_to_sent"}
    assert value(samples, "wad_send_latency_seconds_count", **labels) == 1
    total = value(samples, "wad_send_latency_seconds_sum", **labels)
    assert total is not None and 41 < total < 50
    assert value(samples, "wad_send_latency_seconds_bucket", le="30.0", **labels) == 0
    assert value(samples, "wad_send_latency_seconds_bucket", le="60.0", **labels) == 1

    # The phone's acks: delivered 3 s after the send, then read. Each stage is counted once.
    await db.execute("UPDATE outbox SET sent_at = now() - interval '3 seconds' WHERE id = $1",
                     item.id)
    await outbox_repo.apply_ack(db, organization_id=org, wa_message_id="NEW1",
                                status="DELIVERED")
    await outbox_repo.apply_ack(db, organization_id=org, wa_message_id="NEW1", status="READ")
    for _ in range(2):  # a second scrape sees nothing new
        samples = await scrape(metrics)
        assert value(samples, "wad_send_latency_seconds_count", **labels) == 1
        delivered = {"organization": str(org), "stage": "sent_to_delivered"}
        assert value(samples, "wad_send_latency_seconds_count", **delivered) == 1
        total = value(samples, "wad_send_latency_seconds_sum", **delivered)
        assert total is not None and 2.5 < total < 10


async def test_actor_restarts_are_counted_by_organization_and_actor(
        db: Database, nursery: trio.Nursery, state_dir: Path) -> None:
    metrics = Metrics(db=db)
    # A second daemon in the same process, whose manager does not run that organization.
    manager = OrgManager(settings=Settings(daemon=DaemonSettings(state_dir=str(state_dir))),
                         db=db, driver=None, bus=EventBus(), actors=[])
    other = Metrics(db=db, manager=manager)
    org = uuid.uuid4()
    crashes = 0

    async def flaky(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        nonlocal crashes
        task_status.started()
        if crashes < 2:
            crashes += 1
            raise RuntimeError("page crashed")
        await trio.sleep_forever()

    async def steady(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep_forever()

    async with trio.open_nursery() as inner:
        await inner.start(metrics.run)
        await inner.start(other.run)
        supervisor = Supervisor(f"org-{org}", [ChildSpec("session", flaky),
                                               ChildSpec("inbound", steady)],
                                intensity=5, period=60, backoff=Backoff(initial=0.01))
        await inner.start(supervisor.run)
        with trio.fail_after(5):
            while supervisor.total_restarts < 2:
                await trio.sleep(0.01)
        samples = await scrape(metrics)
        assert value(samples, "wad_actor_restarts_total", organization=str(org),
                     actor="session") == 2
        assert value(samples, "wad_actor_restarts_total", organization=str(org),
                     actor="inbound") is None
        # The other daemon's registry is its own, and the restarts are not its organization's.
        assert value(await scrape(other), "wad_actor_restarts_total", organization=str(org),
                     actor="session") is None
        inner.cancel_scope.cancel()
    # The hooks are removed when the metrics stop.
    assert metrics.on_restart not in supervise.on_restart
    assert other.on_restart not in supervise.on_restart


def test_memory_includes_the_daemons_children() -> None:
    child = subprocess.Popen([sys.executable, "-c",
                              "import time; x = b'x' * 30_000_000; time.sleep(30)"])
    try:
        for _ in range(100):
            found = memory_by_kind(os.getpid())
            if found.get("other", (0, 0))[0] > 25 * 2**20:
                break
            time.sleep(0.05)
        assert found["daemon"][1] == 1
        assert found["other"][1] >= 1
        assert found["other"][0] > 25 * 2**20  # the child's 30 MB are counted
    finally:
        child.kill()
        child.wait()


# -- /metrics over HTTP ------------------------------------------------------------------------


async def test_metrics_endpoint_needs_the_super_admin_and_parses(served: Served) -> None:
    org = await served.org("Issyk-Kul Tours")
    root = served.client(await served.token("SUPER_ADMIN"))
    admin = served.client(await served.token("ADMIN", org))
    with trio.fail_after(20):
        r = await root.get("/metrics")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain; version=")
        samples = parse(r.text)
        assert value(samples, "wad_session_state", organization=str(org),
                     state="DISCONNECTED") == 1
        bus = served.ctx.services.bus
        assert bus is not None
        bus.publish(event("message.received", org, {}))
        with trio.fail_after(5):
            while True:  # the app's metrics task counts it
                samples = parse((await root.get("/metrics")).text)
                if value(samples, "wad_messages_received_total", organization=str(org)) == 1:
                    break
                await trio.sleep(0.02)

        r = await admin.get("/metrics")
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "forbidden"
        r = await served.client().get("/metrics")
        assert r.status_code == 401
        r = await served.client("wad_not-a-real-token").get("/metrics")
        assert r.status_code == 401
