"""The read API over real HTTP: clients and their filters, a client with its conversations, a
conversation's messages both ways, status history, import runs; cursors that neither skip nor
repeat while rows are written between pages; clear 400s for bad cursors and filters; tenancy and
roles (a VIEWER reads no message text); and the plans that keep the pages index scans."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import trio

from tests.support import api as api_support
from tests.support.api import LiveApi
from tests.support.readfill import Explaining, describe, fill, nodes
from wad.db.models import NewMessage
from wad.db.pool import Database
from wad.db.repo import answers as answers_repo
from wad.db.repo import clients as clients_repo
from wad.db.repo import conversations as conversations_repo
from wad.db.repo import imports as imports_repo
from wad.db.repo import messages as messages_repo
from wad.db.repo import read as read_repo

live_api = api_support.live_api

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


async def add_message(db: Database, org: uuid.UUID, conversation: uuid.UUID | None, chat: str,
                      direction: str, at: datetime, body: str, **extra: Any) -> uuid.UUID:
    row, created = await messages_repo.insert_if_absent(db, message=NewMessage(
        organization_id=org, wa_message_id=f"wa-{uuid.uuid4().hex}", wa_chat_id=chat,
        direction=direction,  # type: ignore[arg-type]
        sender="CLIENT" if direction == "IN" else "HUMAN", sent_at=at,
        status="RECEIVED" if direction == "IN" else "SENT", body=body,
        conversation_id=conversation, processing_state="DONE", **extra))
    assert created
    return row.id


async def new_client(db: Database, org: uuid.UUID, phone: str, name: str | None = None,
                     **profile: Any) -> tuple[uuid.UUID, uuid.UUID]:
    """A client and its active conversation."""
    client, _ = await clients_repo.upsert(db, organization_id=org, phone=phone, name=name)
    if profile:
        await clients_repo.update_profile(db, client_id=client.id, **profile)
    conversation, _ = await conversations_repo.get_or_create_active(
        db, organization_id=org, client_id=client.id, wa_chat_id=f"{phone[1:]}@c.us")
    return client.id, conversation.id


async def org_with_aigerim(api: LiveApi) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A new organization whose one client is Aigerim (+996555123456), with her active
    conversation: (organization, client, conversation)."""
    org = await api.create_org()
    client, conversation = await new_client(api.ctx.db, org, "+996555123456", "Aigerim")
    return org, client, conversation


async def every_page(http: httpx.AsyncClient, path: str, key: str, *, limit: int,
                     between: Any = None, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of a list, calling `between(page_number)` after each page."""
    pages: list[list[dict[str, Any]]] = []
    cursor: str | None = None
    while True:
        query = {"limit": limit, **params} | ({"cursor": cursor} if cursor else {})
        r = await http.get(path, params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        pages.append(body[key])
        cursor = body["nextCursor"]
        if cursor is None:
            return pages
        assert len(body[key]) == limit
        if between is not None:
            await between(len(pages))


async def tokens(api: LiveApi, org: uuid.UUID) -> dict[str, httpx.AsyncClient]:
    return {role: api.client((await api.create_token(role, org))["token"])
            for role in ("VIEWER", "AGENT", "ADMIN")}


async def test_clients_filters_and_their_pages(live_api: LiveApi) -> None:
    with trio.fail_after(60):
        db = live_api.ctx.db
        org = await live_api.create_org("Silk Road Tours")
        other = await live_api.create_org("Elsewhere")
        await new_client(db, other, "+996555000001", "Aigerim Other")  # never listed
        made = {}
        for i, (name, language) in enumerate([
                ("Aigerim Sadykova", "ru"), ("Bakyt", "ky"), ("aigerim_k", "en"),
                ("100% Tours", "ru"), ("Cholpon", None), ("Daniyar", "ky")]):
            made[name], _ = await new_client(db, org, f"+99655510000{i}", name,
                                             preferred_language=language)
        await clients_repo.set_status(db, client_id=made["Bakyt"], status="SOLD",
                                      detector="test")
        await clients_repo.update_profile(db, client_id=made["Cholpon"], push_name="Aigerim")
        viewer = (await tokens(live_api, org))["VIEWER"]
        path = f"/api/whatsapp/clients/{org}"

        async def names(**params: Any) -> list[str]:
            r = await viewer.get(path, params=params)
            assert r.status_code == 200, r.text
            return [c["name"] for c in r.json()["clients"]]

        everyone = await names()
        assert everyone == list(reversed(made))  # newest first
        assert await names(order="oldest") == list(made)
        # The name is searched in the name, push name and saved name, ignoring case; `%` and
        # `_` are plain characters.
        assert await names(name="AIGERIM", order="oldest") == [
            "Aigerim Sadykova", "aigerim_k", "Cholpon"]
        assert await names(name="m_k") == ["aigerim_k"]
        assert await names(name="0%") == ["100% Tours"]
        assert await names(name="%") == ["100% Tours"]
        assert await names(phone="+996555100001") == ["Bakyt"]
        assert await names(phone="996 555 100 001") == ["Bakyt"]  # as a URL's `+` arrives
        assert await names(phone="+996555100009") == []
        assert await names(status="SOLD") == ["Bakyt"]
        assert await names(language="ky", order="oldest") == ["Bakyt", "Daniyar"]
        assert await names(language="ky", name="dan") == ["Daniyar"]
        # Changed since: the clients touched after a moment.
        moment = datetime.now(UTC)
        await clients_repo.update_profile(db, client_id=made["Daniyar"], saved_name="Dani")
        await clients_repo.update_profile(db, client_id=made["Aigerim Sadykova"],
                                          push_name="Aika")
        since = (moment - timedelta(milliseconds=1)).isoformat()
        assert await names(updatedSince=since, order="oldest") == [
            "Aigerim Sadykova", "Daniyar"]
        assert await names(updatedSince=since, language="ky") == ["Daniyar"]
        # Pages of two: each client once, in order; the cursor keeps the filters.
        pages = await every_page(viewer, path, "clients", limit=2)
        assert [len(p) for p in pages] == [2, 2, 2]
        assert [c["name"] for p in pages for c in p] == everyone
        pages = await every_page(viewer, path, "clients", limit=1, name="aigerim")
        assert [c["name"] for p in pages for c in p] == ["Cholpon", "aigerim_k",
                                                         "Aigerim Sadykova"]
        # Every field, camelCase.
        r = await viewer.get(path, params={"phone": "+996555100000"})
        (aigerim,) = r.json()["clients"]
        assert set(aigerim) == {
            "id", "organizationId", "phone", "name", "pushName", "savedName",
            "profilePictureUrl", "preferredLanguage", "status", "metadata", "createdAt",
            "updatedAt"}
        assert (aigerim["id"], aigerim["organizationId"], aigerim["pushName"]) == (
            str(made["Aigerim Sadykova"]), str(org), "Aika")


async def test_new_clients_between_pages_neither_skip_nor_repeat(live_api: LiveApi) -> None:
    with trio.fail_after(60):
        db = live_api.ctx.db
        org = await live_api.create_org()
        first = [(await new_client(db, org, f"+9965552000{i:02d}", f"client {i}"))[0]
                 for i in range(12)]
        viewer = (await tokens(live_api, org))["VIEWER"]
        added: list[uuid.UUID] = []

        async def more(page: int) -> None:
            for k in range(2):
                added.append((await new_client(db, org, f"+9965553{page:02d}00{k}"))[0])

        for order in ("newest", "oldest"):
            added.clear()
            pages = await every_page(viewer, f"/api/whatsapp/clients/{org}", "clients",
                                     limit=5, order=order, between=more)
            seen = [uuid.UUID(c["id"]) for p in pages for c in p]
            assert len(seen) == len(set(seen))  # no repeat
            assert set(first) <= set(seen)  # no skip
            if order == "oldest":  # the new ones come after: all of them are read too
                assert set(added) <= set(seen)
            await db.execute("DELETE FROM clients WHERE id = ANY($1::uuid[])", added)


async def test_a_client_with_its_conversations_and_answer_times(live_api: LiveApi) -> None:
    with trio.fail_after(60):
        db = live_api.ctx.db
        org, client, conversation = await org_with_aigerim(live_api)
        chat = "996555123456@c.us"
        await add_message(db, org, conversation, chat, "IN", T0, "Salam!")
        await add_message(db, org, conversation, chat, "IN", T0 + timedelta(seconds=10), "?")
        await add_message(db, org, conversation, chat, "OUT", T0 + timedelta(seconds=70), "Hi")
        await add_message(db, org, conversation, chat, "IN", T0 + timedelta(seconds=200), "$?")
        await conversations_repo.close(db, conversation_id=conversation)
        newer, _ = await conversations_repo.get_or_create_active(
            db, organization_id=org, client_id=client, wa_chat_id=chat)
        viewer = (await tokens(live_api, org))["VIEWER"]
        r = await viewer.get(f"/api/whatsapp/clients/{org}/{client}")
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["id"], body["name"], body["moreConversations"]) == (
            str(client), "Aigerim", False)
        assert [c["id"] for c in body["conversations"]] == [str(newer.id), str(conversation)]
        closed = body["conversations"][1]
        assert closed["status"] == "CLOSED"
        assert closed["firstAnswerSeconds"] == 70.0
        assert closed["lastAnswerSeconds"] == 70.0
        assert datetime.fromisoformat(closed["awaitingAnswerSince"]) == T0 + timedelta(
            seconds=200)
        fresh = body["conversations"][0]
        assert (fresh["firstAnswerSeconds"], fresh["lastAnswerSeconds"],
                fresh["awaitingAnswerSince"]) == (None, None, None)
        r = await viewer.get(f"/api/whatsapp/conversations/{org}/{conversation}")
        assert r.status_code == 200
        assert r.json() == closed


async def test_messages_both_ways_with_cursors_stable_under_writes(live_api: LiveApi) -> None:
    with trio.fail_after(60):
        db = live_api.ctx.db
        org, _, conversation = await org_with_aigerim(live_api)
        _, elsewhere = await new_client(db, org, "+996555123457", "Bakyt")
        chat = "996555123456@c.us"
        ids = []
        for k in range(23):
            # Two messages share each second of WhatsApp's time: arrival orders them.
            ids.append(await add_message(db, org, conversation, chat, "IN" if k % 3 else "OUT",
                                         T0 + timedelta(seconds=k // 2), f"m{k}"))
        await add_message(db, org, elsewhere, "996555123457@c.us", "IN", T0, "not here")
        await add_message(db, org, None, chat, "IN", T0, "not linked yet")
        agent = (await tokens(live_api, org))["AGENT"]
        path = f"/api/whatsapp/conversations/{org}/{conversation}/messages"
        r = await agent.get(path, params={"limit": 200, "order": "oldest"})
        assert [m["body"] for m in r.json()["messages"]] == [f"m{k}" for k in range(23)]
        assert r.json()["nextCursor"] is None
        r = await agent.get(path)
        assert [m["body"] for m in r.json()["messages"]] == [f"m{k}" for k in reversed(
            range(23))]
        assert set(r.json()["messages"][0]) == {
            "id", "organizationId", "conversationId", "waMessageId", "waChatId", "direction",
            "sender", "type", "body", "caption", "media", "sentAt", "status", "editedAt",
            "language", "createdAt"}

        # While the CRM pages, messages keep arriving: newer ones, and older ones (catch-up
        # after a reconnect stores messages written while wad was away).
        arrived: list[uuid.UUID] = []

        async def arrive(page: int) -> None:
            arrived.append(await add_message(db, org, conversation, chat, "IN",
                                             T0 + timedelta(seconds=100 + page), f"new {page}"))
            arrived.append(await add_message(db, org, conversation, chat, "IN",
                                             T0 + timedelta(seconds=5, microseconds=page),
                                             f"old {page}"))

        for order in ("newest", "oldest"):
            arrived.clear()
            pages = await every_page(agent, path, "messages", limit=4, order=order,
                                     between=arrive)
            seen = [uuid.UUID(m["id"]) for p in pages for m in p]
            assert len(seen) == len(set(seen)), "a message was repeated"
            assert set(ids) <= set(seen), "a message was skipped"
            sent = [(datetime.fromisoformat(m["sentAt"]), datetime.fromisoformat(m["createdAt"]))
                    for p in pages for m in p]
            assert sent == sorted(sent, reverse=order == "newest")
            await db.execute("DELETE FROM messages WHERE id = ANY($1::uuid[])", arrived)


async def test_status_history_and_import_runs(live_api: LiveApi) -> None:
    with trio.fail_after(60):
        db = live_api.ctx.db
        org, client, _ = await org_with_aigerim(live_api)
        for status in ("QUALIFIED", "WARMED", "PROPOSAL_SENT"):
            await clients_repo.set_status(db, client_id=client, status=status,
                                          detector="heuristic_status",
                                          reason=f"{status}: matched 'тур'")
        runs = []
        for source in ("whatsapp", "export", "whatsapp"):
            run = await imports_repo.create(db, organization_id=org, source=source)
            await imports_repo.finish(db, run_id=run.id, status="COMPLETED")
            runs.append(run.id)
        roles = await tokens(live_api, org)
        path = f"/api/whatsapp/clients/{org}/{client}/status-history"
        pages = await every_page(roles["AGENT"], path, "changes", limit=2, order="oldest")
        changes = [c for p in pages for c in p]
        assert [(c["fromStatus"], c["toStatus"]) for c in changes] == [
            ("NEW_LEAD", "QUALIFIED"), ("QUALIFIED", "WARMED"), ("WARMED", "PROPOSAL_SENT")]
        assert changes[0]["reason"] == "QUALIFIED: matched 'тур'"
        assert changes[0]["detector"] == "heuristic_status"
        # A VIEWER sees the moves, not the reasons (they quote the client's words).
        r = await roles["VIEWER"].get(path)
        assert [c["toStatus"] for c in r.json()["changes"]] == [
            "PROPOSAL_SENT", "WARMED", "QUALIFIED"]
        assert {c["reason"] for c in r.json()["changes"]} == {None}

        pages = await every_page(roles["VIEWER"], f"/api/whatsapp/import/{org}/runs", "runs",
                                 limit=2)
        assert [r["id"] for p in pages for r in p] == [str(i) for i in reversed(runs)]
        assert {r["status"] for p in pages for r in p} == {"COMPLETED"}
        assert pages[0][0]["source"] == "whatsapp" and pages[0][0]["finishedAt"]


async def test_bad_cursors_and_filters_are_400s_that_say_what(live_api: LiveApi) -> None:
    with trio.fail_after(60):
        db = live_api.ctx.db
        org, client, conversation = await org_with_aigerim(live_api)
        for i in range(3):
            await new_client(db, org, f"+99655599000{i}", f"more {i}")
            await add_message(db, org, conversation, "996555123456@c.us", "IN",
                              T0 + timedelta(seconds=i), f"m{i}")
        viewer = (await tokens(live_api, org))["VIEWER"]
        clients = f"/api/whatsapp/clients/{org}"
        messages = f"/api/whatsapp/conversations/{org}/{conversation}/messages"
        r = await viewer.get(clients, params={"limit": 1, "name": "more"})
        by_name = r.json()["nextCursor"]
        r = await viewer.get(messages, params={"limit": 1})
        of_messages = r.json()["nextCursor"]
        assert by_name and of_messages

        async def refused(path: str, params: dict[str, Any], field: str, code: str,
                          words: str) -> None:
            r = await viewer.get(path, params=params)
            assert r.status_code == 400, (params, r.text)
            error = r.json()["error"]
            assert (error["code"], error["field"]) == (code, field), error
            assert words in error["message"], error

        for garbage in ("nope", "!!!", "W10", "WzEsIm1lc3NhZ2VzIiwiYWJjIiwxXQ", "x" * 500):
            await refused(clients, {"cursor": garbage}, "cursor", "bad_cursor" if len(
                garbage) <= 400 else "invalid", "cursor")
        await refused(clients, {"cursor": of_messages}, "cursor", "bad_cursor",
                      "another list")
        await refused(clients, {"cursor": by_name}, "cursor", "bad_cursor", "another query")
        await refused(clients, {"cursor": by_name, "name": "more", "order": "oldest"},
                      "cursor", "bad_cursor", "another query")
        await refused(messages, {"cursor": of_messages, "order": "oldest"}, "cursor",
                      "bad_cursor", "another query")
        other_conversation = (await new_client(db, org, "+996555123400"))[1]
        await refused(f"/api/whatsapp/conversations/{org}/{other_conversation}/messages",
                      {"cursor": of_messages}, "cursor", "bad_cursor", "another query")
        await refused(clients, {"status": "HAPPY"}, "status", "invalid", "NEW_LEAD")
        await refused(clients, {"updatedSince": "2026-03-01T09:00:00"}, "updatedSince",
                      "invalid", "timezone")
        await refused(clients, {"updatedSince": "yesterday"}, "updatedSince", "invalid",
                      "datetime")
        await refused(clients, {"phone": "12"}, "phone", "invalid", "country code")
        await refused(clients, {"language": "ru;drop"}, "language", "invalid", "matching regex")
        await refused(clients, {"name": ""}, "name", "invalid", "length")
        await refused(clients, {"updated_since": "2026-03-01T09:00:00Z"}, "updated_since",
                      "invalid", "unknown query parameter")
        await refused(clients, {"limit": 0}, "limit", "invalid", ">= 1")
        await refused(clients, {"limit": 201}, "limit", "invalid", "<= 200")
        await refused(clients, {"limit": "many"}, "limit", "invalid", "int")
        await refused(messages, {"order": "sideways"}, "order", "invalid", "newest")
        r = await viewer.get(clients, params=[("status", "SOLD"), ("status", "NEW_LEAD")])
        assert r.status_code == 400 and r.json()["error"]["field"] == "status"
        # The cursor still works with its own query.
        r = await viewer.get(clients, params={"limit": 1, "name": "more", "cursor": by_name})
        assert r.status_code == 200 and r.json()["clients"][0]["name"] == "more 1"
        r = await viewer.get(f"{clients}/{client}/status-history", params={"cursor": by_name})
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_cursor"


async def test_tenancy_and_roles(live_api: LiveApi) -> None:
    with trio.fail_after(60):
        db = live_api.ctx.db
        org = await live_api.create_org("Mine")
        theirs = await live_api.create_org("Theirs")
        client, conversation = await new_client(db, org, "+996555123456", "Aigerim")
        their_client, their_conversation = await new_client(db, theirs, "+996555123456",
                                                            "Same number, other org")
        await add_message(db, org, conversation, "996555123456@c.us", "IN", T0, "Salam!",
                          type="document", caption="the contract",
                          media={"wa_type": "document", "mimetype": "application/pdf",
                                 "filename": "contract-aigerim.pdf", "size": 1234})
        await add_message(db, theirs, their_conversation, "996555123456@c.us", "IN", T0,
                          "their secret")
        await imports_repo.create(db, organization_id=theirs, source="whatsapp")
        roles = await tokens(live_api, org)
        other_admin = live_api.client((await live_api.create_token("ADMIN", theirs))["token"])
        super_admin = live_api.client((await live_api.create_token("SUPER_ADMIN"))["token"])
        paths = ["/api/whatsapp/clients/{org}", "/api/whatsapp/clients/{org}/{client}",
                 "/api/whatsapp/clients/{org}/{client}/status-history",
                 "/api/whatsapp/conversations/{org}/{conversation}",
                 "/api/whatsapp/conversations/{org}/{conversation}/messages",
                 "/api/whatsapp/import/{org}/runs"]
        for path in paths:
            mine = path.format(org=org, client=client, conversation=conversation)
            for caller in (*roles.values(), super_admin, live_api.socket_client()):
                r = await caller.get(mine)
                assert r.status_code == 200, (mine, r.text)
            assert "their secret" not in r.text and str(their_client) not in r.text
            # Another organization's token: 403, whether the organization exists or not.
            r = await other_admin.get(mine)
            assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
            missing = path.format(org=uuid.uuid4(), client=client, conversation=conversation)
            assert (await other_admin.get(missing)).json() == r.json()
            r = await live_api.client().get(mine)
            assert r.status_code == 401
        # Their client and conversation under my organization's path: not found; so are a
        # malformed id and (for the super admin) an organization that does not exist.
        for caller, path in (
                (roles["ADMIN"], f"/api/whatsapp/clients/{org}/{their_client}"),
                (roles["ADMIN"], f"/api/whatsapp/clients/{org}/{their_client}/status-history"),
                (roles["ADMIN"], f"/api/whatsapp/conversations/{org}/{their_conversation}"),
                (roles["ADMIN"],
                 f"/api/whatsapp/conversations/{org}/{their_conversation}/messages"),
                (roles["VIEWER"], f"/api/whatsapp/clients/{org}/not-a-uuid"),
                (super_admin, f"/api/whatsapp/clients/{uuid.uuid4()}"),
                (super_admin, f"/api/whatsapp/import/{uuid.uuid4()}/runs")):
            r = await caller.get(path)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["error"]["code"] == "not_found"
        # A VIEWER reads the message's facts, not its text or its file's name.
        path = f"/api/whatsapp/conversations/{org}/{conversation}/messages"
        (seen,) = (await roles["VIEWER"].get(path)).json()["messages"]
        assert (seen["body"], seen["caption"]) == (None, None)
        assert seen["media"] == {"wa_type": "document", "mimetype": "application/pdf",
                                 "size": 1234}
        assert seen["type"] == "document" and seen["status"] == "RECEIVED"
        for role in ("AGENT", "ADMIN"):
            (seen,) = (await roles[role].get(path)).json()["messages"]
            assert (seen["body"], seen["caption"]) == ("Salam!", "the contract")
            assert seen["media"]["filename"] == "contract-aigerim.pdf"


async def test_the_pages_are_index_scans(db: Database) -> None:
    """The plans of the queries the read API runs, on 3,000 clients with 10 messages each:
    clients, conversations and messages are read through indexes, messages only through a
    conversation's. (bench/api.py shows the plans at a million messages.)"""
    org = uuid.uuid4()
    await db.execute("INSERT INTO organizations (id, name) VALUES ($1, 'Tours')", org)
    other = uuid.uuid4()
    await db.execute("INSERT INTO organizations (id, name) VALUES ($1, 'Other')", other)
    await fill(db, other, clients=500, per_conversation=10)
    filled = await fill(db, org, clients=3000, per_conversation=10)
    explaining = Explaining(db)
    conversation = filled.conversations[100]
    page = await read_repo.messages(explaining, organization_id=org,
                                    conversation_id=conversation, order="newest", limit=50)
    last = page.rows[-1]
    await read_repo.messages(explaining, organization_id=org, conversation_id=conversation,
                             order="oldest", limit=50,
                             after=(last.sent_at, last.created_at, last.id))
    await read_repo.clients(explaining, organization_id=org, order="newest", limit=50)
    await read_repo.clients(explaining, organization_id=org, order="oldest", limit=50,
                            status="SOLD", after=(page.rows[0].created_at, uuid.uuid4()))
    await read_repo.clients(explaining, organization_id=org, order="newest", limit=50,
                            language="ky")
    await read_repo.client(explaining, organization_id=org, client_id=filled.clients[3])
    await read_repo.conversations_of(explaining, client_id=filled.clients[3])
    await read_repo.status_history(explaining, organization_id=org,
                                   client_id=filled.clients[3], order="newest", limit=50,
                                   after=10)
    await read_repo.import_runs(explaining, organization_id=org, order="newest", limit=50)
    await answers_repo.for_conversations(explaining, conversation_ids=filled.conversations[:3])
    await answers_repo.answered_by(explaining, message_id=last.id,
                                   conversation_id=conversation)
    assert len(explaining.plans) == 11
    for sql, plan in explaining.plans:
        shown = f"{sql}\n{describe(plan)}"
        every = list(nodes(plan))
        # (Import runs and status history are empty here: a sequential scan is right there.)
        assert not [n for n in every if n["Node Type"] == "Seq Scan" and n["Relation Name"]
                    in ("messages", "clients", "conversations")], shown
        indexes = [n["Index Name"] for n in every if "Index Name" in n]
        # Messages are only ever reached through a conversation's index (or by id).
        assert all(i.startswith("messages_conversation") or i == "messages_pkey"
                   for i in indexes if i.startswith("messages")), shown
    # In a long conversation, a page deep inside is read in the page's order, without sorting.
    long = uuid.uuid4()
    await db.execute("INSERT INTO organizations (id, name) VALUES ($1, 'Chatty')", long)
    chatty = await fill(db, long, clients=2, per_conversation=20_000)
    explaining.plans.clear()
    for order in ("newest", "oldest"):
        page = await read_repo.messages(explaining, organization_id=long,
                                        conversation_id=chatty.conversations[0],
                                        order=order, limit=200)
        middle = page.rows[-1]
        await read_repo.messages(explaining, organization_id=long,
                                 conversation_id=chatty.conversations[0], order=order, limit=50,
                                 after=(middle.sent_at, middle.created_at, middle.id))
    for sql, plan in explaining.plans:
        shown = f"{sql}\n{describe(plan)}"
        assert describe(plan).splitlines() == [
            "Limit", "  Index Scan on messages using messages_conversation_order"], shown


async def test_a_batch_within_one_second_keeps_its_order(live_api: LiveApi) -> None:
    """WhatsApp's clock has seconds; messages stored together (catch-up, an import) are
    ordered as they were given."""
    with trio.fail_after(30):
        db = live_api.ctx.db
        org, _, conversation = await org_with_aigerim(live_api)
        texts = [f"quick {k}" for k in range(12)]
        await messages_repo.insert_many(db, messages=[NewMessage(
            organization_id=org, wa_message_id=f"wa-{k}", wa_chat_id="996555123456@c.us",
            direction="IN", sender="CLIENT", sent_at=T0, status="RECEIVED", body=text,
            conversation_id=conversation, processing_state="DONE")
            for k, text in enumerate(texts)])
        agent = (await tokens(live_api, org))["AGENT"]
        r = await agent.get(f"/api/whatsapp/conversations/{org}/{conversation}/messages",
                            params={"order": "oldest"})
        assert [m["body"] for m in r.json()["messages"]] == texts
