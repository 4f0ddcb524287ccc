"""Opens one browser session through wad's driver, as whatever user runs it (the sandbox test
runs it as an unprivileged one): `python sandboxed_session.py URL PROFILE TMP_ROOT`.

Takes the secrets out of its environment as `wad run` does, opens the page, waits for its first
QR code (the page works), prints `{"browser_pid": N}` and keeps the session open until a line
arrives on stdin."""

from __future__ import annotations

import json
import sys

import trio
import trio_asyncio

from wad import environment
from wad.browser.driver import BrowserDriver
from wad.browser.events import QrChanged
from wad.config import WhatsAppSettings


async def main(url: str, profile: str, tmp_root: str) -> None:
    environment.take_secrets()
    async with trio_asyncio.open_loop():
        settings = WhatsAppSettings(ready_timeout_s=90.0)
        async with BrowserDriver.open(settings, tmp_root=tmp_root) as driver, \
                driver.open_session(profile, url=url) as session:
            async for event in session.events:
                if isinstance(event, QrChanged):
                    break
            print(json.dumps({"browser_pid": session.browser_pid()}), flush=True)
            await trio.to_thread.run_sync(sys.stdin.readline)


if __name__ == "__main__":
    url, profile, tmp_root = sys.argv[1:4]
    trio.run(main, url, profile, tmp_root)
