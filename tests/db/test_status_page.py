"""The status page's data (`GET /api/overview`) and how the page is served, over real HTTP.

The page in a real Chromium, linking organizations through the simulator, is in
tests/live/test_status_page_live.py.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import trio

from tests.support.events import Served
from wad.db.models import NewMessage
from wad.db.repo import messages as messages_repo
from wad.db.repo import outbox as outbox_repo
from wad.db.repo import sessions as sessions_repo


def _message(org: object, n: int, direction: str, sent_at: datetime) -> NewMessage:
    return NewMessage(
        organization_id=org, wa_message_id=f"false_996555000111@c.us_{direction}{n}",  # type: ignore[arg-type]
        wa_chat_id="996555000111@c.us", direction=direction,  # type: ignore[arg-type]
        sender="CLIENT" if direction == "IN" else "HUMAN", type="text", body=f"m{n}",
        sent_at=sent_at, status="RECEIVED" if direction == "IN" else "SENT")


async def test_overview_shows_each_organizations_state_queue_and_todays_messages(
        served: Served) -> None:
    db = served.db
    org = await served.org("Issyk-Kul Tours")
    other = await served.org("Osh Travel")
    await sessions_repo.set_state(db, organization_id=org, state="CONNECTED",
                                  phone_number="+996555100301", push_name="Issyk-Kul Tours")
    await sessions_repo.set_state(db, organization_id=other, state="ERROR",
                                  last_error="session actor kept failing")
    now = datetime.now(UTC)
    midnight: datetime = await db.fetchval("SELECT date_trunc('day', now())")
    for n, (direction, at) in enumerate([("IN", now), ("IN", now), ("OUT", now),
                                         ("IN", midnight - timedelta(minutes=5))]):
        await messages_repo.insert_if_absent(db, message=_message(org, n, direction, at))
    for n in range(3):
        await outbox_repo.enqueue(db, organization_id=org, to_phone="+996555000111",
                                  content=f"ответ {n}")
    await db.execute("UPDATE outbox SET created_at = now() - interval '10 minutes' "
                     "WHERE organization_id = $1 AND content = 'ответ 0'", org)

    root = served.client(await served.token("SUPER_ADMIN"))
    admin = served.client(await served.token("ADMIN", org))
    viewer = served.client(await served.token("VIEWER", other))
    with trio.fail_after(20):
        r = await root.get("/api/overview")
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["caller"] == {"role": "SUPER_ADMIN", "organizationId": None}
        by_name = {o["name"]: o for o in body["organizations"]}
        assert list(by_name) == ["Issyk-Kul Tours", "Osh Travel"]
        tours = by_name["Issyk-Kul Tours"]
        assert tours["status"] == "CONNECTED"
        assert tours["phoneNumber"] == "+996555100301"
        assert tours["queueDepth"] == 3
        assert 590 < tours["oldestQueuedS"] < 700
        # Yesterday's message (in the database's time zone) is not today's.
        assert tours["messagesToday"] == {"received": 2, "sent": 1}
        osh = by_name["Osh Travel"]
        assert (osh["status"], osh["errorMessage"], osh["queueDepth"]) == (
            "ERROR", "session actor kept failing", 0)
        assert osh["oldestQueuedS"] is None

        # An organization's token sees its own organization only, and may not ask for another.
        r = await admin.get("/api/overview")
        assert r.status_code == 200
        assert r.json()["caller"] == {"role": "ADMIN", "organizationId": str(org)}
        assert [o["name"] for o in r.json()["organizations"]] == ["Issyk-Kul Tours"]
        r = await viewer.get(f"/api/overview?organizationId={org}")
        assert r.status_code == 403
        r = await viewer.get(f"/api/overview?organizationId={other}")
        assert [o["name"] for o in r.json()["organizations"]] == ["Osh Travel"]
        r = await root.get("/api/overview?organizationId=00000000-0000-0000-0000-000000000000")
        assert r.status_code == 404
        r = await served.client().get("/api/overview")
        assert r.status_code == 401


async def test_the_page_and_its_files_are_served_without_a_token(served: Served) -> None:
    client = served.client()
    org = await served.org("Tours")
    with trio.fail_after(20):
        for path in ("/", f"/org/{org}"):
            r = await client.get(path)
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in r.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
            assert '<form id="login"' in r.text
        r = await client.get("/assets/status.js")
        assert r.status_code == 200
        assert "sessionStorage" in r.text and "localStorage" not in r.text
        r = await client.get("/assets/status.css")
        assert r.status_code == 200
        r = await client.get("/org/not-an-id")
        assert r.status_code == 404
