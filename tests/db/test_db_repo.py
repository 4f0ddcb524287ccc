"""Each repository function against a real PostgreSQL: what it stores is what it answers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import trio

from wad.db.models import (
    ApiToken,
    Client,
    ImportRun,
    Message,
    NewMessage,
    Organization,
    OutboxItem,
    PluginDelivery,
    SessionArchive,
    WhatsAppSession,
)
from wad.db.pool import Database
from wad.db.repo import (
    clients,
    conversations,
    deliveries,
    imports,
    messages,
    organizations,
    outbox,
    sessions,
    tokens,
)
from wad.errors import NotFound

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PHONE = "+996555123456"
CHAT = "996555123456@c.us"


async def _org(db: Database, name: str = "Tour Co") -> Organization:
    return await organizations.create(db, name=name)


def _msg(org: uuid.UUID, wa_id: str, *, at: datetime = T0, chat: str = CHAT,
         **fields: object) -> NewMessage:
    values: dict[str, object] = dict(organization_id=org, wa_message_id=wa_id, wa_chat_id=chat,
                                     direction="IN", sender="CLIENT", sent_at=at,
                                     status="RECEIVED", body=f"text {wa_id}")
    values.update(fields)
    return NewMessage(**values)  # type: ignore[arg-type]


async def test_organizations(db: Database) -> None:
    first = await organizations.create(db, name="Tour Co", settings={"limits": {"perMinute": 5}})
    second = await _org(db, "Другая")
    assert isinstance(first, Organization)
    assert first.settings == {"limits": {"perMinute": 5}}
    assert second.settings == {}
    assert await organizations.get(db, organization_id=first.id) == first
    assert await organizations.get(db, organization_id=uuid.uuid4()) is None
    assert [o.name for o in await organizations.list_all(db)] == ["Tour Co", "Другая"]

    updated = await organizations.update_settings(db, organization_id=second.id,
                                                  settings={"enableMassSending": True})
    assert updated is not None
    assert updated.settings == {"enableMassSending": True}
    assert (await organizations.get(db, organization_id=second.id)) == updated
    assert await organizations.update_settings(db, organization_id=uuid.uuid4(),
                                               settings={}) is None
    with pytest.raises(asyncpg.CheckViolationError):
        await organizations.create(db, name="x" * 201)


async def test_tokens(db: Database) -> None:
    org = await _org(db)
    admin = await tokens.create(db, token_hash=b"a" * 32, prefix="wad_aaaa", role="ADMIN",
                                organization_id=org.id, name="CRM back end")
    root = await tokens.create(db, token_hash=b"r" * 32, prefix="wad_rrrr", role="SUPER_ADMIN",
                               organization_id=None)
    assert isinstance(admin, ApiToken)
    assert (admin.role, admin.organization_id, admin.prefix, admin.name) == (
        "ADMIN", org.id, "wad_aaaa", "CRM back end")
    assert admin.last_used_at is None
    assert admin.revoked_at is None

    assert await tokens.find_by_hash(db, token_hash=b"a" * 32) == admin
    assert await tokens.find_by_hash(db, token_hash=b"z" * 32) is None
    assert await tokens.list_all(db, organization_id=org.id) == [admin]
    assert {t.id for t in await tokens.list_all(db)} == {admin.id, root.id}

    first = await tokens.use(db, token_hash=b"a" * 32)
    assert first is not None and first.token == admin  # answered as it was before this use
    used = await tokens.find_by_hash(db, token_hash=b"a" * 32)
    assert used is not None
    assert used.last_used_at is not None
    again = await tokens.use(db, token_hash=b"a" * 32)  # within the minute: no new write
    assert again is not None and again.token.last_used_at == used.last_used_at
    after = await tokens.find_by_hash(db, token_hash=b"a" * 32)
    assert after is not None
    assert after.last_used_at == used.last_used_at
    assert await tokens.use(db, token_hash=b"z" * 32) is None

    assert await tokens.revoke(db, token_id=admin.id) is True
    assert await tokens.revoke(db, token_id=admin.id) is False
    assert await tokens.find_by_hash(db, token_hash=b"a" * 32) is None
    [listed] = await tokens.list_all(db, organization_id=org.id)
    assert listed.revoked_at is not None


async def test_session_state_changes_keep_the_right_fields(db: Database) -> None:
    org = await _org(db)
    fresh = await sessions.ensure(db, organization_id=org.id)
    assert isinstance(fresh, WhatsAppSession)
    assert (fresh.state, fresh.should_run, fresh.sending_paused) == ("DISCONNECTED", False, False)
    assert await sessions.ensure(db, organization_id=org.id) == fresh
    assert await sessions.get(db, organization_id=uuid.uuid4()) is None

    await sessions.set_state(db, organization_id=org.id, state="CONNECTING")
    qr1 = await sessions.set_state(db, organization_id=org.id, state="QR_CODE_PENDING",
                                   qr_payload="2@abc")
    assert (qr1.state, qr1.qr_payload) == ("QR_CODE_PENDING", "2@abc")
    assert qr1.qr_issued_at is not None
    same = await sessions.set_state(db, organization_id=org.id, state="QR_CODE_PENDING",
                                    qr_payload="2@abc")
    assert same.qr_issued_at == qr1.qr_issued_at
    qr2 = await sessions.set_state(db, organization_id=org.id, state="QR_CODE_PENDING",
                                   qr_payload="2@def")
    assert qr2.qr_payload == "2@def"
    assert qr2.qr_issued_at is not None
    assert qr2.qr_issued_at > qr1.qr_issued_at

    up = await sessions.set_state(db, organization_id=org.id, state="CONNECTED",
                                  phone_number=PHONE, push_name="Tours", wa_version="2.3000.1")
    assert (up.qr_payload, up.qr_issued_at, up.last_error) == (None, None, None)
    assert (up.phone_number, up.push_name, up.wa_version) == (PHONE, "Tours", "2.3000.1")
    assert up.last_connected_at is not None
    assert up.last_disconnected_at is None

    down = await sessions.set_state(db, organization_id=org.id, state="ERROR",
                                    last_error="conflict")
    assert down.last_error == "conflict"
    assert down.last_disconnected_at is not None
    assert down.last_connected_at == up.last_connected_at
    assert down.phone_number == PHONE  # the linked account is remembered

    retrying = await sessions.set_state(db, organization_id=org.id, state="CONNECTING")
    assert retrying.last_error == "conflict"
    assert retrying.last_disconnected_at == down.last_disconnected_at

    pairing = await sessions.set_state(db, organization_id=org.id, state="PAIRING_CODE_PENDING",
                                       pairing_code="ABCD1234")
    assert pairing.pairing_code == "ABCD1234"
    assert pairing.pairing_code_issued_at is not None
    assert pairing.qr_payload is None
    back = await sessions.set_state(db, organization_id=org.id, state="CONNECTED")
    assert (back.pairing_code, back.pairing_code_issued_at) == (None, None)
    assert back.last_connected_at is not None
    assert up.last_connected_at is not None
    assert back.last_connected_at > up.last_connected_at
    assert await sessions.get(db, organization_id=org.id) == back

    # set_state creates the row when there is none.
    other = await _org(db, "Other")
    created = await sessions.set_state(db, organization_id=other.id, state="CONNECTING")
    assert created.state == "CONNECTING"
    with pytest.raises(asyncpg.CheckViolationError):
        await sessions.set_state(db, organization_id=org.id, state="ASLEEP")  # type: ignore[arg-type]


async def test_a_state_change_written_late_keeps_its_own_time(db: Database) -> None:
    """After a database outage the session writes its changes with the time they happened;
    a final state carries `should_run` in the same write."""
    org = await _org(db)
    await sessions.set_state(db, organization_id=org.id, state="CONNECTED")
    left = datetime.now(UTC) - timedelta(seconds=40)
    back = left + timedelta(seconds=10)
    down = await sessions.set_state(db, organization_id=org.id, state="CONNECTING",
                                    last_error="conflict", at=left)
    assert down.last_disconnected_at == left
    up = await sessions.set_state(db, organization_id=org.id, state="CONNECTED", at=back)
    assert (up.last_connected_at, up.last_disconnected_at) == (back, left)
    await sessions.set_should_run(db, organization_id=org.id, should_run=True)
    ended = await sessions.set_state(db, organization_id=org.id, state="BANNED",
                                     last_error="account banned", should_run=False)
    assert (ended.state, ended.should_run) == ("BANNED", False)
    kept = await sessions.set_state(db, organization_id=org.id, state="BANNED")
    assert kept.should_run is False  # not given: unchanged


async def test_session_desired_state_node_and_circuit_breaker(db: Database) -> None:
    a, b, c = await _org(db, "A"), await _org(db, "B"), await _org(db, "C")
    await sessions.set_should_run(db, organization_id=a.id, should_run=True)  # creates the row
    await sessions.set_should_run(db, organization_id=b.id, should_run=True)
    await sessions.ensure(db, organization_id=c.id)
    assert set(await sessions.list_should_run(db)) == {a.id, b.id}
    await sessions.set_should_run(db, organization_id=b.id, should_run=False)
    assert await sessions.list_should_run(db) == [a.id]

    await sessions.set_node(db, organization_id=a.id, node_id="node-1")
    row = await sessions.get(db, organization_id=a.id)
    assert row is not None
    assert row.node_id == "node-1"

    await sessions.set_sending_paused(db, organization_id=a.id, paused=True,
                                      reason="account restricted")
    row = await sessions.get(db, organization_id=a.id)
    assert row is not None
    assert (row.sending_paused, row.sending_paused_reason) == (True, "account restricted")
    await sessions.set_sending_paused(db, organization_id=a.id, paused=False)
    row = await sessions.get(db, organization_id=a.id)
    assert row is not None
    assert (row.sending_paused, row.sending_paused_reason) == (False, None)


async def test_session_archives_keep_every_version_until_purged(db: Database) -> None:
    org, other = await _org(db), await _org(db, "Other")
    assert await sessions.latest_archive(db, organization_id=org.id) is None
    for i in range(3):
        await sessions.add_archive(db, organization_id=org.id, archive=bytes([i]) * 100,
                                   sha256=bytes([i]) * 32, size=1000 + i)
    await sessions.add_archive(db, organization_id=other.id, archive=b"o", sha256=b"o" * 32,
                               size=1)

    latest = await sessions.latest_archive(db, organization_id=org.id)
    assert isinstance(latest, SessionArchive)
    assert (latest.archive, latest.sha256, latest.size) == (b"\x02" * 100, b"\x02" * 32, 1002)
    listed = await sessions.list_archives(db, organization_id=org.id)
    assert [a.size for a in listed] == [1002, 1001, 1000]
    assert not hasattr(listed[0], "archive")

    assert await sessions.purge_archives(db, organization_id=org.id, keep_latest=1) == 2
    assert [a.size for a in await sessions.list_archives(db, organization_id=org.id)] == [1002]
    assert await sessions.purge_archives(db, organization_id=org.id) == 1
    assert await sessions.latest_archive(db, organization_id=org.id) is None
    assert len(await sessions.list_archives(db, organization_id=other.id)) == 1


async def test_clients_upsert_profile_and_status_history(db: Database) -> None:
    org = await _org(db)
    client, created = await clients.upsert(db, organization_id=org.id, phone=PHONE,
                                           push_name="Aida")
    assert isinstance(client, Client)
    assert created is True
    assert (client.phone, client.push_name, client.status, client.metadata) == (
        PHONE, "Aida", "NEW_LEAD", {})

    again, created = await clients.upsert(db, organization_id=org.id, phone=PHONE,
                                          push_name="Aida")
    assert created is False
    assert again == client  # nothing changed: not even updated_at

    renamed, created = await clients.upsert(db, organization_id=org.id, phone=PHONE,
                                            push_name="Aida K.")
    assert created is False
    assert renamed.id == client.id
    assert renamed.push_name == "Aida K."
    assert renamed.updated_at > client.updated_at
    kept, _ = await clients.upsert(db, organization_id=org.id, phone=PHONE)
    assert kept.push_name == "Aida K."

    assert await clients.get(db, client_id=client.id) == kept
    assert await clients.get_by_phone(db, organization_id=org.id, phone=PHONE) == kept
    assert await clients.get_by_phone(db, organization_id=org.id, phone="+996700000000") is None

    profiled = await clients.update_profile(db, client_id=client.id, saved_name="Aida (Bishkek)",
                                            profile_picture_url="https://pps.example/a.jpg",
                                            preferred_language="ru")
    assert profiled is not None
    assert (profiled.push_name, profiled.saved_name, profiled.preferred_language) == (
        "Aida K.", "Aida (Bishkek)", "ru")
    assert profiled.profile_picture_url == "https://pps.example/a.jpg"

    change = await clients.set_status(db, client_id=client.id, status="QUALIFIED",
                                      detector="heuristic", reason="asked for prices")
    assert change is not None
    assert (change.from_status, change.to_status, change.detector, change.reason) == (
        "NEW_LEAD", "QUALIFIED", "heuristic", "asked for prices")
    assert await clients.set_status(db, client_id=client.id, status="QUALIFIED",
                                     detector="llm") is None
    await clients.set_status(db, client_id=client.id, status="SOLD", detector="llm")
    history = await clients.status_history(db, client_id=client.id)
    assert [(h.from_status, h.to_status) for h in history] == [
        ("NEW_LEAD", "QUALIFIED"), ("QUALIFIED", "SOLD")]
    current = await clients.get(db, client_id=client.id)
    assert current is not None
    assert current.status == "SOLD"

    with pytest.raises(NotFound):
        await clients.set_status(db, client_id=uuid.uuid4(), status="SOLD", detector="x")
    with pytest.raises(asyncpg.CheckViolationError):
        await clients.set_status(db, client_id=client.id, status="HAPPY",  # type: ignore[arg-type]
                                 detector="x")
    assert len(await clients.status_history(db, client_id=client.id)) == 2


async def test_concurrent_upserts_of_one_phone_make_one_client(db: Database) -> None:
    org = await _org(db)
    results: list[tuple[Client, bool]] = []

    async def upsert() -> None:
        results.append(await clients.upsert(db, organization_id=org.id, phone=PHONE))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(upsert)
    assert len({c.id for c, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, False, False, True]


async def test_conversations(db: Database) -> None:
    org = await _org(db)
    client, _ = await clients.upsert(db, organization_id=org.id, phone=PHONE)
    conv, created = await conversations.get_or_create_active(
        db, organization_id=org.id, client_id=client.id, wa_chat_id=CHAT)
    assert created is True
    assert (conv.status, conv.channel, conv.wa_chat_id, conv.last_message_at) == (
        "ACTIVE", "WHATSAPP", CHAT, None)
    same, created = await conversations.get_or_create_active(
        db, organization_id=org.id, client_id=client.id)
    assert created is False
    assert same == conv

    await conversations.touch(db, conversation_id=conv.id, at=T0)
    await conversations.touch(db, conversation_id=conv.id, at=T0 - timedelta(hours=1))
    touched = await conversations.get(db, conversation_id=conv.id)
    assert touched is not None
    assert touched.last_message_at == T0

    assert await conversations.close(db, conversation_id=conv.id) is True
    assert await conversations.close(db, conversation_id=conv.id) is False
    new, created = await conversations.get_or_create_active(
        db, organization_id=org.id, client_id=client.id)
    assert created is True
    assert new.id != conv.id


async def test_messages_are_stored_once(db: Database) -> None:
    org = await _org(db)
    first, new = await messages.insert_if_absent(db, message=_msg(
        org.id, "A1", type="image", caption="look", body=None,
        media={"mimetype": "image/jpeg", "size": 1234}))
    assert isinstance(first, Message)
    assert new is True
    assert (first.type, first.caption, first.media) == (
        "image", "look", {"mimetype": "image/jpeg", "size": 1234})
    assert (first.processing_state, first.processing_attempts, first.conversation_id) == (
        "PENDING", 0, None)
    again, new = await messages.insert_if_absent(db, message=_msg(org.id, "A1", body="changed"))
    assert new is False
    assert again == first
    assert await messages.get(db, message_id=first.id) == first
    assert await messages.get_by_wa_id(db, organization_id=org.id, wa_message_id="A1") == first
    assert await messages.get_by_wa_id(db, organization_id=org.id, wa_message_id="nope") is None


async def test_bulk_insert_skips_what_is_stored(db: Database) -> None:
    org = await _org(db)
    await messages.insert_if_absent(db, message=_msg(org.id, "B1"))
    batch = [
        _msg(org.id, "B1"),  # stored already
        _msg(org.id, "B2", at=T0 + timedelta(minutes=1), media={"lat": 42.87, "lng": 74.59},
             type="location", body=None),
        _msg(org.id, "B3", direction="OUT", sender="HUMAN", status="READ",
             processing_state="SKIPPED"),
        _msg(org.id, "B3", direction="OUT", sender="HUMAN", status="READ"),  # twice in a batch
    ]
    stored = await messages.insert_many(db, messages=batch)
    assert sorted(m.wa_message_id for m in stored) == ["B2", "B3"]
    by_id = {m.wa_message_id: m for m in stored}
    assert by_id["B2"].media == {"lat": 42.87, "lng": 74.59}
    assert by_id["B2"].type == "location"
    assert (by_id["B3"].direction, by_id["B3"].processing_state) == ("OUT", "SKIPPED")
    assert await messages.insert_many(db, messages=batch) == []
    assert await messages.insert_many(db, messages=[]) == []
    assert await db.fetchval("SELECT count(*) FROM messages") == 3

    # It joins the caller's transaction: rolled back with it.
    class Abort(Exception):
        pass

    async def insert_then_abort() -> None:
        async with db.transaction() as conn:
            assert len(await messages.insert_many(conn, messages=[_msg(org.id, "B9")])) == 1
            raise Abort

    with pytest.raises(Abort):
        await insert_then_abort()
    assert await messages.get_by_wa_id(db, organization_id=org.id, wa_message_id="B9") is None


async def test_message_processing_and_status_updates(db: Database) -> None:
    org = await _org(db)
    client, _ = await clients.upsert(db, organization_id=org.id, phone=PHONE)
    conv, _ = await conversations.get_or_create_active(db, organization_id=org.id,
                                                       client_id=client.id)
    msg, _ = await messages.insert_if_absent(db, message=_msg(org.id, "P1"))
    failed = await messages.set_processing_state(db, message_id=msg.id, state="FAILED",
                                                 error="detector timed out")
    assert failed is not None
    assert (failed.processing_state, failed.processing_error, failed.processing_attempts) == (
        "FAILED", "detector timed out", 1)
    done = await messages.set_processing_state(db, message_id=msg.id, state="DONE",
                                               conversation_id=conv.id, language="ru")
    assert done is not None
    assert (done.processing_state, done.processing_error, done.processing_attempts) == (
        "DONE", None, 2)
    assert (done.conversation_id, done.language) == (conv.id, "ru")

    out, _ = await messages.insert_if_absent(db, message=_msg(
        org.id, "O1", direction="OUT", sender="AI", status="PENDING"))

    async def status(new: str) -> str | None:
        row = await messages.update_status(db, organization_id=org.id, wa_message_id="O1",
                                           status=new)  # type: ignore[arg-type]
        return None if row is None else row.status

    assert await status("SENT") == "SENT"
    assert await status("PENDING") is None  # a late ack never moves backwards
    assert await status("FAILED") is None  # only a pending message can fail
    assert await status("READ") == "READ"
    assert await status("DELIVERED") is None
    assert await status("READ") is None  # no change, no row
    assert await status("PLAYED") == "PLAYED"
    assert await messages.update_status(db, organization_id=org.id, wa_message_id="none",
                                        status="READ") is None

    edited = await messages.edit(db, organization_id=org.id, wa_message_id="P1", body="fixed",
                                 edited_at=T0 + timedelta(minutes=5))
    assert edited is not None
    assert (edited.body, edited.edited_at) == ("fixed", T0 + timedelta(minutes=5))
    assert await messages.edit(db, organization_id=org.id, wa_message_id="P1", body="older",
                               edited_at=T0 + timedelta(minutes=1)) is None

    revoked = await messages.revoke(db, organization_id=org.id, wa_message_id="P1")
    assert revoked is not None
    assert (revoked.status, revoked.body) == ("REVOKED", "fixed")
    assert await status("REVOKED") == "REVOKED"
    assert await status("READ") is None  # revoked is final

    failing, _ = await messages.insert_if_absent(db, message=_msg(
        org.id, "O2", direction="OUT", sender="HUMAN", status="PENDING"))
    assert (await messages.update_status(db, organization_id=org.id, wa_message_id="O2",
                                         status="FAILED")) is not None


async def test_message_listings(db: Database) -> None:
    org, other = await _org(db), await _org(db, "Other")
    client, _ = await clients.upsert(db, organization_id=org.id, phone=PHONE)
    conv, _ = await conversations.get_or_create_active(db, organization_id=org.id,
                                                       client_id=client.id)
    # Stored in three transactions (so created_at differs), WhatsApp times out of order.
    await messages.insert_many(db, messages=[
        _msg(org.id, "M1", at=T0 + timedelta(minutes=2)),
        _msg(org.id, "M2", at=T0 + timedelta(minutes=1))])
    await messages.insert_if_absent(db, message=_msg(org.id, "M3", at=T0))
    await messages.insert_if_absent(db, message=_msg(org.id, "G1", chat="other@c.us",
                                                     at=T0 + timedelta(hours=1)))
    await messages.insert_if_absent(db, message=_msg(other.id, "X1", at=T0 + timedelta(days=1)))

    pending = await messages.list_unprocessed(db, organization_id=org.id)
    assert [m.wa_message_id for m in pending] == ["M2", "M1", "M3", "G1"]
    await messages.set_processing_state(db, message_id=pending[0].id, state="DONE",
                                        conversation_id=conv.id)
    await messages.set_processing_state(db, message_id=pending[1].id, state="SKIPPED",
                                        conversation_id=conv.id)
    assert [m.wa_message_id for m in await messages.list_unprocessed(
        db, organization_id=org.id, limit=1)] == ["M3"]

    latest = await messages.latest_per_chat(db, organization_id=org.id)
    assert {k: (v.wa_message_id, v.sent_at) for k, v in latest.items()} == {
        CHAT: ("M1", T0 + timedelta(minutes=2)), "other@c.us": ("G1", T0 + timedelta(hours=1))}
    newest = await messages.latest_in_chat(db, organization_id=org.id, wa_chat_id=CHAT)
    assert newest is not None
    assert newest.wa_message_id == "M1"
    assert await messages.latest_in_chat(db, organization_id=org.id, wa_chat_id="x@c.us") is None

    in_conv = await messages.list_for_conversation(db, conversation_id=conv.id)
    assert [m.wa_message_id for m in in_conv] == ["M2", "M1"]
    assert [m.wa_message_id for m in await messages.list_for_conversation(
        db, conversation_id=conv.id, limit=1)] == ["M1"]


async def _enqueue(db: Database, org: uuid.UUID, content: str, **kw: object) -> OutboxItem:
    item, created = await outbox.enqueue(db, organization_id=org, to_phone=PHONE,
                                         content=content, **kw)  # type: ignore[arg-type]
    assert created
    return item


async def test_outbox_enqueue_honours_idempotency_keys(db: Database) -> None:
    org, other = await _org(db), await _org(db, "Other")
    item, created = await outbox.enqueue(db, organization_id=org.id, to_phone=PHONE,
                                         content="Hello", priority=5, sender="AI",
                                         agent_name="openrouter", idempotency_key="k1")
    assert isinstance(item, OutboxItem)
    assert created is True
    assert (item.status, item.priority, item.sender, item.agent_name, item.attempts) == (
        "QUEUED", 5, "AI", "openrouter", 0)
    assert item.wa_message_id is None
    same, created = await outbox.enqueue(db, organization_id=org.id, to_phone=PHONE,
                                         content="Hello again", idempotency_key="k1")
    assert created is False
    assert same == item
    _, created = await outbox.enqueue(db, organization_id=other.id, to_phone=PHONE,
                                      content="Hello", idempotency_key="k1")
    assert created is True
    got = await outbox.get_with_events(db, outbox_id=item.id)
    assert got is not None
    assert [e.status for e in got[1]] == ["QUEUED"]
    assert await outbox.count_pending(db, organization_id=org.id) == 1
    assert await outbox.get(db, outbox_id=uuid.uuid4()) is None


async def test_outbox_claims_by_priority_then_age_and_only_when_due(db: Database) -> None:
    org, other = await _org(db), await _org(db, "Other")
    normal = await _enqueue(db, org.id, "normal")
    agent = await _enqueue(db, org.id, "agent", priority=5)
    later = await _enqueue(db, org.id, "later", priority=10,
                           not_before=datetime.now(UTC) + timedelta(hours=1))
    normal2 = await _enqueue(db, org.id, "normal 2")
    await _enqueue(db, other.id, "not yours", priority=10)

    due_at = await outbox.next_due_at(db, organization_id=org.id)
    assert due_at is not None
    assert due_at <= datetime.now(UTC)
    order = []
    for i in range(4):
        claimed = await outbox.claim_next(db, organization_id=org.id, wa_message_id=f"W{i}")
        if claimed is None:
            break
        assert (claimed.status, claimed.attempts, claimed.wa_message_id) == (
            "SENDING", 1, f"W{i}")
        assert claimed.sending_started_at is not None
        order.append(claimed.id)
    assert order == [agent.id, normal.id, normal2.id]  # `later` is not due yet
    assert await outbox.next_due_at(db, organization_id=org.id) == later.not_before
    assert {i.id for i in await outbox.list_in_flight(db, organization_id=org.id)} == set(order)
    assert await outbox.count_pending(db, organization_id=org.id) == 4


async def test_concurrent_claimers_never_share_a_message(db: Database) -> None:
    org = await _org(db)
    first = await _enqueue(db, org.id, "one")
    second = await _enqueue(db, org.id, "two")
    with trio.fail_after(10):
        async with db.transaction() as conn:
            mine = await outbox.claim_next(conn, organization_id=org.id, wa_message_id="A")
            # The first claim's row is locked until commit: another claimer skips it.
            theirs = await outbox.claim_next(db, organization_id=org.id, wa_message_id="B")
    assert mine is not None
    assert theirs is not None
    assert (mine.id, theirs.id) == (first.id, second.id)
    assert await outbox.claim_next(db, organization_id=org.id, wa_message_id="C") is None


async def test_outbox_lifecycle_with_events(db: Database) -> None:
    org = await _org(db)
    item = await _enqueue(db, org.id, "Hello")
    claimed = await outbox.claim_next(db, organization_id=org.id, wa_message_id="3EB0AAA")
    assert claimed is not None
    # Nothing else may happen to it while it is being sent.
    assert await outbox.cancel(db, outbox_id=item.id) is None

    retried = await outbox.retry(db, outbox_id=item.id, error="timeout",
                                 not_before=datetime.now(UTC) - timedelta(seconds=1))
    assert retried is not None
    assert (retried.status, retried.last_error, retried.wa_message_id) == (
        "QUEUED", "timeout", "3EB0AAA")
    assert await outbox.retry(db, outbox_id=item.id, error="x", not_before=T0) is None

    again = await outbox.claim_next(db, organization_id=org.id, wa_message_id="3EB0BBB")
    assert again is not None
    assert (again.attempts, again.wa_message_id) == (2, "3EB0AAA")  # the id survives retries

    stored, _ = await messages.insert_if_absent(db, message=_msg(
        org.id, "3EB0AAA", direction="OUT", sender="HUMAN", status="PENDING"))
    sent = await outbox.mark_sent(db, outbox_id=item.id, message_id=stored.id)
    assert sent is not None
    assert (sent.status, sent.message_id, sent.last_error) == ("SENT", stored.id, None)
    assert sent.sent_at is not None

    async def ack(status: str) -> str | None:
        row = await outbox.apply_ack(db, organization_id=org.id, wa_message_id="3EB0AAA",
                                     status=status)  # type: ignore[arg-type]
        return None if row is None else row.status

    assert await ack("DELIVERED") == "DELIVERED"
    assert await ack("SENT") is None
    assert await ack("READ") == "READ"
    assert await ack("DELIVERED") is None
    final = await outbox.get(db, outbox_id=item.id)
    assert final is not None
    assert final.delivered_at is not None
    assert final.read_at is not None
    assert final.sent_at == sent.sent_at

    got = await outbox.get_with_events(db, outbox_id=item.id)
    assert got is not None
    assert got[0] == final
    assert [(e.status, e.detail) for e in got[1]] == [
        ("QUEUED", None), ("SENDING", "attempt 1"), ("QUEUED", "timeout"),
        ("SENDING", "attempt 2"), ("SENT", None), ("DELIVERED", "ack"), ("READ", "ack")]


async def test_outbox_ack_overtaking_the_send_call_and_failures(db: Database) -> None:
    org = await _org(db)
    fast = await _enqueue(db, org.id, "fast")
    await outbox.claim_next(db, organization_id=org.id, wa_message_id="W1")
    assert await outbox.apply_ack(db, organization_id=org.id, wa_message_id="W1",
                                  status="DELIVERED") is not None
    # The send call returns after the ack: the item stays DELIVERED, yet is counted as sent.
    sent = await outbox.mark_sent(db, outbox_id=fast.id)
    assert sent is not None
    assert sent.status == "DELIVERED"
    assert sent.sent_at is not None

    doomed = await _enqueue(db, org.id, "doomed")
    await outbox.claim_next(db, organization_id=org.id, wa_message_id="W2")
    failed = await outbox.mark_failed(db, outbox_id=doomed.id, error="not on WhatsApp")
    assert failed is not None
    assert (failed.status, failed.last_error) == ("FAILED", "not on WhatsApp")
    assert await outbox.mark_sent(db, outbox_id=doomed.id) is None

    cancelled_item = await _enqueue(db, org.id, "never mind")
    cancelled = await outbox.cancel(db, outbox_id=cancelled_item.id)
    assert cancelled is not None
    assert cancelled.status == "CANCELLED"
    assert await outbox.cancel(db, outbox_id=cancelled_item.id) is None
    assert await outbox.claim_next(db, organization_id=org.id, wa_message_id="W3") is None
    assert await outbox.count_pending(db, organization_id=org.id) == 0


async def test_outbox_rate_windows_count_what_was_sent(db: Database) -> None:
    org, other = await _org(db), await _org(db, "Other")
    now = datetime.now(UTC)
    for i, minutes_ago in enumerate([90, 30, 5, 1]):
        item = await _enqueue(db, org.id, f"m{i}")
        await outbox.claim_next(db, organization_id=org.id, wa_message_id=f"W{i}")
        await outbox.mark_sent(db, outbox_id=item.id)
        await db.execute("UPDATE outbox SET sent_at = $2 WHERE id = $1", item.id,
                         now - timedelta(minutes=minutes_ago))
    await _enqueue(db, org.id, "queued, not sent")
    other_item = await _enqueue(db, other.id, "other org")
    await outbox.claim_next(db, organization_id=other.id, wa_message_id="X")
    await outbox.mark_sent(db, outbox_id=other_item.id)

    hour_ago = now - timedelta(hours=1)
    assert await outbox.count_sent_since(db, organization_id=org.id, since=hour_ago) == 3
    assert await outbox.count_sent_since(db, organization_id=org.id,
                                         since=now - timedelta(minutes=2)) == 1
    assert await outbox.count_sent_since(db, organization_id=org.id,
                                         since=now - timedelta(days=1)) == 4
    assert await outbox.oldest_sent_since(db, organization_id=org.id,
                                          since=hour_ago) == now - timedelta(minutes=30)
    assert await outbox.oldest_sent_since(db, organization_id=org.id, since=now) is None


async def test_import_runs_record_progress_for_resuming(db: Database) -> None:
    org = await _org(db)
    assert await imports.latest(db, organization_id=org.id) is None
    run = await imports.create(db, organization_id=org.id, source="whatsapp",
                               options={"limit": 100, "dryRun": False})
    assert isinstance(run, ImportRun)
    assert (run.status, run.chats_total, run.chats_done, run.errors, run.done_chats) == (
        "RUNNING", None, 0, [], [])
    assert run.options == {"limit": 100, "dryRun": False}

    await imports.set_total(db, run_id=run.id, chats_total=3)
    await imports.record_chat(db, run_id=run.id, wa_chat_id="a@c.us", messages_stored=40,
                              duplicates=2)
    await imports.record_chat(db, run_id=run.id, wa_chat_id="b@c.us", messages_stored=5,
                              duplicates=0, error="chat not found")
    again = await imports.record_chat(db, run_id=run.id, wa_chat_id="a@c.us", messages_stored=0,
                                      duplicates=42)
    assert again is not None
    assert (again.chats_total, again.chats_done, again.messages_stored, again.duplicates) == (
        3, 1, 45, 44)
    assert again.done_chats == ["a@c.us"]
    assert again.errors == [{"chat": "b@c.us", "error": "chat not found"}]

    stopped = await imports.finish(db, run_id=run.id, status="INTERRUPTED")
    assert stopped is not None
    assert stopped.status == "INTERRUPTED"
    assert stopped.finished_at is not None
    assert await imports.finish(db, run_id=run.id, status="COMPLETED") is None

    resumed = await imports.resume(db, run_id=run.id)
    assert resumed is not None
    assert (resumed.status, resumed.finished_at, resumed.errors) == ("RUNNING", None, [])
    assert resumed.done_chats == ["a@c.us"]
    await imports.record_chat(db, run_id=run.id, wa_chat_id="b@c.us", messages_stored=10,
                              duplicates=5)
    done = await imports.finish(db, run_id=run.id, status="COMPLETED")
    assert done is not None
    assert (done.chats_done, done.messages_stored, done.done_chats) == (
        2, 55, ["a@c.us", "b@c.us"])

    newer = await imports.create(db, organization_id=org.id, source="export-file")
    assert await imports.latest(db, organization_id=org.id) == newer
    assert await imports.latest(db, organization_id=org.id, source="whatsapp") == done
    assert await imports.get(db, run_id=run.id) == done


async def test_plugin_deliveries(db: Database) -> None:
    org = await _org(db)
    first = await deliveries.enqueue(db, plugin="webhook", event="message.received",
                                     payload={"text": "Салам", "n": [1, 2]},
                                     organization_id=org.id)
    assert isinstance(first, PluginDelivery)
    assert (first.status, first.attempts, first.payload) == (
        "PENDING", 0, {"text": "Салам", "n": [1, 2]})
    future = await deliveries.enqueue(db, plugin="webhook", event="x", payload={},
                                      next_attempt_at=datetime.now(UTC) + timedelta(hours=1))
    await deliveries.enqueue(db, plugin="other", event="x", payload={})
    assert [d.id for d in await deliveries.due(db, plugin="webhook")] == [first.id]

    retry = await deliveries.mark_retry(db, delivery_id=first.id, error="HTTP 503",
                                        next_attempt_at=datetime.now(UTC) + timedelta(minutes=1))
    assert retry is not None
    assert (retry.status, retry.attempts, retry.last_error) == ("PENDING", 1, "HTTP 503")
    assert await deliveries.due(db, plugin="webhook") == []

    delivered = await deliveries.mark_delivered(db, delivery_id=first.id)
    assert delivered is not None
    assert (delivered.status, delivered.attempts, delivered.last_error) == ("DELIVERED", 2, None)
    assert delivered.delivered_at is not None
    assert await deliveries.mark_delivered(db, delivery_id=first.id) is None

    failed = await deliveries.mark_failed(db, delivery_id=future.id, error="HTTP 400")
    assert failed is not None
    assert (failed.status, failed.attempts) == ("FAILED", 1)
