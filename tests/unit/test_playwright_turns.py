"""`wad.browser.driver.adapt_loop`: Playwright's wait "for the next task" after each driver
message ends as soon as the trio-asyncio loop is idle, instead of turning the loop its maximum
of 100 times per message, which cost about 100 ms of CPU per incoming WhatsApp message (issue
20); and callbacks are scheduled without asyncio's debug-mode `inspect` check."""

from __future__ import annotations

import asyncio
import inspect
import types
from collections.abc import AsyncIterator

import pytest
import trio
import trio_asyncio
from playwright._impl import transport
from playwright._impl.utils import tasks

from wad.browser.driver import adapt_loop


@pytest.fixture
async def trio_asyncio_loop() -> AsyncIterator[asyncio.AbstractEventLoop]:
    async with trio_asyncio.open_loop() as loop:
        yield loop


async def _turns_of_waiting(monkeypatch: pytest.MonkeyPatch) -> int:
    """How many turns of the loop Playwright's `wait_for_next_task` takes on an idle loop."""
    turns = 0

    async def counted_sleep(delay: float) -> None:
        nonlocal turns
        turns += 1
        await asyncio.sleep(delay)

    monkeypatch.setattr(tasks, "asyncio", types.SimpleNamespace(
        sleep=counted_sleep, get_running_loop=asyncio.get_running_loop))
    await trio_asyncio.aio_as_trio(tasks.wait_for_next_task)()
    return turns


async def test_the_wait_ends_once_the_loop_is_idle(
        trio_asyncio_loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    adapt_loop(trio_asyncio_loop)

    async def queued_behind_this_task() -> list[int]:
        ready = trio_asyncio_loop._ready  # type: ignore[attr-defined]
        before = len(ready)
        trio_asyncio_loop.call_soon(lambda: None)
        return [before, len(ready)]

    assert await trio_asyncio.aio_as_trio(queued_behind_this_task)() == [0, 1]
    assert await _turns_of_waiting(monkeypatch) <= 2


async def test_without_it_every_driver_message_costs_a_hundred_turns(
        trio_asyncio_loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    # What made the fix necessary: trio-asyncio's placeholder for `_ready` is never empty.
    assert await _turns_of_waiting(monkeypatch) == 100


def test_playwright_still_waits_on_the_loops_ready_queue() -> None:
    # Should Playwright change how it waits, the fix above may no longer apply: look again.
    assert transport.wait_for_next_task is tasks.wait_for_next_task
    assert "_ready" in inspect.getsource(tasks.wait_for_next_task)


async def test_callbacks_are_scheduled_without_the_debug_mode_check(
        trio_asyncio_loop: asyncio.AbstractEventLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    inspected: list[object] = []
    real = asyncio.coroutines.iscoroutinefunction

    def spy(func: object) -> bool:
        inspected.append(func)
        return real(func)

    def nothing() -> None:
        pass

    monkeypatch.setattr(asyncio.coroutines, "iscoroutinefunction", spy)
    trio_asyncio_loop.call_soon(nothing)
    assert inspected == [nothing]  # trio-asyncio's own behaviour
    adapt_loop(trio_asyncio_loop)
    done = trio.Event()
    trio_asyncio_loop.call_soon(done.set)
    await done.wait()
    assert inspected == [nothing]


async def _timers_left_after_cancelling(loop: asyncio.AbstractEventLoop, count: int) -> int:
    """Set `count` one-minute timers (as asyncpg does for each query), cancel them all, let
    the loop take them in, and answer how many are still in its heap."""
    for handle in [loop.call_later(60, lambda: None) for _ in range(count)]:
        handle.cancel()
    for _ in range(2):  # two trips: the timers are taken in, then the heap looked at
        done = trio.Event()
        loop.call_soon(done.set)
        await done.wait()
    return len(loop._timers)  # type: ignore[attr-defined]


async def test_cancelled_timers_leave_the_heap_before_they_are_due(
        trio_asyncio_loop: asyncio.AbstractEventLoop) -> None:
    adapt_loop(trio_asyncio_loop)
    assert await _timers_left_after_cancelling(trio_asyncio_loop, 5000) < 200


async def test_without_it_cancelled_timers_stay_until_they_are_due(
        trio_asyncio_loop: asyncio.AbstractEventLoop) -> None:
    # What made the sweep necessary: trio-asyncio ignores a timer's cancellation.
    assert await _timers_left_after_cancelling(trio_asyncio_loop, 5000) == 5000
