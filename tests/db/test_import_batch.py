"""The import's writes in batches: the chats fetched together are written in a few statements
(clients, conversations, the messages by COPY, statuses, the run's progress), and when that
fails, again chat by chat, so that one bad chat loses only itself. Measured against a real
PostgreSQL, through the engine with a source of chats made here."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
import trio

from wad.db.models import NewMessage
from wad.db.pool import Database
from wad.db.repo import clients as clients_repo
from wad.db.repo import organizations
from wad.importer.engine import Importer
from wad.importer.options import ImportOptions
from wad.importer.sources import ChatRef, LoadedChat
from wad.plugins import PluginSettings, get_plugin_manager

START = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
TALK = [("IN", "Hello, how much is the 7 day tour to Song-Kol for two people in July?"),
        ("OUT", "Good day! The 7 day tour is 900 USD per person, everything included."),
        ("IN", "Great, we'll take it. Please send the payment details")]


@dataclass
class Chats:
    """A source of chats given here, each (key, phone, rows)."""

    chats: list[LoadedChat]
    name: str = "test"
    loads: int = field(default=0)

    @property
    def requests(self) -> int:
        return self.loads

    async def list_chats(self) -> list[ChatRef]:
        return [ChatRef(key=c.key) for c in self.chats]

    async def load(self, ref: ChatRef, organization_id: uuid.UUID) -> LoadedChat:
        self.loads += 1
        return next(c for c in self.chats if c.key == ref.key)


def chat(org: uuid.UUID, number: str, *, key: str | None = None,
         talk: list[tuple[str, str]] = TALK, bad: bool = False) -> LoadedChat:
    wa = f"{number}@c.us"
    rows = [NewMessage(organization_id=org, wa_message_id=f"{str(d == 'OUT').lower()}_{wa}_3EB0{number}{i:04X}",
                       wa_chat_id=wa, direction=d,  # type: ignore[arg-type]
                       sender="CLIENT" if d == "IN" else "HUMAN",
                       sent_at=START + timedelta(minutes=i),
                       status="RECEIVED" if d == "IN" else "SENT", body=text)
            for i, (d, text) in enumerate(talk)]
    if bad:  # a message type the database refuses: this chat cannot be written
        rows.append(NewMessage(organization_id=org, wa_message_id=f"false_{wa}_BAD", wa_chat_id=wa,
                               direction="IN", sender="CLIENT", sent_at=START + timedelta(hours=1),
                               status="RECEIVED", type="hologram", body="?"))  # type: ignore[arg-type]
    return LoadedChat(key=key or wa, phone=f"+{number}", wa_chat_id=wa, rows=rows,
                      push_name=f"Client {number[-3:]}")


class Counted(Importer):
    """The engine, counting the batches it had to write again chat by chat."""

    retried = 0

    async def _write_each(self, *args: Any) -> None:
        self.retried += 1
        await super()._write_each(*args)


async def run(db: Database, org: uuid.UUID, chats: list[LoadedChat], *,
              retried: int | None = 0) -> Any:
    """The import of `chats`; `retried`: how many batches must have been written again chat by
    chat (None: however the chats fell into batches)."""
    pm = get_plugin_manager(PluginSettings(entry_points=False))
    importer = Counted(db=db, organization_id=org, source=Chats(chats),
                       options=ImportOptions(pace_s=0.0), pm=pm)
    report = await importer.run()
    assert retried is None or importer.retried == retried
    return report


async def facts(db: Database, org: uuid.UUID) -> dict[str, Any]:
    """What the import left: per phone, the client's name, status, language, metadata keys,
    its conversation count, messages and status history rows."""
    out = {}
    for row in await db.fetch("SELECT id, phone FROM clients WHERE organization_id = $1", org):
        client = await clients_repo.get(db, client_id=row["id"])
        assert client is not None
        out[row["phone"]] = (
            client.name, client.push_name, client.status, client.preferred_language,
            sorted(client.metadata),
            await db.fetchval("SELECT count(*) FROM conversations WHERE client_id = $1",
                              client.id),
            await db.fetchval(
                "SELECT count(*) FROM messages m JOIN conversations c "
                "ON c.id = m.conversation_id WHERE c.client_id = $1 "
                "AND m.processing_state = 'DONE'", client.id),
            [(h.from_status, h.to_status)
             for h in await clients_repo.status_history(db, client_id=client.id)])
    return out


async def test_a_batch_writes_what_chat_by_chat_writes(db: Database) -> None:
    org = (await organizations.create(db, name="Batch")).id
    numbers = [f"99655510{i:04d}" for i in range(12)]
    report = await run(db, org, [chat(org, n) for n in numbers])
    assert (report.state, report.chats_imported, report.messages_stored,
            report.clients_created) == ("COMPLETED", 12, 36, 12)
    found = await facts(db, org)
    assert set(found) == {f"+{n}" for n in numbers}
    name, push, status, language, meta, conversations, stored, history = found["+996555100003"]
    assert (name, push, language, conversations, stored) == (
        "Client 003", "Client 003", "en", 1, 3)
    assert status != "NEW_LEAD" and history == [("NEW_LEAD", status)]
    assert "country" in meta and "country_name" in meta
    run_row = await db.fetchrow("SELECT chats_done, messages_stored, cardinality(done_chats) AS n"
                                " FROM import_runs WHERE organization_id = $1", org)
    assert run_row is not None and tuple(run_row) == (12, 36, 12)
    # The same chats again: nothing new, nothing written twice.
    again = await run(db, org, [chat(org, n) for n in numbers])
    assert (again.messages_stored, again.chats_duplicate) == (0, 12)
    assert await facts(db, org) == found


async def test_one_chat_the_database_refuses_loses_only_that_chat(db: Database) -> None:
    org = (await organizations.create(db, name="Refused")).id
    good = [chat(org, f"99655520{i:04d}") for i in range(5)]
    bad = chat(org, "996555209999", bad=True)
    report = await run(db, org, [*good[:2], bad, *good[2:]], retried=1)
    assert (report.state, report.chats_imported, report.chats_failed,
            report.messages_stored) == ("COMPLETED", 5, 1, 15)
    assert [e.chat for e in report.errors] == [bad.key]
    found = await facts(db, org)
    assert set(found) == {f"+{c.phone[1:]}" for c in good}
    assert all(f[6] == 3 for f in found.values())


async def test_two_chats_of_one_number_in_a_batch_are_both_imported(db: Database) -> None:
    org = (await organizations.create(db, name="Twice")).id
    first = chat(org, "996555300001")
    later = chat(org, "996555300001", key="996555300001@lid",
                 talk=[("IN", "Hi again, one more question about the yurts")])
    later.rows = [msgspec.structs.replace(r, wa_message_id=f"false_{r.wa_chat_id}_3EB0FF{i:04X}",
                                          sent_at=r.sent_at + timedelta(days=1))
                  for i, r in enumerate(later.rows)]
    # Whether the two share a batch depends on how fast they are fetched; either way both are
    # written, and a batch that holds both is written chat by chat.
    report = await run(db, org, [first, later], retried=None)
    assert (report.chats_imported, report.chats_failed, report.messages_stored) == (2, 0, 4)
    [(_, _, _, _, _, conversations, stored, _)] = (await facts(db, org)).values()
    assert (conversations, stored) == (1, 4)
    with pytest.raises(ValueError, match="a phone appears twice"):
        await clients_repo.upsert_imported(db, organization_id=org, profiles=[
            clients_repo.ImportedProfile(phone="+996555300001")] * 2)


class Ordered(Importer):
    """The engine, noting when each batch's detection starts and its write ends; a write waits
    (at most 2 s) for the next batch's detection to start, so that they can overlap."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.events: list[tuple[str, list[str]]] = []
        self.next_detected = trio.Event()

    async def _detect(self, batch: Any) -> Any:
        if self.events:
            self.next_detected.set()
        self.events.append(("detect", [f.ref.key for f in batch]))
        return await super()._detect(batch)

    async def _write_work(self, work: Any) -> None:
        with trio.move_on_after(2):
            await self.next_detected.wait()
        await super()._write_work(work)
        self.events.append(("written", [item.ref.key for item in work]))


async def ordered(db: Database, org: uuid.UUID, chats: list[LoadedChat]) -> tuple[Any, Any]:
    pm = get_plugin_manager(PluginSettings(entry_points=False))
    importer = Ordered(db=db, organization_id=org, source=Chats(chats),
                       options=ImportOptions(pace_s=0.0), pm=pm)
    return await importer.run(), importer.events


LONG = TALK * 134  # 402 messages: a batch of its own (BATCH_MESSAGES is 400)


async def test_a_batch_is_detected_while_the_one_before_is_written(db: Database) -> None:
    org = (await organizations.create(db, name="Overlap")).id
    first, second = chat(org, "996555400001", talk=LONG), chat(org, "996555400002")
    report, events = await ordered(db, org, [first, second])
    assert (report.chats_imported, report.messages_stored) == (2, 405)
    assert events == [("detect", [first.key]), ("detect", [second.key]),
                      ("written", [first.key]), ("written", [second.key])]


async def test_a_number_being_written_is_read_after_that_write(db: Database) -> None:
    org = (await organizations.create(db, name="Wait")).id
    first = chat(org, "996555400003", talk=LONG)
    # The same number again (its hidden-number chat), with the first chat's messages and one
    # more: read before the first write, the client would be new twice and nothing a duplicate.
    later = chat(org, "996555400003", key="996555400003@lid", talk=[*LONG, ("IN", "One more")])
    report, events = await ordered(db, org, [first, later])
    assert events == [("detect", [first.key]), ("written", [first.key]),
                      ("detect", [later.key]), ("written", [later.key])]
    assert (report.chats_imported, report.clients_created, report.clients_updated,
            report.messages_stored, report.messages_duplicate) == (2, 1, 1, 403, 402)
