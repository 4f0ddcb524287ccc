"""The browser driver and its bridge, in a real Chromium against the WhatsApp Web simulator."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TypeVar

import pytest
import trio

from wad.browser.driver import (
    BridgeError,
    BridgeTimeout,
    BrowserDriver,
    BrowserSession,
    BrowserStartError,
    SessionClosed,
    new_message_id,
)
from wad.browser.events import (
    AckChanged,
    BridgeErrorEvent,
    BridgeReady,
    BrowserClosed,
    Disconnected,
    Event,
    MessageEdited,
    MessageReceived,
    MessageRevoked,
    OwnMessage,
    PairingCode,
    QrChanged,
    Ready,
    StateChanged,
)
from wad.config import WhatsAppSettings
from wad.sim.client import SimClient, SimClientError
from wad.sim.model import SimConfig
from wad.sim.server import SimServer, serve

pytestmark = pytest.mark.browser

ACCOUNT = "996555100200"
CLIENT = "996555300400"
CLIENT_WID = f"{CLIENT}@c.us"
E = TypeVar("E")


def sim_config() -> SimConfig:
    return SimConfig(
        qr_rotate_s=20.0, sync_delay_s=0.3, ack_delays_s=(0.1, 0.2, 0.3),
        peer_request_delay_s=0.2,
    )


@pytest.fixture
async def sim(nursery: trio.Nursery) -> SimServer:
    return await nursery.start(partial(serve, seed=11, config=sim_config()))


@pytest.fixture
async def phone(sim: SimServer) -> AsyncIterator[SimClient]:
    async with SimClient(sim.url) as client:
        yield client


@pytest.fixture
async def driver(aio_loop: None) -> AsyncIterator[BrowserDriver]:
    settings = WhatsAppSettings(ready_timeout_s=20.0, health_check_timeout_s=5.0)
    async with BrowserDriver.open(settings) as browser_driver:
        yield browser_driver
    assert not browser_driver.tmpdir.exists()


class Watch:
    """Reads a session's events, keeping every one seen, until the one a test waits for."""

    def __init__(self, session: BrowserSession) -> None:
        self.session = session
        self.seen: list[Event] = []

    async def next(self, kind: type[E], where: Callable[[E], bool] = lambda _e: True,
                   timeout: float = 10.0) -> E:
        with trio.fail_after(timeout):
            async for event in self.session.events:
                self.seen.append(event)
                if isinstance(event, kind) and where(event):
                    return event
        raise AssertionError(f"the session's events ended before a {kind.__name__}")

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.seen if isinstance(e, kind)]


async def scan_shown_qr(session: BrowserSession, watch: Watch, phone: SimClient) -> Ready:
    """Scan the QR the bridge reported, as the account's phone would, and wait until ready."""
    qr = watch.of(QrChanged)[-1] if watch.of(QrChanged) else await watch.next(QrChanged)
    await phone.scan_qr(ACCOUNT, qr.payload)
    return await watch.next(Ready)


@asynccontextmanager
async def linked_session(driver: BrowserDriver, sim: SimServer, phone: SimClient,
                         profile: Path, **options: int
                         ) -> AsyncIterator[tuple[BrowserSession, Watch]]:
    async with driver.open_session(profile, url=sim.url, **options) as session:
        watch = Watch(session)
        await scan_shown_qr(session, watch, phone)
        yield session, watch


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


async def test_qr_rotates_expires_and_scan_links(driver: BrowserDriver, sim: SimServer,
                                                 phone: SimClient, tmp_path: Path) -> None:
    await phone.create_account(ACCOUNT, "Issyk Tours")
    await phone.config(qr_rotate_s=0.4, qr_max_rotations=3)
    version = (await phone.config())["version"]
    async with driver.open_session(tmp_path / "profile", url=sim.url) as session:
        watch = Watch(session)
        ready = await watch.next(BridgeReady)
        assert ready.version == version == session.version
        first = await watch.next(QrChanged)
        second = await watch.next(QrChanged)
        assert first.payload != second.payload
        fields = second.payload.split(",")
        assert len(fields) == 5
        assert all(fields)
        assert fields[1:] == first.payload.split(",")[1:]  # same keys, new ref
        # After a few rotations the QR expires; the bridge asks for a new one.
        await watch.next(StateChanged, lambda e: e.state == "UNPAIRED_IDLE")
        fresh = await watch.next(QrChanged)
        assert fresh.payload.split(",")[0] not in {f.payload.split(",")[0] for f in
                                                   watch.of(QrChanged)[:-1]}
        await phone.config(qr_rotate_s=30.0, qr_max_rotations=50)
        for _attempt in range(5):  # a rotation may still land between reading and scanning
            shown = (await session.state()).qr
            assert shown is not None
            try:
                await phone.scan_qr(ACCOUNT, shown)
                break
            except SimClientError as exc:
                stale = exc.status == 409
            assert stale
            await watch.next(QrChanged)
        connected = await watch.next(StateChanged, lambda e: e.state == "CONNECTED")
        linked = await watch.next(Ready)
        assert watch.seen.index(connected) < watch.seen.index(linked)
        assert linked.phone == ACCOUNT
        assert linked.wid == f"{ACCOUNT}@c.us"
        assert linked.push_name == "Issyk Tours"
        state = await session.state()
        assert (state.state, state.has_synced, state.qr) == ("CONNECTED", True, None)
        assert await session.ping() == version


async def test_pairing_code_links(driver: BrowserDriver, sim: SimServer, phone: SimClient,
                                  tmp_path: Path) -> None:
    await phone.create_account(ACCOUNT, "Issyk Tours", business=True)
    async with driver.open_session(tmp_path / "profile", url=sim.url) as session:
        watch = Watch(session)
        await watch.next(StateChanged, lambda e: e.state == "UNPAIRED")
        code = await session.request_pairing_code("+996 555 100 200")
        assert len(code) == 8
        assert code.isalnum()
        assert (await watch.next(PairingCode)).code == code
        await phone.enter_pairing_code(ACCOUNT, code)
        ready = await watch.next(Ready)
        assert ready.phone == ACCOUNT
        assert (ready.platform, ready.is_business) == ("smba", True)
        assert [d["online"] for d in await phone.devices(ACCOUNT)] == [True]


async def test_incoming_own_and_late_readable_messages(
        driver: BrowserDriver, sim: SimServer, phone: SimClient, tmp_path: Path) -> None:
    await phone.create_account(ACCOUNT, "Issyk Tours", contacts=[
        {"number": CLIENT, "name": "Aibek Saved", "push_name": "Aibek"}])
    async with linked_session(driver, sim, phone, tmp_path / "p") as (session, watch):
        sent = await phone.deliver(ACCOUNT, CLIENT, "Salam! How much is the tour?")
        got = (await watch.next(MessageReceived)).message
        assert got.id == sent["id"]["_serialized"] == f"false_{CLIENT_WID}_{sent['id']['id']}"
        assert (got.from_me, got.chat_id, got.sender, got.type) == (False, CLIENT_WID,
                                                                    CLIENT_WID, "chat")
        assert got.body == "Salam! How much is the tour?"
        assert got.push_name == "Aibek"
        assert got.timestamp == sent["t"]
        assert not (got.is_group)
        assert not (got.is_status)
        assert not (got.is_newsletter)
        assert not got.has_media

        reply = await phone.deliver(ACCOUNT, CLIENT, "and for two?", quoted=got.id)
        quoted = (await watch.next(MessageReceived, lambda e: e.message.id ==
                                   reply["id"]["_serialized"])).message
        assert quoted.quoted_id == got.id

        group = "120363000000000001@g.us"
        await phone.deliver(ACCOUNT, CLIENT, "hello everyone", group=group)
        in_group = (await watch.next(MessageReceived)).message
        assert (in_group.chat_id, in_group.author, in_group.is_group) == (group, CLIENT_WID, True)

        await phone.deliver(ACCOUNT, CLIENT, type="image", caption="our tent")
        image = (await watch.next(MessageReceived)).message
        assert (image.type, image.caption, image.body, image.has_media) == (
            "image", "our tent", "", True)
        assert image.mimetype == "image/jpeg"
        assert image.size
        assert image.size > 0

        await phone.deliver(ACCOUNT, CLIENT, "new photos!", status=True)
        status = (await watch.next(MessageReceived)).message
        assert status.is_status
        assert status.chat_id == "status@broadcast"

        typed = await phone.phone_send(ACCOUNT, CLIENT, "Yes, 450 USD per person")
        own = (await watch.next(OwnMessage)).message
        assert own.id == typed["id"]["_serialized"]
        assert (own.from_me, own.chat_id, own.body) == (True, CLIENT_WID,
                                                        "Yes, 450 USD per person")

        # Arrives unreadable: not reported until the phone makes it readable, then once.
        late = (await phone.deliver(ACCOUNT, CLIENT, "see you in July",
                                    ciphertext_s=0))["id"]["_serialized"]
        await phone.deliver(ACCOUNT, CLIENT, "marker one")
        await watch.next(MessageReceived, lambda e: e.message.body == "marker one")
        assert late not in {e.message.id for e in watch.of(MessageReceived)}
        await phone.decrypt(ACCOUNT, late)
        readable = (await watch.next(MessageReceived, lambda e: e.message.id == late)).message
        assert (readable.type, readable.body) == ("chat", "see you in July")
        await phone.deliver(ACCOUNT, CLIENT, "marker two")
        await watch.next(MessageReceived, lambda e: e.message.body == "marker two")
        assert [e.message.id for e in watch.of(MessageReceived)].count(late) == 1
        assert not [e for e in watch.of(MessageEdited) if e.id == late]
        assert not watch.of(BridgeErrorEvent)


async def test_send_text_once_acks_edits_revokes(driver: BrowserDriver, sim: SimServer,
                                                 phone: SimClient, tmp_path: Path) -> None:
    await phone.create_account(ACCOUNT, "Issyk Tours", contacts=[
        {"number": CLIENT, "name": "Aibek", "push_name": "Aibek"}])
    async with linked_session(driver, sim, phone, tmp_path / "p") as (session, watch):
        message_id = new_message_id()
        info = await session.send_text("+996 555 300 400", "Hello from wad",
                                       message_id=message_id)
        assert info.id == f"true_{CLIENT_WID}_{message_id}"
        assert (info.chat_id, info.already_existed) == (CLIENT_WID, False)
        own = (await watch.next(OwnMessage, lambda e: e.message.id == info.id)).message
        assert (own.body, own.from_me) == ("Hello from wad", True)
        await watch.next(AckChanged, lambda e: e.id == info.id and e.ack == 3)
        acks = [e.ack for e in watch.of(AckChanged) if e.id == info.id]
        assert acks == sorted(acks)
        assert {1, 2, 3} <= set(acks)
        assert await session.message_exists(info.id)
        assert not await session.message_exists(f"true_{CLIENT_WID}_3EB00000000000000000")

        again = await session.send_text(CLIENT, "Hello from wad", message_id=message_id)
        assert again.already_existed
        assert again.id == info.id
        record = await phone.sent(ACCOUNT)
        assert record["counts"][info.id] == 1
        assert [m["body"] for m in record["messages"] if m["id"] == info.id] == [
            "Hello from wad"]

        # A failed send surfaces as ack -1.
        await phone.set_sends(ACCOUNT, fail_next=1)
        failed = await session.send_text(CLIENT, "this one fails")
        await watch.next(AckChanged, lambda e: e.id == failed.id and e.ack == -1)

        incoming = (await phone.deliver(ACCOUNT, CLIENT, "price for 2?"))["id"]["_serialized"]
        await watch.next(MessageReceived, lambda e: e.message.id == incoming)
        await phone.edit(ACCOUNT, incoming, "price for 3?")
        edited = await watch.next(MessageEdited, lambda e: e.id == incoming)
        assert (edited.body, edited.chat_id, edited.from_me) == ("price for 3?", CLIENT_WID,
                                                                 False)
        await phone.edit(ACCOUNT, info.id, "Hello from wad (edited)")
        assert (await watch.next(MessageEdited, lambda e: e.id == info.id)).from_me
        await phone.revoke(ACCOUNT, incoming)
        revoked = await watch.next(MessageRevoked)
        assert (revoked.id, revoked.chat_id) == (incoming, CLIENT_WID)
        # Revoking empties the text: that is not reported as an edit.
        assert [e.body for e in watch.of(MessageEdited) if e.id == incoming] == ["price for 3?"]


async def test_fetch_messages_pages_long_history(driver: BrowserDriver, sim: SimServer,
                                                 phone: SimClient, tmp_path: Path) -> None:
    base = 1_760_000_000
    history = [{"from_me": i % 3 == 0, "body": f"m{i:03d}", "t": base + 60 * i}
               for i in range(230)]
    await phone.create_account(ACCOUNT, "Issyk Tours", chats=[
        {"id": CLIENT, "messages": history, "phone_only": 80}])
    async with linked_session(driver, sim, phone, tmp_path / "p") as (session, _watch):
        bodies: list[str] = []
        ids: list[str] = []
        cursor: str | None = None
        for _page in range(20):
            page = await session.fetch_messages(CLIENT, before=cursor, limit=50)
            if not page.messages:
                assert page.next_cursor is None
                break
            assert len(page.messages) <= 50
            bodies[:0] = [m.body for m in page.messages]
            ids[:0] = [m.id for m in page.messages]
            assert page.next_cursor == page.messages[0].id
            cursor = page.next_cursor
        else:
            raise AssertionError("paging did not reach the start of the history")
        assert bodies == [f"m{i:03d}" for i in range(230)]
        assert len(set(ids)) == 230
        first = (await session.fetch_messages(CLIENT, limit=1)).messages
        assert [m.body for m in first] == ["m229"]


async def test_lookups_and_chat_actions(driver: BrowserDriver, sim: SimServer, phone: SimClient,
                                        tmp_path: Path) -> None:
    other = "996555700800"
    await phone.create_account(ACCOUNT, "Issyk Tours", contacts=[
        {"number": CLIENT, "name": "Aibek Saved", "push_name": "Aibek", "picture": True},
        {"number": other, "push_name": "Dana", "business": True}])
    await phone.add_chat(ACCOUNT, {"id": other, "archive": True, "messages": [
        {"from_me": False, "body": "old question"}]})
    await phone.set_not_on_whatsapp(["996555999999"])
    async with linked_session(driver, sim, phone, tmp_path / "p") as (session, watch):
        await phone.deliver(ACCOUNT, CLIENT, "one")
        await phone.deliver(ACCOUNT, CLIENT, "two")
        await watch.next(MessageReceived, lambda e: e.message.body == "two")
        chats = {c.id: c for c in await session.list_chats()}
        assert chats[CLIENT_WID].unread == 2
        assert chats[CLIENT_WID].name == "Aibek Saved"
        assert not chats[CLIENT_WID].is_group
        assert not chats[CLIENT_WID].archived
        assert chats[f"{other}@c.us"].archived

        await session.mark_read(CLIENT)
        phone_chats = {c["id"]: c for c in await phone.chats(ACCOUNT)}
        assert phone_chats[CLIENT_WID]["unreadCount"] == 0
        await session.typing(CLIENT, True)
        await session.typing(CLIENT, False)
        activity = await phone.activity(ACCOUNT)
        assert any(a["kind"] == "seen" and a["chat"] == CLIENT_WID for a in activity)
        states = [a["state"] for a in activity if a["kind"] == "chatstate"]
        assert states == ["composing", "paused"]

        contact = await session.get_contact(CLIENT)
        assert (contact.number, contact.saved_name, contact.push_name) == (
            CLIENT, "Aibek Saved", "Aibek")
        assert not contact.is_business
        business = await session.get_contact(other)
        assert business.is_business
        assert business.saved_name is None
        assert business.push_name == "Dana"

        url = await session.profile_picture_url(CLIENT)
        assert url is not None
        assert url.startswith(sim.url)
        assert await session.profile_picture_url(other) is None

        assert await session.number_exists("+996 555 300 400") == CLIENT_WID
        assert await session.number_exists("996555999999") is None


async def test_logout_reinjects_the_bridge(driver: BrowserDriver, sim: SimServer,
                                           phone: SimClient, tmp_path: Path) -> None:
    await phone.create_account(ACCOUNT, "Issyk Tours")
    async with linked_session(driver, sim, phone, tmp_path / "p") as (session, watch):
        first_bridge = watch.of(BridgeReady)[0]
        assert "post_logout" not in first_bridge.url
        await session.logout()
        gone = await watch.next(Disconnected)
        assert gone.reason == "logout"
        again = await watch.next(BridgeReady)
        assert "post_logout=1" in again.url
        await watch.next(StateChanged, lambda e: e.state == "UNPAIRED")
        await watch.next(QrChanged)
        assert await phone.devices(ACCOUNT) == []
        # The re-injected bridge works: link again and receive a message.
        await scan_shown_qr(session, watch, phone)
        await phone.deliver(ACCOUNT, CLIENT, "are you there?")
        got = await watch.next(MessageReceived)
        assert got.message.body == "are you there?"
        assert await session.ping() == again.version


async def test_phone_unlink_reinjects_and_reopened_profile_reconnects(
        driver: BrowserDriver, sim: SimServer, phone: SimClient, tmp_path: Path) -> None:
    await phone.create_account(ACCOUNT, "Issyk Tours")
    profile = tmp_path / "org-1"
    async with linked_session(driver, sim, phone, profile) as (_session, watch):
        pass
    # Reopened on the same profile: back to CONNECTED and ready with no QR.
    async with driver.open_session(profile, url=sim.url) as session:
        watch = Watch(session)
        ready = await watch.next(Ready)
        assert ready.phone == ACCOUNT
        assert "CONNECTED" in [e.state for e in watch.of(StateChanged)]
        assert not watch.of(QrChanged)
        assert len(await phone.devices(ACCOUNT)) == 1
        # The phone unlinks this device: the page reloads unpaired, the bridge follows it.
        await phone.unlink(ACCOUNT)
        assert (await watch.next(Disconnected)).reason == "logout"
        assert "post_logout=1" in (await watch.next(BridgeReady)).url
        await watch.next(QrChanged)


async def test_killed_browser_surfaces_as_closed_and_profile_survives(
        driver: BrowserDriver, sim: SimServer, phone: SimClient, tmp_path: Path) -> None:
    await phone.create_account(ACCOUNT, "Issyk Tours")
    async with linked_session(driver, sim, phone, tmp_path / "p") as (session, watch):
        pid = session.browser_pid()
        assert pid is not None
        assert _alive(pid)
        cmdline = await trio.Path(f"/proc/{pid}/cmdline").read_bytes()
        assert f"--user-data-dir={tmp_path / 'p'}".encode() in cmdline.split(b"\0")
        os.kill(pid, signal.SIGKILL)
        closed = await watch.next(BrowserClosed)
        assert closed.reason == "browser_closed"
        assert not session.alive
        with trio.fail_after(5):
            assert [e async for e in session.events] == []  # the stream ends
        with pytest.raises(SessionClosed):
            await session.ping()
    # What the session actor does next: reopen the same profile. The login survived.
    async with driver.open_session(tmp_path / "p", url=sim.url) as session:
        watch = Watch(session)
        assert (await watch.next(Ready)).phone == ACCOUNT
        assert not watch.of(QrChanged)


async def test_close_is_bounded_under_cancellation(driver: BrowserDriver, sim: SimServer,
                                                   tmp_path: Path) -> None:
    pid = None
    with trio.move_on_after(30) as scope:
        async with driver.open_session(tmp_path / "p", url=sim.url) as session:
            pid = session.browser_pid()
            assert pid is not None
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    assert pid is not None
    # The browser was closed (or killed) within the driver's close timeout; allow its exit a
    # moment to be reaped on a loaded machine.
    with trio.fail_after(2):
        while _alive(pid):  # noqa: ASYNC110 - polling another process, no event to wait on
            await trio.sleep(0.05)


async def test_missing_chromium_is_a_clear_error(aio_loop: None, tmp_path: Path) -> None:
    settings = WhatsAppSettings(chromium_path=str(tmp_path / "no-chromium"))
    async with BrowserDriver.open(settings) as broken:
        with pytest.raises(BrowserStartError, match="cannot start Chromium"):
            async with broken.open_session(tmp_path / "p", url="http://127.0.0.1:9/"):
                pass


async def test_page_without_whatsapp_fails_to_open(aio_loop: None, sim: SimServer,
                                                   tmp_path: Path) -> None:
    settings = WhatsAppSettings(ready_timeout_s=1.0)
    async with BrowserDriver.open(settings) as short:
        with pytest.raises(BridgeError, match="did not become usable"):
            async with short.open_session(tmp_path / "p", url=sim.url + "_sim/config"):
                pass


async def test_full_event_channel_holds_events_back_in_order(
        driver: BrowserDriver, sim: SimServer, phone: SimClient, tmp_path: Path) -> None:
    await phone.create_account(ACCOUNT, "Issyk Tours")
    async with linked_session(driver, sim, phone, tmp_path / "p", event_buffer=2) as (
            session, watch):
        for i in range(30):
            await phone.deliver(ACCOUNT, CLIENT, f"burst {i}")
        # Nobody reads: the channel fills and the page waits (held back, not dropped).
        with trio.fail_after(30):
            while session.held_back == 0:
                await trio.sleep(0.05)
        await watch.next(MessageReceived, lambda e: e.message.body == "burst 29")
        bodies = [e.message.body for e in watch.of(MessageReceived)]
        assert bodies == [f"burst {i}" for i in range(30)]


async def test_conflict_takeover_network_drop_outdated_and_ban(
        driver: BrowserDriver, sim: SimServer, phone: SimClient, tmp_path: Path) -> None:
    await phone.create_account(ACCOUNT, "Issyk Tours")
    async with linked_session(driver, sim, phone, tmp_path / "p") as (session, watch):
        await phone.conflict(ACCOUNT)
        conflict = await watch.next(Disconnected)
        assert (conflict.reason, conflict.state) == ("conflict", "CONFLICT")
        await session.takeover()
        await watch.next(StateChanged, lambda e: e.state == "CONNECTED")
        await phone.deliver(ACCOUNT, CLIENT, "after takeover")
        await watch.next(MessageReceived, lambda e: e.message.body == "after takeover")

        # A network drop is transient: TIMEOUT, then CONNECTED, and nothing missed.
        await phone.drop_network(ACCOUNT, seconds=1.0)
        await watch.next(StateChanged, lambda e: e.state == "TIMEOUT")
        await phone.deliver(ACCOUNT, CLIENT, "sent while offline")
        await watch.next(StateChanged, lambda e: e.state == "CONNECTED")
        await watch.next(MessageReceived, lambda e: e.message.body == "sent while offline")
        assert len(watch.of(Disconnected)) == 1

        await phone.set_deprecated(True)
        outdated = await watch.next(Disconnected)
        assert (outdated.reason, outdated.state) == ("deprecated_version", "DEPRECATED_VERSION")
        await phone.set_deprecated(False)
        await phone.ban(ACCOUNT)
        banned = await watch.next(Disconnected)
        assert (banned.reason, banned.state) == ("banned", "TOS_BLOCK")


async def test_hung_page_times_out_then_recovers(
        aio_loop: None, sim: SimServer, phone: SimClient, tmp_path: Path) -> None:
    settings = WhatsAppSettings(ready_timeout_s=20.0, health_check_timeout_s=0.5)
    await phone.create_account(ACCOUNT, "Issyk Tours")
    async with BrowserDriver.open(settings) as driver, linked_session(
            driver, sim, phone, tmp_path / "p") as (session, _watch):
        await phone.freeze(ACCOUNT, seconds=1.5)
        timeouts: list[BridgeTimeout] = []
        with trio.fail_after(15):
            # The freeze starts when the page reads the simulator's frame; ping until it bites,
            # then until the page answers again.
            while not timeouts:
                try:
                    await session.ping()
                except BridgeTimeout as exc:
                    timeouts.append(exc)
            while True:
                try:
                    await session.ping()
                    break
                except BridgeTimeout as exc:
                    timeouts.append(exc)
        assert "ping: the page did not answer within 0.5 s" in str(timeouts[0])
        assert session.alive


async def _renderer_pids(browser_pid: int) -> list[int]:
    """Chromium renderer processes descending from BROWSER_PID."""
    children: dict[int, list[int]] = {}
    kinds: dict[int, bytes] = {}
    for entry in await trio.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = await (entry / "stat").read_text()
            argv = await (entry / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(") ", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
        kinds[int(entry.name)] = argv
    found, todo = [], [browser_pid]
    while todo:
        for child in children.get(todo.pop(), []):
            todo.append(child)
            if b"--type=renderer" in kinds.get(child, b""):
                found.append(child)
    return found


async def test_renderer_crash_surfaces_as_crash(driver: BrowserDriver, sim: SimServer,
                                                tmp_path: Path) -> None:
    async with driver.open_session(tmp_path / "p", url=sim.url) as session:
        watch = Watch(session)
        await watch.next(QrChanged)
        pid = session.browser_pid()
        assert pid is not None
        renderers = await _renderer_pids(pid)
        assert renderers
        for renderer in renderers:
            os.kill(renderer, signal.SIGKILL)
        closed = await watch.next(BrowserClosed)
        assert closed.reason == "crash"
        with pytest.raises(SessionClosed, match="crash"):
            await session.state()


async def test_events_from_frames_and_other_origins_are_refused(
        driver: BrowserDriver, sim: SimServer, phone: SimClient, tmp_path: Path) -> None:
    """The binding reaches every frame; only the page's main frame at the WhatsApp origin is
    heard. Pages that are not WhatsApp's, shown in iframes of the page, forge an incoming
    message: it never comes out of the session (a real one delivered after does)."""
    await phone.create_account(ACCOUNT, "Issyk Tours", contacts=[
        {"number": CLIENT, "name": "Aibek", "push_name": "Aibek"}])
    async with linked_session(driver, sim, phone, tmp_path / "p") as (session, watch):
        await phone.add_frame(ACCOUNT, phone.forged_url("forged: other origin",
                                                        host="localhost"))
        await phone.add_frame(ACCOUNT, phone.forged_url("forged: same origin"))
        with trio.fail_after(30):
            while len(await phone.forged_results()) < 2:
                await trio.sleep(0.1)
        # Both frames could call the binding: the refusal is the driver's.
        assert await phone.forged_results() == ["called", "called"]
        assert session.refused_events == 2
        await phone.deliver(ACCOUNT, CLIENT, "the real one")
        await watch.next(MessageReceived, lambda e: e.message.body == "the real one")
        assert [e.message.body for e in watch.of(MessageReceived)] == ["the real one"]


async def test_a_send_retried_while_in_flight_is_sent_once(
        driver: BrowserDriver, sim: SimServer, phone: SimClient, tmp_path: Path) -> None:
    """A page that adds a sent message only a while after it was handed over (as some builds
    do): a second call with the same id meanwhile (a retry after a timeout) waits for the first
    and answers `already_existed` instead of sending the message again."""
    await phone.create_account(ACCOUNT, "Issyk Tours", contacts=[
        {"number": CLIENT, "name": "Aibek", "push_name": "Aibek"}])
    async with linked_session(driver, sim, phone, tmp_path / "p") as (session, watch):
        await phone.set_sends(ACCOUNT, add_delay_s=1.5)
        message_id = new_message_id()
        answers = []

        async def send() -> None:
            answers.append(await session.send_text(CLIENT, "only once", message_id=message_id))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                nursery.start_soon(send)
        assert len({a.id for a in answers}) == 1
        assert sorted(a.already_existed for a in answers) == [False, True]
        await watch.next(AckChanged, lambda e: e.id == answers[0].id and e.ack == 3)
        record = await phone.sent(ACCOUNT)
        assert record["counts"][answers[0].id] == 1
        assert [m["body"] for m in record["messages"]] == ["only once"]
        # Once the first has ended, the same id is found in the page as before.
        again = await session.send_text(CLIENT, "only once", message_id=message_id)
        assert again.already_existed
        assert (await phone.sent(ACCOUNT))["counts"][answers[0].id] == 1
