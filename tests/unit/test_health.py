"""The health check's progress rule and the spreading of health restarts, on Trio's mock clock:
a busy page (slow, but delivering or answering) is never restarted, a page that makes no
progress at all is, and restarts across organizations come one per spacing."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, cast

import pytest
import trio
import trio.testing

from wad.bus import EventBus
from wad.config import DaemonSettings, Settings, WhatsAppSettings
from wad.org import health
from wad.org.session import BrowserCrashed, BrowserFailure, SessionActor

SETTINGS = WhatsAppSettings(health_check_interval_s=30.0, health_check_timeout_s=10.0,
                            health_check_max_timeout_s=120.0, health_restart_spacing_s=10.0)


class BridgeTimeout(Exception):
    """Named like the driver's own timeout, which the check treats as no answer."""


class Page:
    """A page whose ping answers after `answer_after` seconds (None: never), and which can be
    told to deliver events every `events_every` seconds."""

    def __init__(self, *, answer_after: float | None = 0.1,
                 events_every: float | None = None) -> None:
        self.answer_after = answer_after
        self.events_every = events_every
        self.last_activity = trio.current_time()
        self.pings: list[float] = []

    async def ping(self, *, timeout: float | None = None) -> str:
        self.pings.append(trio.current_time())
        if self.answer_after is None or (timeout is not None and self.answer_after > timeout):
            await trio.sleep(timeout or 10.0)
            raise BridgeTimeout("ping: the page did not answer")
        await trio.sleep(self.answer_after)
        self.last_activity = trio.current_time()
        return "2.3000.0"

    async def deliver_events(self) -> None:
        while self.events_every is not None:
            await trio.sleep(self.events_every)
            self.last_activity = trio.current_time()


async def _watch_for(page: Page, seconds: float, spacing: health.RestartSpacing,
                     load: float = 1.0) -> float | None:
    """When the check gave up on the page (None: not within SECONDS)."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(page.deliver_events)
        with trio.move_on_after(seconds):
            try:
                await health.watch(page, SETTINGS, spacing, load_factor=lambda: load)
            except health.HealthFailure:
                nursery.cancel_scope.cancel()
                return trio.current_time()
        nursery.cancel_scope.cancel()
    return None


async def test_a_page_that_delivers_events_is_never_pinged_nor_restarted(
        autojump_clock: trio.testing.MockClock) -> None:
    # It never answers a ping, but its events keep coming: busy, not hung.
    page = Page(answer_after=None, events_every=5.0)
    assert await _watch_for(page, 3600, health.RestartSpacing(10.0)) is None
    assert page.pings == []


async def test_a_slow_page_under_load_gets_a_longer_timeout_and_is_kept(
        autojump_clock: trio.testing.MockClock) -> None:
    # 40 s to answer: over the 10 s timeout, but the host's load factor is 6 (timeout 60 s).
    page = Page(answer_after=40.0)
    assert await _watch_for(page, 3600, health.RestartSpacing(10.0), load=6.0) is None
    assert page.pings  # it was asked, and its answers kept it alive


async def test_a_page_that_answers_nothing_but_delivers_during_the_ping_is_kept(
        autojump_clock: trio.testing.MockClock) -> None:
    # Events every 35 s (longer than the interval, so it is pinged), never a ping answer:
    # each ping's wait sees an event arrive before the restart.
    page = Page(answer_after=None, events_every=35.0)
    load = 10.0  # ping timeout 100 s, so an event always comes during it
    assert await _watch_for(page, 3600, health.RestartSpacing(10.0), load=load) is None
    assert page.pings


async def test_a_frozen_page_is_restarted_within_interval_plus_scaled_timeout(
        autojump_clock: trio.testing.MockClock) -> None:
    page = Page(answer_after=None)
    started = trio.current_time()
    failed_at = await _watch_for(page, 3600, health.RestartSpacing(10.0), load=3.0)
    assert failed_at is not None
    # quiet for one interval (30 s), then no answer within 10 s x 3.
    assert failed_at - started == pytest.approx(30.0 + 30.0)


async def test_the_timeout_is_capped(autojump_clock: trio.testing.MockClock) -> None:
    assert health.ping_timeout(SETTINGS, 1.0) == 10.0
    assert health.ping_timeout(SETTINGS, 4.5) == 45.0
    assert health.ping_timeout(SETTINGS, 50.0) == 120.0
    page = Page(answer_after=None)
    failed_at = await _watch_for(page, 3600, health.RestartSpacing(10.0), load=50.0)
    assert failed_at == pytest.approx(30.0 + 120.0)


def test_load_factor_is_load_per_cpu_and_at_least_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health.os, "getloadavg", lambda: (8.0, 1.0, 1.0))
    monkeypatch.setattr(health.os, "cpu_count", lambda: 2)
    assert health.host_load_factor() == 4.0
    monkeypatch.setattr(health.os, "getloadavg", lambda: (0.5, 1.0, 1.0))
    assert health.host_load_factor() == 1.0


async def test_frozen_pages_of_many_organizations_are_restarted_one_per_spacing(
        autojump_clock: trio.testing.MockClock) -> None:
    spacing = health.RestartSpacing(10.0)
    failures: list[float] = []
    pages = [Page(answer_after=None) for _ in range(5)]

    async def one(page: Page) -> None:
        failed_at = await _watch_for(page, 3600, spacing)
        assert failed_at is not None
        failures.append(failed_at)

    async with trio.open_nursery() as nursery:
        for page in pages:
            nursery.start_soon(one, page)
    failures.sort()
    assert failures[0] == pytest.approx(40.0)  # 30 s quiet + 10 s ping timeout
    gaps = [round(b - a, 6) for a, b in zip(failures, failures[1:], strict=False)]
    assert gaps == [10.0, 10.0, 10.0, 10.0]  # never two at once


async def test_a_page_that_recovers_while_waiting_for_its_turn_is_not_restarted(
        autojump_clock: trio.testing.MockClock) -> None:
    spacing = health.RestartSpacing(60.0)
    await spacing.admit()  # another organization was just restarted
    page = Page(answer_after=None)

    async def wake_up() -> None:
        await trio.sleep(45.0)  # after the failed ping (at 40 s), before its turn (at 60 s)
        page.last_activity = trio.current_time()
        page.answer_after = 0.1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wake_up)
        assert await _watch_for(page, 400, spacing) is None


async def test_session_actor_turns_a_health_failure_into_a_browser_restart(
        autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    settings = Settings(daemon=DaemonSettings(state_dir=str(tmp_path)), whatsapp=SETTINGS)
    actor = SessionActor(org_id=uuid.uuid4(), settings=settings, db=cast(Any, None),
                         driver=None, bus=EventBus())
    with pytest.raises(BrowserFailure, match="health check: the page made no progress"):
        await actor._health_check(cast(Any, Page(answer_after=None)))


class ClosedPage(Page):
    """A page whose browser is gone: its ping fails at once, as the driver's does."""

    alive = False

    async def ping(self, *, timeout: float | None = None) -> str:
        raise RuntimeError("the browser session is gone (browser_closed)")


async def test_a_health_check_that_finds_the_browser_gone_is_a_crash_not_a_hang(
        autojump_clock: trio.testing.MockClock, tmp_path: Path) -> None:
    """The same as the browser's close event (which may come a moment later): the actor exits
    with `BrowserCrashed`, so its supervisor restarts it, whichever the session heard first."""
    settings = Settings(daemon=DaemonSettings(state_dir=str(tmp_path)), whatsapp=SETTINGS)
    actor = SessionActor(org_id=uuid.uuid4(), settings=settings, db=cast(Any, None),
                         driver=None, bus=EventBus())
    with pytest.raises(BrowserCrashed, match="browser gone, found by the health check"):
        await actor._health_check(cast(Any, ClosedPage()))
