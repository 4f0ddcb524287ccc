"""The send queue's door in one round trip (`outbox.door`, migration 0013) on real PostgreSQL:
it reads after taking the organization's queueing lock, so a concurrent send that took the last
place is counted; and a send to a known conversation is still refused over the limit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
import trio

from wad.db.pool import Database
from wad.db.repo import organizations as orgs_repo
from wad.db.repo import outbox as outbox_repo
from wad.org.outbound import queue_message
from wad.org.outbound import settings as settings_mod
from wad.org.outbound.queue import RateLimited
from wad.org.outbound.settings import RateLimitingPatch, SettingsPatch

CLIENT = "+996555123456"


async def new_org(db: Database, per_hour: int) -> uuid.UUID:
    org = await orgs_repo.create(db, name="Issyk-Kul Tours")
    await settings_mod.update(db, org.id, SettingsPatch(rate_limiting=RateLimitingPatch(
        messages_per_minute=min(per_hour, 20), messages_per_hour=per_hour)))
    return org.id


def since() -> datetime:
    return datetime.now(UTC) - timedelta(days=1)


async def test_the_door_reads_after_the_lock_so_a_concurrent_send_counts(db: Database) -> None:
    org = await new_org(db, per_hour=10)
    first_read = trio.Event()
    first_committing = trio.Event()
    seen: list[tuple[bool, int]] = []

    async def first() -> None:
        async with db.transaction() as tx:
            state = await outbox_repo.door(tx, organization_id=org, idempotency_key=None,
                                           since=since(), to_phone=CLIENT)
            assert state is not None and state.pending == 0
            first_read.set()
            await trio.sleep(0.3)  # the second door asks meanwhile, and waits on the lock
            await outbox_repo.enqueue(tx, organization_id=org, to_phone=CLIENT, content="a")
            first_committing.set()

    async def second() -> None:
        await first_read.wait()
        asked_before_the_commit = not first_committing.is_set()
        async with db.transaction() as tx:
            state = await outbox_repo.door(tx, organization_id=org, idempotency_key=None,
                                           since=since(), to_phone=CLIENT)
            assert state is not None
            seen.append((asked_before_the_commit, state.pending))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        nursery.start_soon(second)
    # Asked while the first held the lock with its message not yet committed, and still saw
    # that message: the door read after the first's commit, so it waited for the lock.
    assert seen == [(True, 1)]


async def test_the_door_knows_the_number_the_key_and_the_session(db: Database) -> None:
    org = await new_org(db, per_hour=10)
    assert await outbox_repo.door(db, organization_id=uuid.uuid4(), idempotency_key=None,
                                  since=since(), to_phone=CLIENT) is None
    state = await outbox_repo.door(db, organization_id=org, idempotency_key="k1", since=since(),
                                   to_phone=CLIENT)
    assert state is not None
    assert (state.earlier_id, state.client_id, state.conversation_id) == (None, None, None)
    assert state.session_state is None and state.sent == [] and state.pending == 0
    item, created = await queue_message(db, organization_id=org, to=CLIENT, content="hi",
                                        idempotency_key="k1")
    assert created
    state = await outbox_repo.door(db, organization_id=org, idempotency_key="k1", since=since(),
                                   to_phone=CLIENT)
    assert state is not None
    assert state.earlier_id == item.id
    assert (state.client_id, state.conversation_id) == (item.client_id, item.conversation_id)
    assert state.pending == 1


async def test_a_send_to_a_known_conversation_is_refused_over_the_hour_limit(
        db: Database) -> None:
    org = await new_org(db, per_hour=3)
    first, _ = await queue_message(db, organization_id=org, to=CLIENT, content="m0")
    for i in (1, 2):  # the number's conversation is known from now on: the one-round-trip form
        item, _ = await queue_message(db, organization_id=org, to=CLIENT, content=f"m{i}")
        assert item.conversation_id == first.conversation_id
    with pytest.raises(RateLimited) as refused:
        await queue_message(db, organization_id=org, to=CLIENT, content="one too many")
    assert refused.value.refusal.window == "hour"
    assert refused.value.refusal.remaining == 0
    assert await outbox_repo.count_pending(db, organization_id=org) == 3


async def test_the_one_statement_send_queues_only_the_plain_case(db: Database) -> None:
    org = await new_org(db, per_hour=3)
    first, _ = await queue_message(db, organization_id=org, to=CLIENT, content="m0",
                                   idempotency_key="k0")  # the full door: makes the conversation
    document = (await orgs_repo.get(db, organization_id=org)).settings  # type: ignore[union-attr]
    now = datetime.now(UTC)

    async def send(content: str, *, to: str = CLIENT, key: str | None = None,
                   settings: dict[str, object] = document, hour_limit: int = 3
                   ) -> uuid.UUID | None:
        item = await outbox_repo.enqueue_at_door(
            db, organization_id=org, to_phone=to, content=content, priority=1, sender="HUMAN",
            agent_name=None, idempotency_key=key, now=now, not_before=now, expires_at=None,
            settings_document=dict(settings), windows=[(3600.0, hour_limit), (86400.0, 500)])
        return None if item is None else item.id

    queued = await send("m1")
    assert queued is not None
    item = await outbox_repo.get(db, outbox_id=queued)
    assert item is not None and item.status == "QUEUED"
    assert (item.client_id, item.conversation_id) == (first.client_id, first.conversation_id)
    events = await db.fetchval("SELECT count(*) FROM outbox_events WHERE outbox_id = $1", queued)
    assert events == 1
    # Each of these is left to the full door: nothing queued.
    assert await send("used key", key="k0") is None
    assert await send("stale settings", settings={**document, "other": 1}) is None
    assert await send("a new number", to="+996555000111") is None
    assert await send("over a limit of 2", hour_limit=2) is None  # 2 pending already
    await db.execute("INSERT INTO whatsapp_sessions (organization_id, sending_paused) "
                     "VALUES ($1, true)", org)
    assert await send("paused") is None
    await db.execute("UPDATE whatsapp_sessions SET sending_paused = false WHERE "
                     "organization_id = $1", org)
    assert await send("m2") is not None
    assert await send("over the limit of 3") is None  # 3 pending: full
    assert await outbox_repo.count_pending(db, organization_id=org) == 3
