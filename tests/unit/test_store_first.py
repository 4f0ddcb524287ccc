"""Storing before processing (`wad.org.inbound.priority.StoreFirst`), on Trio's mock clock:
messages at a human pace are processed at once; while any organization floods (many events in a
second, or many at once), processing everywhere waits until the flood has been quiet for a
while, and never longer than its bound."""

from __future__ import annotations

import uuid

import trio
import trio.testing

from wad.org.inbound.priority import StoreFirst


async def waited(gate: StoreFirst) -> float:
    started = trio.current_time()
    await gate.turn()
    return trio.current_time() - started


async def test_a_human_pace_never_waits(autojump_clock: trio.testing.MockClock) -> None:
    gate = StoreFirst(flood_rate=20, flood_batch=10, quiet_s=0.5, max_wait_s=2.0)
    orgs = [uuid.uuid4() for _ in range(10)]
    for _ in range(30):  # ten organizations at 5 messages a second each: 50 a second in all
        for org in orgs:
            gate.taken(org, 1)
            await trio.sleep(0.02)
        assert not gate.flooding
        assert await waited(gate) == 0


async def test_a_flood_holds_processing_until_it_is_quiet(
        autojump_clock: trio.testing.MockClock) -> None:
    gate = StoreFirst(flood_rate=20, flood_batch=10, quiet_s=0.5, max_wait_s=2.0)
    flooding, calm = uuid.uuid4(), uuid.uuid4()
    for _ in range(21):  # 21 events in a second, one at a time
        gate.taken(flooding, 1)
        await trio.sleep(0.01)
    assert gate.flooding
    gate.taken(calm, 1)  # another organization's lone message waits too
    assert gate.flooding
    # The flood's last batch was taken 0.01 s ago: processing goes on 0.5 s after it.
    assert abs(await waited(gate) - 0.49) < 1e-9
    assert not gate.flooding
    assert await waited(gate) == 0


async def test_events_taken_together_are_a_flood(autojump_clock: trio.testing.MockClock) -> None:
    gate = StoreFirst(flood_rate=20, flood_batch=10, quiet_s=0.5, max_wait_s=2.0)
    gate.taken(uuid.uuid4(), 9)
    assert not gate.flooding
    gate.taken(uuid.uuid4(), 10)
    assert gate.flooding


async def test_a_flood_that_goes_on_holds_processing_at_most_its_bound(
        autojump_clock: trio.testing.MockClock) -> None:
    gate = StoreFirst(flood_rate=20, flood_batch=10, quiet_s=0.5, max_wait_s=2.0)
    org = uuid.uuid4()
    waits: list[float] = []

    async def flood() -> None:
        while True:
            gate.taken(org, 50)
            await trio.sleep(0.1)

    async def process() -> None:
        for _ in range(3):
            waits.append(await waited(gate))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flood)
        await trio.sleep(0.05)  # the flood under way
        await process()
        nursery.cancel_scope.cancel()
    assert [round(w, 9) for w in waits] == [2.0, 2.0, 2.0]


async def test_a_window_of_a_second_counts_per_organization(
        autojump_clock: trio.testing.MockClock) -> None:
    gate = StoreFirst(flood_rate=20, flood_batch=10, quiet_s=0.5, max_wait_s=2.0)
    a, b = uuid.uuid4(), uuid.uuid4()
    for _ in range(2):  # 15 + 15 in the same second, from two organizations: neither floods
        gate.taken(a, 5)
        gate.taken(b, 5)
        gate.taken(a, 5)
        gate.taken(b, 5)
        gate.taken(a, 5)
        gate.taken(b, 5)
        await trio.sleep(1.0)  # a new window each time
    assert not gate.flooding
