"""When the lock connection counts as lost, on Trio's mock clock: a query that fails, or a ping
with no answer for the whole timeout; a slow answer on a loaded host is not a loss."""

from __future__ import annotations

from typing import Any, cast

import trio
import trio.testing

from wad.org.ownership import Ownership


class Connection:
    """Answers `SELECT true` after `delay` seconds (None: never), or raises `error`."""

    def __init__(self, delay: float | None = 0.0, error: Exception | None = None) -> None:
        self.delay = delay
        self.error = error

    async def fetchval(self, sql: str, *args: Any) -> Any:
        if self.error is not None:
            raise self.error
        if self.delay is None:
            await trio.sleep_forever()
        await trio.sleep(self.delay)
        return True

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        await self.fetchval(sql)
        return []


def owner(conn: Connection) -> Ownership:
    return Ownership(cast(Any, conn), "node")


async def test_a_slow_answer_is_not_a_loss(autojump_clock: trio.testing.MockClock) -> None:
    assert await owner(Connection(delay=9.0)).alive(timeout=12.0)


async def test_no_answer_for_the_whole_timeout_is_a_loss(
        autojump_clock: trio.testing.MockClock) -> None:
    started = trio.current_time()
    assert not await owner(Connection(delay=None)).alive(timeout=12.0)
    assert trio.current_time() - started == 12.0


async def test_a_failing_query_is_a_loss_at_once(autojump_clock: trio.testing.MockClock) -> None:
    started = trio.current_time()
    assert not await owner(Connection(error=ConnectionResetError("gone"))).alive(timeout=12.0)
    assert trio.current_time() == started


async def test_another_query_answering_meanwhile_counts(
        autojump_clock: trio.testing.MockClock) -> None:
    # A renewal holds the connection for 20 s and then answers: the ping queued behind it
    # timed out, but the connection did answer during the wait.
    conn = Connection(delay=20.0)
    watched = owner(conn)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watched.held_keys)  # the first query on the connection
        await trio.sleep(1)
        assert await watched.alive(timeout=12.0) is False  # 12 s, nothing answered yet
        assert await watched.alive(timeout=12.0) is True  # the renewal answered at 20 s
