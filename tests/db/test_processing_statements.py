"""Processing's single calls (migration 0015) on real PostgreSQL: the feed payloads built in SQL
are the ones Python builds, byte for byte once decoded; finishing messages and updating a client
each do in one call what their transactions did, feed entries included."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import trio

from wad.db.models import Message, NewMessage
from wad.db.pool import Database
from wad.db.repo import changes, clients, conversations, messages, organizations

T0 = datetime(2025, 3, 9, 8, 30, tzinfo=UTC)  # no microseconds: written without a fraction


def _new(org: uuid.UUID, wa_id: str, *, at: datetime, **fields: object) -> NewMessage:
    values: dict[str, object] = dict(
        organization_id=org, wa_message_id=wa_id, wa_chat_id="996555123456@c.us",
        direction="IN", sender="CLIENT", sent_at=at, status="RECEIVED", body=f"Салам {wa_id}")
    values.update(fields)
    return NewMessage(**values)  # type: ignore[arg-type]


async def _stored(db: Database, message: NewMessage) -> Message:
    row, created = await messages.insert_if_absent(db, message=message)
    assert created
    return row


async def _feed(db: Database, org: uuid.UUID) -> list[changes.Change]:
    return await changes.page(db, organization_id=org, after=0, limit=100)


async def test_the_sql_payloads_are_pythons(db: Database) -> None:
    org = (await organizations.create(db, name="Bishkek Tours")).id
    client, _ = await clients.upsert(db, organization_id=org, phone="+996555123456",
                                     name="Айгерим \"Ака\" ✈", push_name="")
    client = await clients.merge_metadata(db, client_id=client.id, metadata={
        "country": {"code": "KG", "name": "Kyrgyzstan"}, "tags": ["vip", 3, None, 1.5],
        "given_name": "Aigerim"}) or client
    conversation, _ = await conversations.get_or_create_active(
        db, organization_id=org, client_id=client.id)
    plain = await _stored(db, _new(org, "A1", at=T0, conversation_id=conversation.id))
    fine = await _stored(db, _new(org, "A2", at=T0 + timedelta(microseconds=70),
                                  body=None, caption="фото", type="image"))
    edited = await messages.edit(db, organization_id=org, wa_message_id="A1",
                                 body="edited\n\"quoted\"",
                                 edited_at=T0 + timedelta(seconds=5, microseconds=123456))
    assert edited is not None
    for row, client_id in ((edited, client.id), (fine, None), (plain, client.id)):
        found = await db.fetchval(
            "SELECT wad_message_data(m, $2) FROM messages m WHERE m.id = $1", row.id, client_id)
        current = await messages.get(db, message_id=row.id)
        assert current is not None
        assert found == changes.message_data(current, client_id=client_id)
    for phone in ("+996555123456", "+996700000001"):  # a fresh one: no names, no metadata
        fresh, _ = await clients.upsert(db, organization_id=org, phone=phone)
        found = await db.fetchval("SELECT wad_client_data(c) FROM clients c WHERE c.id = $1",
                                  fresh.id)
        assert found == changes.client_data(fresh)
    assert await db.fetchval("SELECT wad_iso($1)", T0) == T0.isoformat()
    later = T0 + timedelta(microseconds=5)
    assert await db.fetchval("SELECT wad_iso($1)", later) == later.isoformat()


async def test_finishing_processes_touches_and_feeds_in_one_call(db: Database) -> None:
    org = (await organizations.create(db, name="Osh Travel")).id
    other = (await organizations.create(db, name="Naryn Trips")).id
    client, _ = await clients.upsert(db, organization_id=org, phone="+996555123456")
    conversation, _ = await conversations.get_or_create_active(
        db, organization_id=org, client_id=client.id)
    first = await _stored(db, _new(org, "F1", at=T0))
    second = await _stored(db, _new(org, "F2", at=T0 + timedelta(minutes=3), language="ky"))
    theirs = await _stored(db, _new(other, "X1", at=T0))
    before = len(await _feed(db, org))

    found = await messages.finish_processing(db, organization_id=org, done=[
        (second.id, conversation.id, None, client.id),
        (first.id, conversation.id, "ru", client.id),
        (uuid.uuid4(), conversation.id, "ru", client.id),  # gone meanwhile: nothing for it
        (theirs.id, conversation.id, "ru", client.id),  # another organization's: left alone
    ])

    assert found == 2
    done = {r.id: r for r in [await messages.get(db, message_id=m.id) for m in (first, second)]
            if r is not None}
    assert [(done[m.id].processing_state, done[m.id].processing_attempts,
             done[m.id].conversation_id, done[m.id].language) for m in (first, second)] == [
        ("DONE", 1, conversation.id, "ru"), ("DONE", 1, conversation.id, "ky")]
    untouched = await messages.get(db, message_id=theirs.id)
    assert untouched is not None and untouched.processing_state == "PENDING"
    touched = await conversations.get(db, conversation_id=conversation.id)
    assert touched is not None and touched.last_message_at == second.sent_at
    feed = (await _feed(db, org))[before:]
    assert [c.kind for c in feed] == ["message.stored", "message.stored"]
    assert [c.data for c in feed] == [changes.message_data(done[second.id], client_id=client.id),
                                      changes.message_data(done[first.id], client_id=client.id)]
    assert [c.seq for c in feed] == [before + 1, before + 2]
    assert await _feed(db, other) == []
    assert await messages.finish_processing(db, organization_id=org, done=[]) == 0


async def test_a_client_update_writes_once_and_only_when_something_changes(
        db: Database) -> None:
    org = (await organizations.create(db, name="Karakol Tours")).id
    client, _ = await clients.upsert(db, organization_id=org, phone="+996555123456",
                                     push_name="Aika")
    before = len(await _feed(db, org))

    country = {"country": {"code": "KG"}}
    updated = await clients.update_derived(db, client_id=client.id,
                                           metadata={**country, "given_name": "Aigerim"},
                                           preferred_language="ky")
    assert updated is not None
    # The push name beats the given name; the metadata merged; the language set.
    assert (updated.name, updated.preferred_language, updated.metadata) == (
        "Aika", "ky", {"country": {"code": "KG"}, "given_name": "Aigerim"})
    feed = (await _feed(db, org))[before:]
    assert [(c.kind, c.data) for c in feed] == [("client.updated", changes.client_data(updated))]

    # Nothing new: no write (updated_at stays), no entry.
    again = await clients.update_derived(db, client_id=client.id, metadata=country,
                                         preferred_language=None)
    assert again == updated
    assert len(await _feed(db, org)) == before + 1

    # The saved name wins over the push name; an empty language keeps the stored one.
    await db.execute("UPDATE clients SET saved_name = 'Aigerim S.' WHERE id = $1", client.id)
    renamed = await clients.update_derived(db, client_id=client.id, metadata={},
                                           preferred_language="")
    assert renamed is not None
    assert (renamed.name, renamed.preferred_language) == ("Aigerim S.", "ky")
    assert renamed.updated_at > updated.updated_at
    assert [c.kind for c in (await _feed(db, org))[before:]] == ["client.updated"] * 2

    # Without a saved or push name, the given name is the name.
    bare, _ = await clients.upsert(db, organization_id=org, phone="+996700000001")
    given = await clients.update_derived(db, client_id=bare.id, metadata={"given_name": "Bakyt"},
                                         preferred_language=None)
    assert given is not None and given.name == "Bakyt"
    assert await clients.update_derived(db, client_id=uuid.uuid4(), metadata=country,
                                        preferred_language="ru") is None


async def test_clients_upserted_in_one_call_come_with_their_entries(db: Database) -> None:
    org = (await organizations.create(db, name="Talas Tours")).id
    same, _ = await clients.upsert(db, organization_id=org, phone="+996555000001",
                                   push_name="Same")
    renamed, _ = await clients.upsert(db, organization_id=org, phone="+996555000002",
                                      push_name="Old")
    before = len(await _feed(db, org))

    found = await clients.upsert_many(db, organization_id=org, entries=[
        ("+996555000003", "New"), ("+996555000001", "Same"), ("+996555000002", "Renamed"),
        ("+996555000001", None)])

    assert {phone: (c.push_name, created) for phone, (c, created) in found.items()} == {
        "+996555000001": ("Same", False), "+996555000002": ("Renamed", False),
        "+996555000003": ("New", True)}
    assert found["+996555000001"][0] == same  # nothing to change: not written
    assert found["+996555000002"][0].id == renamed.id
    feed = (await _feed(db, org))[before:]
    assert [(c.kind, c.data) for c in feed] == [
        ("client.updated", changes.client_data(found["+996555000002"][0])),
        ("client.created", changes.client_data(found["+996555000003"][0]))]


async def test_active_conversations_found_and_made_in_one_call_even_in_a_race(
        db: Database) -> None:
    org = (await organizations.create(db, name="Batken Tours")).id
    known, _ = await clients.upsert(db, organization_id=org, phone="+996555000001")
    fresh, _ = await clients.upsert(db, organization_id=org, phone="+996555000002")
    raced, _ = await clients.upsert(db, organization_id=org, phone="+996555000003")
    existing, _ = await conversations.get_or_create_active(db, organization_id=org,
                                                           client_id=known.id)

    found = await conversations.active_for_many(db, organization_id=org, chats=[
        (known.id, "996555000001@c.us"), (fresh.id, "996555000002@c.us")])
    assert found[known.id] == existing.id
    made = await conversations.get(db, conversation_id=found[fresh.id])
    assert made is not None and made.client_id == fresh.id and made.status == "ACTIVE"

    # Another transaction makes the conversation while the call runs: the call's statement
    # does not see it (it waits for that transaction, then makes nothing), and still answers it.
    answers: dict[uuid.UUID, uuid.UUID] = {}
    async with db.transaction() as tx:
        theirs = await tx.fetchval(
            "INSERT INTO conversations (organization_id, client_id, wa_chat_id) "
            "VALUES ($1, $2, '996555000003@c.us') RETURNING id", org, raced.id)

        async def call() -> None:
            answers.update(await conversations.active_for_many(
                db, organization_id=org, chats=[(raced.id, "996555000003@c.us")]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await trio.sleep(0.5)  # the call waits on the uncommitted row meanwhile
            assert answers == {}
            await tx.execute("COMMIT; BEGIN")  # commits it; the block commits an empty rest
    assert answers == {raced.id: theirs}
