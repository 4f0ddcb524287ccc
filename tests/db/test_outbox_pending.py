"""The pending count the triggers keep (`outbox_pending`, migration 0014) on real PostgreSQL:
it equals a count of the QUEUED and SENDING messages after every kind of change (queued one by
one and in bulk, claimed, sent, retried, failed, cancelled, expired, deleted), every new
organization has its row, deleting an organization with queued messages works, and the door
refuses on the kept count."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import trio

from wad.db.pool import Database
from wad.db.repo import locks
from wad.db.repo import organizations as orgs_repo
from wad.db.repo import outbox as outbox_repo
from wad.org.outbound import queue_message
from wad.org.outbound import settings as settings_mod
from wad.org.outbound.queue import Outgoing, RateLimited, queue_bulk
from wad.org.outbound.settings import RateLimitingPatch, SafetyPatch, SettingsPatch


async def counted(db: Database, org: uuid.UUID) -> tuple[int, int]:
    """(the kept count, a count of the rows)."""
    kept = await outbox_repo.count_pending(db, organization_id=org)
    rows = await db.fetchval("SELECT count(*) FROM outbox WHERE organization_id = $1 "
                             "AND status IN ('QUEUED', 'SENDING')", org)
    return kept, int(rows)


async def test_the_kept_count_follows_every_change(db: Database) -> None:
    org = (await orgs_repo.create(db, name="Counting Tours")).id
    other = (await orgs_repo.create(db, name="Other Tours")).id
    assert await counted(db, org) == (0, 0)
    await settings_mod.update(db, org, SettingsPatch(
        rate_limiting=RateLimitingPatch(messages_per_minute=20, messages_per_hour=1000,
                                        messages_per_day=5000),
        safety=SafetyPatch(enable_mass_sending=True)))
    items = []
    for i in range(6):  # the full door first, then the one-statement send
        item, created = await queue_message(db, organization_id=org, to=f"+99655500000{i % 2}",
                                            content=f"hello {i}")
        assert created
        items.append(item)
    assert await counted(db, org) == (6, 6)
    again, created = await queue_message(db, organization_id=org, to="+996555000000",
                                         content="x", idempotency_key="k")
    _, created_again = await queue_message(db, organization_id=org, to="+996555000000",
                                           content="x", idempotency_key="k")
    assert created and not created_again
    await queue_bulk(db, organization_id=org, messages=[
        Outgoing(to=f"+99655500010{i}", content="bulk") for i in range(4)])
    assert await counted(db, org) == (11, 11)
    await outbox_repo.enqueue(db, organization_id=other, to_phone="+996555000009", content="o")
    assert await counted(db, other) == (1, 1)

    now = datetime.now(UTC)
    claimed = await outbox_repo.claim_next(db, organization_id=org, wa_message_id="3EB0A1",
                                           now=now + timedelta(days=1))
    assert claimed is not None
    assert await counted(db, org) == (11, 11)  # SENDING still counts
    await outbox_repo.mark_sent(db, outbox_id=claimed.id)
    assert await counted(db, org) == (10, 10)
    claimed = await outbox_repo.claim_next(db, organization_id=org, wa_message_id="3EB0A2",
                                           now=now + timedelta(days=1))
    assert claimed is not None
    await outbox_repo.retry(db, outbox_id=claimed.id, error="offline",
                            not_before=now + timedelta(days=2))
    assert await counted(db, org) == (10, 10)  # back to QUEUED
    await outbox_repo.mark_failed(db, outbox_id=items[1].id, error="gave up")
    await outbox_repo.cancel(db, outbox_id=items[2].id)
    await outbox_repo.cancel(db, outbox_id=items[2].id)  # not queued any more: no change
    assert await counted(db, org) == (8, 8)
    await db.execute("UPDATE outbox SET expires_at = $2 WHERE id = $1", items[3].id, now)
    expired = await outbox_repo.expire_due(db, organization_id=org,
                                           now=now + timedelta(seconds=1))
    assert [e.id for e in expired] == [items[3].id]
    await db.execute("DELETE FROM outbox WHERE id = $1", items[4].id)
    await db.execute("DELETE FROM outbox WHERE id = $1", items[1].id)  # FAILED: no change
    assert await counted(db, org) == (6, 6)
    assert await counted(db, other) == (1, 1)  # untouched throughout

    # Deleting an organization takes its queue and its count with it.
    await db.execute("DELETE FROM organizations WHERE id = $1", other)
    assert await db.fetchval("SELECT count(*) FROM outbox_pending WHERE organization_id = $1",
                             other) == 0
    assert await counted(db, org) == (6, 6)


async def test_the_door_refuses_on_the_kept_count(db: Database) -> None:
    org = (await orgs_repo.create(db, name="Full Tours")).id
    await settings_mod.update(db, org, SettingsPatch(rate_limiting=RateLimitingPatch(
        messages_per_minute=3, messages_per_hour=3)))
    for i in range(3):
        await queue_message(db, organization_id=org, to="+996555000001", content=f"m{i}")
    with pytest.raises(RateLimited):  # the one-statement send, then the full door
        await queue_message(db, organization_id=org, to="+996555000001", content="one more")
    # The count, not the rows, is what the door reads: a count one short lets one more in.
    await db.execute("UPDATE outbox_pending SET pending = 2 WHERE organization_id = $1", org)
    _, created = await queue_message(db, organization_id=org, to="+996555000001",
                                     content="let in")
    assert created


async def test_a_status_change_waiting_for_the_queue_lock_cannot_deadlock_the_door(
        db: Database) -> None:
    """A transaction that changes a message's status and then waits for the organization's
    queueing lock, while the door holding that lock queues a message: both finish (the count
    moves at commit, so neither holds its row while waiting)."""
    org = (await orgs_repo.create(db, name="Locking Tours")).id
    item, _ = await outbox_repo.enqueue(db, organization_id=org, to_phone="+996555000001",
                                     content="first")
    door_locked, changed = trio.Event(), trio.Event()

    async def door() -> None:
        async with db.transaction() as tx:
            await locks.lock_in_transaction(tx, name=f"wad.outbox:{org}")
            door_locked.set()
            await changed.wait()
            await trio.sleep(0.2)  # the other transaction is waiting for the lock by now
            await outbox_repo.enqueue(tx, organization_id=org, to_phone="+996555000002",
                                      content="second")

    async def status_change() -> None:
        await door_locked.wait()
        async with db.transaction() as tx:
            assert await outbox_repo.cancel(tx, outbox_id=item.id) is not None
            changed.set()
            await locks.lock_in_transaction(tx, name=f"wad.outbox:{org}")

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(door)
            nursery.start_soon(status_change)
    assert await counted(db, org) == (1, 1)
