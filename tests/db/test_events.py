"""The event log and the event stream: order, per-organization windows, resuming with
`Last-Event-ID`, resets, tenancy and roles, over real HTTP (Hypercorn on port 0).

The end-to-end run against the simulator and a real Chromium is in tests/live/test_events_live.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import trio

from tests.support.bus_helpers import event
from tests.support.events import Served, Sse, open_stream, serve_app
from wad.api.context import Services
from wad.bus import EventBus
from wad.db.pool import Database
from wad.observe.eventlog import EventLog, Item

# -- helpers shared with the other stream, metrics and status page tests ---------------------












def bus_of(served: Served) -> EventBus:
    bus = served.ctx.services.bus
    assert bus is not None
    return bus


# -- the event log itself --------------------------------------------------------------------


async def _collect(log: EventLog, orgs: frozenset[uuid.UUID] | None, last_id: str | None,
                   count: int) -> list[Item]:
    """The first `count` items a reader gets."""
    items: list[Item] = []
    with trio.fail_after(5):
        async for item in log.follow(orgs, last_id):
            items.append(item)
            if len(items) == count:
                break
    return items


async def test_a_reader_gets_its_organizations_events_in_order_and_resumes_after_an_id(
        nursery: trio.Nursery) -> None:
    bus = EventBus()
    log = EventLog(bus)
    await nursery.start(log.run)
    a, b = uuid.uuid4(), uuid.uuid4()
    bus.publish(event("session.status", a, {"state": "CONNECTING"}))
    bus.publish(event("session.status", b, {"state": "CONNECTING"}))
    bus.publish(event("message.received", a, {"body": "1"}))
    bus.publish(event("outbound.paused", a, {"reason": "test"}))  # not a streamed kind
    bus.publish(event("message.sent", a, {"body": "2"}))
    await trio.testing.wait_all_tasks_blocked()

    # A new reader: where it is, the latest status of its organization, then what comes.
    items = []
    async with trio.open_nursery() as readers:
        async def read() -> None:
            items.extend(await _collect(log, frozenset({a}), None, 3))
        readers.start_soon(read)
        await trio.testing.wait_all_tasks_blocked()
        bus.publish(event("message.received", b, {"body": "other"}))
        bus.publish(event("message.received", a, {"body": "3"}))
    assert [i.type for i in items] == ["start", "snapshot", "event"]
    assert items[1].event is not None and items[1].event.payload() == {
        "state": "CONNECTING", "previous": None, "qr": None, "pairing_code": None,
        "last_error": None, "phone_number": None}
    assert items[2].event is not None and items[2].event.payload()["body"] == "3"
    assert items[0].cursor == 5  # the position before "3": the bus's sequence so far

    # Resuming after the first event of `a`: the rest of `a`, in order, nothing of `b`.
    first = log.since(frozenset({a}), 0)[0][0]
    items = await _collect(log, frozenset({a}), log.event_id(first), 4)
    assert [i.type for i in items] == ["start", "event", "event", "event"]
    assert items[0].resumed
    assert [i.event.payload()["body"] for i in items[1:] if i.event] == ["1", "2", "3"]

    # Every organization (the super admin): all kinds that are streamed, in publication order.
    events, gap = log.since(None, 0)
    assert not gap
    assert [(e.org_id, e.kind) for e in events] == [
        (a, "session.status"), (b, "session.status"), (a, "message.received"),
        (a, "message.sent"), (b, "message.received"), (a, "message.received")]


async def test_an_id_older_than_the_window_or_of_another_run_resets(
        nursery: trio.Nursery) -> None:
    bus = EventBus()
    log = EventLog(bus, capacity=3)
    await nursery.start(log.run)
    a, b = uuid.uuid4(), uuid.uuid4()
    bus.publish(event("session.status", a, {"state": "QR_CODE_PENDING", "qr": "q1"}))
    first = bus.publish(event("message.received", a, {"body": "1"}))
    for n in range(2, 5):
        bus.publish(event("message.received", a, {"body": str(n)}))
    for n in range(10):  # another organization's traffic does not push `a`'s events out
        bus.publish(event("message.received", b, {"body": str(n)}))
    await trio.testing.wait_all_tasks_blocked()

    # `a` keeps its last 3 events: n=2..4. After n=1 nothing is missing; after the status it is.
    items = await _collect(log, frozenset({a}), log.event_id(first), 4)
    assert [i.type for i in items] == ["start", "event", "event", "event"]
    assert [i.event.payload()["body"] for i in items[1:] if i.event] == ["2", "3", "4"]

    status_id = f"{log.boot}-1"
    items = await _collect(log, frozenset({a}), status_id, 3)
    assert [i.type for i in items] == ["start", "reset", "snapshot"]
    assert "no longer kept" in items[1].reason
    # The status that left the ring is still known: the reader learns the QR at once.
    assert items[2].event is not None and items[2].event.payload()["qr"] == "q1"
    assert items[1].cursor == log.last_seq

    for stale in ("0badc0de-3", "garbage", f"{log.boot}-99999"):
        items = await _collect(log, frozenset({a}), stale, 2)
        assert [i.type for i in items] == ["start", "reset"], stale


async def test_a_reader_that_falls_a_whole_window_behind_is_reset(nursery: trio.Nursery) -> None:
    bus = EventBus()
    log = EventLog(bus, capacity=5)
    await nursery.start(log.run)
    org = uuid.uuid4()
    reader = log.follow(frozenset({org}), None)
    assert (await reader.__anext__()).type == "start"
    bus.publish(event("message.received", org, {"body": "0"}))
    await trio.testing.wait_all_tasks_blocked()
    assert (await reader.__anext__()).event is not None
    # The reader does not ask for a while; 20 events pass, more than the window.
    for n in range(1, 21):
        bus.publish(event("message.received", org, {"body": str(n)}))
    await trio.testing.wait_all_tasks_blocked()
    item = await reader.__anext__()
    assert item.type == "reset"
    assert "fell behind" in item.reason
    bus.publish(event("message.received", org, {"body": "21"}))
    await trio.testing.wait_all_tasks_blocked()
    item = await reader.__anext__()
    assert item.type == "event" and item.event is not None and item.event.payload()["body"] == "21"
    await reader.aclose()  # type: ignore[attr-defined]  # follow() is an async generator


async def test_idle_readers_get_keepalives_and_closing_ends_them(
        nursery: trio.Nursery, autojump_clock: trio.testing.MockClock) -> None:
    bus = EventBus()
    log = EventLog(bus)
    await nursery.start(log.run)
    items: list[str] = []

    async def read() -> None:
        async for item in log.follow(None, None, idle_s=15):
            items.append(item.type)

    async with trio.open_nursery() as readers:
        readers.start_soon(read)
        await trio.sleep(46)
        log.close()
    assert items == ["start", "idle", "idle", "idle"]
    # A closed log lets go of its bus subscription.
    bus.publish(event("message.received", uuid.uuid4(), {}))
    assert not log.since(None, 0)[0]


# -- the stream over HTTP ----------------------------------------------------------------------


async def test_stream_over_http_resumes_with_last_event_id_and_respects_roles(
        served: Served) -> None:
    bus = bus_of(served)
    org = await served.org("Issyk-Kul Tours")
    other = await served.org("Osh Travel")
    admin = served.client(await served.token("ADMIN", org))
    viewer = served.client(await served.token("VIEWER", org))
    agent = served.client(await served.token("AGENT", org))
    other_admin = served.client(await served.token("ADMIN", other))
    root = served.client(await served.token("SUPER_ADMIN"))

    bus.publish(event("session.status", org, {"state": "QR_CODE_PENDING", "qr": "2@abc,def",
                                        "pairing_code": None, "last_error": None,
                                        "phone_number": None}))
    with trio.fail_after(20):
        response, reader = await open_stream(admin, f"/api/whatsapp/events/{org}")
        try:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-store"
            start = await reader.next()
            assert reader.retry == 2000
            assert start.event == "stream.start"
            assert start.data == {"resumed": False, "window": 1000,
                                  "organization_ids": [str(org)]}
            snapshot = await reader.next()
            assert snapshot.event == "session.status"
            assert snapshot.id is None  # older than the position: it does not move it
            assert snapshot.data["snapshot"] is True
            assert snapshot.data["payload"]["qr"] == "2@abc,def"

            bus.publish(event("message.received", other, {"body": "not yours"}))
            bus.publish(event("message.received", org, {"body": "Салам! Тур на Иссык-Куль?"}))
            bus.publish(event("session.status", org, {"state": "CONNECTED", "qr": None,
                                                "phone_number": "+996555100301"}))
            first = await reader.next()
            assert first.event == "message.received"
            assert first.data["payload"]["body"] == "Салам! Тур на Иссык-Куль?"
            assert first.data["organization_id"] == str(org)
            assert first.id == first.data["id"]
            connected = await reader.next()
            assert connected.data["payload"]["state"] == "CONNECTED"
        finally:
            await response.aclose()

        # While nobody listens, three messages and a status change.
        for n in range(3):
            bus.publish(event("message.received", org, {"body": str(n)}))
        bus.publish(event("message.status_changed", org, {"to_status": "READ"}))
        bus.publish(event("client.status_changed", org, {"to_status": "QUALIFIED"}))

        response, reader = await open_stream(admin, f"/api/whatsapp/events/{org}",
                                             last_id=first.id)
        try:
            start = await reader.next()
            assert start.event == "stream.start" and start.data["resumed"] is True
            assert start.id is None
            got = [await reader.next() for _ in range(6)]
        finally:
            await response.aclose()
        assert [g.event for g in got] == ["session.status", "message.received",
                                          "message.received", "message.received",
                                          "message.status_changed", "client.status_changed"]
        assert [g.data["payload"].get("body") for g in got[1:4]] == ["0", "1", "2"]
        seqs = [g.data["seq"] for g in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == 6

        # `?last_event_id=` works as the header does.
        response, reader = await open_stream(
            admin, f"/api/whatsapp/events/{org}?last_event_id={got[-2].id}")
        try:
            assert (await reader.next()).data["resumed"] is True
            assert (await reader.next()).event == "client.status_changed"
        finally:
            await response.aclose()

        # Another organization's token, and no token: refused before any stream opens.
        r = await other_admin.get(f"/api/whatsapp/events/{org}")
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "forbidden"
        r = await served.client().get(f"/api/whatsapp/events/{org}")
        assert r.status_code == 401
        r = await root.get(f"/api/whatsapp/events/{uuid.uuid4()}")
        assert r.status_code == 404
        r = await admin.get("/api/whatsapp/events/not-a-uuid")
        assert r.status_code == 404

        # A viewer follows the session state without the QR, and messages without their text;
        # an agent sees messages whole, still without the QR.
        bus.publish(event("session.status", org, {"state": "QR_CODE_PENDING", "qr": "2@secret",
                                            "pairing_code": None}))
        seen: dict[str, list[Sse]] = {}
        for name, client in (("viewer", viewer), ("agent", agent)):
            response, reader = await open_stream(client, f"/api/whatsapp/events/{org}",
                                                 last_id=got[-1].id)
            try:
                await reader.next()  # stream.start
                bus.publish(event("message.received", org, {"body": f"for the {name}?"}))
                bus.publish(event("session.status", org, {"state": "CONNECTED", "qr": None}))
                seen[name] = await reader.until(
                    lambda s: s.event == "session.status"
                    and s.data["payload"]["state"] == "CONNECTED")
            finally:
                await response.aclose()
        assert [s.event for s in seen["viewer"]] == [
            "session.status", "message.received", "session.status"]
        assert seen["viewer"][0].data["payload"]["qr"] is None
        message_seen = seen["viewer"][1].data["payload"]
        assert message_seen["body"] is None and message_seen["caption"] is None
        assert message_seen["status"] == "RECEIVED" and message_seen["direction"] == "IN"
        assert "for the viewer?" not in str(seen["viewer"])
        # (the agent resumes from the same id, so it sees the viewer's round first)
        assert [s.event for s in seen["agent"]] == [
            "session.status", "message.received", "session.status"]
        assert seen["agent"][1].data["payload"]["body"] == "for the viewer?"
        assert seen["agent"][0].data["payload"]["qr"] is None

        # The super admin's stream of every organization; an organization's token on the same
        # path gets only its own.
        for client, expected in ((root, {str(org), str(other)}), (other_admin, {str(other)})):
            response, reader = await open_stream(client, "/api/whatsapp/events")
            try:
                start = await reader.next()
                bus.publish(event("message.received", org, {"body": "a"}))
                bus.publish(event("message.received", other, {"body": "b"}))
                bus.publish(event("session.status", other, {"state": "CONNECTING"}))
                events = await reader.until(lambda s: s.event == "session.status"
                                            and not s.data["snapshot"])
            finally:
                await response.aclose()
            assert {e.data["organization_id"] for e in events} == expected
            assert start.data["organization_ids"] == (
                None if client is root else [str(other)])


async def test_a_stream_without_a_bus_is_unavailable(db: Database, state_dir: Path,
                                                      nursery: trio.Nursery) -> None:
    found, shutdown = await serve_app(nursery, db, state_dir, Services())
    try:
        org = await found.org("Tours")
        client = found.client(await found.token("ADMIN", org))
        with trio.fail_after(10):
            r = await client.get(f"/api/whatsapp/events/{org}")
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "unavailable"
    finally:
        for client in found.clients:
            await client.aclose()
        shutdown.set()
