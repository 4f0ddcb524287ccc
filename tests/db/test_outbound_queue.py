"""The door of the send queue on Trio's mock clock (time moves only when the test jumps it):
the hour and day limits refuse with the right reset time, what is queued counts, idempotency
keys answer the first message, the bulk rules, and the agent API."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
import trio.testing

from wad.bus import EventBus, Queued
from wad.db.pool import Database
from wad.db.repo import conversations as conversations_repo
from wad.db.repo import organizations as orgs_repo
from wad.db.repo import outbox as outbox_repo
from wad.errors import NotFound
from wad.org import outbound
from wad.org.outbound import queue_bulk, queue_message
from wad.org.outbound import settings as settings_mod
from wad.org.outbound.limits import TrioClock
from wad.org.outbound.settings import RateLimitingPatch, SafetyPatch, SettingsPatch

EPOCH = datetime(2025, 7, 1, 9, 0, tzinfo=UTC)
CLIENT = "+996555123456"


@pytest.fixture
async def clock(mock_clock: trio.testing.MockClock) -> TrioClock:
    """The limits' clock: EPOCH when the test starts, then moved only by the mock clock's jumps."""
    return TrioClock(EPOCH)


async def new_org(db: Database, **limits: Any) -> uuid.UUID:
    org = await orgs_repo.create(db, name="Issyk-Kul Tours")
    safety = limits.pop("safety", None)
    await settings_mod.update(db, org.id, SettingsPatch(
        rate_limiting=RateLimitingPatch(**limits), safety=safety or SafetyPatch()))
    return org.id


async def send_now(db: Database, org: uuid.UUID, clock: TrioClock, count: int) -> None:
    """`count` messages queued and sent at the clock's now (as the outbound actor records)."""
    for i in range(count):
        item, _ = await queue_message(db, organization_id=org, to=CLIENT, content=f"m{i}",
                                      clock=clock)
        claimed = await outbox_repo.claim_next(db, organization_id=org, wa_message_id=f"K{i}"
                                               f"{clock.now().timestamp():.0f}",
                                               now=clock.now())
        assert claimed is not None
        assert claimed.id == item.id
        await outbox_repo.mark_sent(db, outbox_id=item.id, at=clock.now())


async def send_in_batches(db: Database, org: uuid.UUID, clock: TrioClock,
                          mock_clock: trio.testing.MockClock, *batches: tuple[int, float]) -> None:
    """For each `(count, then_s)`: `count` messages sent at the clock's now, then the mock clock
    moved on `then_s` seconds."""
    for count, then_s in batches:
        await send_now(db, org, clock, count)
        mock_clock.jump(then_s)


async def test_the_hour_limit_refuses_with_the_time_it_has_room(
        mock_clock: trio.testing.MockClock, clock: TrioClock, db: Database) -> None:
    org = await new_org(db, messages_per_minute=10, messages_per_hour=20, messages_per_day=40)
    await send_in_batches(db, org, clock, mock_clock, (10, 600), (10, 0))
    with pytest.raises(outbound.RateLimited) as caught:
        await queue_message(db, organization_id=org, to=CLIENT, content="one too many",
                            clock=clock)
    refusal = caught.value.refusal
    assert (refusal.window, refusal.limit, refusal.remaining) == ("hour", 20, 0)
    assert refusal.reset_at == EPOCH + timedelta(hours=1)  # the first ten leave the hour then
    assert refusal.retry_after_s(clock.now()) == 3000
    assert "hour limit reached: at most 20 messages an hour; 0 remaining" in str(caught.value)
    mock_clock.jump(2999)
    with pytest.raises(outbound.RateLimited):
        await queue_message(db, organization_id=org, to=CLIENT, content="still", clock=clock)
    mock_clock.jump(1)
    item, created = await queue_message(db, organization_id=org, to=CLIENT, content="now",
                                        clock=clock)
    assert created
    assert item.status == "QUEUED"


async def test_the_day_limit_refuses_though_the_hour_has_room(
        mock_clock: trio.testing.MockClock, clock: TrioClock, db: Database) -> None:
    org = await new_org(db, messages_per_minute=10, messages_per_hour=10, messages_per_day=20)
    await send_in_batches(db, org, clock, mock_clock, (10, 3600), (10, 3600))
    with pytest.raises(outbound.RateLimited) as caught:
        await queue_message(db, organization_id=org, to=CLIENT, content="x", clock=clock)
    refusal = caught.value.refusal
    assert (refusal.window, refusal.limit, refusal.remaining) == ("day", 20, 0)
    assert refusal.reset_at == EPOCH + timedelta(days=1)
    assert refusal.retry_after_s(clock.now()) == 22 * 3600


async def test_queued_messages_count_and_the_minute_is_never_refused(
        mock_clock: trio.testing.MockClock, clock: TrioClock, db: Database) -> None:
    org = await new_org(db, messages_per_minute=5, messages_per_hour=12, messages_per_day=100)
    for i in range(12):  # more than a minute's worth: they will wait in the queue
        await queue_message(db, organization_id=org, to=CLIENT, content=f"m{i}", clock=clock)
    with pytest.raises(outbound.RateLimited) as caught:
        await queue_message(db, organization_id=org, to=CLIENT, content="m12", clock=clock)
    assert caught.value.refusal.window == "hour"
    # Nothing was sent yet: the queued ones leave the window an hour after they go, from now.
    assert caught.value.refusal.reset_at == EPOCH + timedelta(hours=1)


async def test_an_idempotency_key_answers_the_first_message_even_at_the_limit(
        mock_clock: trio.testing.MockClock, clock: TrioClock, db: Database) -> None:
    org = await new_org(db, messages_per_minute=1, messages_per_hour=1, messages_per_day=1)
    bus = EventBus()
    with bus.listen(kinds={Queued}) as woken:
        first, created = await queue_message(db, organization_id=org, to="+996 555 12-34-56",
                                             content="Ваш тур подтверждён", clock=clock,
                                             idempotency_key="crm-42", bus=bus)
        assert created
        again, created = await queue_message(db, organization_id=org, to=CLIENT,
                                             content="different text", clock=clock,
                                             idempotency_key="crm-42", bus=bus)
        assert not created
        assert again == first
        assert woken.receive_nowait() == Queued(org_id=org, count=1)
        with pytest.raises(trio.WouldBlock):
            woken.receive_nowait()  # the repeat woke no one
    assert first.to_phone == CLIENT
    assert first.not_before == EPOCH
    with pytest.raises(outbound.RateLimited):
        await queue_message(db, organization_id=org, to=CLIENT, content="another", clock=clock,
                            idempotency_key="crm-43")


async def test_the_message_gets_its_client_and_conversation(db: Database) -> None:
    org = await new_org(db)
    item, _ = await queue_message(db, organization_id=org, to=CLIENT, content="hello")
    assert item.client_id is not None
    assert item.conversation_id is not None
    conversation = await conversations_repo.get(db, conversation_id=item.conversation_id)
    assert conversation is not None
    assert (conversation.client_id, conversation.wa_chat_id) == (item.client_id,
                                                                 "996555123456@c.us")
    same, _ = await queue_message(db, organization_id=org, to=CLIENT, content="again",
                                  conversation_id=item.conversation_id)
    assert same.conversation_id == item.conversation_id
    with pytest.raises(outbound.InvalidMessage) as caught:
        await queue_message(db, organization_id=org, to="+996700654321", content="x",
                            conversation_id=item.conversation_id)
    assert caught.value.field == "conversationId"
    with pytest.raises(outbound.InvalidMessage) as caught:
        await queue_message(db, organization_id=org, to=CLIENT, content="x",
                            conversation_id=uuid.uuid4())
    assert caught.value.field == "conversationId"


@pytest.mark.parametrize(("to", "content", "field", "words"), [
    ("555123456", "hi", "to", "has no country code"),
    ("+996 55", "hi", "to", "wrong number of digits"),
    ("hello", "hi", "to", "no country code"),
    (CLIENT, "", "content", "must not be empty"),
    (CLIENT, "   ", "content", "must not be empty"),
    (CLIENT, "x" * 4097, "content", "at most 4096 characters"),
])
async def test_invalid_messages_are_refused(db: Database, to: str, content: str, field: str,
                                            words: str) -> None:
    org = await new_org(db)
    with pytest.raises(outbound.InvalidMessage) as caught:
        await queue_message(db, organization_id=org, to=to, content=content)
    assert caught.value.field == field
    assert words in str(caught.value)
    assert await outbox_repo.count_pending(db, organization_id=org) == 0


async def test_an_unknown_organization_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        await queue_message(db, organization_id=uuid.uuid4(), to=CLIENT, content="x")


# -- bulk -----------------------------------------------------------------------------------------


def batch(count: int, start: int = 0) -> list[outbound.Outgoing]:
    return [outbound.Outgoing(to=f"+9965551{i:05d}",
                              content=f"Скидка 10% на туры, клиент {i}")
            for i in range(start, start + count)]


async def test_bulk_is_refused_while_mass_sending_is_off(db: Database) -> None:
    org = await new_org(db)
    with pytest.raises(outbound.MassSendingDisabled):
        await queue_bulk(db, organization_id=org, messages=batch(3))
    assert await outbox_repo.count_pending(db, organization_id=org) == 0


async def test_a_batch_above_the_batch_size_needs_confirmation(
        mock_clock: trio.testing.MockClock, clock: TrioClock, db: Database) -> None:
    org = await new_org(db, safety=SafetyPatch(enable_mass_sending=True))
    with pytest.raises(outbound.ConfirmationRequired) as caught:
        await queue_bulk(db, organization_id=org, messages=batch(51))
    assert "send it again with `confirm: true`" in str(caught.value)
    assert await outbox_repo.count_pending(db, organization_id=org) == 0
    result = await queue_bulk(db, organization_id=org, messages=batch(51), confirm=True,
                              clock=clock)
    assert len(result.queued) == 51
    assert result.failed == []
    # Spread over time at the minute rate (10 a minute: one every 6 s).
    assert [item.not_before for _, item, _ in result.queued[:3]] == [
        EPOCH, EPOCH + timedelta(seconds=6), EPOCH + timedelta(seconds=12)]
    assert result.queued[-1][1].not_before == EPOCH + timedelta(seconds=300)
    # Without requireConfirmation, no confirmation is needed.
    await settings_mod.update(db, org, SettingsPatch(safety=SafetyPatch(
        require_confirmation=False)))
    assert len((await queue_bulk(db, organization_id=org, messages=batch(49, 100))).queued) == 49


async def test_the_whole_batch_is_checked_against_the_day_limit(
        mock_clock: trio.testing.MockClock, clock: TrioClock, db: Database) -> None:
    org = await new_org(db, messages_per_minute=10, messages_per_hour=100,
                        messages_per_day=100, safety=SafetyPatch(enable_mass_sending=True))
    await send_now(db, org, clock, 85)
    with pytest.raises(outbound.RateLimited) as caught:
        await queue_bulk(db, organization_id=org, messages=batch(20), clock=clock)
    refusal = caught.value.refusal
    assert (refusal.window, refusal.remaining) == ("day", 15)
    assert await outbox_repo.count_pending(db, organization_id=org) == 0  # none of it queued
    result = await queue_bulk(db, organization_id=org, messages=batch(15), clock=clock)
    assert len(result.queued) == 15


async def test_bad_messages_of_a_batch_are_reported_and_the_rest_queued(db: Database) -> None:
    org = await new_org(db, safety=SafetyPatch(enable_mass_sending=True))
    messages = [*batch(2), outbound.Outgoing(to="12345", content="hi"), *batch(1, 10),
                outbound.Outgoing(to=CLIENT, content="")]
    result = await queue_bulk(db, organization_id=org, messages=messages)
    assert [index for index, _, _ in result.queued] == [0, 1, 3]
    assert [(index, to) for index, to, _ in result.failed] == [(2, "12345"), (4, CLIENT)]
    assert "`messages[2].to`: '12345' has no country code" in result.failed[0][2]
    assert result.failed[1][2] == "`messages[4].content`: must not be empty"


async def test_a_batch_of_more_than_100_is_refused(db: Database) -> None:
    org = await new_org(db, safety=SafetyPatch(enable_mass_sending=True))
    with pytest.raises(outbound.BatchTooLarge):
        await queue_bulk(db, organization_id=org, messages=batch(101), confirm=True)


# -- agents ---------------------------------------------------------------------------------------


async def test_an_agents_message_has_priority_5_sender_ai_and_its_name(
        mock_clock: trio.testing.MockClock, clock: TrioClock, db: Database) -> None:
    org = await new_org(db)
    item = await outbound.send_message_for_agent(
        db, organization_id=org, to=CLIENT, content="Тур на Иссык-Куль стоит 450 USD.",
        agent="sales-bot", delay_s=4.5, clock=clock)
    assert (item.priority, item.sender, item.agent_name) == (5, "AI", "sales-bot")
    assert item.not_before == EPOCH + timedelta(seconds=4.5)
    with pytest.raises(outbound.InvalidMessage):
        await outbound.send_message_for_agent(db, organization_id=org, to=CLIENT, content="x",
                                              agent="  ")


async def test_an_agents_batch_is_at_most_20(db: Database) -> None:
    org = await new_org(db, safety=SafetyPatch(enable_mass_sending=True))
    with pytest.raises(outbound.BatchTooLarge) as caught:
        await outbound.send_bulk_messages_for_agent(db, organization_id=org,
                                                    messages=batch(21), agent="campaign-bot")
    assert str(caught.value) == "a batch carries at most 20 messages (got 21)"
    result = await outbound.send_bulk_messages_for_agent(db, organization_id=org,
                                                         messages=batch(20), agent="campaign-bot")
    assert len(result.queued) == 20
    assert {(i.priority, i.sender, i.agent_name) for _, i, _ in result.queued} == {
        (5, "AI", "campaign-bot")}
    off = await new_org(db)
    with pytest.raises(outbound.MassSendingDisabled):
        await outbound.send_bulk_messages_for_agent(db, organization_id=off, messages=batch(2),
                                                    agent="campaign-bot")
