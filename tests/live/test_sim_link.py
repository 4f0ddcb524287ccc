"""The simulated page's login: QR rotation, scanning, pairing codes, persistence of the link."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

import pytest
import trio
from trio_asyncio import aio_as_trio

from wad.sim.client import SimClient, SimClientError
from wad.sim.server import SimServer

if TYPE_CHECKING:
    from tests.support.simfixtures import Browser, LinkFn

pytest_plugins = ["tests.support.simfixtures"]
pytestmark = pytest.mark.browser
ACCOUNT = "996555100200"  # the account the `link` fixture creates

RECORD_STATES_JS = """() => {
  const S = window.require('WAWebSocketModel').Socket;
  window.__states = [];
  S.on('change:state', (s, v) => window.__states.push(['state', v, performance.now()]));
  S.on('change:hasSynced', (s, v) => window.__states.push(['hasSynced', v, performance.now()]));
}"""


async def test_page_loads_unpaired_shows_qr_and_rotates_ref(
        sim: SimServer, simc: SimClient, browser: Browser):
    from tests.support.simfixtures import (
        QR_PAYLOAD_JS,  # not at the top: pytest loads it as a plugin
    )

    with trio.fail_after(30):
        await simc.config(qr_rotate_s=0.6)
        await browser.open(sim.url)
        assert await browser.wait("() => window.Debug && window.Debug.VERSION")
        assert await browser.wait_state("UNPAIRED") == "UNPAIRED"
        await browser.js("""() => { window.__refs = [];
          window.require('WAWebConnModel').Conn.on('change:ref', (c, r) => window.__refs.push(r)); }""")
        # Read in one task, so that no rotation falls between the three views.
        payload, dom, png = await browser.js(f"""async () => {{
          const el = document.querySelector('div[data-ref]');
          const canvas = el.querySelector('canvas');
          return [await ({QR_PAYLOAD_JS})(), el.getAttribute('data-ref'),
                  canvas && canvas.toDataURL('image/png')]; }}""")
        fields = payload.split(",")
        assert len(fields) == 5
        assert all(fields)
        # The DOM fallback shows the same payload, drawn as a scannable QR in a canvas.
        assert dom == payload
        assert decode_qr(png) == payload
        # The ref rotates by itself, announced with change:ref.
        await browser.wait("() => window.__refs.length >= 1")
        refs, now = await browser.js(
            "() => [window.__refs, window.require('WAWebConnModel').Conn.ref]")
        assert refs[0] != fields[0]
        assert refs[-1] == now
        # After several rotations without a scan: UNPAIRED_IDLE until refreshQR().
        assert await browser.wait_state("UNPAIRED_IDLE") == "UNPAIRED_IDLE"
        idle_ref = await browser.js("() => window.require('WAWebConnModel').Conn.ref")
        await browser.js("() => window.require('WAWebCmd').Cmd.refreshQR()")
        await browser.wait_state("UNPAIRED")
        assert await browser.js("() => window.require('WAWebConnModel').Conn.ref") != idle_ref


def decode_qr(data_url: str) -> str:
    import base64

    import zxingcpp
    from PIL import Image

    img = Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1])))
    results = zxingcpp.read_barcodes(img)
    assert results, "no QR code found in the canvas"
    return results[0].text


async def test_scanning_current_payload_connects_then_syncs(
        sim: SimServer, simc: SimClient, browser: Browser):
    with trio.fail_after(30):
        await simc.create_account(ACCOUNT, "Silk Road Tours", business=True)
        # A QR that only changes on refreshQR() here, so both views can be compared.
        await simc.config(qr_rotate_s=30)
        await browser.open(sim.url)
        await browser.wait_state("UNPAIRED")
        await browser.js(RECORD_STATES_JS)
        stale = await browser.payload()
        await browser.js("() => window.require('WAWebCmd').Cmd.refreshQR()")
        await browser.wait("(p) => window.require('WAWebConnModel').Conn.ref !== p.split(',')[0]",
                           stale)
        with pytest.raises(SimClientError) as err:
            await simc.scan_qr(ACCOUNT, stale)
        assert err.value.status == 409
        assert "stale" in err.value.message
        assert await browser.state() == "UNPAIRED"
        current = await simc.current_qr()
        assert current == await browser.payload()
        device = await simc.scan_qr(ACCOUNT, current)
        await browser.wait_ready()
        events = await browser.js("() => window.__states")
        kinds = [(k, v) for k, v, _ in events]
        assert ("state", "CONNECTED") in kinds
        assert ("hasSynced", True) in kinds
        connected_at = next(t for k, v, t in events if (k, v) == ("state", "CONNECTED"))
        synced_at = next(t for k, v, t in events if (k, v) == ("hasSynced", True))
        assert synced_at - connected_at >= 200  # sync_delay_s is 0.3 s: never in the same tick
        assert kinds.index(("state", "PAIRING")) < kinds.index(("state", "CONNECTED"))
        me = await browser.js("""() => {
          const C = window.require('WAWebConnModel').Conn;
          return [window.require('WAWebUserPrefsMeUser').getMaybeMePnUser()._serialized,
                  C.pushname, C.platform, C.serialize().wid._serialized]; }""")
        assert me == [f"{ACCOUNT}@c.us", "Silk Road Tours", "smba", f"{ACCOUNT}@c.us"]
        assert await browser.wait("() => !!document.querySelector(\"[data-icon='search']\")")
        assert [d["id"] for d in await simc.devices(ACCOUNT)] == [device]


async def test_pairing_code_links_the_page(sim: SimServer, simc: SimClient, browser: Browser):
    with trio.fail_after(30):
        await simc.create_account(ACCOUNT, "Silk Road Tours")
        await simc.create_account("996555999888", "Other Phone")
        await browser.open(sim.url)
        await browser.wait_state("UNPAIRED")
        code = await browser.js(f"""async () => {{
          const api = window.require('WAWebAltDeviceLinkingApi');
          api.setPairingType('ALT_DEVICE_LINKING');
          await api.initializeAltDeviceLinking();
          return await api.startAltLinkingFlow('{ACCOUNT}', false); }}""")
        assert isinstance(code, str)
        assert len(code) == 8
        assert await browser.js("() => document.querySelector('[data-link-code]')"
                                ".getAttribute('data-link-code')") == code
        with pytest.raises(SimClientError) as err:
            await simc.enter_pairing_code("996555999888", code)
        assert err.value.status == 409
        await simc.enter_pairing_code(ACCOUNT, code)
        await browser.wait_ready()
        assert await browser.state() == "CONNECTED"


async def test_link_survives_reload_and_restart_until_unlinked(
        sim: SimServer, simc: SimClient, browser: Browser, link: LinkFn):
    with trio.fail_after(40):
        device = await link()
        await aio_as_trio(browser.page.reload)()
        # A reload reconnects from the page's own storage: no QR at any point.
        await browser.wait_state("CONNECTED", "UNPAIRED")
        assert await browser.state() == "CONNECTED"
        await browser.wait_ready()
        assert await browser.js("() => !document.querySelector('div[data-ref]')")
        # So does a browser restart on the same profile.
        await browser.close()
        await browser.open(sim.url)
        assert await browser.wait_state("CONNECTED", "UNPAIRED") == "CONNECTED"
        await browser.wait_ready()
        assert [d["id"] for d in await simc.devices(ACCOUNT)] == [device]
        # Unlinked on the phone while the browser is closed: it comes back unpaired.
        await browser.close()
        assert await simc.unlink(ACCOUNT) == [device]
        await browser.open(sim.url)
        assert await browser.wait_state("UNPAIRED") == "UNPAIRED"
        assert await simc.devices(ACCOUNT) == []


async def test_unlink_from_phone_logs_out_live_page(
        sim: SimServer, simc: SimClient, browser: Browser, link: LinkFn):
    with trio.fail_after(30):
        await link()
        await browser.js("""() => { sessionStorage.setItem('logouts', '0');
          window.require('WAWebCmd').Cmd.on('logout', () => sessionStorage.setItem('logouts', '1')); }""")
        await simc.unlink(ACCOUNT)
        await browser.wait("() => location.search.includes('post_logout=1')")
        assert await browser.wait_state("UNPAIRED") == "UNPAIRED"
        assert await browser.js("() => sessionStorage.getItem('logouts')") == "1"
        assert await browser.js("() => !!document.querySelector('div[data-ref] canvas')")


MODULES = [
    "WAWebSocketModel", "WAWebConnModel", "WAWebCmd", "WAWebCollections", "WAWebMsgKey",
    "WAWebWidFactory", "WAWebFindChatAction", "WAWebSendMsgChatAction",
    "WAWebGetEphemeralFieldsMsgActionsUtils", "WAWebUpdateUnreadChatAction", "WAWebStreamModel",
    "WAWebChatStateBridge", "WAWebPresenceChatAction", "WAWebChatLoadMessages",
    "WAWebSendNonMessageDataRequest", "WAWebQueryExistsJob", "WAWebContactProfilePicThumbBridge",
    "WAWebContactGetters", "WAWebFrontendContactGetters", "WAWebUserPrefsMeUser",
    "WAWebApiContact", "WAWebAltDeviceLinkingApi", "WABase64", "WAWebUserPrefsInfoStore",
    "WAWebSignalStoreApi", "WAWebUserPrefsMultiDevice", "WAWebCompanionRegClientUtils",
    "WAWebAdvSignatureApi", "WAWebOfflineHandler", "WAWebSyncGatingUtils", "WAWebCallCollection",
    "WALinkify", "WAWebChatGetters"]


async def test_every_module_of_the_fact_sheet_answers(
        sim: SimServer, simc: SimClient, browser: Browser, link: LinkFn):
    with trio.fail_after(30):
        await link(contacts=[{"number": "996555301122", "name": "Aibek", "push_name": "Aibek"}])
        missing = await browser.js(
            "(names) => names.filter((n) => { try { return !window.require(n); }"
            " catch (e) { return true; } })", MODULES)
        assert missing == []
        assert await browser.js("""() => { try { window.require('NoSuchModule'); return 'no'; }
                                   catch (e) { return 'threw'; } }""") == "threw"
        facts = await browser.js("""async () => {
          const r = window.require, W = r('WAWebWidFactory');
          const wid = W.createWid('996555301122@c.us');
          const lid = r('WAWebApiContact').getCurrentLid(wid);
          const exists = await r('WAWebQueryExistsJob').queryWidExists(W.createWid('996700000001@c.us'));
          const C = r('WAWebCollections');
          return {
            conn: r('WAWebConnModel').Conn.serialize().pushname,
            widKinds: [wid.isUser(), wid.isGroup(), W.createWid('status@broadcast').isStatus(),
                       lid.isLid(), r('WAWebApiContact').getPhoneNumber(lid)._serialized,
                       W.createWidFromWidLike({server: 'g.us', user: '1203', _serialized: '1203@g.us'}).isGroup()],
            exists: exists && exists.wid._serialized,
            link: r('WALinkify').findLink('see https://example.com/tour now').url,
            links: r('WALinkify').findLinks('a www.a.kg b http://b.com').length,
            calls: typeof r('WAWebCallCollection').on,
            progress: r('WAWebOfflineHandler').OfflineMessageHandler.getOfflineDeliveryProgress(),
            lid: r('WAWebUserPrefsMeUser').getMaybeMeLidUser().server,
            broadcast: r('WAWebChatGetters').getIsBroadcast({id: W.createWid('status@broadcast')}),
            contact: [r('WAWebContactGetters').getName(C.Contact.get(wid)),
                      r('WAWebContactGetters').getShortName(C.Contact.get(wid))],
            eph: Object.keys(r('WAWebGetEphemeralFieldsMsgActionsUtils').getEphemeralFields(
              C.Chat.getModelsArray()[0] || {})).includes('ephemeralDuration'),
          }; }""")
        assert facts == {
            "conn": "Silk Road Tours",
            "widKinds": [True, False, True, True, "996555301122@c.us", True],
            "exists": "996700000001@c.us", "link": "https://example.com/tour", "links": 2,
            "calls": "function", "progress": 100, "lid": "lid", "broadcast": True,
            "contact": ["Aibek", "Aibek"], "eph": True}
        await simc.set_not_on_whatsapp(["996700000002"])
        assert await browser.js("""async () => await window.require('WAWebQueryExistsJob')
          .queryWidExists(window.require('WAWebWidFactory').createWid('996700000002@c.us'))""") is None
        # Read receipts, typing and presence reach the phone's side.
        await simc.deliver(ACCOUNT, "996555301122", "hi")
        await browser.wait("() => window.require('WAWebCollections').Chat.get('996555301122@c.us')")
        await browser.js("""async () => { const r = window.require;
          const chat = r('WAWebCollections').Chat.get('996555301122@c.us');
          r('WAWebStreamModel').Stream.markAvailable();
          await r('WAWebChatStateBridge').sendChatStateComposing(chat.id);
          await r('WAWebUpdateUnreadChatAction').sendSeen({chat});
          await r('WAWebPresenceChatAction').sendPresenceAvailable(); }""")
        kinds = [a["kind"] for a in await simc.activity(ACCOUNT)]
        assert kinds == ["stream", "chatstate", "seen", "presence"]
        assert (await simc.chats(ACCOUNT))[0]["unreadCount"] == 0
