"""Fixtures for driving the simulator in a real Chromium through Playwright (under trio-asyncio).

Test modules opt in with `pytest_plugins = ["tests.support.simfixtures"]`. Everything the tests do inside
the page goes through the WAWEB.md interface (`window.require(...)`), as a client would.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_asyncio import aio_as_trio

from wad.sim.client import SimClient, SimClientError
from wad.sim.model import SimConfig
from wad.sim.server import SimServer, serve

CHROMIUM_ARGS = ["--no-sandbox", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-quic"]
USER_AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
              "Chrome/131.0.0.0 Safari/537.36")
FAST = SimConfig(qr_rotate_s=5.0, qr_max_rotations=4, sync_delay_s=0.3,
                 ack_delays_s=(0.2, 0.4, 0.6), peer_request_delay_s=0.1)
ACCOUNT = "996555100200"


class Browser:
    """One persistent Chromium profile, opened and closed at will."""

    def __init__(self, playwright: Any, root: Path) -> None:
        self.playwright = playwright
        self.root = root
        self.context: Any = None
        self.page: Any = None

    async def open(self, url: str, profile: str = "profile") -> Any:
        tmp = self.root / "tmp"
        tmp.mkdir(exist_ok=True)
        self.context = await aio_as_trio(self.playwright.chromium.launch_persistent_context)(
            str(self.root / profile), executable_path="/usr/bin/chromium", headless=True,
            args=CHROMIUM_ARGS, user_agent=USER_AGENT, env={**os.environ, "TMPDIR": str(tmp)})
        pages = self.context.pages
        self.page = pages[0] if pages else await aio_as_trio(self.context.new_page)()
        await aio_as_trio(self.page.goto)(url)
        return self.page

    async def close(self) -> None:
        if self.context is not None:
            with trio.move_on_after(10, shield=True):
                await aio_as_trio(self.context.close)()
            self.context = None
            self.page = None

    async def js(self, expr: str, arg: Any = None) -> Any:
        """Evaluate a function expression in the page, e.g. `"() => Debug.VERSION"`."""
        return await aio_as_trio(self.page.evaluate)(expr, arg)

    async def wait(self, expr: str, arg: Any = None, timeout: float = 10.0) -> Any:
        """Wait until a function expression is truthy in the page; returns its value."""
        handle = await aio_as_trio(self.page.wait_for_function)(
            expr, arg=arg, timeout=timeout * 1000, polling=50)
        return await aio_as_trio(handle.json_value)()

    async def state(self) -> str:
        return await self.js("() => window.require('WAWebSocketModel').Socket.state")

    async def wait_state(self, *states: str, timeout: float = 10.0) -> str:
        return await self.wait(
            "(states) => window.Debug && window.Debug.VERSION &&"
            " states.includes(window.require('WAWebSocketModel').Socket.state)"
            " && window.require('WAWebSocketModel').Socket.state",
            list(states), timeout)

    async def payload(self) -> str:
        """The QR payload as a client builds it from the page's modules (WAWEB.md)."""
        return await self.js(QR_PAYLOAD_JS)

    async def wait_ready(self, timeout: float = 10.0) -> None:
        await self.wait("() => window.require('WAWebSocketModel').Socket.hasSynced === true",
                        timeout=timeout)


QR_PAYLOAD_JS = """async () => {
  const reg = Object.assign({}, window.require('WAWebCompanionRegClientUtils'),
    window.require('WAWebAdvSignatureApi'), window.require('WAWebUserPrefsInfoStore'),
    window.require('WAWebSignalStoreApi'));
  const b64 = window.require('WABase64');
  const noise = await reg.waNoiseInfo.get();
  const info = await reg.waSignalStore.getRegistrationInfo();
  const adv = await reg.getADVSecretKey();
  const ref = window.require('WAWebConnModel').Conn.ref;
  return [ref, b64.encodeB64(noise.staticKeyPair.pubKey),
          b64.encodeB64(info.identityKeyPair.pubKey), adv, reg.DEVICE_PLATFORM].join(',');
}"""


@pytest.fixture
async def sim(nursery: trio.Nursery) -> SimServer:
    """A simulator on a free port with short periods (QR every 5 s, sync after 0.3 s)."""
    return await nursery.start(partial(serve, seed=7, config=FAST))


@pytest.fixture
async def simc(sim: SimServer) -> AsyncIterator[SimClient]:
    async with SimClient(sim.url) as client:
        yield client


@asynccontextmanager
async def headless_chromium(prefix: str) -> AsyncIterator[Any]:
    """A headless Chromium (a Playwright `Browser`) of its own, for pages the tests look at
    themselves (the daemon's sessions have theirs); its temp folder is removed afterwards."""
    from playwright.async_api import async_playwright

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    pw = await aio_as_trio(async_playwright().start)()
    try:
        browser = await aio_as_trio(pw.chromium.launch)(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS,
            env={**os.environ, "TMPDIR": str(tmp)})
        try:
            yield browser
        finally:
            with trio.move_on_after(10, shield=True):
                await aio_as_trio(browser.close)()
    finally:
        with trio.move_on_after(10, shield=True):
            await aio_as_trio(pw.stop)()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
async def playwright(aio_loop: None) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    pw = await aio_as_trio(async_playwright().start)()
    try:
        yield pw
    finally:
        with trio.move_on_after(10, shield=True):
            await aio_as_trio(pw.stop)()


@pytest.fixture
async def browser(playwright: Any) -> AsyncIterator[Browser]:
    root = Path(tempfile.mkdtemp(prefix="wad-test-sim-"))
    b = Browser(playwright, root)
    try:
        yield b
    finally:
        await b.close()
        shutil.rmtree(root, ignore_errors=True)


LinkFn = Callable[..., Awaitable[str]]


@pytest.fixture
def link(sim: SimServer, simc: SimClient, browser: Browser) -> LinkFn:
    """Create an account (unless it exists), open the page, scan its QR and wait until synced.
    Returns the linked device id."""

    async def _link(number: str = ACCOUNT, *, history: dict[str, Any] | None = None,
                    **account: Any) -> str:
        if number not in sim.sim.accounts:
            await simc.create_account(number, account.pop("push_name", "Silk Road Tours"),
                                      **account)
            if history:
                await simc.generate_history(number, **history)
        if browser.page is None:
            await browser.open(sim.url)
        await browser.wait_state("UNPAIRED")
        for attempt in range(3):
            try:
                device = await simc.scan_qr(number, await browser.payload())
                break
            except SimClientError as exc:
                # The QR rotated between reading and scanning; a phone just scans again.
                if exc.status != 409 or "stale" not in exc.message or attempt == 2:
                    raise
        await browser.wait_ready()
        return device

    return _link
