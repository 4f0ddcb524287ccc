"""The change feed over HTTP: `GET /api/whatsapp/changes/{org}` pages, the event stream read
from the feed (order, resuming with `Last-Event-ID`, roles, the super admin's stream), the
wake-up by `LISTEN/NOTIFY`, retention and 410 `cursor_expired`, over real HTTP (Hypercorn on
port 0) and a real PostgreSQL.

Entries are written with the changes they describe (`wad.db.repo`); the daemon-level runs
(kill -9 and resume, two daemons) are in tests/live/test_feed_live.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
import trio

from tests.support.events import Served, Sse, feed_message, open_stream, serve_app
from wad.api.context import Services
from wad.config import FeedSettings
from wad.db.pool import Database
from wad.db.repo import changes
from wad.db.repo import clients as clients_repo
from wad.db.repo import imports as imports_repo
from wad.db.repo import sessions as sessions_repo
from wad.feed import ChangeFeed, Wakeup


class TwoOrgs(NamedTuple):
    """Two organizations and a client of each role whose view of the feed the tests compare."""

    org: uuid.UUID  # "Issyk-Kul Tours"
    other: uuid.UUID  # "Osh Travel"
    admin: httpx.AsyncClient  # ADMIN of org
    viewer: httpx.AsyncClient  # VIEWER of org
    other_admin: httpx.AsyncClient  # ADMIN of other
    root: httpx.AsyncClient  # SUPER_ADMIN


async def two_orgs(served: Served) -> TwoOrgs:
    """Creates the two organizations on the served app and the tokens of their clients."""
    org = await served.org("Issyk-Kul Tours")
    other = await served.org("Osh Travel")
    return TwoOrgs(org, other,
                   admin=served.client(await served.token("ADMIN", org)),
                   viewer=served.client(await served.token("VIEWER", org)),
                   other_admin=served.client(await served.token("ADMIN", other)),
                   root=served.client(await served.token("SUPER_ADMIN")))


async def test_pages_follow_the_cursor_and_respect_tenancy_and_roles(served: Served) -> None:
    db = served.db
    org, other, admin, viewer, other_admin, root = await two_orgs(served)

    # Real writes put their entries in the feed.
    await sessions_repo.set_state(db, organization_id=org, state="QR_CODE_PENDING",
                                  qr_payload="2@secret-qr,abc")
    client, created = await clients_repo.upsert(db, organization_id=org, phone="+996555100301",
                                                push_name="Aibek")
    assert created
    await clients_repo.set_status(db, client_id=client.id, status="QUALIFIED",
                                  detector="test", reason="asked for prices")
    await feed_message(db, org, "Салам! Тур на Иссык-Куль?")
    await feed_message(db, other, "not yours")
    run = await imports_repo.create(db, organization_id=org, source="whatsapp")
    await imports_repo.record_chats(db, run_id=run.id, done=[("chat-1", 40), ("chat-2", 2)])
    await imports_repo.finish(db, run_id=run.id, status="COMPLETED")

    with trio.fail_after(20):
        r = await admin.get(f"/api/whatsapp/changes/{org}")
        assert r.status_code == 200, r.text
        page = r.json()
        kinds = [c["kind"] for c in page["changes"]]
        assert kinds == ["session.state", "client.created", "client.status", "message.stored",
                         "import.started", "import.progress", "import.finished"]
        assert [c["cursor"] for c in page["changes"]] == [1, 2, 3, 4, 5, 6, 7]
        assert page["nextAfter"] == 7 and page["lastCursor"] == 7
        state = page["changes"][0]
        assert state["organizationId"] == str(org)
        assert state["data"]["status"] == "QR_CODE_PENDING"
        assert state["data"]["qrIssuedAt"] is not None
        assert "secret-qr" not in r.text  # never the QR payload
        assert page["changes"][1]["data"]["phone"] == "+996555100301"
        assert page["changes"][2]["data"] == page["changes"][2]["data"] | {
            "clientId": str(client.id), "from": "NEW_LEAD", "to": "QUALIFIED"}
        assert page["changes"][3]["data"]["body"] == "Салам! Тур на Иссык-Куль?"
        progress = page["changes"][5]["data"]
        assert (progress["importId"], progress["chatsDone"], progress["messagesStored"]) == (
            str(run.id), 2, 42)
        assert page["changes"][6]["data"]["importId"] == str(run.id)
        assert page["changes"][6]["data"]["status"] == "COMPLETED"

        # Paging: after a cursor, a limit; nextAfter goes on where the page stopped.
        r = await admin.get(f"/api/whatsapp/changes/{org}", params={"after": 2, "limit": 2})
        assert [c["cursor"] for c in r.json()["changes"]] == [3, 4]
        assert r.json()["nextAfter"] == 4
        r = await admin.get(f"/api/whatsapp/changes/{org}", params={"after": 7})
        assert r.json() == {"changes": [], "nextAfter": 7, "lastCursor": 7}

        # A viewer: the session and the messages, without their text; no clients, no imports.
        r = await viewer.get(f"/api/whatsapp/changes/{org}")
        assert [c["kind"] for c in r.json()["changes"]] == ["session.state", "message.stored"]
        assert "body" not in r.json()["changes"][1]["data"]
        assert "Иссык-Куль" not in r.text
        assert r.json()["nextAfter"] == 7  # the hidden changes are passed over, not repeated

        # Another organization's token, no token, an unknown organization, bad parameters.
        r = await other_admin.get(f"/api/whatsapp/changes/{org}")
        assert r.status_code == 403
        r = await served.client().get(f"/api/whatsapp/changes/{org}")
        assert r.status_code == 401
        r = await root.get(f"/api/whatsapp/changes/{uuid.uuid4()}")
        assert r.status_code == 404
        for params in ({"after": -1}, {"after": "x"}, {"limit": 0}, {"limit": 1001}):
            r = await admin.get(f"/api/whatsapp/changes/{org}", params=params)
            assert r.status_code == 400, params
            assert r.json()["error"]["code"] == "invalid"
        r = await other_admin.get(f"/api/whatsapp/changes/{other}")
        assert [c["data"]["body"] for c in r.json()["changes"]] == ["not yours"]


async def test_an_entry_commits_with_its_change_and_vanishes_with_it(db: Database) -> None:
    from wad.db.repo import organizations as orgs_repo
    org = (await orgs_repo.create(db, name="Karakol Tours")).id

    class Abandon(Exception):
        pass

    async def abandoned() -> None:
        async with db.transaction() as tx:
            client, _ = await clients_repo.upsert(tx, organization_id=org, phone="+996555100302")
            await clients_repo.set_status(tx, client_id=client.id, status="QUALIFIED",
                                          detector="test")
            await sessions_repo.set_state(tx, organization_id=org, state="CONNECTING")
            assert [c.kind for c in await changes.page(tx, organization_id=org, after=0,
                                                       limit=10)] == [
                "client.created", "client.status", "session.state"]
            raise Abandon

    with pytest.raises(Abandon):
        await abandoned()
    assert await changes.page(db, organization_id=org, after=0, limit=10) == []
    assert await clients_repo.get_by_phone(db, organization_id=org, phone="+996555100302") is None
    # Committed: the change and its entry, with the first cursor (the rollback left no gap).
    client, _ = await clients_repo.upsert(db, organization_id=org, phone="+996555100302")
    found = await changes.page(db, organization_id=org, after=0, limit=10)
    assert [(c.seq, c.kind, c.data["clientId"]) for c in found] == [
        (1, "client.created", str(client.id))]
    # Nothing changed, nothing written.
    await clients_repo.upsert(db, organization_id=org, phone="+996555100302")
    await clients_repo.merge_metadata(db, client_id=client.id, metadata={})
    assert len(await changes.page(db, organization_id=org, after=0, limit=10)) == 1


async def test_the_stream_is_the_feed_and_resumes_after_a_cursor(served: Served) -> None:
    db = served.db
    org, other, admin, viewer, other_admin, root = await two_orgs(served)
    await sessions_repo.set_state(db, organization_id=org, state="QR_CODE_PENDING",
                                  qr_payload="2@abc,def")

    with trio.fail_after(30):
        response, reader = await open_stream(admin, f"/api/whatsapp/events/{org}")
        try:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-store"
            start = await reader.next()
            assert reader.retry == 2000
            assert start.event == "stream.start"
            assert start.data == {"resumed": False, "cursor": 1,
                                  "organizationIds": [str(org)]}
            snapshot = await reader.next()
            assert snapshot.event == "session.state"
            assert snapshot.id is None  # the present, not a position
            assert snapshot.data["snapshot"] is True
            assert snapshot.data["data"]["status"] == "QR_CODE_PENDING"
            assert "2@abc" not in str(snapshot.data)

            await feed_message(db, other, "not yours")
            await feed_message(db, org, "Салам!")
            await sessions_repo.set_state(db, organization_id=org, state="CONNECTED")
            first = await reader.next()
            assert (first.event, first.id) == ("message.stored", "2")
            assert first.data["cursor"] == 2 and first.data["kind"] == "message.stored"
            assert first.data["data"]["body"] == "Салам!"
            assert first.data["organizationId"] == str(org)
            connected = await reader.next()
            assert (connected.event, connected.id) == ("session.state", "3")
            assert connected.data["data"]["status"] == "CONNECTED"
        finally:
            await response.aclose()

        # While nobody listens: three messages and a client.
        for n in range(3):
            await feed_message(db, org, str(n))
        await clients_repo.upsert(db, organization_id=org, phone="+996555100303")

        response, reader = await open_stream(admin, f"/api/whatsapp/events/{org}",
                                             last_id=first.id)
        try:
            start = await reader.next()
            assert start.data == {"resumed": True, "cursor": 2,
                                  "organizationIds": [str(org)]}
            got = [await reader.next() for _ in range(5)]
        finally:
            await response.aclose()
        assert [(g.id, g.event) for g in got] == [
            ("3", "session.state"), ("4", "message.stored"), ("5", "message.stored"),
            ("6", "message.stored"), ("7", "client.created")]
        assert [g.data["data"].get("body") for g in got[1:4]] == ["0", "1", "2"]

        # `?last_event_id=` works as the header does; an id that is no cursor is refused.
        response, reader = await open_stream(
            admin, f"/api/whatsapp/events/{org}?last_event_id=6")
        try:
            assert (await reader.next()).data["resumed"] is True
            assert (await reader.next()).id == "7"
        finally:
            await response.aclose()
        r = await admin.get(f"/api/whatsapp/events/{org}", headers={"Last-Event-ID": "0badc0de-3"})
        assert r.status_code == 400 and r.json()["error"]["field"] == "Last-Event-ID"

        # Refused before any stream opens.
        assert (await other_admin.get(f"/api/whatsapp/events/{org}")).status_code == 403
        assert (await served.client().get(f"/api/whatsapp/events/{org}")).status_code == 401
        assert (await root.get(f"/api/whatsapp/events/{uuid.uuid4()}")).status_code == 404

        # A viewer: the session and messages without their text, no clients.
        response, reader = await open_stream(viewer, f"/api/whatsapp/events/{org}", last_id="5")
        try:
            await reader.next()  # stream.start
            await clients_repo.upsert(db, organization_id=org, phone="+996555100304")
            await sessions_repo.set_state(db, organization_id=org, state="CONNECTING")
            seen = await reader.until(lambda s: s.event == "session.state")
        finally:
            await response.aclose()
        assert [(s.id, s.event) for s in seen] == [("6", "message.stored"), ("9", "session.state")]
        assert "body" not in seen[0].data["data"]

        # The super admin's stream of every organization (from the present, without ids); an
        # organization's token on the same path gets its own organization's stream.
        for client, expected in ((root, {str(org), str(other)}), (other_admin, {str(other)})):
            response, reader = await open_stream(client, "/api/whatsapp/events")
            try:
                start = await reader.next()
                events: list[Sse] = []
                await feed_message(db, org, "a")
                await feed_message(db, other, "b")
                await sessions_repo.set_state(db, organization_id=other, state="CONNECTING")
                events = await reader.until(lambda s: s.event == "session.state"
                                            and not s.data.get("snapshot"))
            finally:
                await response.aclose()
            assert {e.data["organizationId"] for e in events
                    if not e.data.get("snapshot")} == expected
            if client is root:
                assert start.data["organizationIds"] is None
                assert all(e.id is None for e in events)
            else:
                assert start.data["organizationIds"] == [str(other)]


async def test_readers_wake_on_notify_not_on_the_poll(db: Database, nursery: trio.Nursery
                                                      ) -> None:
    from wad.db.repo import organizations as orgs_repo
    org = (await orgs_repo.create(db, name="Naryn Tours")).id
    wakeup = Wakeup(poll_s=600.0)
    await nursery.start(wakeup.listen, db)
    woke = trio.Event()

    async def waiter() -> None:
        await wakeup.wait()
        woke.set()

    nursery.start_soon(waiter)
    await trio.testing.wait_all_tasks_blocked()
    with trio.fail_after(10):
        await changes.record(db, organization_id=org, kind="t.one", data={})
        await woke.wait()
    assert wakeup.notifications >= 1


async def test_a_cursor_older_than_the_retention_gets_410(db: Database, state_dir: Path,
                                                          nursery: trio.Nursery) -> None:
    served, shutdown = await serve_app(nursery, db, state_dir, Services())
    try:
        org = await served.org("Talas Tours")
        admin = served.client(await served.token("ADMIN", org))
        for n in range(5):
            await feed_message(db, org, str(n))
        feed = ChangeFeed(db, FeedSettings(retention_days=7))
        # Nothing is old yet: nothing pruned, every cursor good.
        assert await feed.prune() == 0
        # Eight days later, the first three are past retention (the next two were made then).
        later = datetime.now(UTC) + timedelta(days=8)
        await db.execute("UPDATE changes SET at = at + interval '8 days' "
                         "WHERE organization_id = $1 AND seq > 3", org)
        assert await feed.prune(now=later) == 3
        with trio.fail_after(20):
            for after in (3, 4, 5):  # 3: the next one, 4, is kept
                r = await admin.get(f"/api/whatsapp/changes/{org}", params={"after": after})
                assert r.status_code == 200, (after, r.text)
            for after in (0, 2):
                r = await admin.get(f"/api/whatsapp/changes/{org}", params={"after": after})
                assert r.status_code == 410, (after, r.text)
                error = r.json()["error"]
                assert error["code"] == "cursor_expired"
                assert "read API" in error["message"]
            r = await admin.get(f"/api/whatsapp/events/{org}", headers={"Last-Event-ID": "2"})
            assert r.status_code == 410
            assert r.json()["error"]["code"] == "cursor_expired"
            response, reader = await open_stream(admin, f"/api/whatsapp/events/{org}",
                                                 last_id="3")
            try:
                await reader.next()
                assert [(await reader.next()).id for _ in range(2)] == ["4", "5"]
            finally:
                await response.aclose()
            # Everything pruned: only the newest cursor is still good to follow from.
            assert await feed.prune(now=later + timedelta(days=8)) == 2
            r = await admin.get(f"/api/whatsapp/changes/{org}", params={"after": 4})
            assert r.status_code == 410
            r = await admin.get(f"/api/whatsapp/changes/{org}", params={"after": 5})
            assert r.json() == {"changes": [], "nextAfter": 5, "lastCursor": 5}
            assert await changes.record(db, organization_id=org, kind="t.next", data={}) == 6
    finally:
        for client in served.clients:
            await client.aclose()
        shutdown.set()


async def test_the_feed_service_waits_out_a_database_outage(state_dir: Path, aio_loop: None
                                                            ) -> None:
    """The daemon's change-feed service neither crashes nor stops listening for good when
    the database goes away: it listens again once the database is back."""
    from tests.support.outage import own_database
    from wad.db.repo import organizations as orgs_repo

    async with own_database(state_dir) as own, \
            Database.open(own.dsn, min_size=1, max_size=3) as db:
        org = (await orgs_repo.create(db, name="Batken Tours")).id
        feed = ChangeFeed(db, FeedSettings(poll_s=0.5, prune_interval_s=0.2))

        async def notified(count: int) -> None:
            """Until a change wakes the readers (the listener connects in the background)."""
            with trio.fail_after(30):
                while feed.wakeup.notifications < count:
                    await changes.record(db, organization_id=org, kind="t.change", data={})
                    await feed.wakeup.wait(1.0)

        async with trio.open_nursery() as nursery:
            await nursery.start(feed.run)
            await notified(1)
            await own.stop()
            await trio.sleep(2)  # listening and pruning both fail meanwhile, and wait
            await own.start()
            with trio.fail_after(30):
                while True:
                    try:
                        await changes.record(db, organization_id=org, kind="t.after", data={})
                        break
                    except Exception:
                        await trio.sleep(0.2)
            # The listener comes back with backoff: a later change wakes the readers again.
            await notified(feed.wakeup.notifications + 1)
            nursery.cancel_scope.cancel()
