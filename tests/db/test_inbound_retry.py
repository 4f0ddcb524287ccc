"""Processing that fails is retried with backoff, and only a message that fails repeatedly is
parked (FAILED with its error), visible in the status API, `wad status`'s overview and the
metrics. The failures are real PostgreSQL errors: a trigger on `clients` that refuses writes
(a table under maintenance) for a number of attempts, or for good."""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from tests.support.inbound import NO_DELAYS, processed
from tests.support.inbound_actor import refuse_client_writes
from wad.browser import events as ev
from wad.bus import Event, EventBus, ProcessingFailed
from wad.config import DaemonSettings, Settings
from wad.db.models import NewMessage
from wad.db.pool import Database
from wad.db.repo import messages as messages_repo
from wad.db.repo import organizations
from wad.db.repo import overview as overview_repo
from wad.observe.metrics import Metrics
from wad.org.context import OrgContext
from wad.org.inbound.actor import InboundActor, run_inbound

RETRY = msgspec.structs.replace(NO_DELAYS, processing_max_attempts=3,
                                processing_retry_initial_s=0.2, processing_retry_max_s=0.4)
SENDER = "996555700100"


class NoBrowser:
    """No page: catch-up and enrichment have nothing to ask."""

    session = None
    connected = trio.Event()


async def run_actor(db: Database, state_dir: Path, org: uuid.UUID, bus: EventBus,
                    nursery: trio.Nursery) -> tuple[InboundActor, trio.MemorySendChannel[Any]]:
    send, receive = trio.open_memory_channel[Any](100)
    ctx = OrgContext(org_id=org, settings=Settings(daemon=DaemonSettings(state_dir=str(state_dir))),
                     db=db, bus=bus, session=NoBrowser(),  # type: ignore[arg-type]
                     inbound_events=receive)
    actor = await nursery.start(functools.partial(run_inbound, ctx, settings=RETRY))
    return actor, send


def message(n: int) -> ev.Message:
    chat = f"{SENDER}@c.us"
    return ev.Message(id=f"false_{chat}_{n:020X}", from_me=False, chat_id=chat, type="chat",
                      body=f"Hello {n}", timestamp=1751360400 + n, push_name="Aigerim", ack=0)


def failures(published: list[Event]) -> list[ProcessingFailed]:
    return [e for e in published if isinstance(e, ProcessingFailed)]


async def record(bus: EventBus, published: list[Event],
                 task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    with bus.subscribe() as events:
        task_status.started()
        async for event in events:
            published.append(event)


async def test_a_transient_failure_is_retried_with_backoff_and_then_processed(
        db: Database, state_dir: Path, nursery: trio.Nursery) -> None:
    org = (await organizations.create(db, name="Retry Tours")).id
    await refuse_client_writes(db, times=2)
    bus = EventBus()
    published: list[Event] = []
    await nursery.start(record, bus, published)
    actor, events = await run_actor(db, state_dir, org, bus, nursery)
    started = trio.current_time()
    await events.send(ev.MessageReceived(message=message(1)))
    row = await processed(db, org, message(1).id)
    assert row.processing_state == "DONE" and row.processing_error is None
    assert row.conversation_id is not None
    seen = failures(published)
    assert [(f.attempts, f.parked) for f in seen] == [(1, False), (2, False)]
    assert [f.retry_in_s for f in seen] == [0.2, 0.4]  # the shared Backoff, doubling, capped
    assert all("clients table under maintenance" in f.error for f in seen)
    assert trio.current_time() - started >= 0.6  # it did wait out the backoff
    assert (actor.stats["failed"], actor.stats["parked"]) == (2, 0)


async def test_a_message_that_keeps_failing_is_parked_with_its_error_and_counted(
        db: Database, state_dir: Path, nursery: trio.Nursery) -> None:
    org = (await organizations.create(db, name="Parked Tours")).id
    other = (await organizations.create(db, name="Fine Tours")).id
    await refuse_client_writes(db, times=None)
    bus = EventBus()
    published: list[Event] = []
    await nursery.start(record, bus, published)
    metrics = Metrics(db=db, bus=bus)
    await nursery.start(metrics.run)
    actor, events = await run_actor(db, state_dir, org, bus, nursery)
    await events.send(ev.MessageReceived(message=message(2)))
    row = await processed(db, org, message(2).id)
    assert row.processing_state == "FAILED"
    assert row.processing_attempts == RETRY.processing_max_attempts
    assert "clients table under maintenance" in (row.processing_error or "")
    seen = failures(published)
    assert [(f.attempts, f.parked) for f in seen] == [(1, False), (2, False), (3, True)]
    assert seen[-1].retry_in_s is None
    assert (actor.stats["failed"], actor.stats["parked"]) == (3, 1)

    parked = await messages_repo.parked_summary(db, organization_id=org)
    assert parked.count == 1 and "maintenance" in (parked.last_error or "")
    assert (await messages_repo.parked_summary(db, organization_id=other)).count == 0
    listing = {o.organization_id: o.parked_messages
               for o in await overview_repo.organizations(db)}
    assert (listing[org], listing[other]) == (1, 0)
    with trio.fail_after(10):
        while metrics.parked.labels(str(org))._value.get() < 1:
            await trio.sleep(0.02)
    assert metrics.processing_retries.labels(str(org))._value.get() == 2
    metrics.close()


async def test_a_restart_keeps_the_backoff_and_the_count(
        db: Database, state_dir: Path, nursery: trio.Nursery) -> None:
    org = (await organizations.create(db, name="Restart Tours")).id
    await refuse_client_writes(db, times=None)
    bus = EventBus()
    published: list[Event] = []
    await nursery.start(record, bus, published)
    with trio.CancelScope() as first_run:
        async with trio.open_nursery() as inner:
            _actor, events = await run_actor(db, state_dir, org, bus, inner)
            await events.send(ev.MessageReceived(message=message(3)))
            with trio.fail_after(10):
                while not failures(published):
                    await trio.sleep(0.02)
            first_run.cancel()
    row = await messages_repo.get_by_wa_id(db, organization_id=org, wa_message_id=message(3).id)
    assert row is not None and row.processing_state == "PENDING"
    assert row.processing_attempts == 1
    # A new actor (a daemon restart) resumes it: the attempts add up to the limit, then it is
    # parked; never PENDING for good.
    await run_actor(db, state_dir, org, bus, nursery)
    row = await processed(db, org, message(3).id)
    assert (row.processing_state, row.processing_attempts) == ("FAILED", 3)


@pytest.mark.parametrize("attempts", [0, 2])
async def test_record_processing_failure_counts_and_parks_at_the_limit(
        db: Database, attempts: int) -> None:
    org = (await organizations.create(db, name="Repo Tours")).id
    wa_id = f"false_{SENDER}@c.us_{attempts:020X}"
    stored, _ = await messages_repo.insert_if_absent(db, message=NewMessage(
        organization_id=org, wa_message_id=wa_id, wa_chat_id=f"{SENDER}@c.us", direction="IN",
        sender="CLIENT", sent_at=datetime.now(UTC), status="RECEIVED", type="text",
        body="hi"))
    await db.execute("UPDATE messages SET processing_attempts = $2 WHERE id = $1",
                     stored.id, attempts)
    row = await messages_repo.record_processing_failure(db, message_id=stored.id, error="boom",
                                                        max_attempts=3)
    assert row is not None
    assert (row.processing_state, row.processing_attempts, row.processing_error) == (
        "FAILED" if attempts == 2 else "PENDING", attempts + 1, "boom")
    again = await messages_repo.record_processing_failure(db, message_id=stored.id,
                                                          error="boom", max_attempts=3)
    assert (again is None) == (attempts == 2)  # a parked message is not counted again


async def test_the_status_api_shows_parked_messages_with_the_latest_error(
        served: Any) -> None:
    db: Database = served.db
    org = (await organizations.create(db, name="Visible Tours")).id
    for n, error in enumerate(["TimeoutError: agent", "RuntimeError: detector"]):
        stored, _ = await messages_repo.insert_if_absent(db, message=NewMessage(
            organization_id=org, wa_message_id=f"false_{SENDER}@c.us_{n:020X}",
            wa_chat_id=f"{SENDER}@c.us", direction="IN", sender="CLIENT",
            sent_at=datetime.now(UTC), status="RECEIVED", type="text", body="hi"))
        await messages_repo.set_processing_state(db, message_id=stored.id, state="FAILED",
                                                 error=error)
    async with served.client(await served.token("VIEWER", org)) as api:
        status = (await api.get(f"/api/whatsapp/status/{org}")).json()
    assert (status["parkedMessages"], status["lastParkedError"]) == (
        2, "RuntimeError: detector")
    async with served.client(await served.token("SUPER_ADMIN")) as api:
        listing = (await api.get("/api/whatsapp/status")).json()["organizations"]
    assert [o["parkedMessages"] for o in listing if o["organizationId"] == str(org)] == [2]
