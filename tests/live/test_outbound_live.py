"""The outbound actor end to end: the simulator's phone, wad's session in a real Chromium, the
inbound actor (which applies the acks) beside it, a real PostgreSQL. Acks carry a sent message
to READ; a send WhatsApp refuses is retried under a new id; numbers that are not on WhatsApp
fail at once, without a send and without stopping the others' sends; a ban stops sending and
keeps the queue; every final state reaches the change feed and the bus with the send's id."""

from __future__ import annotations

import functools
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.inbound import NO_DELAYS, Agent, plugins_with
from tests.support.stack import Stack, open_stack
from wad.bus import Event, MessageSent, OutboxStatus, SendingPaused
from wad.config import OutboundSettings
from wad.db.models import OutboxItem
from wad.db.repo import changes
from wad.db.repo import messages as messages_repo
from wad.db.repo import outbox as outbox_repo
from wad.db.repo import sessions as sessions_repo
from wad.org.context import ActorFactory
from wad.org.inbound.actor import inbound_actor
from wad.org.outbound import queue_message, send_message_for_agent
from wad.org.outbound.actor import outbound_actor

pytestmark = pytest.mark.browser

ACCOUNT = "996700200400"
CLIENT = "+996555123456"

ACTORS: list[ActorFactory] = [functools.partial(inbound_actor, settings=NO_DELAYS),
                              outbound_actor]


async def linked(stack: Stack, *, plugins: Any = None, **outbound: Any) -> uuid.UUID:
    """An organization linked to the simulated phone, with the inbound and outbound actors."""
    outbound.setdefault("poll_interval_s", 0.5)
    # What happens to each send is tested here; its pacing on Trio's mock clock
    # (tests/db/test_outbound_actor.py) and in bench/outbound.py.
    outbound.setdefault("pacing", False)
    stack.settings.outbound = OutboundSettings(**outbound)
    await stack.phone.create_account(ACCOUNT, "Silk Road Tours")
    await stack.start_daemon(actors=ACTORS, plugins=plugins)
    org = await stack.new_org()
    await stack.link_by_qr(org, ACCOUNT)
    return org


async def until_status(stack: Stack, item_id: uuid.UUID, *statuses: str,
                       timeout: float = 30) -> OutboxItem:
    with trio.fail_after(timeout):
        while True:
            item = await outbox_repo.get(stack.db, outbox_id=item_id)
            assert item is not None
            # A sent item is also linked to its stored message; an ack may move the status
            # a moment before the sender records that link.
            linked = item.message_id is not None or item.status in ("QUEUED", "SENDING", "FAILED")
            if item.status in statuses and linked:
                return item
            await trio.sleep(0.05)


async def test_acks_carry_the_message_to_read_and_it_is_stored_in_its_conversation(
        state_dir: Path, dsn: str) -> None:
    async with open_stack(state_dir, dsn) as stack:
        org = await linked(stack)
        human, _ = await queue_message(stack.db, organization_id=org, to=CLIENT,
                                       content="Добрый день! Тур на Иссык-Куль: 450 USD.",
                                       bus=stack.bus)
        agent = await send_message_for_agent(
            stack.db, organization_id=org, to=CLIENT, content="Могу забронировать на июль.",
            agent="sales-bot", bus=stack.bus)
        final = [await until_status(stack, item.id, "READ") for item in (human, agent)]
        sent = await stack.phone.sent(ACCOUNT)
        events = [await outbox_repo.get_with_events(stack.db, outbox_id=i.id) for i in final]
        rows = [await messages_repo.get(stack.db, message_id=i.message_id) for i in final
                if i.message_id is not None]

    assert sorted(m["body"] for m in sent["messages"]) == [
        "Добрый день! Тур на Иссык-Куль: 450 USD.", "Могу забронировать на июль."]
    assert set(sent["counts"].values()) == {1}
    assert len(rows) == 2
    for item, got, stored, sender in zip(final, events, rows, ("HUMAN", "AI"), strict=True):
        assert item.sent_at is not None
        assert item.delivered_at is not None
        assert item.read_at is not None
        assert got is not None
        assert [e.status for e in got[1]] == ["QUEUED", "SENDING", "SENT", "DELIVERED", "READ"]
        assert stored is not None
        assert (stored.direction, stored.sender, stored.status) == ("OUT", sender, "READ")
        assert stored.conversation_id == item.conversation_id
        assert stored.wa_message_id == f"true_996555123456@c.us_{item.wa_message_id}"
        assert stored.wa_message_id in sent["counts"]


async def test_a_refused_send_is_retried_under_a_new_id(state_dir: Path, dsn: str) -> None:
    async with open_stack(state_dir, dsn) as stack:
        org = await linked(stack, retry_initial_s=0.3)
        await stack.phone.set_sends(ACCOUNT, fail_next=1)
        refused_once, _ = await queue_message(stack.db, organization_id=org, to=CLIENT,
                                              content="refused once", bus=stack.bus)
        item = await until_status(stack, refused_once.id, "SENT", "DELIVERED", "READ")
        sent = await stack.phone.sent(ACCOUNT)

    attempts = [m for m in sent["messages"] if m["body"] == "refused once"]
    assert [m["result"] for m in attempts] == ["ERROR", "OK"]
    assert attempts[0]["id"] != attempts[1]["id"]  # the refused id was not used again
    assert attempts[1]["id"].endswith(f"_{item.wa_message_id}")
    assert item.attempts == 2


async def test_numbers_without_whatsapp_fail_at_once_and_do_not_stop_sending(
        state_dir: Path, dsn: str) -> None:
    """Four numbers the simulator marks as not on WhatsApp, in a row (three failures of 100
    would trip the breaker if they counted): each fails at its first attempt with
    `NOT_ON_WHATSAPP` and nothing reaches the page's send; a client's message after them is
    sent. Every final state is in the change feed and on the bus with the send's id."""
    nowhere = [f"+99670099988{i}" for i in range(4)]
    async with open_stack(state_dir, dsn) as stack:
        org = await linked(stack, number_check_interval_s=0.5)
        await stack.phone.set_not_on_whatsapp([n.lstrip("+") for n in nowhere])
        with stack.bus.subscribe(org_id=org, kinds={OutboxStatus, MessageSent}) as channel:
            published = Collected(channel)
            doomed = [(await queue_message(stack.db, organization_id=org, to=number,
                                           content=f"to nobody {i}", bus=stack.bus))[0]
                      for i, number in enumerate(nowhere)]
            failed = [await until_status(stack, item.id, "FAILED") for item in doomed]
            fine, _ = await queue_message(stack.db, organization_id=org, to=CLIENT,
                                          content="to a client", bus=stack.bus)
            sent_item = await until_status(stack, fine.id, "SENT", "DELIVERED", "READ")

            def both_published() -> bool:
                # The stored message's event and the send's final state come from two actors
                # (inbound stores, outbound settles), in either order.
                events = published()
                return any(isinstance(e, MessageSent) for e in events) and any(
                    isinstance(e, OutboxStatus) and e.id == str(fine.id) and e.status == "SENT"
                    for e in events)

            with trio.fail_after(10):
                while not both_published():
                    await trio.sleep(0.05)
            seen = published()
        sent = await stack.phone.sent(ACCOUNT)
        session = await sessions_repo.get(stack.db, organization_id=org)
        feed = await changes.page(stack.db, organization_id=org, after=0, limit=100)
        assert stack.manager is not None
        handle = stack.manager.running(org)
        assert handle is not None
        sender = handle.supervisor.handle("outbound")

    assert {(f.status, f.fail_reason, f.attempts) for f in failed} == {
        ("FAILED", "NOT_ON_WHATSAPP", 1)}
    assert all(f.last_error == f"{f.to_phone} is not on WhatsApp" for f in failed)
    assert [m["body"] for m in sent["messages"]] == ["to a client"]  # no send attempt to them
    assert session is None or not session.sending_paused
    assert sender.stats.numbers_checked == 5  # type: ignore[attr-defined]
    entries = [(c.kind, c.data["sendId"], c.data.get("reason")) for c in feed
               if c.kind.startswith(OUTBOUND_KINDS)]
    # Sends to different numbers may settle in any order (several are under way at once); the
    # client's message was queued after all four had failed.
    doomed_failed = sorted(("send.failed", str(i.id), "NOT_ON_WHATSAPP") for i in doomed)
    assert sorted(entries[:-1]) == doomed_failed
    assert entries[-1] == ("message.sent", str(fine.id), None)
    assert [c for c in feed if c.kind == "message.sent"][-1].data["waMessageId"] == \
        f"true_996555123456@c.us_{sent_item.wa_message_id}"
    finals = [(e.id, e.status, e.reason) for e in seen
              if isinstance(e, OutboxStatus) and e.status in ("FAILED", "SENT")]
    assert sorted(finals[:-1]) == sorted((str(i.id), "FAILED", "NOT_ON_WHATSAPP") for i in doomed)
    assert finals[-1] == (str(fine.id), "SENT", None)
    assert [e.message.send_id for e in seen if isinstance(e, MessageSent)] == [fine.id]


OUTBOUND_KINDS = ("message.sent", "send.", "sending.")
"""The feed entries the outbound path writes (queueing also writes `client.created` and the
like, the session `session.state`: not the outbound path's)."""


class Collected:
    """What a bus subscription delivered so far."""

    def __init__(self, channel: trio.MemoryReceiveChannel[Event]) -> None:
        self.channel = channel
        self.items: list[Event] = []

    def __call__(self) -> list[Event]:
        while True:
            try:
                self.items.append(self.channel.receive_nowait())
            except trio.WouldBlock:
                return self.items


async def test_a_ban_stops_sending_keeps_the_queue_and_says_why(state_dir: Path,
                                                                dsn: str) -> None:
    async with open_stack(state_dir, dsn) as stack:
        org = await linked(stack)
        with stack.bus.subscribe(org_id=org, kinds={SendingPaused}) as paused:
            first, _ = await queue_message(stack.db, organization_id=org, to=CLIENT,
                                           content="before the ban", bus=stack.bus)
            await until_status(stack, first.id, "SENT", "DELIVERED", "READ")
            await stack.phone.set_sends(ACCOUNT, delay_s=30)  # the rest stays in the queue
            rest = [(await queue_message(stack.db, organization_id=org, to=CLIENT,
                                         content=f"after {i}", bus=stack.bus))[0]
                    for i in range(5)]
            with trio.fail_after(10):
                while await outbox_repo.count_pending(stack.db, organization_id=org) != 5 or \
                        len(await outbox_repo.list_in_flight(stack.db, organization_id=org)) < 3:
                    await trio.sleep(0.05)
            await stack.phone.ban(ACCOUNT)
            row = await stack.wait_state(org, "BANNED")
            with trio.fail_after(10):
                event = await paused.receive()
        session = await sessions_repo.get(stack.db, organization_id=org)
        statuses = [(await outbox_repo.get(stack.db, outbox_id=i.id)) for i in rest]
        feed = await changes.page(stack.db, organization_id=org, after=0, limit=100)

    assert row.state == "BANNED"
    assert session is not None
    assert session.sending_paused is True
    assert session.sending_paused_reason == event.payload()["reason"]
    assert event.payload()["reason"].startswith("WhatsApp banned or restricted the account: ")
    assert "TOS_BLOCK" in event.payload()["reason"]
    assert [c.data for c in feed if c.kind == "sending.paused"] == [
        {"reason": session.sending_paused_reason}]
    # Kept: three left in flight by the ban (each looked for in the chat before any resend),
    # the others still queued; none failed, none lost.
    assert sorted(s.status for s in statuses if s is not None) == ["QUEUED"] * 2 + ["SENDING"] * 3


async def test_an_agents_reply_goes_out_as_soon_as_it_is_due(state_dir: Path, dsn: str) -> None:
    """The inbound actor queues the reply; its `agent.reply_queued` wakes the sender (which
    would otherwise look at the queue only every 30 s here)."""
    agent = Agent("Здравствуйте! Тур на Иссык-Куль стоит 450 USD.")
    async with open_stack(state_dir, dsn) as stack:
        org = await linked(stack, plugins=plugins_with((agent, "sales_bot")),
                           poll_interval_s=30.0)
        # The sender has looked at the empty queue and sleeps.
        assert stack.manager is not None
        handle = stack.manager.running(org)
        assert handle is not None
        with trio.fail_after(30):
            while not (sender := handle.supervisor.handle("outbound")) \
                    or not sender.stats.empty_looks:  # type: ignore[attr-defined]
                await trio.sleep(0.05)
        asked = trio.current_time()
        await stack.phone.deliver(ACCOUNT, "996555123456", "Сколько стоит тур на Иссык-Куль?",
                                  push_name="Айгерим")
        with trio.fail_after(15):
            while not (await stack.phone.sent(ACCOUNT))["messages"]:
                await trio.sleep(0.05)
        took = trio.current_time() - asked
        rows = await stack.db.fetch("SELECT id FROM outbox WHERE organization_id = $1", org)
        reply = await until_status(stack, rows[0]["id"], "SENT", "DELIVERED", "READ")
        sent = await stack.phone.sent(ACCOUNT)
        stored = await messages_repo.get(stack.db, message_id=reply.message_id) \
            if reply.message_id else None

    assert took < 10  # not the 30 s poll
    assert [m["body"] for m in sent["messages"]] == [
        "Здравствуйте! Тур на Иссык-Куль стоит 450 USD."]
    assert (reply.priority, reply.sender, reply.agent_name) == (5, "AI", "sales_bot")
    assert stored is not None
    assert (stored.direction, stored.sender) == ("OUT", "AI")
