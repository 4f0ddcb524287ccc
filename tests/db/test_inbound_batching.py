"""The inbound actor's batches on a real database: what queued up is stored together, in order
and once; a batch the database refuses waits in the spool whole and is stored once later;
processing shares its statements across chats, and a message that fails in a shared batch
fails alone."""

from __future__ import annotations

from pathlib import Path

import msgspec
import trio

from tests.support.inbound import NO_DELAYS, processed
from tests.support.inbound_actor import allow_client_writes, refuse_client_writes, running, wa
from tests.support.outage import own_database
from wad.browser import events as ev
from wad.bus import MessageStored
from wad.db.pool import Database
from wad.db.repo import messages as messages_repo
from wad.org.inbound.priority import StoreFirst
from wad.org.inbound.spool import spool_path

SENDERS = [f"99655570{n:04d}" for n in range(5)]


def burst(count: int, first: int = 0) -> list[ev.Message]:
    return [wa(first + n, f"Burst message {first + n}", sender=SENDERS[n % len(SENDERS)])
            for n in range(count)]



async def rows_by_arrival(db: Database, org: object) -> list[str]:
    rows = await db.fetch("SELECT body FROM messages WHERE organization_id = $1 "
                          "ORDER BY created_at", org)
    return [r["body"] for r in rows]


async def test_a_burst_is_stored_together_in_order_once_and_processed_in_shared_batches(
        db: Database, state_dir: Path) -> None:
    async with running(db, state_dir) as h:
        messages = burst(40)
        # Everything queues up before the actor takes any: one batch, a message seen twice
        # among it.
        for m in [*messages[:20], messages[5], *messages[20:]]:
            h.events.send_nowait(ev.MessageReceived(message=m))
        for m in messages:
            await processed(db, h.org, m.id)
        assert h.actor.stats["store_batches"] == 1
        assert (h.actor.stats["stored"], h.actor.stats["duplicates"]) == (40, 1)
        assert await rows_by_arrival(db, h.org) == [m.body for m in messages]
        stored = [e for e in h.published if isinstance(e, MessageStored)]
        assert sorted(e.wa_message_id for e in stored) == sorted(m.id for m in messages)
        # Five chats processed at once: their steps share statements.
        assert h.actor.stats["processed"] == 40
        assert h.actor.stats["finish_batches"] < 40
        feed = await db.fetch("SELECT data->>'waMessageId' AS id FROM changes "
                              "WHERE organization_id = $1 AND kind = 'message.stored'", h.org)
        assert sorted(r["id"] for r in feed) == sorted(m.id for m in messages)
        for sender in SENDERS:  # each chat's messages in order, each in its conversation
            chat = [await messages_repo.get_by_wa_id(db, organization_id=h.org,
                                                     wa_message_id=m.id)
                    for m in messages if m.chat_id == f"{sender}@c.us"]
            assert all(r is not None and r.processing_state == "DONE" for r in chat)
            assert len({r.conversation_id for r in chat if r is not None}) == 1


async def test_a_flood_is_stored_before_any_of_it_is_processed(
        db: Database, state_dir: Path) -> None:
    # A flood (many events at once) holds processing back: here until its bound, 6 s.
    gate = StoreFirst(quiet_s=60, max_wait_s=6)
    async with running(db, state_dir, store_first=gate) as h:
        messages = [wa(n, f"Flood message {n}", sender=f"99655571{n:04d}") for n in range(15)]
        for m in messages:
            h.events.send_nowait(ev.MessageReceived(message=m))
        with trio.fail_after(10):
            while h.actor.stats["stored"] < len(messages):
                await trio.sleep(0.01)
        assert gate.flooding
        await trio.sleep(1)  # without the flood's hold, all would be processed by now
        states = await db.fetch("SELECT processing_state FROM messages "
                                "WHERE organization_id = $1", h.org)
        assert [r["processing_state"] for r in states] == ["PENDING"] * len(messages)
        assert h.actor.stats["processed"] == 0
        for m in messages:  # after the bound, every one of them
            await processed(db, h.org, m.id)
        assert h.actor.stats["processed"] == len(messages)


async def test_a_batch_the_database_refuses_waits_in_the_spool_whole_and_is_stored_once(
        state_dir: Path, aio_loop: None) -> None:
    async with own_database(state_dir) as own:
        async with Database.open(own.dsn, min_size=1, max_size=4) as db:
            async with running(db, state_dir, settings=msgspec.structs.replace(
                    NO_DELAYS, db_retry_s=0.2)) as h:
                before = wa(100, "Before the outage", sender=SENDERS[0])
                h.events.send_nowait(ev.MessageReceived(message=before))
                await processed(db, h.org, before.id)

                await own.stop()
                during = burst(20)
                # The batch holds a message stored already: it is written again, not twice.
                for m in [before, *during]:
                    h.events.send_nowait(ev.MessageReceived(message=m))
                spool = spool_path(state_dir, h.org)
                with trio.fail_after(30):
                    while h.actor.stats["spooled"] < 21:
                        await trio.sleep(0.05)
                lines = spool.read_bytes().splitlines()
                assert [msgspec.json.decode(line)["event"]["message"]["id"]
                        for line in lines] == [before.id] + [m.id for m in during]

                await own.start()
                for m in during:
                    await processed(db, h.org, m.id, timeout=60)
                assert await rows_by_arrival(db, h.org) == [
                    before.body, *(m.body for m in during)]
                assert spool.read_bytes() == b""
                assert (h.actor.stats["stored"], h.actor.stats["replayed"]) == (21, 21)
                stored = [e.wa_message_id for e in h.published if isinstance(e, MessageStored)]
                assert sorted(stored) == sorted([before.id] + [m.id for m in during])


async def test_a_message_that_fails_in_a_shared_batch_fails_alone(db: Database,
                                                                  state_dir: Path) -> None:
    refused = SENDERS[2]
    await refuse_client_writes(db, phone=f"+{refused}", error="this client is refused")
    try:
        settings = msgspec.structs.replace(NO_DELAYS, processing_max_attempts=1)
        async with running(db, state_dir, settings=settings) as h:
            messages = burst(10)
            for m in messages:
                h.events.send_nowait(ev.MessageReceived(message=m))
            rows = [await processed(db, h.org, m.id) for m in messages]
    finally:
        await allow_client_writes(db)
    for m, row in zip(messages, rows, strict=True):
        if m.chat_id == f"{refused}@c.us":
            assert row.processing_state == "FAILED"
            assert "this client is refused" in (row.processing_error or "")
            assert row.processing_attempts == 1
        else:
            assert row.processing_state == "DONE", row.processing_error
            assert row.processing_attempts == 1
