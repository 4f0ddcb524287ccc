"""The inbound actor on a real database, fed the session's events directly (no browser): storing
once, processing into clients, conversations, languages and statuses, agent replies into the
outbound queue, plugin failures isolated, own messages, acks, edits, revokes, restarts.

The end-to-end tests against the simulator in Chromium are in `test_inbound_live.py`."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import trio
from structlog.testing import capture_logs

from tests.support.inbound import Agent, plugins_with, processed
from tests.support.inbound_actor import BASE_T, running, wa
from wad import hookimpl
from wad.browser import events as ev
from wad.config import InboundSettings
from wad.db.pool import Database
from wad.db.repo import changes, organizations
from wad.db.repo import clients as clients_repo
from wad.db.repo import conversations as conversations_repo
from wad.db.repo import messages as messages_repo
from wad.db.repo import outbox as outbox_repo
from wad.payloads import ClientStatusChange, MessageStatusChange
from wad.payloads import Message as MessagePayload


def agent_delays(*, processing: float, reply: tuple[float, float]) -> InboundSettings:
    """Inbound settings whose processing starts after exactly `processing` seconds and whose
    agent replies are queued after a delay drawn from `reply` (min, max)."""
    return InboundSettings(processing_delay_min_s=processing, processing_delay_max_s=processing,
                           reply_delay_min_s=reply[0], reply_delay_max_s=reply[1])


async def count_messages(db: Database, org: uuid.UUID) -> int:
    return int(await db.fetchval("SELECT count(*) FROM messages WHERE organization_id = $1", org))






class Broken:
    """A plugin that fails in every hook it implements."""

    @hookimpl(tryfirst=True)
    def wad_detect_status(self) -> None:
        raise RuntimeError("detector down")

    @hookimpl(tryfirst=True)
    async def wad_agent_reply(self) -> None:
        raise RuntimeError("agent down")

    @hookimpl
    async def wad_message_received(self) -> None:
        raise RuntimeError("notifier down")


def _appends_message(to: str) -> Any:
    """A hook implementation that appends the `message` it is told of to the list `to`."""

    @hookimpl
    async def hook(self: Listener, message: MessagePayload) -> None:
        getattr(self, to).append(message)

    return hook


def _appends_change(to: str) -> Any:
    """A hook implementation that appends the `change` it is told of to the list `to`."""

    @hookimpl
    async def hook(self: Listener, change: MessageStatusChange | ClientStatusChange) -> None:
        getattr(self, to).append(change)

    return hook


class Listener:
    """Records the notifications it gets, each hook's in its own list."""

    def __init__(self) -> None:
        self.received: list[MessagePayload] = []
        self.sent: list[MessagePayload] = []
        self.statuses: list[MessageStatusChange] = []
        self.clients: list[ClientStatusChange] = []

    wad_message_received = _appends_message("received")
    wad_message_sent = _appends_message("sent")
    wad_message_status_changed = _appends_change("statuses")
    wad_client_status_changed = _appends_change("clients")


# -- storing and processing -------------------------------------------------------------------


async def test_a_message_seen_twice_is_stored_and_processed_once(db: Database, state_dir: Path
                                                                 ) -> None:
    listener = Listener()
    pm = plugins_with((listener, "listener"))
    async with running(db, state_dir, plugins=pm) as h:
        first = wa(1, "Hello! I would like to book a tour to Issyk-Kul for two people in July")
        await h.events.send(ev.MessageReceived(message=first))
        await h.events.send(ev.MessageReceived(message=first))
        row = await processed(db, h.org, first.id)
        await trio.sleep(0.3)
        assert await count_messages(db, h.org) == 1
        assert len(h.kinds("message.stored")) == 1
        assert len(h.kinds("message.received")) == 1
        assert len(listener.received) == 1

    assert row.processing_state == "DONE" and row.processing_error is None
    assert (row.direction, row.sender, row.status, row.type) == ("IN", "CLIENT", "RECEIVED", "text")
    assert row.language == "en"
    assert row.sent_at == datetime.fromtimestamp(BASE_T + 1, UTC)
    client = await clients_repo.get_by_phone(db, organization_id=h.org, phone="+996555123456")
    assert client is not None
    assert (client.name, client.push_name) == ("Aigerim", "Aigerim")
    assert client.preferred_language == "en"
    assert client.metadata["country"] == "KG" and client.metadata["time_zone"] == "Asia/Bishkek"
    assert row.conversation_id is not None
    conversation = await conversations_repo.get(db, conversation_id=row.conversation_id)
    assert conversation is not None and conversation.client_id == client.id
    assert conversation.status == "ACTIVE" and conversation.wa_chat_id == "996555123456@c.us"
    assert conversation.last_message_at == row.sent_at
    # The heuristic detector moved the lead on, and the history says who and why.
    assert client.status == "QUALIFIED"
    history = await clients_repo.status_history(db, client_id=client.id)
    assert [(c.from_status, c.to_status, c.detector) for c in history] == [
        ("NEW_LEAD", "QUALIFIED", "heuristic_status")]
    assert history[0].reason and "two people" in history[0].reason
    assert [(c.from_status, c.to_status) for c in listener.clients] == [("NEW_LEAD", "QUALIFIED")]
    assert listener.received[0].client_id == client.id and listener.received[0].language == "en"


async def test_agent_reply_is_queued_with_priority_5_sender_ai_and_a_delay(
        db: Database, state_dir: Path) -> None:
    agent = Agent()
    settings = agent_delays(processing=0, reply=(2, 10))
    async with running(db, state_dir, plugins=plugins_with((agent, "test_agent")),
                       settings=settings) as h:
        incoming = [wa(n, text) for n, text in enumerate(
            ["Здравствуйте! Сколько стоит тур на Иссык-Куль?", "Нас будет двое, в августе"],
            start=10)]
        queued_at = []
        for message in incoming:
            await h.events.send(ev.MessageReceived(message=message))
            await processed(db, h.org, message.id)
            queued_at.append(datetime.now(UTC))

    items = await db.fetch("SELECT id FROM outbox WHERE organization_id = $1 ORDER BY created_at",
                           h.org)
    assert len(items) == 2
    client = await clients_repo.get_by_phone(db, organization_id=h.org, phone="+996555123456")
    assert client is not None and client.preferred_language == "ru"
    for record, at in zip(items, queued_at, strict=True):
        item = await outbox_repo.get(db, outbox_id=record["id"])
        assert item is not None
        assert (item.priority, item.sender, item.agent_name, item.status) == (
            5, "AI", "test_agent", "QUEUED")
        assert item.content == agent.text and item.to_phone == "+996555123456"
        assert item.client_id == client.id and item.conversation_id is not None
        assert item.idempotency_key and item.idempotency_key.startswith("agent-reply:")
        delay = (item.not_before - item.created_at).total_seconds()
        assert 2 - 0.2 <= delay <= 10 + 0.2, delay
        assert item.created_at <= at
    # The agent saw the conversation so far, its own message last.
    assert [len(conversation) for _, conversation in agent.seen] == [1, 2]
    assert agent.seen[1][1][-1].text == incoming[1].body


async def test_only_the_latest_of_a_burst_is_answered(db: Database, state_dir: Path) -> None:
    agent = Agent()
    settings = agent_delays(processing=0.5, reply=(0, 0))
    async with running(db, state_dir, plugins=plugins_with((agent, "test_agent")),
                       settings=settings) as h:
        burst = [wa(20, "Hi"), wa(21, "I saw your tours on Instagram"), wa(22, "Do you have one to Song-Kul?")]
        for message in burst:
            await h.events.send(ev.MessageReceived(message=message))
        rows = [await processed(db, h.org, m.id) for m in burst]
    assert all(r.processing_state == "DONE" for r in rows)
    assert [text for text, _ in agent.seen] == ["Do you have one to Song-Kul?"]
    assert int(await db.fetchval("SELECT count(*) FROM outbox WHERE organization_id = $1",
                                 h.org)) == 1


async def test_a_failing_plugin_is_skipped_and_logged_and_the_message_still_processed(
        db: Database, state_dir: Path) -> None:
    agent = Agent()
    pm = plugins_with((agent, "test_agent"), (Broken(), "broken"))
    with capture_logs() as logs:
        async with running(db, state_dir, plugins=pm) as h:
            message = wa(30, "How much does the tour to Karakol cost?")
            await h.events.send(ev.MessageReceived(message=message))
            row = await processed(db, h.org, message.id)
    assert row.processing_state == "DONE"
    failed = {(line["plugin"], line["hook"]) for line in logs
              if line.get("event") == "plugin failed; skipped"}
    assert failed == {("broken", "wad_detect_status"), ("broken", "wad_agent_reply"),
                      ("broken", "wad_message_received")}
    client = await clients_repo.get_by_phone(db, organization_id=h.org, phone="+996555123456")
    assert client is not None and client.status == "WARMED"  # the next detector decided
    item = await db.fetchrow("SELECT agent_name FROM outbox WHERE organization_id = $1", h.org)
    assert item is not None and item["agent_name"] == "test_agent"


async def test_a_name_given_in_a_message_when_there_is_no_push_name(db: Database, state_dir: Path
                                                                    ) -> None:
    async with running(db, state_dir, plugins=plugins_with()) as h:
        message = wa(40, "Добрый день! Меня зовут Азамат, хочу узнать про туры в Каракол",
                     sender="996700111222", push_name=None)
        await h.events.send(ev.MessageReceived(message=message))
        row = await processed(db, h.org, message.id)
    client = await clients_repo.get_by_phone(db, organization_id=h.org, phone="+996700111222")
    assert client is not None
    assert client.name == "Азамат" and client.push_name is None
    assert client.metadata["given_name"] == "Азамат"
    assert row.language == "ru" and client.preferred_language == "ru"


async def test_media_is_stored_with_type_caption_and_file_facts(db: Database, state_dir: Path
                                                                ) -> None:
    async with running(db, state_dir) as h:
        image = wa(50, "", type="image", caption="Is this the hotel?", has_media=True,
                   mimetype="image/jpeg", size=52_000)
        voice = wa(51, "", type="ptt", has_media=True, mimetype="audio/ogg; codecs=opus",
                   size=9_000)
        for m in (image, voice):
            await h.events.send(ev.MessageReceived(message=m))
        stored_image = await processed(db, h.org, image.id)
        stored_voice = await processed(db, h.org, voice.id)
    assert (stored_image.type, stored_image.caption, stored_image.body) == (
        "image", "Is this the hotel?", None)
    assert stored_image.media == {"wa_type": "image", "mimetype": "image/jpeg", "size": 52_000}
    assert stored_voice.type == "audio" and stored_voice.media is not None
    assert stored_voice.media["wa_type"] == "ptt"


async def test_groups_status_and_channels_are_ignored_unless_configured(
        db: Database, state_dir: Path) -> None:
    group = wa(60, "Group hello", chat_id="120363012345678901@g.us", is_group=True,
               author="996555123456@c.us")
    status = wa(61, "My holiday", chat_id="status@broadcast", is_status=True, is_broadcast=True,
                author="996555123456@c.us")
    channel = wa(62, "News", chat_id="120363111111111111@newsletter", is_newsletter=True)
    direct = wa(63, "Direct hello")
    async with running(db, state_dir) as h:
        for m in (group, status, channel, direct):
            await h.events.send(ev.MessageReceived(message=m))
        await processed(db, h.org, direct.id)
        assert await count_messages(db, h.org) == 1
        assert h.actor.stats["ignored"] == 3

    stores_groups = InboundSettings(processing_delay_min_s=0, processing_delay_max_s=0,
                                    store_groups=True)
    async with running(db, state_dir, settings=stores_groups) as h2:
        await h2.events.send(ev.MessageReceived(message=group))
        row = await processed(db, h2.org, group.id)
        assert row.processing_state == "SKIPPED", "stored, but a group is not a client"
        assert await clients_repo.get_by_phone(db, organization_id=h2.org,
                                               phone="+996555123456") is None


async def test_own_messages_acks_edits_and_revokes(db: Database, state_dir: Path) -> None:
    listener = Listener()
    async with running(db, state_dir, plugins=plugins_with((listener, "listener"))) as h:
        question = wa(70, "Hello, do you have tours in September?")
        typed = wa(71, "Yes! From 15 September, 3 days, 250 USD", from_me=True)
        await h.events.send(ev.MessageReceived(message=question))
        await h.events.send(ev.OwnMessage(message=typed))
        own = await processed(db, h.org, typed.id)
        stored_question = await processed(db, h.org, question.id)
        assert (own.direction, own.sender, own.status) == ("OUT", "HUMAN", "SENT")
        assert own.conversation_id == stored_question.conversation_id is not None
        assert [m.wa_message_id for m in listener.sent] == [typed.id]

        await h.events.send(ev.AckChanged(id=typed.id, chat_id=typed.chat_id, ack=2))
        await h.events.send(ev.AckChanged(id=typed.id, chat_id=typed.chat_id, ack=3))
        await h.events.send(ev.AckChanged(id=typed.id, chat_id=typed.chat_id, ack=2))  # late
        await h.events.send(ev.MessageEdited(id=question.id, chat_id=question.chat_id,
                                             from_me=False, body="Hello, any tours in October?"))
        await h.events.send(ev.MessageRevoked(id=typed.id, chat_id=typed.chat_id, from_me=True))
        with trio.fail_after(10):
            while len(listener.statuses) < 3:
                await trio.sleep(0.02)
    transitions = [(c.from_status, c.to_status) for c in listener.statuses]
    assert transitions == [("SENT", "DELIVERED"), ("DELIVERED", "READ"), ("READ", "REVOKED")]
    final = await messages_repo.get_by_wa_id(db, organization_id=h.org, wa_message_id=typed.id)
    assert final is not None and final.status == "REVOKED" and final.body == typed.body
    edited = await messages_repo.get_by_wa_id(db, organization_id=h.org,
                                              wa_message_id=question.id)
    assert edited is not None and edited.body == "Hello, any tours in October?"
    assert edited.edited_at is not None

    # The feed has each change once, written with it: the two messages processed (with their
    # client and conversation), the acks that moved the status, the edit, the revoke.
    feed = await changes.page(db, organization_id=h.org, after=0, limit=100)
    about = [(c.kind, c.data.get("waMessageId"), c.data.get("status"), c.data.get("body"))
             for c in feed if c.kind.startswith("message.")]
    assert sorted(about[:2], key=str) == sorted([
        ("message.stored", question.id, "RECEIVED", question.body),
        ("message.stored", typed.id, "SENT", typed.body)], key=str)
    assert about[2:] == [
        ("message.status", typed.id, "DELIVERED", None),
        ("message.status", typed.id, "READ", None),
        ("message.edited", question.id, "RECEIVED", "Hello, any tours in October?"),
        ("message.revoked", typed.id, "REVOKED", None)]
    stored = {c.data["waMessageId"]: c.data for c in feed if c.kind == "message.stored"}
    assert stored[typed.id]["conversationId"] == str(own.conversation_id)
    assert stored[typed.id]["clientId"] == stored[question.id]["clientId"] is not None
    assert [c.data["from"] for c in feed if c.kind == "message.status"] == ["SENT", "DELIVERED"]
    assert "sendId" not in feed[-1].data  # typed on the phone, not a send of the queue
    assert [c.kind for c in feed].count("client.created") == 1


async def test_a_send_from_wads_queue_is_stored_with_its_sender_and_gets_its_acks(
        db: Database, state_dir: Path) -> None:
    listener = Listener()
    org = (await organizations.create(db, name="Tours")).id
    item, _ = await outbox_repo.enqueue(db, organization_id=org, to_phone="+996555123456",
                                        content="Your booking is confirmed", priority=5,
                                        sender="AI", agent_name="planner")
    claimed = await outbox_repo.claim_next(db, organization_id=org,
                                           wa_message_id="3EB0AAAABBBBCCCCDDDD")
    assert claimed is not None and claimed.id == item.id
    sent = ev.Message(id="true_996555123456@c.us_3EB0AAAABBBBCCCCDDDD", from_me=True,
                      chat_id="996555123456@c.us", type="chat", body="Your booking is confirmed",
                      timestamp=BASE_T + 80, ack=1)
    async with running(db, state_dir, plugins=plugins_with((listener, "listener")), org=org) as h:
        await h.events.send(ev.OwnMessage(message=sent))
        row = await processed(db, org, sent.id)
        await h.events.send(ev.AckChanged(id=sent.id, chat_id=sent.chat_id, ack=3))
        with trio.fail_after(10):
            while not listener.statuses:
                await trio.sleep(0.02)
    assert (row.direction, row.sender) == ("OUT", "AI")
    assert listener.sent == [], "sends from the queue are announced by the outbound actor"
    after = await outbox_repo.get(db, outbox_id=item.id)
    assert after is not None and after.status == "READ"
    # The ack's change names the send (the id of the `202` answer).
    acks = [c.data for c in await changes.page(db, organization_id=org, after=0, limit=100)
            if c.kind == "message.status"]
    assert [(a["status"], a["sendId"]) for a in acks] == [("READ", str(item.id))]


async def test_a_restart_resumes_unfinished_processing(db: Database, state_dir: Path) -> None:
    slow = InboundSettings(processing_delay_min_s=600, processing_delay_max_s=600)
    messages = [wa(90 + n, f"Message number {n} about the Issyk-Kul tour") for n in range(3)]
    async with running(db, state_dir, settings=slow) as h:
        for m in messages:
            await h.events.send(ev.MessageReceived(message=m))
        with trio.fail_after(10):
            while await count_messages(db, h.org) < 3:
                await trio.sleep(0.02)
    # Stopped before processing: stored, still PENDING.
    pending = await messages_repo.list_unprocessed(db, organization_id=h.org)
    assert [m.wa_message_id for m in pending] == [m.id for m in messages]

    async with running(db, state_dir, org=h.org) as again:
        rows = [await processed(db, again.org, m.id) for m in messages]
        with trio.fail_after(10):  # the actor counts a message just after its row says DONE
            while again.actor.stats["processed"] < 3:
                await trio.sleep(0.02)
    assert [r.processing_state for r in rows] == ["DONE"] * 3
    assert len({r.conversation_id for r in rows}) == 1
    assert again.actor.stats["processed"] == 3 and again.actor.stats["stored"] == 0
    # Processed once each, so in the feed once each, though stopped and started in between.
    feed = await changes.page(db, organization_id=h.org, after=0, limit=100)
    assert sorted(c.data["waMessageId"] for c in feed if c.kind == "message.stored") == sorted(
        m.id for m in messages)


async def test_agent_reply_is_not_queued_twice_when_processing_is_repeated(
        db: Database, state_dir: Path) -> None:
    agent = Agent()
    async with running(db, state_dir, plugins=plugins_with((agent, "test_agent"))) as h:
        message = wa(100, "Can I pay by card?")
        await h.events.send(ev.MessageReceived(message=message))
        row = await processed(db, h.org, message.id)
    # As if the daemon had died after queueing the reply but before marking the message DONE.
    await messages_repo.set_processing_state(db, message_id=row.id, state="PENDING")
    async with running(db, state_dir, plugins=plugins_with((agent, "test_agent")),
                       org=h.org):
        await processed(db, h.org, message.id)
    assert len(agent.seen) == 2
    assert int(await db.fetchval("SELECT count(*) FROM outbox WHERE organization_id = $1",
                                 h.org)) == 1


async def test_not_before_uses_the_reply_delay(db: Database, state_dir: Path) -> None:
    agent = Agent()
    fixed = agent_delays(processing=0, reply=(7, 7))
    async with running(db, state_dir, plugins=plugins_with((agent, "test_agent")),
                       settings=fixed) as h:
        message = wa(110, "Hello")
        await h.events.send(ev.MessageReceived(message=message))
        await processed(db, h.org, message.id)
    row = await db.fetchrow("SELECT created_at, not_before FROM outbox WHERE organization_id = $1",
                            h.org)
    assert row is not None
    assert abs((row["not_before"] - row["created_at"]) - timedelta(seconds=7)) < timedelta(
        seconds=0.5)
