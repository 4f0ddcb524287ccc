"""whatsapp-web.js (pinned in package-lock.json, unmodified) against the simulator.

Each assertion is on what whatsapp-web.js emits or returns; the phone side is played only
through the simulator's `/_sim/` control surface. The page's fixed URL
`https://web.whatsapp.com/` reaches the simulator through Chromium's host resolver and the
simulator's TLS port (docs/simulator.md, "whatsapp-web.js conformance"). The flows share a few
browser sessions, since each Chromium start costs seconds.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import trio

from tests.conformance.wwebjs import WWebJS
from wad.sim.client import SimClient, SimClientError
from wad.sim.model import SimConfig
from wad.sim.server import SimServer, serve

pytestmark = pytest.mark.browser

# sync_delay_s stays at the simulator's default (1.5 s; the real page takes longer): on a
# restored login whatsapp-web.js attaches its `change:hasSynced` listener a few round trips
# after the page leaves OPENING, and emits `ready` only if the sync comes after that.
CONFIG = SimConfig(qr_rotate_s=5.0, qr_max_rotations=20, sync_delay_s=1.5,
                 ack_delays_s=(0.2, 0.4, 0.6), peer_request_delay_s=0.1)
ME = "996555100200"
SAVED = "996555301122"      # in the address book, with a picture
BIZ = "996700200300"        # a business contact
STRANGER = "996555400500"   # not saved: only a push name
NOT_ON_WA = "996555999999"
GROUP = "120363000000000001@g.us"
HISTORY = 130               # messages with SAVED; the page holds 20, pages of 50 load the rest


def cus(number: str) -> str:
    return number + "@c.us"


@pytest.fixture
async def sim(nursery: trio.Nursery) -> SimServer:
    return await nursery.start(partial(serve, seed=14, config=CONFIG, tls_port=0))


@pytest.fixture
async def simc(sim: SimServer) -> AsyncIterator[SimClient]:
    async with SimClient(sim.url) as client:
        yield client


@pytest.fixture
async def wwebjs() -> AsyncIterator[WWebJS]:
    async with WWebJS.open() as driver:
        yield driver


@pytest.fixture
def tmp() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="wad-wwebjs-") as d:
        yield Path(d)


def tls_port(sim: SimServer) -> int:
    assert sim.tls_url is not None
    port = urlsplit(sim.tls_url).port
    assert port is not None
    return port


async def scan_latest_qr(wwebjs: WWebJS, simc: SimClient, client: str, number: str) -> str:
    """The phone scans the QR whatsapp-web.js reported last (a rotated one if it went stale)."""
    since = 0
    while True:
        qr = await wwebjs.wait_event(client, "qr", since=since)
        payload = qr.args[0]
        fields = payload.split(",")
        assert len(fields) == 5 and fields[4] == "WEB", payload
        try:
            return await simc.scan_qr(number, payload)
        except SimClientError as exc:
            if exc.status != 409 or "stale" not in exc.message:
                raise
            since = qr.seq + 1


async def make_account(simc: SimClient) -> None:
    history = [{"from_me": i % 3 == 0, "body": f"history {i}", "t": 1_700_000_000 + 60 * i}
               for i in range(HISTORY)]
    await simc.create_account(ME, "Silk Road Tours", contacts=[
        {"number": SAVED, "name": "Aibek Saved", "push_name": "Aibek", "picture": True},
        {"number": BIZ, "name": "Karakol Tours", "push_name": "KT", "business": True},
        {"number": STRANGER, "push_name": "Nurlan"},
    ], chats=[
        {"id": cus(SAVED), "messages": history},
        {"id": GROUP, "name": "Tour group", "participants": [cus(SAVED), cus(STRANGER)],
         "messages": [{"author": cus(SAVED), "body": "welcome", "t": 1_700_000_000}]},
    ])
    await simc.set_not_on_whatsapp([NOT_ON_WA])


async def link_by_qr(sim: SimServer, simc: SimClient, wwebjs: WWebJS, data: Path) -> None:
    """`qr` with a five-field payload the phone accepts; `authenticated`; `ready`; the wid."""
    await wwebjs.start("a", port=tls_port(sim), data_path=data)
    qr = await wwebjs.wait_event("a", "qr")
    # The payload whatsapp-web.js builds itself from the page's modules carries the keys of the
    # QR the page shows (the ref, first, may have rotated since).
    [shown] = await simc.qr_payloads()
    assert qr.args[0].split(",")[1:] == shown["payload"].split(",")[1:]
    device = await scan_latest_qr(wwebjs, simc, "a", ME)
    await wwebjs.wait_event("a", "authenticated")
    await wwebjs.wait_event("a", "ready")
    assert await wwebjs.eval("a", "async (c) => c.info.wid._serialized") == cus(ME)
    assert await wwebjs.eval("a", "async (c) => c.info.pushname") == "Silk Road Tours"
    assert [d["id"] for d in await simc.devices(ME)] == [device]


async def reported(wwebjs: WWebJS, event: str, delivered: dict[str, Any],
                   since: int) -> dict[str, Any]:
    """What whatsapp-web.js reported in `event` for a message the phone side delivered."""
    sid = delivered["id"]["_serialized"]
    found = await wwebjs.wait_event("a", event, lambda a: a[0]["id"] == sid, since=since)
    return found.args[0]


async def incoming_messages(simc: SimClient, wwebjs: WWebJS) -> None:
    """`message` for text (notifyName), media (type, caption, mimetype), a group (author);
    a status update comes marked as one, not as a message of the sender's chat."""
    mark = wwebjs.mark()
    text = await simc.deliver(ME, STRANGER, "Is the Song-Kul tour on?", push_name="Nurlan")
    got = await reported(wwebjs, "message", text, mark)
    assert (got["body"], got["from"], got["fromMe"]) == ("Is the Song-Kul tour on?",
                                                         cus(STRANGER), False)
    assert got["_data"]["notifyName"] == "Nurlan"

    mark = wwebjs.mark()
    image = await simc.deliver(ME, SAVED, type="image", caption="Issyk-Kul at dawn")
    got = await reported(wwebjs, "message", image, mark)
    assert (got["type"], got["body"], got["hasMedia"]) == ("image", "Issyk-Kul at dawn", True)
    assert got["_data"]["mimetype"] == "image/jpeg"

    mark = wwebjs.mark()
    in_group = await simc.deliver(ME, STRANGER, "Count me in", group=GROUP)
    got = await reported(wwebjs, "message", in_group, mark)
    assert (got["from"], got["author"], got["body"]) == (GROUP, cus(STRANGER), "Count me in")

    mark = wwebjs.mark()
    status = await simc.deliver(ME, SAVED, "New photos from Karakol", status=True)
    got = await reported(wwebjs, "message", status, mark)
    assert (got["isStatus"], got["from"], got["author"]) == (True, "status@broadcast", cus(SAVED))
    in_chat = await wwebjs.eval("a", """async (c, id) => (await (await c.getChatById(id))
        .fetchMessages({limit: 5})).map((m) => m.body)""", cus(SAVED))
    assert "New photos from Karakol" not in in_chat


async def send_and_acks(simc: SimClient, wwebjs: WWebJS) -> None:
    """sendMessage: the phone side receives it once; `message_create`; acks rise to 3."""
    mark = wwebjs.mark()
    sent = await wwebjs.eval("a", "async (c, to) => c.sendMessage(to, 'Your booking is confirmed')",
                             cus(SAVED))
    sid = sent["id"]
    assert sent["fromMe"] is True and sent["body"] == "Your booking is confirmed"
    created = await wwebjs.wait_event("a", "message_create",
                                      lambda a: a[0]["id"] == sid, since=mark)
    assert created.args[0]["to"] == cus(SAVED)
    await wwebjs.wait_event("a", "message_ack", lambda a: a[0]["id"] == sid and a[1] == 3,
                            since=mark)
    acks = [e.args[1] for e in wwebjs.seen("a", "message_ack", mark) if e.args[0]["id"] == sid]
    assert acks == sorted(acks) and acks[-1] == 3, acks
    record = await simc.sent(ME)
    assert record["counts"].get(sid) == 1, record
    assert [m["body"] for m in record["messages"]].count("Your booking is confirmed") == 1
    # Our own message is not reported as an incoming one.
    assert not [e for e in wwebjs.seen("a", "message", mark) if e.args[0]["id"] == sid]


async def edits_revokes_ciphertext(simc: SimClient, wwebjs: WWebJS) -> None:
    """`message_edit`, `message_revoke_everyone`, `message_ciphertext` then the readable text."""
    msg = await simc.deliver(ME, SAVED, "Arriving at 10")
    sid = msg["id"]["_serialized"]
    mark = wwebjs.mark()
    await simc.edit(ME, sid, "Arriving at 11")
    edit = await wwebjs.wait_event("a", "message_edit", lambda a: a[0]["id"] == sid, since=mark)
    assert (edit.args[1], edit.args[2]) == ("Arriving at 11", "Arriving at 10")
    mark = wwebjs.mark()
    await simc.revoke(ME, sid)
    revoked = await reported(wwebjs, "message_revoke_everyone", msg, mark)
    assert revoked["type"] == "revoked"

    mark = wwebjs.mark()
    secret = await simc.deliver(ME, SAVED, "The gate code is 4412", ciphertext_s=0)
    sid = secret["id"]["_serialized"]
    cipher = await reported(wwebjs, "message_ciphertext", secret, mark)
    assert cipher["type"] == "ciphertext"
    assert not [e for e in wwebjs.seen("a", "message", mark) if e.args[0]["id"] == sid]
    await simc.decrypt(ME, sid)
    readable = await reported(wwebjs, "message", secret, mark)
    assert (readable["type"], readable["body"]) == ("chat", "The gate code is 4412")


async def queries(sim: SimServer, wwebjs: WWebJS) -> None:
    """getChats, fetchMessages paging into older history, contacts, pictures, registration."""
    chats = await wwebjs.eval("a", "async (c) => (await c.getChats()).map((x) => x.id._serialized)")
    assert {cus(SAVED), GROUP} <= set(chats)
    bodies = await wwebjs.eval("a", """async (c, id) => (await (await c.getChatById(id))
        .fetchMessages({limit: 100})).map((m) => m.body)""", cus(SAVED))
    # 100 of the 130 history messages, oldest first: more than the 20 the page held, so
    # whatsapp-web.js paged into older history through loadEarlierMsgs.
    history = [b for b in bodies if b.startswith("history ")]
    assert len(bodies) == 100
    assert history == [f"history {i}" for i in range(HISTORY - len(history), HISTORY)]
    assert len(history) > CONFIG.recent_msgs

    saved = await wwebjs.eval("a", "async (c, id) => c.getContactById(id)", cus(SAVED))
    assert (saved["name"], saved["pushname"], saved["isMyContact"], saved["isBusiness"]) == (
        "Aibek Saved", "Aibek", True, False)
    biz = await wwebjs.eval("a", "async (c, id) => (await c.getChatById(id)).getContact()",
                            cus(BIZ))
    assert (biz["name"], biz["isBusiness"]) == ("Karakol Tours", True)
    stranger = await wwebjs.eval("a", "async (c, id) => c.getContactById(id)", cus(STRANGER))
    assert (stranger["pushname"], stranger["isMyContact"]) == ("Nurlan", False)

    pic = await wwebjs.eval("a", "async (c, id) => c.getProfilePicUrl(id)", cus(SAVED))
    assert pic == f"{sim.url}_sim/pp/{SAVED}.svg"
    assert await wwebjs.eval("a", "async (c, id) => c.getProfilePicUrl(id)", cus(STRANGER)) is None

    assert await wwebjs.eval("a", "async (c, n) => c.isRegisteredUser(n)", SAVED) is True
    assert await wwebjs.eval("a", "async (c, n) => c.isRegisteredUser(n)", NOT_ON_WA) is False


async def test_qr_session_messages_and_queries(
        sim: SimServer, simc: SimClient, wwebjs: WWebJS, tmp: Path):
    with trio.fail_after(90):
        await make_account(simc)
        await link_by_qr(sim, simc, wwebjs, tmp)
        # Undecryptable for longer than whatsapp-web.js waits before asking the phone to resend
        # it (5 s): readable later, while the other flows run.
        mark = wwebjs.mark()
        slow = await simc.deliver(ME, BIZ, "Invoice attached", ciphertext_s=6)
        await reported(wwebjs, "message_ciphertext", slow, mark)
        await incoming_messages(simc, wwebjs)
        await send_and_acks(simc, wwebjs)
        await edits_revokes_ciphertext(simc, wwebjs)
        await queries(sim, wwebjs)
        assert (await reported(wwebjs, "message", slow, mark))["body"] == "Invoice attached"
        assert wwebjs.page_errors("a") == []


async def states(simc: SimClient, wwebjs: WWebJS) -> None:
    """`change_state`: a network drop (TIMEOUT then CONNECTED); CONFLICT, then the takeover
    whatsapp-web.js makes (takeoverOnConflict) brings the session back."""
    mark = wwebjs.mark()
    await simc.drop_network(ME, seconds=1.0)
    await wwebjs.wait_event("a", "change_state", lambda a: a[0] == "CONNECTED", since=mark)
    states = [e.args[0] for e in wwebjs.seen("a", "change_state", mark)]
    assert states[0] == "TIMEOUT" and states[-1] == "CONNECTED", states

    mark = wwebjs.mark()
    await simc.conflict(ME)
    await wwebjs.wait_event("a", "change_state", lambda a: a[0] == "CONNECTED", since=mark)
    states = [e.args[0] for e in wwebjs.seen("a", "change_state", mark)]
    assert states == ["CONFLICT", "CONNECTED"], states
    assert not wwebjs.seen("a", "disconnected", mark)
    assert [d["conflict"] for d in await simc.devices(ME)] == [False]
    # The page taken over is the live one again: traffic reaches it.
    mark = wwebjs.mark()
    after = await simc.deliver(ME, SAVED, "Still there?")
    assert (await reported(wwebjs, "message", after, mark))["body"] == "Still there?"


async def test_restart_without_qr_states_and_logout(
        sim: SimServer, simc: SimClient, wwebjs: WWebJS, tmp: Path):
    with trio.fail_after(90):
        await make_account(simc)
        await link_by_qr(sim, simc, wwebjs, tmp)
        await wwebjs.stop("a")
        # The same LocalAuth profile: the session is restored, no QR is shown.
        mark = wwebjs.mark()
        await wwebjs.start("a", port=tls_port(sim), data_path=tmp,
                           options={"takeoverOnConflict": True})
        await wwebjs.wait_event("a", "ready", since=mark)
        assert not wwebjs.seen("a", "qr", mark)
        assert await wwebjs.eval("a", "async (c) => c.info.wid._serialized") == cus(ME)
        assert len(await simc.devices(ME)) == 1

        await states(simc, wwebjs)

        assert wwebjs.page_errors("a") == []
        await wwebjs.eval("a", "async (c) => c.logout()")
        assert await simc.devices(ME) == []


async def test_pairing_code_link_then_unlink_from_phone(
        sim: SimServer, simc: SimClient, wwebjs: WWebJS, tmp: Path):
    with trio.fail_after(60):
        await simc.create_account(ME, "Silk Road Tours")
        await wwebjs.start("b", port=tls_port(sim), data_path=tmp, pair=ME)
        code = (await wwebjs.wait_event("b", "code")).args[0]
        assert len(code) == 8
        device = await simc.enter_pairing_code(ME, code)
        await wwebjs.wait_event("b", "authenticated")
        await wwebjs.wait_event("b", "ready")
        assert not wwebjs.seen("b", "qr")
        assert await wwebjs.eval("b", "async (c) => c.info.wid._serialized") == cus(ME)

        mark = wwebjs.mark()
        assert await simc.unlink(ME, device) == [device]
        gone = await wwebjs.wait_event("b", "disconnected", since=mark)
        assert gone.args == ["LOGOUT"]
        assert wwebjs.page_errors("b") == []
