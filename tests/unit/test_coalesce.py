"""Lookups sharing round trips (`wad.db.coalesce.Coalescer`), on Trio's mock clock: concurrent
lookups share one fetch, every answer comes from a fetch that started after it was asked, a
failure reaches every lookup of its fetch, a cancelled lookup strands nobody."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from wad.db.coalesce import Coalescer


class Table:
    """A store whose fetch takes 1 s and records what it was asked and what it saw."""

    def __init__(self) -> None:
        self.rows: dict[str, int] = {}
        self.fetches: list[list[str]] = []
        self.fail: Exception | None = None

    async def fetch(self, keys: list[str]) -> dict[str, int]:
        self.fetches.append(sorted(keys))
        snapshot = dict(self.rows)  # what a query started now sees
        await trio.sleep(1)
        if self.fail is not None:
            raise self.fail
        return {k: snapshot[k] for k in keys if k in snapshot}


async def test_one_lookup_alone_fetches_at_once(autojump_clock: trio.testing.MockClock) -> None:
    table = Table()
    table.rows["a"] = 1
    lookups = Coalescer(table.fetch)
    started = trio.current_time()
    assert await lookups.get("a") == 1
    assert await lookups.get("missing") is None
    assert trio.current_time() - started == pytest.approx(2)
    assert table.fetches == [["a"], ["missing"]]


async def test_lookups_asked_during_a_fetch_share_the_next(
        autojump_clock: trio.testing.MockClock) -> None:
    table = Table()
    table.rows.update(a=1, b=2, c=3)
    lookups = Coalescer(table.fetch)
    answers: dict[str, int | None] = {}

    async def ask(key: str) -> None:
        answers[key] = await lookups.get(key)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, "a")
        await trio.sleep(0.5)  # the fetch of "a" is under way
        for key in ("b", "c", "b", "zz"):
            nursery.start_soon(ask, key)
    assert answers == {"a": 1, "b": 2, "c": 3, "zz": None}
    assert table.fetches == [["a"], ["b", "c", "zz"]]
    assert lookups.fetches == 2


async def test_every_answer_comes_from_a_fetch_started_after_it_was_asked(
        autojump_clock: trio.testing.MockClock) -> None:
    table = Table()
    table.rows["a"] = 1
    lookups = Coalescer(table.fetch)
    answers: list[int | None] = []

    async def ask() -> None:
        answers.append(await lookups.get("a"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await trio.sleep(0.5)  # the first fetch has already read "a" = 1
        table.rows["a"] = 2  # a change committed before the second lookup is asked
        nursery.start_soon(ask)
    assert answers == [1, 2]  # not the first fetch's answer, which began before the change


async def test_a_failed_fetch_fails_every_lookup_of_it_and_the_next_fetch_runs(
        autojump_clock: trio.testing.MockClock) -> None:
    table = Table()
    table.rows["a"] = 1
    table.fail = ConnectionRefusedError("database down")
    lookups = Coalescer(table.fetch)
    errors: list[BaseException] = []

    async def ask(key: str) -> None:
        try:
            await lookups.get(key)
        except ConnectionRefusedError as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, "a")
        await trio.sleep(0.5)
        nursery.start_soon(ask, "a")
        nursery.start_soon(ask, "b")
    assert len(errors) == 3
    table.fail = None
    assert await lookups.get("a") == 1


async def test_a_cancelled_first_asker_strands_nobody(
        autojump_clock: trio.testing.MockClock) -> None:
    table = Table()
    table.rows.update(a=1, b=2)
    lookups = Coalescer(table.fetch)
    answers: dict[str, int | None] = {}

    async def ask(key: str) -> None:
        answers[key] = await lookups.get(key)

    async def give_up(key: str) -> None:
        with trio.move_on_after(0.3):
            await lookups.get(key)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask, "x")  # its fetch holds the slot for 1 s
        await trio.sleep(0.1)
        nursery.start_soon(give_up, "a")  # leads the next batch, and gives up while it waits
        await trio.sleep(0.1)
        nursery.start_soon(ask, "b")  # joins that batch, whose leader then goes
    assert answers == {"x": None, "b": 2}
    assert table.fetches == [["x"], ["b"]]  # the abandoned batch was never fetched
