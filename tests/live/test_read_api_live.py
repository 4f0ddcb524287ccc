"""The read API end to end: the simulator's phone writes, wad's session in a real Chromium
stores, the inbound and outbound actors link and send, a real PostgreSQL keeps it all, and the
CRM reads it back over HTTP: the client, its conversation with its answer times, and the
messages in order, paged with cursors that neither skip nor repeat while the client keeps
writing. The time to first answer also reaches `/metrics`."""

from __future__ import annotations

import functools
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.support.events import serve_app
from tests.support.inbound import NO_DELAYS, stored, wa_id
from tests.support.metrics import parse, value
from tests.support.stack import Stack, open_stack
from wad.api.context import Services
from wad.config import OutboundSettings
from wad.db.models import Message
from wad.db.repo import outbox as outbox_repo
from wad.org.context import ActorFactory
from wad.org.inbound.actor import inbound_actor
from wad.org.outbound import queue_message
from wad.org.outbound.actor import outbound_actor

pytestmark = pytest.mark.browser

ACCOUNT = "996700200500"
NUMBER = "996555123456"
ACTORS: list[ActorFactory] = [functools.partial(inbound_actor, settings=NO_DELAYS),
                              outbound_actor]


async def linked(stack: Stack) -> uuid.UUID:
    stack.settings.outbound = OutboundSettings(poll_interval_s=0.5, pacing=False)
    await stack.phone.create_account(ACCOUNT, "Silk Road Tours")
    await stack.start_daemon(actors=ACTORS)
    org = await stack.new_org()
    await stack.link_by_qr(org, ACCOUNT)
    return org


async def client_writes(stack: Stack, org: uuid.UUID, text: str) -> Message:
    """A message from the client, once stored and linked to its conversation."""
    delivered = await stack.phone.deliver(ACCOUNT, NUMBER, text, push_name="Aigerim")
    (row,) = await stored(stack, org, [wa_id(delivered)])
    return row


async def typed_on_phone(stack: Stack, org: uuid.UUID, text: str) -> Message:
    sent = await stack.phone.phone_send(ACCOUNT, NUMBER, text)
    (row,) = await stored(stack, org, [wa_id(sent)])
    return row


async def sent_from_the_crm(stack: Stack, org: uuid.UUID, text: str) -> Message:
    """A reply queued as the CRM's send does, once the outbound actor has sent and stored it."""
    item, _ = await queue_message(stack.db, organization_id=org, to=f"+{NUMBER}", content=text,
                                  bus=stack.bus)
    with trio.fail_after(30):
        while True:
            found = await outbox_repo.get(stack.db, outbox_id=item.id)
            if found is not None and found.message_id is not None:
                break
            await trio.sleep(0.05)
    (row,) = await stored(stack, org, [str(await stack.db.fetchval(
        "SELECT wa_message_id FROM messages WHERE id = $1", found.message_id))])
    return row


async def get(http: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    r = await http.get(path, params=params)
    assert r.status_code == 200, r.text
    found: dict[str, Any] = r.json()
    return found


async def test_the_crm_reads_back_what_went_in_and_out(state_dir: Path, dsn: str,
                                                      nursery: trio.Nursery) -> None:
    async with open_stack(state_dir, dsn) as stack:
        org = await linked(stack)
        served, shutdown = await serve_app(nursery, stack.db, state_dir,
                                           Services(bus=stack.bus, orgs=stack.manager))
        try:
            agent = served.client(await served.token("AGENT", org))
            viewer = served.client(await served.token("VIEWER", org))
            scraper = served.client(await served.token("METRICS"))

            # In and out: two questions, a reply typed on the phone, another question, a reply
            # sent from the CRM (the outbound actor through the page).
            conversation_rows = [
                await client_writes(stack, org, "Здравствуйте! Тур на Иссык-Куль есть?"),
                await client_writes(stack, org, "На двоих, в июле"),
                await typed_on_phone(stack, org, "Добрый день! Да, 450 USD"),
                await client_writes(stack, org, "А трансфер включён?"),
                await sent_from_the_crm(stack, org, "Да, трансфер из Бишкека включён"),
            ]

            # The client, by phone number.
            page = await get(agent, f"/api/whatsapp/clients/{org}", phone=f"+{NUMBER}")
            (client,) = page["clients"]
            assert (client["phone"], client["name"], client["pushName"]) == (
                f"+{NUMBER}", "Aigerim", "Aigerim")
            assert page["nextCursor"] is None

            # Its conversation, with its answer times.
            detail = await get(agent, f"/api/whatsapp/clients/{org}/{client['id']}")
            (conversation,) = detail["conversations"]
            assert conversation["status"] == "ACTIVE"
            first_q, _, typed, second_q, crm = conversation_rows
            assert conversation["id"] == str(first_q.conversation_id)
            assert conversation["firstAnswerSeconds"] == pytest.approx(
                (typed.sent_at - first_q.sent_at).total_seconds(), abs=0.001)
            assert conversation["lastAnswerSeconds"] == pytest.approx(
                (crm.sent_at - second_q.sent_at).total_seconds(), abs=0.001)
            assert conversation["awaitingAnswerSince"] is None

            # The messages in order, oldest first and newest first.
            messages = f"/api/whatsapp/conversations/{org}/{conversation['id']}/messages"
            oldest = await get(agent, messages, order="oldest")
            assert [m["id"] for m in oldest["messages"]] == [str(r.id) for r in conversation_rows]
            assert [(m["direction"], m["sender"]) for m in oldest["messages"]] == [
                ("IN", "CLIENT"), ("IN", "CLIENT"), ("OUT", "HUMAN"), ("IN", "CLIENT"),
                ("OUT", "HUMAN")]
            assert oldest["messages"][4]["body"] == "Да, трансфер из Бишкека включён"
            newest = await get(agent, messages)
            assert [m["id"] for m in newest["messages"]] == [
                m["id"] for m in reversed(oldest["messages"])]
            hidden = await get(viewer, messages)
            assert {m["body"] for m in hidden["messages"]} == {None}

            # Paging two at a time while the client keeps writing: every message that was
            # there is read once, none twice, in order.
            arrived: list[Message] = []

            async def more(page_number: int) -> None:
                arrived.append(await client_writes(stack, org, f"Ещё вопрос {page_number}"))

            for order in ("newest", "oldest"):
                seen: list[dict[str, Any]] = []
                cursor: str | None = None
                while True:
                    params: dict[str, Any] = {"limit": 2, "order": order}
                    if cursor:
                        params["cursor"] = cursor
                    page = await get(agent, messages, **params)
                    seen += page["messages"]
                    cursor = page["nextCursor"]
                    if cursor is None:
                        break
                    await more(len(arrived))
                ids = [m["id"] for m in seen]
                assert len(ids) == len(set(ids)), f"repeated while paging {order}"
                before = {str(r.id) for r in conversation_rows}
                assert before <= set(ids), f"skipped while paging {order}"
                times = [(datetime.fromisoformat(m["sentAt"]),
                          datetime.fromisoformat(m["createdAt"])) for m in seen]
                assert times == sorted(times, reverse=order == "newest")
                if order == "oldest":  # the new ones come after the position: read too
                    assert {str(r.id) for r in arrived} <= set(ids)
                conversation_rows += [r for r in arrived if r not in conversation_rows]

            # The client's latest questions wait for an answer since the first of them.
            after = await get(agent, f"/api/whatsapp/conversations/{org}/{conversation['id']}")
            assert datetime.fromisoformat(after["awaitingAnswerSince"]) == arrived[0].sent_at

            # Both answers were counted in the histogram.
            with trio.fail_after(10):
                while True:
                    r = await scraper.get("/metrics")
                    samples = parse(r.text)
                    count = value(samples, "wad_first_answer_seconds_count",
                                  organization=str(org))
                    if count == 2:
                        break
                    await trio.sleep(0.1)
            total = value(samples, "wad_first_answer_seconds_sum", organization=str(org))
            assert total == pytest.approx(conversation["firstAnswerSeconds"]
                                          + conversation["lastAnswerSeconds"], abs=0.01)
        finally:
            shutdown.set()
