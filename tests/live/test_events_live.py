"""The event stream against the real thing: the simulator's phone, wad's session in a real
Chromium, the inbound actor, a real PostgreSQL, the API on real HTTP.

A CRM connects an organization, learns from the stream that a QR is waiting (and fetches it: the
phone scans exactly that), sees it connect and its messages arrive in order; a reconnect with
`Last-Event-ID` misses nothing that happened while it was away: the stream is the change feed,
cursor after cursor.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import trio

from tests.support.events import Sse, open_stream
from tests.support.inbound import serve_inbound_daemon
from tests.support.stack import open_stack

pytestmark = pytest.mark.browser

ACCOUNT = "996555100401"
CLIENT = "996555700001"


async def test_a_crm_follows_linking_and_messages_and_resumes_without_gaps(
        state_dir: Path, dsn: str) -> None:
    async with open_stack(state_dir, dsn) as stack, trio.open_nursery() as nursery:
        await stack.phone.create_account(ACCOUNT, "Issyk-Kul Tours")
        served, shutdown = await serve_inbound_daemon(stack, nursery, state_dir)
        org = await served.org("Issyk-Kul Tours")
        other = await served.org("Osh Travel")
        crm = served.client(await served.token("ADMIN", org), timeout=30)
        intruder = served.client(await served.token("ADMIN", other))

        streamed: list[Sse] = []

        with trio.fail_after(90):
            r = await intruder.get(f"/api/whatsapp/events/{org}")
            assert r.status_code == 403

            response, reader = await open_stream(crm, f"/api/whatsapp/events/{org}")
            try:
                assert (await reader.next()).event == "stream.start"
                r = await crm.post("/api/whatsapp/connect")
                assert r.status_code == 202, r.text
                pending = await reader.until(
                    lambda s: s.event == "session.state"
                    and s.data["data"]["status"] == "QR_CODE_PENDING")
                streamed += pending
                assert pending[-1].data["data"]["qrIssuedAt"]
                # The stream says a QR was issued (never the payload); the CRM fetches it and the
                # phone scans that (it may have rotated since: the next one is announced too).
                while True:
                    r = await crm.get(f"/api/whatsapp/qr/{org}")
                    assert r.status_code == 200, r.text
                    try:
                        await stack.phone.scan_qr(ACCOUNT, r.json()["qrCode"])
                        break
                    except Exception:
                        newer = await reader.until(lambda s: s.event == "session.state")
                        streamed += newer
                connected = await reader.until(
                    lambda s: s.event == "session.state"
                    and s.data["data"]["status"] == "CONNECTED")
                streamed += connected
                assert connected[-1].data["data"]["phoneNumber"] == f"+{ACCOUNT}"

                texts = ["Здравствуйте! Тур на Иссык-Куль есть?", "На двоих, в июле",
                         "И сколько стоит?"]
                for text in texts:
                    await stack.phone.deliver(ACCOUNT, CLIENT, text, push_name="Айгерим")
                got = await reader.until(
                    lambda s: s.event == "message.stored"
                    and s.data["data"]["body"] == texts[-1])
                streamed += got
                assert [s.data["data"]["body"] for s in got
                        if s.event == "message.stored"] == texts
                assert all(s.data["data"]["clientId"] for s in got
                           if s.event == "message.stored")
                last_id = reader.last_id
            finally:
                await response.aclose()

            # Away: two more messages arrive and the manager answers from the phone.
            away = ["Алло?", "Вы тут?"]
            for text in away:
                await stack.phone.deliver(ACCOUNT, CLIENT, text)
            await stack.phone.phone_send(ACCOUNT, CLIENT, "Да, 45 000 сом на двоих")
            with trio.fail_after(30):
                while True:  # until the phone's answer is processed (and so in the feed)
                    r = await crm.get(f"/api/whatsapp/changes/{org}",
                                      params={"after": last_id, "limit": 1000})
                    if any(c["kind"] == "message.stored" and c["data"]["direction"] == "OUT"
                           for c in r.json()["changes"]):
                        break
                    await trio.sleep(0.1)

            response, reader = await open_stream(crm, f"/api/whatsapp/events/{org}",
                                                 last_id=last_id)
            try:
                start = await reader.next()
                assert start.event == "stream.start" and start.data["resumed"] is True
                resumed = await reader.until(lambda s: s.event == "message.stored"
                                             and s.data["data"]["direction"] == "OUT")
            finally:
                await response.aclose()
            streamed += resumed
            assert [s.data["data"]["body"] for s in resumed
                    if s.event == "message.stored" and s.data["data"]["direction"] == "IN"
                    ] == away
            assert resumed[-1].data["data"]["body"] == "Да, 45 000 сом на двоих"
            assert resumed[-1].data["data"]["sender"] == "HUMAN"

            # Nothing missed, nothing twice, in order: the changes of both connections are
            # exactly the feed's, cursor after cursor, up to the last one read.
            live = [s for s in streamed if not s.data.get("snapshot")]
            cursors = [int(s.id) for s in live if s.id is not None]
            assert len(cursors) == len(live)
            assert cursors == list(range(cursors[0], cursors[-1] + 1))
            r = await crm.get(f"/api/whatsapp/changes/{org}",
                              params={"after": cursors[0] - 1, "limit": len(cursors)})
            assert [(c["cursor"], c["kind"]) for c in r.json()["changes"]] == [
                (int(s.id or 0), s.event) for s in live]
            assert all(s.data["organizationId"] == str(org) for s in live)
            assert uuid.UUID(live[0].data["organizationId"]) == org

        for client in served.clients:
            await client.aclose()
        shutdown.set()
        nursery.cancel_scope.cancel()
