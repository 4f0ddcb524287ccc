"""The event stream against the real thing: the simulator's phone, wad's session in a real
Chromium, the inbound actor, a real PostgreSQL, the API on real HTTP.

A CRM connects an organization, takes the QR from the stream (the phone scans exactly that), sees
it connect and its messages arrive in order; a reconnect with `Last-Event-ID` misses nothing
that happened while it was away.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import trio

from tests.support.events import Sse, open_stream
from tests.support.inbound import serve_inbound_daemon
from tests.support.stack import open_stack
from wad.bus import Event
from wad.observe.eventlog import STREAM_KINDS

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

        # What the bus publishes for the organization, to compare the stream with.
        published: list[Event] = []

        async def record(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with stack.bus.subscribe(org_id=org, kinds=set(STREAM_KINDS)) as events:
                task_status.started()
                async for event in events:
                    published.append(event)

        await nursery.start(record)
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
                    lambda s: s.event == "session.status"
                    and s.data["payload"]["state"] == "QR_CODE_PENDING")
                streamed += pending
                qr = pending[-1].data["payload"]["qr"]
                assert qr
                # The phone scans the payload the stream carried (it may have rotated since,
                # in which case the next one comes on the stream too).
                while True:
                    try:
                        await stack.phone.scan_qr(ACCOUNT, qr)
                        break
                    except Exception:
                        newer = await reader.until(
                            lambda s: s.event == "session.status"
                            and bool(s.data["payload"].get("qr")))
                        streamed += newer
                        qr = newer[-1].data["payload"]["qr"]
                connected = await reader.until(
                    lambda s: s.event == "session.status"
                    and s.data["payload"]["state"] == "CONNECTED")
                streamed += connected
                assert connected[-1].data["payload"]["phone_number"] == f"+{ACCOUNT}"

                texts = ["Здравствуйте! Тур на Иссык-Куль есть?", "На двоих, в июле",
                         "И сколько стоит?"]
                for text in texts:
                    await stack.phone.deliver(ACCOUNT, CLIENT, text, push_name="Айгерим")
                got = await reader.until(
                    lambda s: s.event == "message.received"
                    and s.data["payload"]["body"] == texts[-1])
                streamed += got
                assert [s.data["payload"]["body"] for s in got
                        if s.event == "message.received"] == texts
                last_id = reader.last_id
            finally:
                await response.aclose()

            # Away: two more messages arrive and the manager answers from the phone.
            away = ["Алло?", "Вы тут?"]
            for text in away:
                await stack.phone.deliver(ACCOUNT, CLIENT, text)
            await stack.phone.phone_send(ACCOUNT, CLIENT, "Да, 45 000 сом на двоих")
            with trio.fail_after(30):
                while not any(e.kind == "message.sent" for e in published):
                    await trio.sleep(0.05)

            response, reader = await open_stream(crm, f"/api/whatsapp/events/{org}",
                                                 last_id=last_id)
            try:
                start = await reader.next()
                assert start.event == "stream.start" and start.data["resumed"] is True
                resumed = await reader.until(lambda s: s.event == "message.sent")
            finally:
                await response.aclose()
            streamed += resumed
            assert [s.data["payload"]["body"] for s in resumed
                    if s.event == "message.received"] == away
            assert resumed[-1].data["payload"]["body"] == "Да, 45 000 сом на двоих"
            assert resumed[-1].data["payload"]["sender"] == "HUMAN"

        # Nothing missed, nothing twice, in the bus's order: the live events of both connections
        # are exactly what was published for the organization up to the last one read.
        live = [s for s in streamed if not s.data["snapshot"]]
        seqs = [s.data["seq"] for s in live]
        upto = [e for e in published if e.seq <= seqs[-1]]
        assert seqs == [e.seq for e in upto]
        assert [s.event for s in live] == [e.kind for e in upto]
        assert all(s.data["organization_id"] == str(org) for s in live)
        assert uuid.UUID(live[0].data["organization_id"]) == org

        for client in served.clients:
            await client.aclose()
        shutdown.set()
        nursery.cancel_scope.cancel()
