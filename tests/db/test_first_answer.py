"""The time to first answer (issue 18, part 5): what it counts, written out of order as catch-up
and imports store messages, and the `wad_first_answer_seconds` histogram fed by outgoing
messages. The field on the conversation in the read API: tests/db/test_read_api.py; end to end
through the simulator: tests/live/test_read_api_live.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import trio

from tests.support.metrics import parse, value
from wad import payloads
from wad.bus import EventBus, MessageSent
from wad.db.models import NewMessage
from wad.db.pool import Database
from wad.db.repo import answers as answers_repo
from wad.db.repo import clients as clients_repo
from wad.db.repo import conversations as conversations_repo
from wad.db.repo import messages as messages_repo
from wad.observe.metrics import Metrics

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
CHAT = "996555123456@c.us"


async def add_message(db: Database, org: uuid.UUID, conversation: uuid.UUID | None,
                      direction: str, at: datetime, body: str, chat: str = CHAT
                      ) -> uuid.UUID:
    row, created = await messages_repo.insert_if_absent(db, message=NewMessage(
        organization_id=org, wa_message_id=f"wa-{uuid.uuid4().hex}", wa_chat_id=chat,
        direction=direction,  # type: ignore[arg-type]
        sender="CLIENT" if direction == "IN" else "HUMAN", sent_at=at,
        status="RECEIVED" if direction == "IN" else "SENT", body=body,
        conversation_id=conversation, processing_state="DONE"))
    assert created
    return row.id


async def new_org(db: Database) -> uuid.UUID:
    org = uuid.uuid4()
    await db.execute("INSERT INTO organizations (id, name) VALUES ($1, 'Tours')", org)
    return org


async def test_first_answer_times_follow_the_definition(db: Database) -> None:
    """Questions and answers, written out of order (as catch-up and imports store them)."""
    org = await new_org(db)
    client, _ = await clients_repo.upsert(db, organization_id=org, phone="+996555123456")
    conversation, _ = await conversations_repo.get_or_create_active(
        db, organization_id=org, client_id=client.id)
    script = [  # (seconds after T0, direction)
        (0, "IN"), (10, "IN"), (70, "OUT"), (80, "OUT"), (200, "IN"), (230, "OUT"),
        (300, "IN"), (300, "IN")]
    ids: dict[int, uuid.UUID] = {}
    for k in (5, 0, 7, 2, 4, 1, 3, 6):
        at, direction = script[k]
        ids[k] = await add_message(db, org, conversation.id, direction,
                                   T0 + timedelta(seconds=at), f"message {k}")
    times = (await answers_repo.for_conversations(db, conversation_ids=[conversation.id])
             )[conversation.id]
    assert times.first_answer_seconds == 70.0
    assert times.last_answer_seconds == 30.0
    assert times.awaiting_answer_since == T0 + timedelta(seconds=300)
    answered = {k: await answers_repo.answered_by(db, message_id=ids[k],
                                                  conversation_id=conversation.id)
                for k in (2, 3, 5)}
    assert answered == {2: 70.0, 3: None, 5: 30.0}
    # The client's message is answered: nothing waits; the latest answer counts.
    late = await add_message(db, org, conversation.id, "OUT",
                             T0 + timedelta(seconds=345), "answer")
    times = (await answers_repo.for_conversations(db, conversation_ids=[conversation.id])
             )[conversation.id]
    assert (times.first_answer_seconds, times.last_answer_seconds,
            times.awaiting_answer_since) == (70.0, 45.0, None)
    assert await answers_repo.answered_by(db, message_id=late,
                                          conversation_id=conversation.id) == 45.0
    # A conversation the business opened: no question, nothing to answer.
    other, _ = await clients_repo.upsert(db, organization_id=org, phone="+996555123457")
    opened, _ = await conversations_repo.get_or_create_active(db, organization_id=org,
                                                              client_id=other.id)
    first = await add_message(db, org, opened.id, "OUT", T0, "Offer!",
                              chat="996555123457@c.us")
    assert await answers_repo.answered_by(db, message_id=first, conversation_id=opened.id) \
        is None
    times = (await answers_repo.for_conversations(db, conversation_ids=[opened.id]))[opened.id]
    assert (times.first_answer_seconds, times.last_answer_seconds,
            times.awaiting_answer_since) == (None, None, None)


async def test_outgoing_messages_feed_the_histogram(db: Database, nursery: trio.Nursery) -> None:
    bus = EventBus()
    metrics = Metrics(db=db, bus=bus)
    await nursery.start(metrics.run)
    org = await new_org(db)
    client, _ = await clients_repo.upsert(db, organization_id=org, phone="+996555123456")
    conversation, _ = await conversations_repo.get_or_create_active(
        db, organization_id=org, client_id=client.id)

    def sent(message_id: uuid.UUID, at: datetime, conversation_id: uuid.UUID | None,
             client_id: uuid.UUID | None = client.id) -> None:
        bus.publish(MessageSent(org_id=org, message=payloads.Message(
            id=message_id, organization_id=org, wa_message_id="x", wa_chat_id=CHAT,
            direction="OUT", sender="HUMAN", sent_at=at, status="SENT",
            conversation_id=conversation_id, client_id=client_id)))

    async def answers() -> tuple[float | None, float | None]:
        samples = parse((await metrics.render()).decode())
        return (value(samples, "wad_first_answer_seconds_count", organization=str(org)),
                value(samples, "wad_first_answer_seconds_sum", organization=str(org)))

    async def until(count: float) -> tuple[float | None, float | None]:
        with trio.fail_after(10):
            while (found := await answers())[0] != count:
                await trio.sleep(0.02)
        return found

    await add_message(db, org, conversation.id, "IN", T0, "Salam! A tour for two?")
    await add_message(db, org, conversation.id, "IN", T0 + timedelta(seconds=20), "In July")
    # The business writes first elsewhere: nothing is answered there.
    opener = await add_message(db, org, None, "OUT", T0, "Offer!", chat="996555000111@c.us")
    sent(opener, T0, None, None)
    # The answer, sent from the queue with its conversation.
    answer = await add_message(db, org, conversation.id, "OUT", T0 + timedelta(seconds=95),
                               "Yes, 450 USD")
    sent(answer, T0 + timedelta(seconds=95), conversation.id)
    assert await until(1) == (1, 95.0)
    # A second outgoing message answers nothing new.
    more = await add_message(db, org, conversation.id, "OUT", T0 + timedelta(seconds=99),
                             "Shall I book?")
    sent(more, T0 + timedelta(seconds=99), conversation.id)
    # The client asks again; the answer is typed on the phone and reaches the bus before the
    # inbound pipeline links it to its conversation: the client's active one is meant.
    await add_message(db, org, conversation.id, "IN", T0 + timedelta(seconds=300), "Yes!")
    typed = await add_message(db, org, None, "OUT", T0 + timedelta(seconds=312), "Booked")
    sent(typed, T0 + timedelta(seconds=312), None)
    assert await until(2) == (2, 107.0)
    # In order: `more` was looked up (and not counted) before `typed` was.
    samples = parse((await metrics.render()).decode())
    assert value(samples, "wad_first_answer_seconds_bucket", organization=str(org),
                 le="15.0") == 1
    assert value(samples, "wad_first_answer_seconds_bucket", organization=str(org),
                 le="120.0") == 2
