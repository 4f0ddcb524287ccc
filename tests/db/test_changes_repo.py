"""The change feed's storage (`wad.db.repo.changes`): cursors per organization start at 1 and
grow by one in commit order, and a change rolled back with its transaction leaves neither an
entry nor a gap."""

from __future__ import annotations

import uuid

import pytest
import trio

from wad.db.pool import Database
from wad.db.repo import changes
from wad.db.repo import organizations as orgs_repo


async def _org(db: Database, name: str) -> uuid.UUID:
    return (await orgs_repo.create(db, name=name)).id


async def test_cursors_are_per_organization_and_follow_the_commit_order(db: Database) -> None:
    a, b = await _org(db, "Bishkek Tours"), await _org(db, "Osh Travel")
    assert await changes.record(db, organization_id=a, kind="t.one", data={"n": 1}) == 1
    assert await changes.record(db, organization_id=b, kind="t.one", data={"n": 1}) == 1
    took = trio.Event()
    later: list[int] = []

    async def slow_writer() -> None:
        async with db.transaction() as conn:
            assert await changes.record(conn, organization_id=a, kind="t.slow", data={}) == 2
            took.set()
            await trio.sleep(0.3)  # the other writer waits on the cursor row meanwhile
            assert later == []

    async def fast_writer() -> None:
        await took.wait()
        later.append(await changes.record(db, organization_id=a, kind="t.fast", data={}))

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow_writer)
            nursery.start_soon(fast_writer)
    assert later == [3]
    seen = await changes.page(db, organization_id=a, after=0, limit=10)
    assert [(c.seq, c.kind) for c in seen] == [(1, "t.one"), (2, "t.slow"), (3, "t.fast")]
    assert [c.data for c in await changes.page(db, organization_id=b, after=0, limit=10)] == [
        {"n": 1}]
    assert [c.seq for c in await changes.page(db, organization_id=a, after=1, limit=1)] == [2]


async def test_a_rolled_back_change_leaves_no_entry_and_no_gap(db: Database) -> None:
    org = await _org(db, "Karakol Tours")
    assert await changes.record(db, organization_id=org, kind="t.kept", data={}) == 1

    class Abandon(Exception):
        pass

    async def abandoned() -> None:
        async with db.transaction() as conn:
            await changes.record(conn, organization_id=org, kind="t.lost", data={})
            raise Abandon

    with pytest.raises(Abandon):
        await abandoned()
    assert await changes.record(db, organization_id=org, kind="t.next", data={}) == 2
    assert [c.kind for c in await changes.page(db, organization_id=org, after=0, limit=10)] == [
        "t.kept", "t.next"]
