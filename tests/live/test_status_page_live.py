"""The status page in a real Chromium (Playwright), against the real thing: the simulator's
phones, wad's sessions in Chromium, the inbound actor, a real PostgreSQL, the API on real HTTP.

Without a token it asks for one. With the super admin's, it lists the organizations; Connect
shows a QR that the simulated phone scans *from the page's own drawing* (a screenshot of it,
decoded with zxing-cpp), and the page turns to connected by itself, then counts a message. An
organization's admin links another organization by pairing code from its `/org/{id}` page, on a
phone-sized screen. A viewer's page has no buttons. Screenshots are kept in tests/artifacts/.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import zxingcpp
from PIL import Image
from trio_asyncio import aio_as_trio

from tests.support.inbound import serve_inbound_daemon
from tests.support.simfixtures import USER_AGENT, headless_chromium
from tests.support.stack import open_stack
from wad.sim.client import SimClientError

pytestmark = pytest.mark.browser

QR_ACCOUNT = "996555100601"
PAIR_ACCOUNT = "996555100602"
ARTIFACTS = Path(__file__).parent.parent / "artifacts"


class Page:
    """One Playwright page, called from Trio."""

    def __init__(self, page: Any) -> None:
        self.page = page

    async def goto(self, url: str) -> None:
        await aio_as_trio(self.page.goto)(url)

    async def js(self, expr: str, arg: Any = None) -> Any:
        return await aio_as_trio(self.page.evaluate)(expr, arg)

    async def wait(self, expr: str, arg: Any = None, timeout: float = 30.0) -> Any:
        handle = await aio_as_trio(self.page.wait_for_function)(
            expr, arg=arg, timeout=timeout * 1000, polling=100)
        return await aio_as_trio(handle.json_value)()

    async def visible(self, selector: str, timeout: float = 30.0) -> None:
        await aio_as_trio(self.page.locator(selector).first.wait_for)(
            state="visible", timeout=timeout * 1000)

    async def click(self, selector: str) -> None:
        await aio_as_trio(self.page.locator(selector).first.click)()

    async def fill(self, selector: str, value: str) -> None:
        await aio_as_trio(self.page.locator(selector).first.fill)(value)

    async def text(self, selector: str) -> str:
        return str(await aio_as_trio(self.page.locator(selector).first.inner_text)())

    async def count(self, selector: str) -> int:
        return int(await aio_as_trio(self.page.locator(selector).count)())

    async def screenshot(self, selector: str | None = None, path: Path | None = None) -> bytes:
        """A PNG of the page (or of one element), also kept at `path` when given."""
        where = str(path) if path is not None else None
        if selector is None:
            shot = await aio_as_trio(self.page.screenshot)(full_page=True, path=where)
        else:
            shot = await aio_as_trio(self.page.locator(selector).first.screenshot)(path=where)
        return bytes(shot)

    async def sign_in(self, token: str) -> None:
        await self.visible("#login")
        await self.fill("#token", token)
        await self.click("#login button[type=submit]")


@pytest.fixture
async def chromium(aio_loop: None) -> AsyncIterator[Any]:
    """A headless Chromium for the status page (the daemon's sessions have their own)."""
    async with headless_chromium("wad-test-status-") as browser:
        yield browser


async def new_page(browser: Any, *, phone: bool = False) -> Page:
    options: dict[str, Any] = {"user_agent": USER_AGENT}
    if phone:
        options.update(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                       is_mobile=True, has_touch=True)
    context = await aio_as_trio(browser.new_context)(**options)
    return Page(await aio_as_trio(context.new_page)())


def read_qr(png: bytes) -> str:
    """The payload of the one QR code in a screenshot."""
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    codes = [c.text for c in found if c.format == zxingcpp.BarcodeFormat.QRCode]
    assert len(codes) == 1, f"expected one QR code on the page, found {len(codes)}"
    return codes[0]


def card(org: object) -> str:
    return f'article.org[data-org="{org}"]'


async def test_status_page_links_by_qr_and_pairing_code_and_hides_buttons_from_viewers(
        state_dir: Path, dsn: str, chromium: Any) -> None:
    async with open_stack(state_dir, dsn) as stack, trio.open_nursery() as nursery:
        await stack.phone.create_account(QR_ACCOUNT, "Issyk-Kul Tours")
        await stack.phone.create_account(PAIR_ACCOUNT, "Osh Travel")
        served, shutdown = await serve_inbound_daemon(stack, nursery, state_dir)
        tours = await served.org("Issyk-Kul Tours")
        osh = await served.org("Osh Travel")
        root_token = await served.token("SUPER_ADMIN")
        osh_admin = await served.token("ADMIN", osh)
        viewer = await served.token("VIEWER", tours)

        with trio.fail_after(150):
            page = await new_page(chromium)
            await page.goto(served.url + "/")
            # No token: it asks for one, and shows nothing else.
            await page.visible("#login")
            assert await page.count("article.org") == 0
            await page.fill("#token", "wad_not-a-token")
            await page.click("#login button[type=submit]")
            await page.wait("() => document.querySelector('#login-error').textContent"
                            ".includes('not accepted')")
            assert await page.js("() => sessionStorage.getItem('wad.token')") is None

            await page.sign_in(root_token)
            await page.visible(card(tours))
            await page.visible(card(osh))
            assert await page.text(f"{card(tours)} .state") == "disconnected"
            assert await page.js("() => sessionStorage.getItem('wad.token')") == root_token
            assert await page.js("() => localStorage.length") == 0
            await page.wait("() => document.querySelector('#live').textContent === 'live'")

            # Connect: the QR appears on the page; the phone scans what the page drew.
            await page.click(f"{card(tours)} button.connect")
            payload = ""
            for _attempt in range(5):
                await page.wait(
                    "(sel) => { const i = document.querySelector(sel);"
                    " return i && i.complete && i.naturalWidth > 0 && i.offsetParent; }",
                    f"{card(tours)} .qr-image")
                shot = await page.screenshot(f"{card(tours)} .qr-image",
                                             path=ARTIFACTS / "status-page-qr.png")
                payload = read_qr(shot)
                await page.screenshot(path=ARTIFACTS / "status-page-qr-pending.png")
                try:
                    await stack.phone.scan_qr(QR_ACCOUNT, payload)
                    break
                except SimClientError as exc:
                    # It rotated between the drawing and the scan: a phone just scans again.
                    if "stale" not in exc.message:
                        raise
                    await trio.sleep(0.5)
            else:
                raise AssertionError("the phone could not scan the page's QR")
            await page.wait("(sel) => document.querySelector(sel).textContent === 'connected'",
                            f"{card(tours)} .state")
            await page.wait("(sel) => document.querySelector(sel).hidden",
                            f"{card(tours)} .qr")
            assert await page.text(f"{card(tours)} .phone") == f"+{QR_ACCOUNT}"

            # A message arrives: today's count moves without a reload.
            await stack.phone.deliver(QR_ACCOUNT, "996555700001", "Салам! Тур есть?")
            await page.wait("(sel) => document.querySelector(sel).textContent"
                            ".startsWith('1 in')", f"{card(tours)} .today")
            await page.screenshot(path=ARTIFACTS / "status-page.png")

            # An organization's admin on a phone: only its organization, linked by pairing code.
            mobile = await new_page(chromium, phone=True)
            await mobile.goto(f"{served.url}/org/{osh}")
            await mobile.sign_in(osh_admin)
            await mobile.visible(card(osh))
            assert await mobile.count("article.org") == 1
            assert await mobile.js("() => document.documentElement.scrollWidth "
                                   "<= window.innerWidth")
            await mobile.click(f"{card(osh)} button.connect")
            await mobile.wait("(sel) => ['waiting for a scan', 'connecting']"
                              ".includes(document.querySelector(sel).textContent)",
                              f"{card(osh)} .state")
            await stack.wait_state(osh, "QR_CODE_PENDING")
            await mobile.click(f"{card(osh)} button.pair")
            await mobile.fill(f"{card(osh)} .pair-form input", "+996 555 100 602")
            await mobile.click(f"{card(osh)} .pair-form button")
            await mobile.visible(f"{card(osh)} .pairing")
            code = await mobile.text(f"{card(osh)} .pairing-code")
            assert len(code) == 8
            await mobile.screenshot(path=ARTIFACTS / "status-page-phone-pairing.png")
            await stack.phone.enter_pairing_code(PAIR_ACCOUNT, code)
            await mobile.wait("(sel) => document.querySelector(sel).textContent === "
                              "'connected'", f"{card(osh)} .state")
            assert await mobile.text(f"{card(osh)} .phone") == f"+{PAIR_ACCOUNT}"
            assert await mobile.js("() => document.documentElement.scrollWidth "
                                   "<= window.innerWidth")
            await mobile.screenshot(path=ARTIFACTS / "status-page-phone.png")
            # The super admin's page saw it too, by itself.
            await page.wait("(sel) => document.querySelector(sel).textContent === 'connected'",
                            f"{card(osh)} .state")

            # A viewer: the state, no buttons at all, no QR.
            watcher = await new_page(chromium)
            await watcher.goto(served.url + "/")
            await watcher.sign_in(viewer)
            await watcher.visible(card(tours))
            assert await watcher.count("article.org") == 1
            assert await watcher.text(f"{card(tours)} .state") == "connected"
            assert await watcher.count("article.org button") == 0
            assert await watcher.count(".actions") == 0

            # Disconnect from the admin's page; the viewer's page follows.
            await page.click(f"{card(tours)} button.disconnect")
            await watcher.wait("(sel) => document.querySelector(sel).textContent === "
                               "'disconnected'", f"{card(tours)} .state")

            # Forgetting the token asks for one again.
            await page.click("#signout")
            await page.visible("#login")
            assert await page.js("() => sessionStorage.getItem('wad.token')") is None
            assert await page.count("article.org") == 0

        for client in served.clients:
            await client.aclose()
        shutdown.set()
        nursery.cancel_scope.cancel()

