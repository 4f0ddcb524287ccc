"""Shared browsers: several organizations' WhatsApp Web sessions in one Chromium.

In `browser_mode = "shared"` each Chromium holds up to `orgs_per_browser` organizations, each in
its own browser context (its own cookies, Local Storage and IndexedDB, never seen by another
context). A browser context has no profile folder of its own, so the login is persisted by wad:
the organization's profile folder holds `storage.json` (`STORAGE_FILE`), Playwright's storage
state of the context (cookies, Local Storage and IndexedDB of every origin), written atomically
(temporary file, fsync, rename; mode 0600)

- as soon as the session actor says the page connected (`SharedSession.login_connected`), and
  before each login archive (`save_storage`),
- every `storage_save_interval_s` after that, and
- when the session closes, if the page connected in this run (so a page that never connected
  cannot overwrite a good login with an empty one).

A new context starts from that file, so a restarted session (or another daemon that restored
the archive, which packs `storage.json`) comes back without a QR.

A browser that dies takes its contexts with it: each of its sessions sees `BrowserClosed`, its
actor exits and is restarted by its supervisor, and the restarted sessions open new contexts
(in a new browser when the others are full) from their saved storage. Browsers of other
organizations are not touched. A browser closes when its last context closes.

`open_sessions` gives the daemon what its session actors open sessions on: the driver itself
(`per-org`: one persistent Chromium profile per organization) or a `SharedBrowsers` pool.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from playwright.async_api import Error as PlaywrightError
from trio_asyncio import aio_as_trio

from wad import environment, log
from wad.browser.driver import (
    CHROMIUM_FLAGS,
    CLOSE_TIMEOUT_S,
    EVENT_BUFFER,
    BrowserDriver,
    BrowserSession,
    BrowserStartError,
    sandboxed,
    serving,
)
from wad.browser.flags import memory_flags

STORAGE_FILE = "storage.json"
"""A shared-mode profile: the context's storage state (the login), in the profile folder."""
_STORAGE_TMP = ".storage.json.tmp"
SAVE_TIMEOUT_S = 30.0
"""Longest one storage save may take (the page is asked for its IndexedDB)."""

_log = log.get("browser")


@dataclass(eq=False)
class SharedBrowser:
    """One Chromium of the pool: its process id and how many contexts it holds."""

    number: int
    browser: Any
    pid: int | None
    contexts: int = 0
    alive: bool = True

    def running(self) -> bool:
        """Alive as far as is known: Playwright has not reported it gone and its process has
        not exited (a killed browser is seen here before Playwright's word arrives)."""
        if not self.alive or self.pid is None:
            return self.alive
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(") ", 1)[-1][:1] not in ("Z", "X")


def _find_marked_pid(marker: str) -> int | None:
    """The browser process started with the switch MARKER (not its renderers or helpers, whose
    command lines Chromium rewrites into one space-separated string)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").split(b" ")
        except OSError:
            continue
        if marker.encode() in argv and not any(a.startswith(b"--type=") for a in argv):
            return int(entry.name)
    return None


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(_STORAGE_TMP)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class SharedSession(BrowserSession):
    """A `BrowserSession` in a browser context of a shared Chromium, which persists its login
    in `storage.json` (see the module's docstring)."""

    def __init__(self, *args: Any, browser: SharedBrowser, save_interval_s: float,
                 **kwargs: Any) -> None:
        super().__init__(*args, pid=browser.pid, **kwargs)
        self.browser = browser
        self._save_interval_s = save_interval_s
        self._save_lock = trio.Lock()
        self.login_live = False
        """Set once the page connected in this run (`login_connected`): only then is the
        storage saved, so a page that never connected cannot overwrite a good login."""
        self.storage_saves = 0

    @property
    def storage_path(self) -> Path:
        return self.profile_dir / STORAGE_FILE

    def login_connected(self) -> None:
        """The page reached `CONNECTED`: the login is live; save it now (in the background)
        and from now on periodically and at close."""
        self.login_live = True
        self._nursery.start_soon(self.save_storage)

    async def save_storage(self) -> bool:
        """Write the context's storage state to `storage.json` (atomically); answers whether
        it was written (False when the page is gone or did not answer in time)."""
        async with self._save_lock:
            if not self.alive:
                return False
            state: Any = None
            with trio.move_on_after(SAVE_TIMEOUT_S):
                try:
                    state = await aio_as_trio(self._context.storage_state)(indexed_db=True)
                except PlaywrightError as exc:
                    self._log.warning("storage state not saved", error=exc.message)
                    return False
            if state is None:
                self._log.warning("storage state not saved: the page did not answer",
                                  timeout_s=SAVE_TIMEOUT_S)
                return False
            data = json.dumps(state, separators=(",", ":")).encode()
            await trio.to_thread.run_sync(_write_atomically, self.storage_path, data)
            self.storage_saves += 1
            self._log.debug("storage state saved", size=len(data))
            return True

    async def _start(self, url: str) -> None:
        await super()._start(url)
        self._nursery.start_soon(self._save_periodically)

    async def _before_close(self) -> None:
        """A live login is saved once more before its context closes."""
        if self.login_live and self.alive:
            with trio.move_on_after(SAVE_TIMEOUT_S, shield=True):
                await self.save_storage()

    async def _save_periodically(self) -> None:
        while True:
            await trio.sleep(self._save_interval_s)
            if self.login_live and self.alive:
                await self.save_storage()


class SharedBrowsers:
    """Sessions in shared Chromiums, at most `orgs_per_browser` contexts in each. Has the
    driver's `open_session`, so the session actor uses either without knowing which."""

    def __init__(self, driver: BrowserDriver, *, orgs_per_browser: int,
                 save_interval_s: float) -> None:
        self.driver = driver
        self.settings = driver.settings
        self.tmpdir = driver.tmpdir
        self.orgs_per_browser = orgs_per_browser
        self.save_interval_s = save_interval_s
        self._browsers: list[SharedBrowser] = []
        self._lock = trio.Lock()
        self._launched = 0

    @property
    def browsers(self) -> list[SharedBrowser]:
        """The browsers running now (tests and benches read their pids)."""
        return [b for b in self._browsers if b.alive]

    async def _acquire(self) -> SharedBrowser:
        """A place for one more context: the first live browser with room, else a new one."""
        async with self._lock:
            for found in self._browsers:
                if found.contexts < self.orgs_per_browser and found.running():
                    found.contexts += 1
                    return found
            fresh = await self._launch()
            fresh.contexts += 1
            self._browsers.append(fresh)
            return fresh

    async def _release(self, slot: SharedBrowser) -> None:
        async with self._lock:
            slot.contexts -= 1
            if slot.contexts > 0:
                return
            if slot in self._browsers:
                self._browsers.remove(slot)
        await self._close_browser(slot)

    async def _launch(self) -> SharedBrowser:
        self._launched += 1
        number = self._launched
        settings = self.settings
        # A switch Chromium ignores, so that the browser process can be found by it.
        marker = f"--wad-shared-browser={os.getpid()}-{number}"
        try:
            browser = await aio_as_trio(self.driver._playwright.chromium.launch)(
                executable_path=settings.chromium_path, headless=settings.headless,
                args=[*CHROMIUM_FLAGS, *memory_flags(settings.memory_saving_flags), marker],
                # Playwright adds --no-sandbox unless told otherwise.
                chromium_sandbox=sandboxed(),
                # Its own minimal environment: no secret, no DSN.
                env=environment.child_env(TMPDIR=str(self.tmpdir)))
        except PlaywrightError as exc:
            first = exc.message.strip().splitlines()[0] if exc.message.strip() else ""
            raise BrowserStartError(
                f"cannot start a shared Chromium ({settings.chromium_path}): {first}") from exc
        slot = SharedBrowser(number=number, browser=browser, pid=_find_marked_pid(marker))

        def gone(_browser: Any) -> None:
            if slot.alive:
                slot.alive = False
                _log.warning("shared browser gone", browser=number, pid=slot.pid,
                             contexts=slot.contexts)

        browser.on("disconnected", gone)
        _log.info("shared browser started", browser=number, pid=slot.pid)
        return slot

    async def _close_browser(self, slot: SharedBrowser) -> None:
        slot.alive = False
        with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True) as scope:
            try:
                await aio_as_trio(slot.browser.close)()
            except PlaywrightError:
                pass  # already gone
        if scope.cancelled_caught and slot.pid is not None:
            try:
                os.kill(slot.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        _log.info("shared browser closed", browser=slot.number, pid=slot.pid)

    async def close(self) -> None:
        """Close every browser still open (their sessions are expected to be closed)."""
        async with self._lock:
            left, self._browsers = self._browsers, []
        for slot in left:
            await self._close_browser(slot)

    @asynccontextmanager
    async def open_session(self, profile_dir: str | os.PathLike[str], *, url: str | None = None,
                           event_buffer: int = EVENT_BUFFER) -> AsyncIterator[SharedSession]:
        """Like `BrowserDriver.open_session`, in a new context of a shared browser that starts
        from the profile's `storage.json` when there is one."""
        profile = Path(await trio.Path(profile_dir).absolute())
        await trio.Path(profile).mkdir(parents=True, exist_ok=True)
        await trio.Path(profile).chmod(0o700)  # a login lives here: its owner only
        stored = profile / STORAGE_FILE
        settings = self.settings
        slot = await self._acquire()
        try:
            try:
                context = await aio_as_trio(slot.browser.new_context)(
                    user_agent=settings.user_agent,
                    storage_state=str(stored) if stored.exists() else None)
            except PlaywrightError as exc:
                first = exc.message.strip().splitlines()[0] if exc.message.strip() else ""
                raise BrowserStartError(
                    f"cannot open a context for {profile} in shared browser {slot.number}: "
                    f"{first}") from exc
            async with serving(
                    lambda nursery: SharedSession(
                        context, profile, settings, nursery, event_buffer, browser=slot,
                        save_interval_s=self.save_interval_s),
                    url or settings.url, lambda: _close_context(context, slot)) as session:
                yield session
        finally:
            with trio.CancelScope(shield=True):
                await self._release(slot)


async def _close_context(context: Any, slot: SharedBrowser) -> None:
    with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True) as scope:
        try:
            await aio_as_trio(context.close)()
        except PlaywrightError:
            pass  # its browser is gone
    if scope.cancelled_caught:
        # Killing the browser would take the other organizations' sessions with it; the
        # browser goes when its last context closes.
        _log.error("a browser context did not close in time", browser=slot.number,
                   timeout_s=CLOSE_TIMEOUT_S)


@asynccontextmanager
async def open_sessions(driver: BrowserDriver, *, mode: str, orgs_per_browser: int,
                        save_interval_s: float) -> AsyncIterator[Any]:
    """What session actors open their sessions on: the driver (`per-org`) or, for `shared`,
    a `SharedBrowsers` pool closed on exit."""
    if mode != "shared":
        yield driver
        return
    pool = SharedBrowsers(driver, orgs_per_browser=orgs_per_browser,
                          save_interval_s=save_interval_s)
    try:
        yield pool
    finally:
        with trio.CancelScope(shield=True):
            await pool.close()
