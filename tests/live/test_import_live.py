"""The import against the WhatsApp Web simulator in a real Chromium and a real PostgreSQL.

A simulated account with 30 one-to-one chats (in seven languages, with media, two of them with
their older half still on the phone), 3 groups and status updates: a dry run reports the right
counts and writes nothing; the import stores exactly the simulator's clients, conversations and
messages, with statuses and languages; a second run imports nothing new and counts every chat as
a duplicate; `limit=5` imports the 5 most recent chats. An import interrupted after 10 chats
completes when run again, and no message is stored twice. The session is the import's own
(`sessions/import-<org>`), linked by scanning its QR code.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from tests.support.org_rows import org_row_counts
from tests.support.stack import Stack, open_stack
from wad.config import DatabaseSettings, Settings
from wad.db.pool import Database
from wad.importer import local
from wad.importer.options import ImportOptions
from wad.importer.report import ImportReport
from wad.importer.session import OwnSession, own_session, profile_dir
from wad.sim import history
from wad.sim.client import SimClientError
from wad.whatsapp.phone import is_valid

pytestmark = pytest.mark.browser

ACCOUNT = "996555100400"


@dataclass
class Linked:
    stack: Stack
    own: OwnSession
    settings: Settings
    chats: list[dict[str, Any]]
    """The simulator's one-to-one chats whose number is valid, each with its `messages` (the
    phone's record)."""
    invalid: list[dict[str, Any]]
    """Those whose number is not valid (the simulator makes up some): reported, not imported."""

    @property
    def db(self) -> Database:
        return self.stack.db

    async def run(self, org: uuid.UUID, **options: Any) -> ImportReport:
        opts = ImportOptions(pace_s=0, **options)
        pm = local.import_plugin_manager(self.settings, use_llm=False)
        imp = local.importer(settings=self.settings, db=self.db, organization_id=org,
                             source=local.whatsapp_source(self.own.get, opts), options=opts,
                             pm=pm)
        with trio.fail_after(90):
            return await imp.run()


async def scan(stack: Stack, payload: str) -> None:
    try:
        await stack.phone.scan_qr(ACCOUNT, payload)
    except SimClientError as exc:
        if exc.status != 409:  # a stale code: the next one is scanned
            raise


@pytest.fixture
async def linked(state_dir: Path, dsn: str) -> AsyncIterator[Linked]:
    async with open_stack(state_dir, dsn) as stack:
        await stack.phone.create_account(ACCOUNT, "Silk Road Tours")
        await stack.phone.generate_history(
            ACCOUNT, chats=30, messages=12, seed=5, languages=list(history.LANGUAGES),
            groups=3, statuses=2, phone_only_chats=2, media_ratio=0.3)
        chats = [c for c in await stack.phone.chats(ACCOUNT) if c["id"].endswith("@c.us")]
        for chat in chats:
            chat["messages"] = await stack.phone.chat_messages(ACCOUNT, chat["id"])
        valid = [c for c in chats if is_valid("+" + c["id"].split("@")[0])]
        invalid = [c for c in chats if c not in valid]
        settings = msgspec.structs.replace(stack.settings,
                                           database=DatabaseSettings(dsn=dsn))
        org = uuid.uuid4()
        with trio.fail_after(60):
            async with own_session(stack.driver, profile_dir(state_dir, org),
                                   on_qr=lambda p: stack.nursery.start_soon(scan, stack, p),
                                   link_timeout=45) as own:
                yield Linked(stack=stack, own=own, settings=settings, chats=valid,
                             invalid=invalid)


def language_of(chat: dict[str, Any]) -> str | None:
    """The language the simulator wrote the client's messages in."""
    for message in chat["messages"]:
        text = message.get("body") or message.get("caption") or ""
        if not message["id"]["fromMe"]:
            for lang, phrases in history.CLIENT.items():
                if text in phrases:
                    return lang
    return None


async def test_dry_run_import_duplicates_and_limit(linked: Linked) -> None:
    db = linked.db
    org = await linked.stack.new_org("Silk Road Tours")
    expected_messages = sum(len(c["messages"]) for c in linked.chats)
    valid, invalid = len(linked.chats), len(linked.invalid)
    assert valid + invalid == 30 and valid >= 15

    dry = await linked.run(org, dry_run=True)
    assert dry.state == "COMPLETED" and dry.dry_run
    assert (dry.chats_found, dry.groups_skipped, dry.broadcasts_skipped) == (34, 3, 1)
    assert (dry.chats_total, dry.chats_imported, dry.chats_failed) == (30, valid, invalid)
    assert sorted(e.chat for e in dry.errors) == sorted(c["id"] for c in linked.invalid)
    assert all("is not a valid phone number" in e.error for e in dry.errors)
    assert dry.messages_stored == expected_messages
    assert sum(dry.statuses.values()) == valid and sum(dry.languages.values()) == valid
    assert dry.requests >= 31  # the chat list, then at least one history page per chat
    assert await org_row_counts(db, org) == {"clients": 0, "convs": 0, "messages": 0,
                                             "distinct_ids": 0, "runs": 0}

    real = await linked.run(org)
    assert real.state == "COMPLETED", real.reason
    assert (real.chats_imported, real.clients_created, real.messages_stored) == (
        valid, valid, expected_messages)
    assert (real.statuses, real.languages) == (dry.statuses, dry.languages)
    assert await org_row_counts(db, org) == {"clients": valid, "convs": valid,
                                             "messages": expected_messages,
                                             "distinct_ids": expected_messages, "runs": 1}
    # Exactly the simulator's messages, in the right chats, with their direction and time.
    stored = {(r["wa_message_id"], r["wa_chat_id"], r["direction"], int(r["sent_at"].timestamp()))
              for r in await db.fetch(
                  "SELECT wa_message_id, wa_chat_id, direction, sent_at FROM messages "
                  "WHERE organization_id = $1", org)}
    phone_record = {(m["id"]["_serialized"], c["id"], "OUT" if m["id"]["fromMe"] else "IN",
                     m["t"]) for c in linked.chats for m in c["messages"]}
    assert stored == phone_record
    clients = await db.fetch(
        "SELECT phone, name, status, preferred_language FROM clients WHERE organization_id = $1",
        org)
    assert sorted(r["phone"] for r in clients) == sorted(
        "+" + c["id"].split("@")[0] for c in linked.chats)
    assert all(r["name"] for r in clients)  # saved or push name
    assert Counter(r["status"] for r in clients) == Counter(real.statuses)
    assert Counter(r["preferred_language"] or "unknown" for r in clients) == Counter(
        real.languages)
    expected_languages = {"+" + c["id"].split("@")[0]: language_of(c) for c in linked.chats}
    detected = {r["phone"]: r["preferred_language"] for r in clients}
    assert detected == expected_languages
    history_rows = await db.fetchval(
        "SELECT count(*) FROM client_status_history WHERE organization_id = $1", org)
    assert history_rows == valid - real.statuses.get("NEW_LEAD", 0)
    assert len(real.statuses) >= 2  # the conversations are at different stages

    again = await linked.run(org)
    assert (again.chats_duplicate, again.chats_imported, again.messages_stored) == (valid, 0, 0)
    assert again.chats_failed == invalid
    assert (await org_row_counts(db, org))["messages"] == expected_messages

    other = await linked.stack.new_org("Osh Travel")
    five = await linked.run(other, limit=5)
    newest = sorted(linked.chats + linked.invalid, key=lambda c: -c["t"])[:5]
    assert five.chats_total == 5
    newest = [c for c in newest if c in linked.chats]
    assert (five.chats_imported, five.chats_failed) == (len(newest), 5 - len(newest))
    phones = {r["phone"] for r in await db.fetch(
        "SELECT phone FROM clients WHERE organization_id = $1", other)}
    assert phones == {"+" + c["id"].split("@")[0] for c in newest}
    assert (await org_row_counts(db, other))["messages"] == sum(len(c["messages"])
                                                               for c in newest)


async def test_interrupted_after_ten_chats_then_resumed(linked: Linked) -> None:
    db = linked.db
    org = await linked.stack.new_org("Silk Road Tours")
    expected_messages = sum(len(c["messages"]) for c in linked.chats)
    options = ImportOptions(pace_s=0)
    pm = local.import_plugin_manager(linked.settings, use_llm=False)
    scope = trio.CancelScope()

    def stop_after_ten(report: ImportReport) -> None:
        if report.chats_imported >= 10:
            scope.cancel()  # as Ctrl-C does

    imp = local.importer(settings=linked.settings, db=db, organization_id=org,
                         source=local.whatsapp_source(linked.own.get, options),
                         options=options, pm=pm, on_progress=stop_after_ten)
    with trio.fail_after(60), scope:
        await imp.run()
    first = imp.progress.report()
    assert first.state == "INTERRUPTED"
    # Chats fetched together are committed together: the stop comes after the batch holding
    # the tenth chat, and the report counts exactly what was committed.
    done = first.chats_imported
    valid = len(linked.chats)
    assert 10 <= done < valid
    run = await db.fetchrow("SELECT status, chats_done, cardinality(done_chats) AS done "
                            "FROM import_runs WHERE organization_id = $1", org)
    assert run is not None and dict(run) == {"status": "INTERRUPTED", "chats_done": done,
                                             "done": done}
    counts = await org_row_counts(db, org)
    assert (counts["clients"], counts["convs"]) == (done, done)

    second = await linked.run(org)
    assert second.state == "COMPLETED" and second.resumed
    assert (second.chats_resumed, second.chats_imported, second.chats_done) == (
        done, valid - done, valid)
    assert second.messages_stored == expected_messages  # the whole run's count
    assert second.run_id == first.run_id
    assert await org_row_counts(db, org) == {"clients": valid, "convs": valid,
                                             "messages": expected_messages,
                                             "distinct_ids": expected_messages, "runs": 1}
    status = await db.fetchval("SELECT status FROM import_runs WHERE organization_id = $1", org)
    assert status == "COMPLETED"
