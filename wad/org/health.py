"""Telling a hung page from a busy one, and spreading health restarts across organizations.

The rule (documented in docs/operations.md, "Health checks"):

- a page that delivered an event or answered any bridge call within the last check interval is
  alive: nothing is asked of it;
- a quiet page is pinged, with a timeout that grows with the host's load: the configured
  timeout times the load factor (the 1-minute load average per CPU, at least 1), capped at
  `health_check_max_timeout_s`;
- the page is restarted only when, over that whole wait, it neither answered the ping nor
  delivered anything else (no progress at all);
- a restart then waits for its turn at the daemon's `RestartSpacing` (one health restart per
  `health_restart_spacing_s` across every organization), and is dropped if the page made
  progress meanwhile.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from typing import Any, Protocol

import trio

from wad.config import WhatsAppSettings
from wad.errors import WadError


class HealthFailure(WadError):
    """The page made no progress at all for the whole check (or its ping failed outright)."""


class Watched(Protocol):
    """What the check needs of a browser session (see `wad.browser.driver.BrowserSession`)."""

    last_activity: float
    """`trio.current_time()` when the page last delivered an event or answered a call."""

    async def ping(self, *, timeout: float | None = None) -> Any: ...


def host_load_factor() -> float:
    """The 1-minute load average per CPU, at least 1 (1.0 where the load is unknown)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return 1.0
    return max(1.0, load / (os.cpu_count() or 1))


def ping_timeout(settings: WhatsAppSettings, load_factor: float) -> float:
    """How long a quiet page may take to answer: the timeout scaled by the load, capped."""
    scaled = settings.health_check_timeout_s * max(1.0, load_factor)
    return min(scaled, max(settings.health_check_max_timeout_s,
                           settings.health_check_timeout_s))


class RestartSpacing:
    """Admits at most one health restart per `spacing_s` across the daemon, first come first
    served, so that a host-wide stall never restarts every organization at once."""

    def __init__(self, spacing_s: float) -> None:
        self.spacing_s = spacing_s
        self._lock = trio.Lock()  # fair: waiters are admitted in arrival order
        self._next = -math.inf

    async def admit(self) -> None:
        """Return when this restart may happen (at once when none happened recently)."""
        async with self._lock:
            await trio.sleep_until(self._next)
            self._next = trio.current_time() + self.spacing_s


def _is_timeout(exc: BaseException) -> bool:
    # The driver's own timeout (`BridgeTimeout`), without importing Playwright here.
    return type(exc).__name__ == "BridgeTimeout"


async def watch(session: Watched, settings: WhatsAppSettings, spacing: RestartSpacing, *,
                load_factor: Callable[[], float] = host_load_factor) -> None:
    """Check the page every `health_check_interval_s` until it makes no progress; then raise
    `HealthFailure` (once `spacing` admits the restart). Never returns otherwise."""
    interval = settings.health_check_interval_s
    while True:
        await trio.sleep(interval)
        if trio.current_time() - session.last_activity < interval:
            continue  # events or answers came in recently: alive
        factor = load_factor()
        limit = ping_timeout(settings, factor)
        asked = trio.current_time()
        answered = False
        with trio.move_on_after(limit):
            try:
                await session.ping(timeout=limit)
                answered = True
            except Exception as exc:
                if not _is_timeout(exc):
                    raise HealthFailure(f"health check failed: {exc}") from exc
        if answered or session.last_activity > asked:
            continue  # slow, but it answered or delivered something meanwhile: busy
        await spacing.admit()
        if session.last_activity > asked:
            continue  # came back while waiting for its turn
        quiet = trio.current_time() - session.last_activity
        raise HealthFailure(
            f"health check: the page made no progress for {quiet:.0f}s (no event, and no "
            f"answer to a ping within {limit:.1f}s at load factor {factor:.1f})")
