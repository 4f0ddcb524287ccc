"""Playwright on trio-asyncio: after each message from its driver Playwright yields until the
loop has no callbacks waiting; `expose_ready_queue` lets it see that on a trio-asyncio loop
(whose own `_ready` is an always-true placeholder, which cost 100 loop turns per message)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import trio
import trio_asyncio
from playwright._impl.utils.tasks import wait_for_next_task
from trio_asyncio import aio_as_trio

from wad.browser.driver import expose_ready_queue


def _count_turns(loop: Any, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the callbacks scheduled on `loop` (each asyncio task step is one)."""
    turns = [0]
    call_soon = loop.call_soon

    def counting(*args: Any, **kwargs: Any) -> Any:
        turns[0] += 1
        return call_soon(*args, **kwargs)

    monkeypatch.setattr(loop, "call_soon", counting)
    return turns


async def test_the_placeholder_made_playwright_take_every_turn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with trio_asyncio.open_loop() as loop:
        assert loop._ready  # the placeholder: "callbacks waiting" even when none are
        turns = _count_turns(loop, monkeypatch)
        await aio_as_trio(wait_for_next_task)()
        assert turns[0] >= 100


async def test_with_the_real_queue_playwright_yields_only_while_callbacks_wait(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with trio_asyncio.open_loop() as loop:
        expose_ready_queue(loop)
        expose_ready_queue(loop)  # twice is once
        ran: list[int] = []

        async def probe() -> list[object]:
            # Read from inside the loop's work, as Playwright reads it.
            running = asyncio.get_running_loop()
            seen: list[object] = [bool(running._ready)]  # type: ignore[attr-defined]
            running.call_soon(ran.append, 1)
            seen += [bool(running._ready), len(running._ready)]  # type: ignore[attr-defined]
            await asyncio.sleep(0)  # the callback queued first runs first
            seen += [ran == [1], bool(running._ready)]  # type: ignore[attr-defined]
            return seen

        assert await aio_as_trio(probe)() == [False, True, 1, True, False]
        turns = _count_turns(loop, monkeypatch)
        await aio_as_trio(wait_for_next_task)()
        assert turns[0] < 10
        loop._ready.clear()  # asyncio's close() clears it: harmless


async def test_a_loop_without_the_placeholder_is_left_alone() -> None:
    class Other:
        _ready = [1]
        _q_send = trio.open_memory_channel[int](1)[0]

    other = Other()
    expose_ready_queue(other)
    assert other._ready == [1]
