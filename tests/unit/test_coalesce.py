"""Calls made at about the same time run as one batch; every call is answered by a batch that
started after it was made; a call that fails, fails alone; an unreachable database fails the
whole batch at once."""

from __future__ import annotations

from collections.abc import Sequence

import trio
import trio.testing

from wad.db.coalesce import Coalesced


class Doubler:
    """A batched step that doubles numbers, records its batches and refuses 13."""

    def __init__(self, error: Exception | None = None) -> None:
        self.batches: list[list[int]] = []
        self.error = error

    async def run_many(self, args: Sequence[int]) -> list[int]:
        self.batches.append(list(args))
        await trio.sleep(0.01)  # a round trip: calls made meanwhile wait for the next batch
        if 13 in args:
            raise self.error or ValueError("13 refused")
        return [2 * a for a in args]


async def call_all(step: Coalesced[int, int], args: list[int]) -> dict[int, int | Exception]:
    found: dict[int, int | Exception] = {}

    async def one(arg: int) -> None:
        try:
            found[arg] = await step(arg)
        except Exception as exc:
            found[arg] = exc

    async with trio.open_nursery() as nursery:
        for arg in args:
            nursery.start_soon(one, arg)
    return found


async def test_calls_made_together_run_as_one_batch_and_each_gets_its_answer() -> None:
    doubler = Doubler()
    step = Coalesced(doubler.run_many)
    async with trio.open_nursery() as nursery:
        await nursery.start(step.run)
        found = await call_all(step, list(range(10)))
        assert found == {n: 2 * n for n in range(10)}
        assert [sorted(b) for b in doubler.batches] == [list(range(10))]  # (in any order)
        assert step.batches == 1
        # Calls made while a batch runs go together into the next one.
        found = await call_all(step, [20, 21])
        assert found == {20: 40, 21: 42} and step.batches == 2
        nursery.cancel_scope.cancel()


async def test_a_call_that_fails_fails_alone() -> None:
    doubler = Doubler()
    step = Coalesced(doubler.run_many)
    async with trio.open_nursery() as nursery:
        await nursery.start(step.run)
        found = await call_all(step, [1, 13, 2])
        nursery.cancel_scope.cancel()
    assert found[1] == 2 and found[2] == 4
    assert isinstance(found[13], ValueError)
    # The batch, then each of its calls alone.
    first, *alone = doubler.batches
    assert sorted(first) == [1, 2, 13] and alone == [[n] for n in first]


async def test_an_unreachable_database_fails_every_call_of_the_batch_at_once() -> None:
    doubler = Doubler(error=ConnectionRefusedError("database down"))
    step = Coalesced(doubler.run_many)
    async with trio.open_nursery() as nursery:
        await nursery.start(step.run)
        found = await call_all(step, [1, 13, 2])
        nursery.cancel_scope.cancel()
    assert all(isinstance(found[n], ConnectionRefusedError) for n in (1, 13, 2))
    assert [sorted(b) for b in doubler.batches] == [[1, 2, 13]]  # not tried one by one


async def test_a_batch_answering_the_wrong_count_fails_its_calls() -> None:
    async def short(args: Sequence[int]) -> list[int]:
        return list(args)[:1]

    step = Coalesced(short)
    async with trio.open_nursery() as nursery:
        await nursery.start(step.run)
        found = await call_all(step, [1, 2])
        nursery.cancel_scope.cancel()
    assert found == {1: 1, 2: 2}  # the batch failed; alone, each call's count is right


async def test_every_answer_comes_from_a_batch_started_after_the_call(
        autojump_clock: trio.testing.MockClock) -> None:
    rows = {"a": 1}
    fetched: list[list[str]] = []

    async def fetch_many(keys: Sequence[str]) -> list[int]:
        fetched.append(list(keys))
        snapshot = dict(rows)  # what a query started now sees
        await trio.sleep(1)
        return [snapshot[k] for k in keys]

    step: Coalesced[str, int] = Coalesced(fetch_many)
    answers: list[int] = []

    async def ask() -> None:
        answers.append(await step("a"))

    async with trio.open_nursery() as nursery:
        await nursery.start(step.run)
        nursery.start_soon(ask)
        await trio.sleep(0.5)  # the first batch has already read "a" = 1
        rows["a"] = 2  # a change committed before the second call is made
        nursery.start_soon(ask)
        await trio.sleep(3)
        nursery.cancel_scope.cancel()
    assert answers == [1, 2]  # not the first batch's answer, which began before the change
    assert fetched == [["a"], ["a"]]
