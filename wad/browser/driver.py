"""The browser driver: the only module of wad that calls Playwright.

Playwright is an asyncio library; every call crosses into asyncio through
`trio_asyncio.aio_as_trio`, and Playwright's callbacks (which trio-asyncio runs inside a Trio
task) hand their results to Trio through memory channels and events. Callers must run inside
`trio_asyncio.open_loop()`.

One `BrowserDriver` (one Playwright instance) serves the daemon; `driver.open_session(profile)`
opens one organization's WhatsApp Web page in its own persistent Chromium profile, keeps the
bridge (`bridge.js`) injected across navigations, and exposes the bridge's events and actions.
"""

from __future__ import annotations

import asyncio
import heapq
import os
import re
import secrets
import shutil
import signal
import tempfile
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

import msgspec
import trio
import trio_asyncio
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import async_playwright
from sniffio import thread_local as sniffio_library
from trio_asyncio import aio_as_trio, trio_as_aio
from trio_asyncio._handles import AsyncHandle  # type: ignore[import-untyped]

from wad import environment, log
from wad.browser import events
from wad.browser.events import (
    BridgeErrorEvent,
    BrowserClosed,
    ChatInfo,
    Contact,
    Event,
    MessagePage,
    PageIncompatible,
    SentInfo,
    SessionState,
)
from wad.browser.flags import driver_node_options, memory_flags
from wad.config import WhatsAppSettings
from wad.errors import WadError
from wad.supervise import sole
from wad.whatsapp.ids import chat_id, phone_digits

CHROMIUM_FLAGS = (
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
)
BINDING_NAME = "__wadEmit"
ACTION_TIMEOUT_S = 60.0
"""Upper bound of one bridge call (fetching history may ask the phone and wait for it)."""
CLOSE_TIMEOUT_S = 10.0
"""How long closing a browser may take before its process is killed."""
EVENT_BUFFER = 256
VERSION_POLL_S = 0.2
GONE_GRACE_S = 1.0
"""How long to wait, after the page closed, for word that the whole browser went away."""
_MAX_TMP_ROOT = 36
"""Longest temp root: Chromium adds about 60 bytes (`wad-chromium-XXXXXXXX/org.chromium.Chromium.
XXXXXX/SingletonSocket`) and a unix socket path must stay under 108."""

_VERSION_PROBE = (
    "() => (window.Debug && typeof window.Debug.VERSION === 'string' && "
    "typeof window.require === 'function') ? window.Debug.VERSION : null"
)
# The answer comes back as one JSON string (undefined as null): Playwright then carries one string
# instead of validating and rebuilding every object of a page of history, which cost more than
# the rest of an import together.
_CALL = ("([name, args]) => window.__wad.call(name, args)"
         ".then(a => JSON.stringify(a, (k, v) => v === undefined ? null : v))")
_MESSAGE_ID = re.compile(r"^[0-9A-F]{8,64}$")
_T = TypeVar("_T")


class BridgeError(WadError):
    """A bridge call failed; the message is the page's own explanation."""


class SessionClosed(BridgeError):
    """The page crashed or its browser closed; the session must be reopened."""


class BrowserStartError(BridgeError):
    """Chromium could not be started on the profile (missing binary, profile in use, ...)."""


class BridgeTimeout(BridgeError):
    """The page did not answer a call in time (hung page, busy renderer)."""


def new_message_id() -> str:
    """A fresh message key id as WhatsApp Web chooses them: 20 uppercase hex digits."""
    return "3EB0" + secrets.token_hex(8).upper()


ROOT_WARNING = (
    "running as root: Chromium runs WITHOUT its sandbox (it refuses to sandbox itself as "
    "root), so a bug in the browser reached through any customer's message would run with "
    "the daemon's rights; run wad as an ordinary user (the systemd unit's User=wad) to turn "
    "the sandbox on"
)
NO_SANDBOX_HINT = (
    "Chromium's sandbox needs unprivileged user namespaces: check `sysctl "
    "user.max_user_namespaces` (above 0) and, on kernels that have it, `sysctl "
    "kernel.unprivileged_userns_clone=1`; under systemd, RestrictNamespaces= must allow "
    "`user pid net`"
)


def sandboxed() -> bool:
    """Whether browsers run with Chromium's sandbox: always, except as root (where Chromium
    refuses it)."""
    return os.geteuid() != 0


def _bridge_source() -> str:
    return resources.files("wad.browser").joinpath("bridge.js").read_text(encoding="utf-8")


def origin(url: str) -> str:
    """`scheme://host[:port]` of URL (lower case, default ports left out), "" if it has none."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ""
    if not parts.scheme or not parts.hostname:
        return ""
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    suffix = f":{port}" if port is not None and port != default else ""
    return f"{parts.scheme.lower()}://{parts.hostname.lower()}{suffix}"


_SHELLS = frozenset({"sh", "dash", "bash"})
"""Interpreters of a wrapper script (Debian's /usr/bin/chromium-headless-shell runs the browser
as its child): never the browser itself."""


def find_browser_pid(profile_dir: Path) -> int | None:
    """The Chromium browser process using PROFILE_DIR (not its renderers or helpers, nor a
    wrapper script that started it)."""
    wanted = f"--user-data-dir={profile_dir}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if (wanted in argv and not any(arg.startswith(b"--type=") for arg in argv)
                and Path(argv[0].decode(errors="replace")).name not in _SHELLS):
            return int(entry.name)
    return None


def _process_gone(pid: int | None) -> bool:
    """True when PID has exited (a zombie counts as exited)."""
    if pid is None:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(") ", 1)[-1][:1] in ("Z", "X")


class _PendingCallbacks:
    """How many callbacks a trio-asyncio loop has queued: what asyncio's `loop._ready` tells."""

    def __init__(self, queue: trio.MemoryReceiveChannel[Any]) -> None:
        self._queue = queue

    def __len__(self) -> int:
        return self._queue.statistics().current_buffer_used

    def clear(self) -> None:
        """trio-asyncio clears its placeholder on close; the queue is its own business."""


def adapt_loop(loop: Any) -> None:
    """Make a trio-asyncio loop as cheap for Playwright as asyncio's own (idempotent).

    1. After each message from its driver, Playwright waits "for the next task": it turns the
       loop until `loop._ready` (asyncio's queue of ready callbacks) is empty, at most 100
       times. trio-asyncio keeps its queue elsewhere and leaves in `_ready` a placeholder that
       is never empty, so every driver message cost 100 turns of the loop: about 100 ms of CPU
       per incoming WhatsApp message (bench/inbound.py, issue 20). A view of trio-asyncio's own
       queue takes its place, so the wait ends once the reactions to the message have run.
    2. trio-asyncio checks every callback it schedules with `inspect` (is it a coroutine
       function?), which asyncio does only in debug mode: about 8% of the daemon's CPU under
       inbound load. Outside debug mode the check is skipped here too.
    3. A cancelled timer stays in trio-asyncio's heap until it is due: asyncpg sets one for
       each query (its command timeout, 60 s) and cancels it when the answer comes, so under
       load tens of thousands of dead timers (each with a context) lived in the heap, and the
       garbage collector's full passes over them paused the event loop. The heap is now swept
       of cancelled timers whenever it has doubled since the last sweep (`_TimerSweep`)."""
    queue = getattr(loop, "_q_recv", None)
    if isinstance(queue, trio.MemoryReceiveChannel) and not isinstance(
            getattr(loop, "_ready", None), _PendingCallbacks):
        loop._ready = _PendingCallbacks(queue)
    if not loop.get_debug():
        loop._check_callback = _no_callback_check
    if isinstance(queue, trio.MemoryReceiveChannel) and "_main_loop_one" not in vars(loop):
        loop._main_loop_one = types.MethodType(
            _main_loop_drained(type(loop)._main_loop_one, _TimerSweep(loop)), loop)


class _TimerSweep:
    """Drops cancelled timers from a trio-asyncio loop's heap (which keeps them until they
    are due) whenever the heap has doubled since the last sweep: each sweep costs what the
    pushes since the last one did, and the heap holds at most about twice the live timers."""

    MIN_HEAP = 100

    def __init__(self, loop: Any) -> None:
        self._loop = loop
        self._next = self.MIN_HEAP

    def sweep_if_due(self) -> None:
        """Sweep when the heap has grown to the mark (called after each step of the loop)."""
        timers: list[asyncio.TimerHandle] = self._loop._timers
        if len(timers) < self._next:
            return
        timers[:] = [timer for timer in timers if not timer.cancelled()]
        heapq.heapify(timers)
        self._next = max(self.MIN_HEAP, 2 * len(timers))


DRAIN_MAX = 64
"""Ready asyncio callbacks run one after another before Trio's scheduler gets a turn."""


def _main_loop_drained(step: Callable[..., Awaitable[None]], sweep: _TimerSweep
                       ) -> Callable[..., Awaitable[None]]:
    """trio-asyncio's loop step (`_main_loop_one`: one queued callback, then a trip through
    Trio's scheduler), followed by the callbacks that are ready by then, up to `DRAIN_MAX`,
    as asyncio's own loop runs every ready callback in one turn. Each asyncpg query and each
    Playwright message queues several callbacks; a scheduler trip for each was most of the
    daemon's CPU under inbound load (issue 20). A timer goes to the loop's heap as trio-asyncio
    puts it; a callback that starts a Trio task ends the run (it is handed to trio-asyncio's
    own step next time)."""
    async def drained(loop: Any, no_wait: bool = False) -> None:
        await step(loop, no_wait)
        sweep.sweep_if_due()
        queue = loop._q_recv
        waiting = queue._state.data  # the channel's buffer (its `statistics()` costs an object)
        for _ in range(DRAIN_MAX):
            if not waiting:
                return
            head = waiting[0]
            if not isinstance(head, asyncio.Handle) or isinstance(head, AsyncHandle):
                return  # trio-asyncio's own step deals with it
            handle = queue.receive_nowait()
            if isinstance(handle, asyncio.TimerHandle):
                heapq.heappush(loop._timers, handle)
            elif not handle._cancelled:
                previous, sniffio_library.name = sniffio_library.name, "asyncio"
                try:
                    handle._run()
                finally:
                    sniffio_library.name = previous

    return drained


def _no_callback_check(callback: Any, method: str) -> None:
    """asyncio's `_check_callback` outside debug mode: nothing."""


class BrowserDriver:
    """One Playwright instance for the daemon. Use `async with BrowserDriver.open(settings)`."""

    def __init__(self, playwright: Any, settings: WhatsAppSettings, tmpdir: Path) -> None:
        self._playwright = playwright
        self.settings = settings
        self.tmpdir = tmpdir
        self._log = log.get("browser")

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: WhatsAppSettings, *,
                   tmp_root: str | os.PathLike[str] | None = None) -> AsyncIterator[BrowserDriver]:
        """Start Playwright; on exit stop it and remove the Chromium temp directory.

        Chromium's `TMPDIR` is a fresh directory under TMP_ROOT (default: the system's), kept
        short because Chromium puts a unix socket there and socket paths are limited (~107
        bytes); a TMP_ROOT too deep for that falls back to the system temp directory."""
        if tmp_root is not None and len(os.fspath(tmp_root)) > _MAX_TMP_ROOT:
            log.get("browser").warning("temp root too long for Chromium's socket; using default",
                                       tmp_root=os.fspath(tmp_root))
            tmp_root = None
        tmpdir = Path(tempfile.mkdtemp(prefix="wad-chromium-", dir=tmp_root))
        if not sandboxed():
            log.get("browser").warning(ROOT_WARNING)
        try:
            adapt_loop(trio_asyncio.current_loop.get())
            with environment.node_options(driver_node_options(settings.memory_saving_flags)):
                playwright = await aio_as_trio(async_playwright().start)()
            try:
                yield cls(playwright, settings, tmpdir)
            finally:
                with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True):
                    await aio_as_trio(playwright.stop)()
        finally:
            shutil.rmtree(tmpdir, ignore_errors=True)

    @asynccontextmanager
    async def open_session(self, profile_dir: str | os.PathLike[str], *, url: str | None = None,
                           event_buffer: int = EVENT_BUFFER) -> AsyncIterator[BrowserSession]:
        """Launch Chromium on PROFILE_DIR, open WhatsApp Web (URL, else the configured one),
        and answer once the bridge is injected. Raises `BridgeError` when the page's internals
        do not appear within `ready_timeout_s`. Leaving the block closes the browser within
        `CLOSE_TIMEOUT_S`, killing it if need be, even when cancelled."""
        profile = Path(await trio.Path(profile_dir).absolute())
        await trio.Path(profile).mkdir(parents=True, exist_ok=True)
        await trio.Path(profile).chmod(0o700)  # a login lives here: its owner only
        settings = self.settings
        try:
            context = await aio_as_trio(self._playwright.chromium.launch_persistent_context)(
                str(profile),
                executable_path=settings.chromium_path,
                headless=settings.headless,
                args=[*CHROMIUM_FLAGS, *memory_flags(settings.memory_saving_flags)],
                # Playwright adds --no-sandbox unless told otherwise.
                chromium_sandbox=sandboxed(),
                user_agent=settings.user_agent,
                # Its own minimal environment: no secret, no DSN.
                env=environment.child_env(TMPDIR=str(self.tmpdir)),
            )
        except PlaywrightError as exc:
            first_line = exc.message.strip().splitlines()[0] if exc.message.strip() else ""
            hint = f" ({NO_SANDBOX_HINT})" if "sandbox" in exc.message.lower() and \
                sandboxed() else ""
            raise BrowserStartError(
                f"cannot start Chromium ({settings.chromium_path}) on {profile}: "
                f"{first_line}{hint}") from exc
        async with serving(
                lambda nursery: BrowserSession(context, profile, settings, nursery, event_buffer),
                url or settings.url, lambda: _close_context(context, profile)) as session:
            yield session


SessionT = TypeVar("SessionT", bound="BrowserSession")


@asynccontextmanager
async def serving(make: Callable[[trio.Nursery], SessionT], url: str,
                  close: Callable[[], Awaitable[None]]) -> AsyncIterator[SessionT]:
    """Start the session `make` builds (in a nursery of its own) on `url` and yield it; on
    exit, even when cancelled, let it finish (`_before_close`), then `close` its context."""
    session: SessionT | None = None
    try:
        async with trio.open_nursery() as nursery:
            session = make(nursery)
            await session._start(url)
            try:
                yield session
            finally:
                nursery.cancel_scope.cancel()
    except* Exception as group:
        # The nursery only runs the session's helpers, which never raise: callers get the
        # exception of the `async with` body (or of the start-up) itself, unwrapped.
        raise sole(group) from None
    finally:
        if session is not None:
            session._closing = True
            await session._before_close()
        await close()
        if session is not None:
            session._send.close()


async def _close_context(context: Any, profile: Path) -> None:
    pid = find_browser_pid(profile)
    with trio.move_on_after(CLOSE_TIMEOUT_S, shield=True) as scope:
        try:
            await aio_as_trio(context.close)()
        except PlaywrightError:
            pass  # already gone (crashed or killed)
    if scope.cancelled_caught and pid is not None:
        # Chromium did not close in time; it must not outlive its session.
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class BrowserSession:
    """One organization's WhatsApp Web page with the bridge injected.

    `events` yields `wad.browser.events` Structs in the order the page produced them; after a
    crash or an unrequested close it yields one `BrowserClosed` and ends. Every action is one
    call into the bridge and raises `BridgeError` (with the page's message) when it fails,
    `SessionClosed` when the page is gone.
    """

    def __init__(self, context: Any, profile: Path, settings: WhatsAppSettings,
                 nursery: trio.Nursery, event_buffer: int, *, pid: int | None = None) -> None:
        self._context = context
        self.profile_dir = profile
        self._settings = settings
        self._nursery = nursery
        self._log = log.get("browser", profile=profile.name)
        self._send, self.events = trio.open_memory_channel[Event](event_buffer)
        self._bridge = _bridge_source()
        self._page: Any = None
        self._ready = trio.Event()
        self._navigated = trio.Event()
        self._nav_generation = 0
        self._dead: str | None = None
        self._gone_signals: set[str] = set()
        self._gone_decided = trio.Event()
        self._closing = False
        self._pid: int | None = pid
        """The browser process; None: found by the profile (`--user-data-dir`)."""
        self.version: str | None = None
        self.last_activity = trio.current_time()
        """When the page last delivered an event or answered a call (`trio.current_time()`):
        the health check's measure of progress."""
        self.held_back = 0
        """How many events had to wait for room in `events` (the page held them meanwhile)."""
        self._origin = ""
        self.emit_calls = 0
        """How many binding calls the page made (each carries one event or a batch of them)."""
        self.refused_events = 0
        """How many binding calls were refused: not from the page's main frame at the
        WhatsApp origin (an iframe, a popup, another site the page was sent to)."""

    # ------------------------------------------------------------------ start-up

    async def _before_close(self) -> None:
        """What the session does before its context closes: nothing here."""

    async def _start(self, url: str) -> None:
        self._origin = origin(url)
        context = self._context
        context.on("close", lambda _ctx: self._on_gone("browser_closed"))
        await aio_as_trio(context.expose_binding)(BINDING_NAME, self._on_emit)
        pages = context.pages
        page = pages[0] if pages else await aio_as_trio(context.new_page)()
        self._page = page
        page.on("crash", lambda _page: self._on_gone("crash"))
        page.on("close", lambda _page: self._on_gone(
            "browser_closed" if _process_gone(self._pid) else "page_closed"))
        page.on("framenavigated", self._on_navigated)
        if self._pid is None:
            self._pid = find_browser_pid(self.profile_dir)
        self._nursery.start_soon(self._injector)
        timeout = self._settings.ready_timeout_s
        try:
            await aio_as_trio(page.goto)(url, wait_until="commit", timeout=timeout * 1000)
        except PlaywrightError as exc:
            raise BridgeError(f"cannot open {url}: {exc.message}") from None
        with trio.move_on_after(timeout):
            await self._ready.wait()
        self._check_alive()
        if not self._ready.is_set():
            raise BridgeError(
                f"WhatsApp Web at {url} did not become usable within {timeout:g} s "
                "(window.Debug.VERSION or the bridge's modules are missing)"
            )

    def _on_navigated(self, frame: Any) -> None:
        # Runs in Playwright's callback. A new document discards the bridge: hold calls back
        # until the injector has put it in again.
        if self._page is None or frame != self._page.main_frame:
            return
        self._nav_generation += 1
        if self._ready.is_set():
            self._ready = trio.Event()
        self._navigated.set()

    async def _injector(self) -> None:
        """Inject the bridge after every main-frame navigation."""
        while True:
            await self._navigated.wait()
            self._navigated = trio.Event()
            await self._inject(self._nav_generation)

    async def _inject(self, generation: int) -> None:
        deadline = trio.current_time() + self._settings.ready_timeout_s
        problem = "window.Debug.VERSION is not defined"
        while generation == self._nav_generation and self._dead is None:
            try:
                version = await aio_as_trio(self._page.evaluate)(_VERSION_PROBE)
                if version:
                    described = await aio_as_trio(self._page.evaluate)(self._bridge)
                    if generation != self._nav_generation:
                        return  # injected into a document that is already being replaced
                    self.version = str(described.get("version") or version)
                    if described.get("missing"):
                        # A build the bridge does not know: final, not retried (see SURFACE).
                        incompatible = PageIncompatible(
                            version=self.version, missing=[str(m) for m in described["missing"]])
                        self._log.error("page incompatible with the bridge",
                                        version=self.version, missing=incompatible.missing)
                        self._post(incompatible)
                        self._ready.set()
                        return
                    self._ready.set()
                    self._log.info("bridge injected", version=self.version,
                                   url=described.get("url"))
                    return
            except PlaywrightError as exc:
                # The document changed under us, or the page's modules are not ready yet.
                problem = exc.message
            if trio.current_time() >= deadline:
                self._log.error("bridge injection failed", problem=problem)
                self._post(BridgeErrorEvent(where="inject", message=problem))
                return
            await trio.sleep(VERSION_POLL_S)

    # ------------------------------------------------------------------ events

    def _from_the_page(self, source: Any) -> bool:
        """Whether a binding call came from the page's main frame at the WhatsApp origin (the
        binding is exposed to every frame of every page of the context)."""
        frame = source.get("frame") if isinstance(source, dict) else None
        page = self._page
        if frame is None or page is None or frame != page.main_frame:
            url = str(getattr(frame, "url", "")) if frame is not None else ""
        else:
            url = str(frame.url)
            if self._origin and origin(url) == self._origin:
                return True
        self.refused_events += 1
        if self.refused_events == 1 or self.refused_events % 100 == 0:  # a flood logs little
            self._log.warning("bridge event refused: not from the page's main frame at the "
                              "WhatsApp origin", frame_url=url[:200], origin=self._origin,
                              refused=self.refused_events)
        return False

    async def _on_emit(self, source: Any, raw: str) -> None:
        """The binding (an asyncio coroutine): one event, or the events that queued up in the
        page meanwhile (a JSON array, in order). The bridge awaits it before posting the next
        call, so waiting here for room in the bounded channel holds the page's events back (in
        the page, in order) instead of dropping them. Calls from anywhere but the page's main
        frame at the WhatsApp origin are refused (counted, logged, dropped)."""
        if not self._from_the_page(source):
            return
        self.last_activity = trio.current_time()
        self.emit_calls += 1
        try:
            decoded = events.decode_each(raw)
        except msgspec.DecodeError as exc:
            decoded = [msgspec.ValidationError(f"not JSON: {exc}")]
        for item in decoded:
            if isinstance(item, msgspec.ValidationError):
                self._log.warning("malformed bridge event", error=str(item), raw=str(raw)[:500])
                item = BridgeErrorEvent(where="decode", message=str(item))
            if not await self._deliver(item):
                return

    async def _deliver(self, event: Event) -> bool:
        """Put an event from the page into `events`, waiting for room when it is full; False
        once nobody reads them any more."""
        try:
            self._send.send_nowait(event)
            return True
        except trio.WouldBlock:
            pass
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        self.held_back += 1
        if self.held_back == 1 or self.held_back % 100 == 0:
            self._log.warning("event channel full; the page holds events back",
                              held_back=self.held_back)
        try:
            await trio_as_aio(self._send.send)(event)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def _post(self, event: Event) -> None:
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self._nursery.start_soon(self._send_blocking, event)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def _send_blocking(self, event: Event) -> None:
        try:
            await self._send.send(event)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def _on_gone(self, reason: str) -> None:
        # Runs in Playwright's callback (inside a Trio task under trio-asyncio).
        self._gone_signals.add(reason)
        if reason != "page_closed":
            self._gone_decided.set()
        if self._dead is not None:
            return
        self._dead = reason
        self._ready.set()  # wake waiting calls so they raise SessionClosed
        if not self._closing:
            self._nursery.start_soon(self._final_event)

    async def _final_event(self) -> None:
        # A dying browser shows first as its page closing, then as its context closing: wait a
        # moment for the decisive signal so the reason says what happened.
        with trio.move_on_after(GONE_GRACE_S):
            await self._gone_decided.wait()
        signals = self._gone_signals
        reason: Literal["crash", "page_closed", "browser_closed"]
        if "crash" in signals:
            reason = "crash"
        elif "browser_closed" in signals or _process_gone(self._pid):
            reason = "browser_closed"
        else:
            reason = "page_closed"
        self._dead = reason
        self._log.error("browser gone", reason=reason)
        try:
            await self._send.send(BrowserClosed(reason=reason))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return
        self._send.close()

    # ------------------------------------------------------------------ calls

    @property
    def alive(self) -> bool:
        """False once the page crashed or the browser closed."""
        return self._dead is None

    def _check_alive(self) -> None:
        if self._dead is not None:
            raise SessionClosed(f"the browser session is gone ({self._dead})")

    async def _call(self, name: str, args: dict[str, Any] | None = None, *,
                    timeout: float = ACTION_TIMEOUT_S, retry_on_navigation: bool = True) -> Any:
        retried: list[str] = []
        with trio.move_on_after(timeout):
            return await self._call_once(name, args, retry_on_navigation, retried)
        self._check_alive()
        last = f" (last problem: {retried[-1]})" if retried else ""
        raise BridgeTimeout(f"{name}: the page did not answer within {timeout:g} s{last}")

    async def _call_once(self, name: str, args: dict[str, Any] | None,
                         retry_on_navigation: bool, retried: list[str]) -> Any:
        while True:
            self._check_alive()
            await self._ready.wait()
            self._check_alive()
            ready = self._ready
            try:
                raw = await aio_as_trio(self._page.evaluate)(_CALL, [name, args or {}])
            except PlaywrightError as exc:
                self._check_alive()
                retried.append(exc.message)
                if retry_on_navigation and (not ready.is_set() or ready is not self._ready):
                    continue  # the page navigated meanwhile; retry on the new document
                if retry_on_navigation and _looks_like_navigation(exc.message):
                    await trio.sleep(VERSION_POLL_S)
                    continue
                raise BridgeError(f"{name}: {exc.message}") from None
            try:
                # Scrubbed of NULs here (see `events.scrub`), so every answer is storable.
                answer = events.decode_json(raw) if isinstance(raw, str) else events.scrub(raw)
            except msgspec.DecodeError:
                answer = raw
            self.last_activity = trio.current_time()
            if not isinstance(answer, dict) or "ok" not in answer:
                raise BridgeError(f"{name}: malformed answer from the bridge: {answer!r}")
            if not answer["ok"]:
                raise BridgeError(f"{name}: {answer.get('error')}")
            return answer.get("value")

    async def _call_as(self, type_: type[_T], name: str, args: dict[str, Any] | None = None,
                       **kwargs: Any) -> _T:
        value = await self._call(name, args, **kwargs)
        try:
            return msgspec.convert(value, type_)
        except msgspec.ValidationError as exc:
            raise BridgeError(f"{name}: unexpected answer: {exc}") from None

    async def send_text(self, chat_or_phone: str, text: str, *,
                        message_id: str | None = None) -> SentInfo:
        """Send TEXT with the key id MESSAGE_ID (uppercase hex; a fresh one if None) and answer
        once the page added it locally. Sending an id the page already holds sends nothing and
        answers `already_existed=True`."""
        message_id = message_id or new_message_id()
        if not _MESSAGE_ID.match(message_id):
            raise BridgeError(f"message id must be 8-64 uppercase hex digits: {message_id!r}")
        if not text:
            raise BridgeError("cannot send an empty text")
        return await self._call_as(
            SentInfo, "sendText",
            {"chat_id": chat_id(chat_or_phone), "text": text, "id": message_id},
            retry_on_navigation=False,
        )

    async def message_exists(self, serialized_id: str) -> bool:
        """Whether the page holds the message (in `Msg` or its chat's loaded messages)."""
        return bool(await self._call("messageExists", {"id": serialized_id}))

    async def mark_read(self, chat: str) -> None:
        """Send read receipts for CHAT."""
        await self._call("markRead", {"chat_id": chat_id(chat)})

    async def typing(self, chat: str, on: bool) -> None:
        """Show (ON) or stop showing "typing..." in CHAT."""
        await self._call("typing", {"chat_id": chat_id(chat), "on": bool(on)})

    async def list_chats(self) -> list[ChatInfo]:
        """Every chat the page knows, in one request."""
        return await self._call_as(list[ChatInfo], "listChats")

    async def fetch_messages(self, chat: str, *, before: str | None = None,
                             limit: int = 50) -> MessagePage:
        """Up to LIMIT messages of CHAT older than the cursor BEFORE (None: the newest), oldest
        first, loading earlier history (and asking the phone for it) as needed. Follow
        `next_cursor` until a page comes back empty."""
        if limit < 1:
            raise BridgeError("limit must be at least 1")
        return await self._call_as(
            MessagePage, "fetchMessages",
            {"chat_id": chat_id(chat), "before": before, "limit": int(limit)},
        )

    async def get_contact(self, wid: str) -> Contact:
        """What the page knows of a contact (found even if not in the address book)."""
        return await self._call_as(Contact, "getContact", {"wid": chat_id(wid)})

    async def profile_picture_url(self, wid: str) -> str | None:
        """The URL of WID's profile picture, None when there is none (or it is hidden)."""
        value = await self._call("profilePictureUrl", {"wid": chat_id(wid)})
        return str(value) if value else None

    async def number_exists(self, phone: str) -> str | None:
        """The WhatsApp id of PHONE if it uses WhatsApp, else None."""
        value = await self._call("numberExists", {"wid": chat_id(phone)})
        return str(value) if value else None

    async def request_pairing_code(self, phone: str) -> str:
        """An 8-character code to type on PHONE to link this session (also sent as a
        `PairingCode` event)."""
        value = await self._call("requestPairingCode", {"phone": phone_digits(phone)})
        code = str(value or "")
        if len(code) != 8:
            raise BridgeError(f"requestPairingCode: unexpected code {code!r}")
        return code

    async def refresh_qr(self) -> None:
        """Ask the page for a fresh QR (after it expired: state `UNPAIRED_IDLE`)."""
        await self._call("refreshQr")

    async def logout(self) -> None:
        """Unlink this device; the page reloads unpaired and the bridge is re-injected."""
        await self._call("logout", retry_on_navigation=False)

    async def takeover(self) -> None:
        """Take the session back after `CONFLICT`."""
        await self._call("takeover")

    async def state(self) -> SessionState:
        """The page's current connection state, sync flag, QR payload and version."""
        return await self._call_as(SessionState, "state")

    async def ping(self, *, timeout: float | None = None) -> str:
        """A cheap bridge round trip within TIMEOUT (default: the health-check timeout);
        answers the version."""
        value = await self._call("ping", timeout=timeout or self._settings.health_check_timeout_s)
        return str(value.get("version") if isinstance(value, dict) else value)

    def browser_pid(self) -> int | None:
        """The Chromium browser process id (tests kill it to simulate a crash)."""
        if self._pid is None:
            self._pid = find_browser_pid(self.profile_dir)
        return self._pid


def _looks_like_navigation(message: str) -> bool:
    return any(
        hint in message
        for hint in (
            "Execution context was destroyed",
            "Cannot find context",
            "__wad",
            "frame was detached",
            "navigation",
        )
    )
