"""Faults on command: each produces the states and events WAWEB.md describes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import trio
from trio_asyncio import aio_as_trio

from wad.sim.client import SimClient, SimClientError
from wad.sim.server import SimServer

if TYPE_CHECKING:
    from tests.support.simfixtures import Browser, LinkFn

pytest_plugins = ["tests.support.simfixtures"]
pytestmark = pytest.mark.browser
ACCOUNT = "996555100200"
CLIENT = "996555301122"

RECORD_JS = """() => {
  const S = window.require('WAWebSocketModel').Socket;
  const Msg = window.require('WAWebCollections').Msg;
  window.__ev = [];
  S.on('change:state', (s, v) => window.__ev.push(['state', v]));
  Msg.on('add', (m) => window.__ev.push(['add', m.id._serialized, m.isNewMsg]));
  Msg.on('change:ack', (m, ack) => window.__ev.push(['ack', m.id._serialized, ack]));
  window.require('WAWebCmd').Cmd.on('logout', () => window.__ev.push(['logout']));
}"""

SEND_JS = """async ([to, text]) => {
  const chat = (await window.require('WAWebFindChatAction').findOrCreateLatestChat(
    window.require('WAWebWidFactory').createWid(to))).chat;
  const MsgKey = window.require('WAWebMsgKey');
  const me = window.require('WAWebUserPrefsMeUser').getMaybeMePnUser();
  const key = new MsgKey({from: me, to: chat.id, id: await MsgKey.newId(), selfDir: 'out'});
  const [added, sent] = window.require('WAWebSendMsgChatAction').addAndSendMsgToChat(chat,
    {id: key, ack: 0, body: text, from: me, to: chat.id, local: true, self: 'out',
     t: Math.floor(Date.now() / 1000), isNewMsg: true, type: 'chat'});
  await added;
  window.__sent = sent.then((r) => { window.__sentAt = performance.now(); return r; });
  window.__sendStart = performance.now();
  return key._serialized;
}"""


async def recorded(browser: Browser) -> list[Any]:
    return await browser.js("() => window.__ev")


async def wait_event(browser: Browser, event: list[Any]) -> None:
    await browser.wait("(e) => window.__ev.some((x) => JSON.stringify(x) === JSON.stringify(e))",
                       event)


async def test_conflict_then_takeover_catches_up(
        sim: SimServer, simc: SimClient, browser: Browser, link: LinkFn):
    with trio.fail_after(30):
        await link()
        await browser.js(RECORD_JS)
        await simc.conflict(ACCOUNT)
        assert await browser.wait_state("CONFLICT") == "CONFLICT"
        # While the session is used elsewhere, this page gets no traffic.
        missed = await simc.deliver(ACCOUNT, CLIENT, "Are you there?")
        await trio.sleep(0.5)
        assert not [e for e in await recorded(browser) if e[0] == "add"]
        await browser.js("() => window.require('WAWebSocketModel').Socket.takeover()")
        assert await browser.wait_state("CONNECTED") == "CONNECTED"
        await wait_event(browser, ["add", missed["id"]["_serialized"], True])
        assert [e for e in await recorded(browser) if e[0] == "state"] == [
            ["state", "CONFLICT"], ["state", "CONNECTED"]]


async def test_network_drop_times_out_then_reconnects(
        sim: SimServer, simc: SimClient, browser: Browser, link: LinkFn):
    with trio.fail_after(30):
        await link(chats=[{"id": CLIENT, "messages": [{"body": "Hi", "t": 1_700_000_000}]}])
        await browser.js(RECORD_JS)
        await simc.drop_network(ACCOUNT, seconds=1.5)
        assert await browser.wait_state("TIMEOUT") == "TIMEOUT"
        # Traffic during the outage, both ways: it flows once the network is back.
        missed = await simc.deliver(ACCOUNT, CLIENT, "Hello? Anyone?")
        sid = await browser.js(SEND_JS, [f"{CLIENT}@c.us", "Sent while offline"])
        assert await browser.js("(sid) => window.require('WAWebCollections').Msg.get(sid).ack",
                                sid) == 0
        assert await browser.wait_state("CONNECTED") == "CONNECTED"
        await wait_event(browser, ["add", missed["id"]["_serialized"], True])
        await wait_event(browser, ["ack", sid, 1])
        assert (await simc.sent(ACCOUNT))["counts"] == {sid: 1}
        assert [e[1] for e in await recorded(browser) if e[0] == "state"] == [
            "TIMEOUT", "CONNECTED"]
        # A drop without an end lasts until the network is restored.
        await simc.drop_network(ACCOUNT)
        await browser.wait_state("TIMEOUT")
        await trio.sleep(1.5)
        assert await browser.state() == "TIMEOUT"
        await simc.restore_network(ACCOUNT)
        assert await browser.wait_state("CONNECTED") == "CONNECTED"


async def test_ban_and_deprecated_version(
        sim: SimServer, simc: SimClient, browser: Browser, link: LinkFn):
    with trio.fail_after(30):
        await link()
        await simc.ban(ACCOUNT)
        assert await browser.wait_state("TOS_BLOCK") == "TOS_BLOCK"
        await aio_as_trio(browser.page.reload)()
        assert await browser.wait_state("TOS_BLOCK", "CONNECTED", "UNPAIRED") == "TOS_BLOCK"
        await simc.unban(ACCOUNT)
        await simc.set_deprecated(True)
        assert await browser.wait_state("DEPRECATED_VERSION") == "DEPRECATED_VERSION"
        await aio_as_trio(browser.page.reload)()
        assert await browser.wait_state(
            "DEPRECATED_VERSION", "CONNECTED", "UNPAIRED") == "DEPRECATED_VERSION"
        await simc.set_deprecated(False)
        await aio_as_trio(browser.page.reload)()
        assert await browser.wait_state("CONNECTED", "UNPAIRED") == "CONNECTED"


async def test_slow_and_failing_sends(
        sim: SimServer, simc: SimClient, browser: Browser, link: LinkFn):
    with trio.fail_after(30):
        await link()
        await browser.js(RECORD_JS)
        await simc.set_sends(ACCOUNT, delay_s=1.2)
        sid = await browser.js(SEND_JS, [f"{CLIENT}@c.us", "Slow one"])
        assert await browser.js("async () => (await window.__sent).messageSendResult") == "OK"
        took = await browser.js("() => window.__sentAt - window.__sendStart")
        assert took >= 1100
        await wait_event(browser, ["ack", sid, 1])
        await simc.set_sends(ACCOUNT, fail_next=1)
        bad = await browser.js(SEND_JS, [f"{CLIENT}@c.us", "Doomed"])
        assert await browser.js("async () => (await window.__sent).messageSendResult") != "OK"
        await wait_event(browser, ["ack", bad, -1])
        sent = await simc.sent(ACCOUNT)
        assert sent["counts"] == {sid: 1, bad: 1}
        assert [m["result"] for m in sent["messages"]] == ["OK", "ERROR"]
        with pytest.raises(SimClientError):
            await simc.message(ACCOUNT, bad)  # a failed send never reached the phone


async def until_unresponsive(browser: Browser) -> None:
    """Wait until the page stops answering (the freeze reached it)."""
    while True:
        with trio.move_on_after(0.5) as probe:
            await browser.js("() => 42")
        if probe.cancelled_caught:
            return
        await trio.sleep(0.05)


async def test_page_that_stops_answering(
        sim: SimServer, simc: SimClient, browser: Browser, link: LinkFn):
    with trio.fail_after(30):
        await link()
        started = trio.current_time()
        assert await simc.freeze(ACCOUNT, seconds=1.5) == 1
        await until_unresponsive(browser)
        # It answers again when the freeze is over, not before.
        assert await browser.js("() => 42") == 42
        assert trio.current_time() - started >= 1.5 - 0.1
        # Frozen for good: calls into the page never answer; the test gives up on them.
        await simc.freeze(ACCOUNT)
        await until_unresponsive(browser)
        with trio.move_on_after(1.5) as scope:
            await browser.js("() => 42")
        assert scope.cancelled_caught


async def test_logout_from_page_and_crashed_renderer(
        sim: SimServer, simc: SimClient, browser: Browser, link: LinkFn):
    with trio.fail_after(40):
        await link()
        # A crashed renderer (what a killed renderer process looks like to Playwright); the
        # profile still holds the link, so a new page comes back connected.
        crashed = trio.Event()
        browser.page.on("crash", lambda _page: crashed.set())
        with pytest.raises(Exception, match="crash"):
            await aio_as_trio(browser.page.goto)("chrome://crash")
        await crashed.wait()
        browser.page = await aio_as_trio(browser.context.new_page)()
        await aio_as_trio(browser.page.goto)(sim.url)
        assert await browser.wait_state("CONNECTED", "UNPAIRED") == "CONNECTED"
        await browser.wait_ready()
        # Socket.logout(): Cmd fires logout, the page navigates with post_logout=1, unpaired.
        await browser.js("""() => { sessionStorage.setItem('ev', '');
          window.require('WAWebCmd').Cmd.on('logout', () => sessionStorage.setItem('ev', 'logout'));
          window.require('WAWebSocketModel').Socket.logout(); }""")
        await browser.wait("() => location.search.includes('post_logout=1')")
        assert await browser.wait_state("UNPAIRED") == "UNPAIRED"
        assert await browser.js("() => sessionStorage.getItem('ev')") == "logout"
        assert await simc.devices(ACCOUNT) == []


async def test_four_linked_devices_at_most_and_all_get_traffic(
        sim: SimServer, simc: SimClient, playwright: Any):
    from tests.support.simfixtures import CHROMIUM_ARGS

    with trio.fail_after(60):
        await simc.create_account(ACCOUNT, "Silk Road Tours")
        await simc.config(qr_rotate_s=20)  # five pages load one by one: keep their QR shown
        chromium = await aio_as_trio(playwright.chromium.launch)(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            pages = []
            for _ in range(5):
                ctx = await aio_as_trio(chromium.new_context)()
                page = await aio_as_trio(ctx.new_page)()
                await aio_as_trio(page.goto)(sim.url)
                pages.append(page)
            payloads = []
            for page in pages:
                handle = await aio_as_trio(page.wait_for_function)(
                    "() => { const e = document.querySelector('div[data-ref]');"
                    " return e && e.getAttribute('data-ref'); }")
                payloads.append(await aio_as_trio(handle.json_value)())
            for payload in payloads[:4]:
                await simc.scan_qr(ACCOUNT, payload)
            with pytest.raises(SimClientError) as err:
                await simc.scan_qr(ACCOUNT, payloads[4])
            assert err.value.status == 409
            assert "4 linked devices" in err.value.message
            assert len(await simc.devices(ACCOUNT)) == 4
            for page in pages[:4]:
                await aio_as_trio(page.wait_for_function)(
                    "() => window.require('WAWebSocketModel').Socket.hasSynced")
            msg = await simc.deliver(ACCOUNT, CLIENT, "To every device")
            for page in pages[:4]:
                await aio_as_trio(page.wait_for_function)(
                    "(id) => !!window.require('WAWebCollections').Msg.get(id)",
                    arg=msg["id"]["_serialized"])
        finally:
            with trio.move_on_after(10, shield=True):
                await aio_as_trio(chromium.close)()


async def test_page_build_removes_and_renames_modules_and_members(
        sim: SimServer, simc: SimClient, browser: Browser, link: LinkFn):
    has = "([m, k]) => { try { return k in window.require(m); } catch (e) { return null; } }"
    with trio.fail_after(30):
        await link()
        assert await browser.js(has, ["WAWebSendMsgChatAction", "addAndSendMsgToChat"]) is True
        assert await simc.page_build(ACCOUNT, "WAWebSendMsgChatAction", "addAndSendMsgToChat",
                                     version="2.3000.1999999999") == 1
        # The page reloads into the new build, still linked.
        await browser.wait("() => window.Debug && window.Debug.VERSION === '2.3000.1999999999'")
        assert await browser.wait_state("CONNECTED") == "CONNECTED"
        assert await browser.js(has, ["WAWebSendMsgChatAction", "addAndSendMsgToChat"]) is False
        # A renamed member, then a whole module gone; earlier changes stay.
        await simc.page_build(ACCOUNT, "WAWebSocketModel", "Socket.takeover",
                              rename_to="takeOver")
        await browser.wait("() => { try { const S = window.require('WAWebSocketModel').Socket;"
                           " return typeof S.takeOver === 'function' && !('takeover' in S); }"
                           " catch (e) { return false; } }")
        await simc.page_build(ACCOUNT, "WAWebQueryExistsJob")
        await browser.wait("() => { try { window.require('WAWebQueryExistsJob'); return false; }"
                           " catch (e) { return true; } }")
        assert await browser.js(has, ["WAWebSendMsgChatAction", "addAndSendMsgToChat"]) is False
        assert await browser.js("() => window.Debug.VERSION") == "2.3000.1999999999"
    with pytest.raises(SimClientError, match="module is required"):
        await simc.page_build(ACCOUNT, "")
