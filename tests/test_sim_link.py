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
    from tests.simfixtures import Browser, LinkFn

pytest_plugins = ["tests.simfixtures"]
pytestmark = pytest.mark.browser
ACCOUNT = "996555100200"  # the account the `link` fixture creates

RECORD_STATES_JS = """() => {
  const S = window.require('WAWebSocketModel').Socket;
  window.__states = [];
  S.on('change:state', (s, v) => window.__states.push(['state', v, performance.now()]));
  S.on('change:hasSynced', (s, v) => window.__states.push(['hasSynced', v, performance.now()]));
}"""


async def test_page_loads_unpaired_shows_qr_and_rotates_ref(sim: SimServer, browser: Browser):
    with trio.fail_after(30):
        await browser.open(sim.url)
        assert await browser.wait("() => window.Debug && window.Debug.VERSION")
        assert await browser.wait_state("UNPAIRED") == "UNPAIRED"
        await browser.js("""() => { window.__refs = [];
          window.require('WAWebConnModel').Conn.on('change:ref', (c, r) => window.__refs.push(r)); }""")
        payload = await browser.payload()
        fields = payload.split(",")
        assert len(fields) == 5
        assert all(fields)
        # The DOM fallback shows the same payload, drawn as a scannable QR in a canvas.
        dom = await browser.js("() => document.querySelector('div[data-ref]').getAttribute('data-ref')")
        assert dom == payload
        assert await browser.js("() => !!document.querySelector('div[data-ref] canvas')")
        png = await browser.js("""() => document.querySelector('div[data-ref] canvas')
                                  .toDataURL('image/png')""")
        assert decode_qr(png) == payload
        # The ref rotates by itself, announced with change:ref.
        await browser.wait("() => window.__refs.length >= 1")
        new_ref = await browser.js("() => window.require('WAWebConnModel').Conn.ref")
        assert new_ref != fields[0]
        assert (await browser.js("() => window.__refs"))[0] == new_ref
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
        await browser.open(sim.url)
        await browser.wait_state("UNPAIRED")
        await browser.js(RECORD_STATES_JS)
        stale = await browser.payload()
        await browser.wait("(p) => window.require('WAWebConnModel').Conn.ref !== p.split(',')[0]",
                           stale)
        with pytest.raises(SimClientError) as err:
            await simc.scan_qr(ACCOUNT, stale)
        assert err.value.status == 409
        assert "stale" in err.value.message
        assert await browser.state() == "UNPAIRED"
        device = await simc.scan_qr(ACCOUNT, await browser.payload())
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
