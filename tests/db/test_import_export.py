"""WhatsApp's "Export chat" files: the bundled reader against exports in eight line formats
(Android and iPhone; en-US, de, ru, fr, es and ISO dates; zipped and not, with and without
media), and the import of them into a real database: every message's time, author, direction
and text; groups skipped; unreadable lines reported with file and line; reruns that store
nothing twice; a dry run that writes nothing; `--use-llm` against a local OpenRouter."""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trio
import wad_export_import
from wad_export_import.parser import ExportedChat, ExportOptions, read_location

from tests.support.openrouter import FakeOpenRouter, completion
from tests.support.org_rows import org_row_counts
from tests.support.plugin_helpers import serving
from wad.cli.imports import import_here
from wad.config import DatabaseSettings, PluginSettings, Settings
from wad.db.pool import Database
from wad.db.repo import clients as clients_repo
from wad.db.repo import organizations
from wad.importer.options import ImportOptions
from wad.plugins import get_plugin_manager, import_sources

EXPORTS = Path(__file__).resolve().parent.parent / "data" / "exports"
BISHKEK = ZoneInfo("Asia/Bishkek")
PHONES = {"Anna Schmidt": "+49 151 23456789", "Emily Clark": "+971 50 123 4567"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BISHKEK)


def read(name: str, **options: str) -> list[ExportedChat]:
    merged = {"timezone": "Asia/Bishkek", **{f"phone:{k}": v for k, v in PHONES.items()},
              **options}
    return read_location(str(EXPORTS / name), ExportOptions.from_options(merged))


def messages(chat: ExportedChat) -> list[tuple[Any, ...]]:
    """(line, time, author, direction, type, text) of each message."""
    return [(m.line, m.sent_at, m.author, m.direction, m.type,  # type: ignore[attr-defined]
             m.body if m.type == "text" else m.caption) for m in chat.messages]


US = "+1 (415) 555-2671"
SILK = "Silk Road Tours"

EXPECTED: dict[str, tuple[str, str | None, list[tuple[Any, ...]]]] = {
    # file: (phone, name, messages)
    "WhatsApp Chat with +1 415 555 2671.txt": ("+14155552671", None, [
        (2, at("2024-01-15 21:05"), US, "IN", "text",
         "Hi! Do you still have places on the Issyk-Kul tour in July?"),
        (3, at("2024-01-15 21:07"), SILK, "OUT", "text",
         "Good evening! Yes, we do.\nThe 5-day tour costs 450 USD per person.\n"
         "Hotel and meals included."),
        (6, at("2024-01-16 00:01"), US, "IN", "other", None),
        (8, at("2024-01-16 12:31"), US, "IN", "text", "Great, please book it for two of us"),
    ]),
    "WhatsApp Chat mit Anna Schmidt.zip": ("+49 151 23456789", "Anna Schmidt", [
        (2, at("2024-03-02 10:15"), "Anna Schmidt", "IN", "text",
         "Hallo! Gibt es im Juli noch Plätze für die Tour zum Issyk-Kul?"),
        (3, at("2024-03-02 10:20"), SILK, "OUT", "image", "Das ist unser Programm für Juli"),
        (5, at("2024-03-02 10:21"), SILK, "OUT", "text", "Die Tour kostet 450 USD pro Person."),
        (6, at("2024-03-03 08:02"), "Anna Schmidt", "IN", "text",
         "Super, bitte buchen Sie für uns."),
    ]),
    "WhatsApp Chat - Emily Clark.zip": ("+971 50 123 4567", "Emily Clark", [
        (2, at("2024-03-02 10:15:05"), "Emily Clark", "IN", "text",
         "Hello! We are a family with two kids, is the horse trek suitable for them?"),
        (3, at("2024-03-02 10:15:22"), SILK, "OUT", "image", None),
        (4, at("2024-03-02 10:16:40"), SILK, "OUT", "text",
         "Yes, children from 8 years ride with a guide."),
        (5, at("2024-03-13 21:02:11"), "Emily Clark", "IN", "audio", None),
        (6, at("2024-03-13 21:03:00"), "Emily Clark", "IN", "text",
         "Perfect, please book it for us."),
    ]),
    "iphone_de": ("+4917612345678", None, [
        (2, at("2024-01-15 21:05:33"), "+49 176 12345678", "IN", "text",
         "Guten Abend, was kostet der Reitausflug?"),
        (3, at("2024-01-15 21:10:02"), SILK, "OUT", "text",
         "Guten Abend! 450 USD pro Person.\nMit Hotel und Verpflegung."),
        (5, at("2024-01-16 07:45:10"), "+49 176 12345678", "IN", "image", None),
        (7, at("2024-01-16 07:47:30"), SILK, "OUT", "text", "Danke!"),
    ]),
    "Чат WhatsApp с +996 555 123 456.txt": ("+996555123456", None, [
        (2, at("2024-01-15 21:05"), "+996 555 123 456", "IN", "text",
         "Здравствуйте! Есть ли места на тур на Иссык-Куль в июле?"),
        (3, at("2024-01-15 21:06"), "+996 555 123 456", "IN", "text", "Меня зовут Азамат"),
        (4, at("2024-01-15 21:10"), SILK, "OUT", "text",
         "Добрый день! Да, в июле ещё есть места.\n"
         "Тур на 5 дней стоит 450 долларов с человека."),
        (6, at("2024-01-16 09:00"), "+996 555 123 456", "IN", "other", None),
        (8, at("2024-01-16 09:02"), SILK, "OUT", "location", None),
    ]),
    "Discussion WhatsApp avec +33 6 12 34 56 78.txt": ("+33612345678", None, [
        (2, at("2024-01-15 21:05"), "+33 6 12 34 56 78", "IN", "text",
         "Bonjour ! Combien coûte la randonnée à cheval ?"),
        (3, at("2024-01-15 21:09"), SILK, "OUT", "text", "Bonjour ! 450 USD par personne."),
        (4, at("2024-01-16 08:30"), "+33 6 12 34 56 78", "IN", "other", None),
        (5, at("2024-01-16 08:31"), "+33 6 12 34 56 78", "IN", "text",
         "Merci beaucoup, c'est parfait !"),
    ]),
    "Chat de WhatsApp con +34 612 34 56 78.txt": ("+34612345678", None, [
        (1, at("2024-01-15 21:05"), "+34 612 34 56 78", "IN", "text",
         "¡Hola! ¿Quedan plazas para el tour en julio?"),
        (2, at("2024-01-15 21:30"), SILK, "OUT", "text",
         "¡Buenas tardes! Sí, todavía quedan plazas."),
        (3, at("2024-01-16 00:15"), "+34 612 34 56 78", "IN", "text", "¡Muchas gracias!"),
    ]),
    "WhatsApp Chat - Erik Lind.zip": ("+46 70 123 45 67", "Erik Lind", [
        (1, at("2024-01-15 21:05:33"), "Erik Lind", "IN", "text",
         "Hej! Is the Song-Kul trek open in June?"),
        (2, at("2024-01-15 21:06:10"), SILK, "OUT", "text", "Yes, from the 10th of June."),
        (3, at("2024-01-15 21:07:00"), "Erik Lind", "IN", "sticker", None),
    ]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_message_of_each_format(name: str) -> None:
    phone, contact, expected = EXPECTED[name]
    [chat] = read(name, **{"phone:Erik Lind": "+46 70 123 45 67"})
    assert messages(chat) == expected
    assert (chat.phone, chat.name, chat.is_group) == (phone, contact, False)
    assert chat.problems == []
    assert chat.notices >= 0


def test_media_files_in_the_zip_and_placeholders_without_them() -> None:
    [anna] = read("WhatsApp Chat mit Anna Schmidt.zip")
    assert anna.messages[1].media == {"filename": "IMG-20240302-WA0007.jpg",
                                      "mimetype": "image/jpeg", "size": 1024}
    [emily] = read("WhatsApp Chat - Emily Clark.zip")
    assert emily.messages[1].media == {"filename": "00000005-PHOTO-2024-03-02-10-15-22.jpg",
                                       "mimetype": "image/jpeg", "size": 2048}
    assert emily.messages[3].media == {"omitted": True}
    [russian] = read("Чат WhatsApp с +996 555 123 456.txt")
    assert russian.messages[4].media == {"url": "https://maps.google.com/?q=42.87,74.59",
                                         "latitude": 42.87, "longitude": 74.59}
    # Encryption notices, deleted messages: skipped, and counted.
    assert russian.notices == 2
    [us] = read("WhatsApp Chat with +1 415 555 2671.txt")
    assert us.notices == 2


def test_me_names_the_owner_when_the_file_cannot_tell() -> None:
    text = ("15/01/2024, 21:05 - Aibek: Salam, is there a tour tomorrow?\n"
            "15/01/2024, 21:06 - Silk Road Tours: Yes, at 9:00.\n")
    options = ExportOptions.from_options({"timezone": "Asia/Bishkek"})
    unsure = wad_export_import.parse_chat(text, label="chat.txt", key="k", title=None,
                                          options=options)
    assert unsure.messages == []
    assert "give the owner's name with --me" in unsure.problems[0]
    options = ExportOptions.from_options({"timezone": "Asia/Bishkek", "me": "silk road tours",
                                          "phone:Aibek": "+996700987654"})
    sure = wad_export_import.parse_chat(text, label="chat.txt", key="k", title=None,
                                        options=options)
    assert [(m.direction, m.author) for m in sure.messages] == [  # type: ignore[attr-defined]
        ("IN", "Aibek"), ("OUT", "Silk Road Tours")]
    assert sure.phone == "+996700987654"
    assert sure.name == "Aibek"


def test_date_order_from_the_times_and_from_the_option() -> None:
    # No day above 12: only the order in which the times run forwards tells (3 Feb, 4 Feb...).
    text = ("2/3/24, 10:00 - +996 555 123 456: one\n2/3/24, 11:00 - Me: two\n"
            "3/3/24, 09:00 - +996 555 123 456: three\n4/3/24, 09:00 - Me: four\n"
            "1/4/24, 09:00 - +996 555 123 456: five\n")
    options = ExportOptions.from_options({"timezone": "UTC"})
    chat = wad_export_import.parse_chat(text, label="x.txt", key="x", title=None,
                                        options=options)
    assert [m.sent_at.date().isoformat() for m in chat.messages] == [
        "2024-03-02", "2024-03-02", "2024-03-03", "2024-03-04", "2024-04-01"]
    forced = wad_export_import.parse_chat(
        text, label="x.txt", key="x", title=None,
        options=ExportOptions.from_options({"timezone": "UTC", "date_order": "MDY"}))
    assert forced.messages[0].sent_at.date().isoformat() == "2024-02-03"


def test_unreadable_lines_are_reported_with_file_and_line() -> None:
    [chat] = read("WhatsApp Chat with +996 700 987 654.txt")
    name = str(EXPORTS / "WhatsApp Chat with +996 700 987 654.txt")
    assert [p.split(": ", 1)[0] for p in chat.problems] == [f"{name}:1", f"{name}:6",
                                                            f"{name}:4"]
    assert "not a message line" in chat.problems[0]
    assert "kept as text of the message of line 5" in chat.problems[1]
    assert "31/02/2024 10:00 is not valid" in chat.problems[2]
    # Nothing is lost that can be kept: line 6 stays with the message before it.
    assert chat.messages[-1].body == "Thanks\n16/01/2024 10:05 we will wait at the hotel"
    [group] = read("WhatsApp Chat with Issyk-Kul July group.txt")
    assert group.is_group and len(group.authors) == 3
    [notes] = read("notes")
    assert "not a WhatsApp chat export" in notes.problems[0]


def test_the_export_source_is_a_bundled_plugin() -> None:
    sources = import_sources(get_plugin_manager(PluginSettings()))
    assert "export" in sources
    pm = get_plugin_manager(PluginSettings(entry_points=False), bundled=True)
    assert "export" in import_sources(pm)


# Importing into the database --------------------------------------------------------------


def settings_for(dsn: str, **plugin_config: Any) -> Settings:
    return Settings(database=DatabaseSettings(dsn=dsn),
                    plugins=PluginSettings(config=plugin_config))


def export_options(**changes: Any) -> ImportOptions:
    values: dict[str, Any] = {"source": "export", "paths": [str(EXPORTS)],
                              "timezone": "Asia/Bishkek", "phones": PHONES, "pace_s": 0}
    values.update(changes)
    return ImportOptions(**values)


async def test_export_folder_imports_each_chat_and_reports_the_rest(db: Database,
                                                                     dsn: str) -> None:
    org = (await organizations.create(db, name="Silk Road Tours")).id
    settings = settings_for(dsn)
    with trio.fail_after(60):
        dry = await import_here(settings, org, export_options(dry_run=True))
        assert await org_row_counts(db, org, history=True) == {
            "clients": 0, "convs": 0, "messages": 0, "distinct_ids": 0, "runs": 0, "history": 0}
        report = await import_here(settings, org, export_options())
    assert report.state == "COMPLETED"
    assert (report.chats_found, report.groups_skipped, report.chats_total) == (11, 1, 10)
    assert (report.chats_imported, report.chats_failed, report.messages_stored) == (8, 2, 32)
    for field in ("chats_found", "groups_skipped", "chats_total", "chats_imported",
                  "chats_failed", "messages_stored", "statuses", "languages"):
        assert getattr(dry, field) == getattr(report, field), field
    assert dry.dry_run and dry.run_id is None
    failed = {Path(e.chat.split("!")[0]).name: e.error for e in report.errors}
    assert "shown by name" in failed["WhatsApp Chat - Erik Lind.zip"]
    assert "--phone 'Erik Lind=+996...'" in failed["WhatsApp Chat - Erik Lind.zip"]
    assert "not a WhatsApp chat export" in failed["readme.txt"]
    bad = str(EXPORTS / "WhatsApp Chat with +996 700 987 654.txt")
    assert sorted(w.split(": ", 1)[0] for w in report.warnings) == [
        f"{bad}:1", f"{bad}:4", f"{bad}:6"]
    assert await org_row_counts(db, org, history=True) == {
        "clients": 8, "convs": 8, "messages": 32, "distinct_ids": 32, "runs": 1,
        "history": report.chats_imported - report.statuses.get("NEW_LEAD", 0)}

    # Each message as stored: time, direction, who, text.
    rows = await db.fetch(
        """SELECT m.sent_at, m.direction, m.sender, m.type, m.body, m.caption, m.media,
                  m.language, m.processing_state, m.wa_chat_id, c.phone
           FROM messages m JOIN conversations v ON v.id = m.conversation_id
           JOIN clients c ON c.id = v.client_id
           WHERE m.organization_id = $1 ORDER BY c.phone, m.sent_at""", org)
    stored = {(r["phone"], r["sent_at"], r["direction"], r["type"],
               r["body"] if r["type"] == "text" else r["caption"]) for r in rows}
    for name, (phone, _contact, expected) in EXPECTED.items():
        if name == "WhatsApp Chat - Erik Lind.zip":
            continue
        e164 = "+" + "".join(ch for ch in phone if ch.isdigit())
        for _line, when, _author, direction, kind, text in expected:
            assert (e164, when, direction, kind, text) in stored, (name, when, text)
    assert all(r["processing_state"] == "DONE" for r in rows)  # never answered again
    assert all(r["sender"] == ("CLIENT" if r["direction"] == "IN" else "HUMAN") for r in rows)
    assert {r["wa_chat_id"] for r in rows if r["phone"] == "+996555123456"} == {
        "996555123456@c.us"}  # the same chat id as live messages of that client

    azamat = await clients_repo.get_by_phone(db, organization_id=org, phone="+996555123456")
    assert azamat is not None
    assert azamat.name == "Азамат"  # the name he gave ("Меня зовут Азамат")
    assert azamat.preferred_language == "ru"
    assert azamat.metadata["country"] == "KG"
    anna = await clients_repo.get_by_phone(db, organization_id=org, phone="+4915123456789")
    assert anna is not None
    assert (anna.name, anna.saved_name, anna.preferred_language) == (
        "Anna Schmidt", "Anna Schmidt", "de")
    languages = {r["phone"]: r["language"] for r in rows if r["direction"] == "IN"
                 and r["type"] == "text" and r["phone"] == "+33612345678"}
    assert languages == {"+33612345678": "fr"}

    # Again: every chat is a duplicate, nothing is stored twice.
    with trio.fail_after(60):
        again = await import_here(settings, org, export_options())
    assert (again.chats_duplicate, again.chats_imported, again.messages_stored) == (8, 0, 0)
    assert (await org_row_counts(db, org, history=True))["messages"] == 32
    # Without skipping duplicates: clients updated, messages they lack added (none here).
    with trio.fail_after(60):
        update = await import_here(settings, org, export_options(skip_duplicates=False))
    assert (update.chats_imported, update.clients_updated, update.messages_stored,
            update.messages_duplicate) == (8, 8, 0, 32)
    after = await org_row_counts(db, org, history=True)
    assert (after["messages"], after["distinct_ids"], after["clients"]) == (32, 32, 8)


async def test_a_later_export_adds_only_the_new_messages(db: Database, dsn: str,
                                                         tmp_path: Path) -> None:
    org = (await organizations.create(db, name="Silk Road Tours")).id
    first = tmp_path / "WhatsApp Chat with +996 555 123 456.txt"
    first.write_text("15/01/2024, 21:05 - +996 555 123 456: Salam!\n"
                     "15/01/2024, 21:06 - Silk Road Tours: Salam, how can we help?\n",
                     encoding="utf-8")
    options = export_options(paths=[str(first)], skip_duplicates=False)
    with trio.fail_after(30):
        one = await import_here(settings_for(dsn), org, options)
        first.write_text(first.read_text(encoding="utf-8")
                         + "16/01/2024, 09:00 - +996 555 123 456: ok\n"
                         "16/01/2024, 09:00 - +996 555 123 456: ok\n", encoding="utf-8")
        two = await import_here(settings_for(dsn), org, options)
    assert (one.messages_stored, two.messages_stored, two.messages_duplicate) == (2, 2, 2)
    bodies = [r["body"] for r in await db.fetch(
        "SELECT body FROM messages WHERE organization_id = $1 ORDER BY sent_at, body", org)]
    assert bodies == ["Salam!", "Salam, how can we help?", "ok", "ok"]


async def test_use_llm_decides_statuses_through_openrouter(db: Database, dsn: str) -> None:
    fake = FakeOpenRouter()
    fake.answer = lambda body: completion(json.dumps({
        "status": "NEGOTIATION", "confidence": 0.9, "reason": "asks for a discount"}))
    org = (await organizations.create(db, name="Silk Road Tours")).id
    paths = [str(EXPORTS / "Чат WhatsApp с +996 555 123 456.txt"),
             str(EXPORTS / "Discussion WhatsApp avec +33 6 12 34 56 78.txt")]
    async with serving(fake.app) as url:
        config = {"base_url": url + "/api/v1", "model": "test/model", "retry_backoff_s": 0.01,
                  "api_key": "sk-or-configured"}
        # Without --use-llm the key in the configuration is not used: the heuristic decides.
        with trio.fail_after(30):
            plain = await import_here(settings_for(dsn, openrouter=config), org,
                                      export_options(paths=paths, dry_run=True))
        assert fake.requests == []
        assert "NEGOTIATION" not in plain.statuses
        with trio.fail_after(30):
            report = await import_here(settings_for(dsn, openrouter=config), org,
                                       export_options(paths=paths, use_llm=True),
                                       key="sk-or-given")
    assert report.statuses == {"NEGOTIATION": 2}
    assert len(fake.requests) == 2
    assert {r["headers"]["Authorization"] for r in fake.requests} == {"Bearer sk-or-given"}
    assert "Меня зовут Азамат" in fake.requests[0]["json"]["messages"][1]["content"] \
        or "Меня зовут Азамат" in fake.requests[1]["json"]["messages"][1]["content"]
    history = await db.fetch(
        "SELECT from_status, to_status, detector, reason FROM client_status_history "
        "WHERE organization_id = $1", org)
    assert [(h["from_status"], h["to_status"], h["detector"], h["reason"]) for h in history] \
        == [("NEW_LEAD", "NEGOTIATION", "openrouter", "asks for a discount")] * 2


async def test_wad_import_export_from_the_command_line(db: Database, dsn: str,
                                                     tmp_path: Path) -> None:
    """The real command in a process of its own, on the test database."""
    env = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
    env.update(WAD_DATABASE_URL=dsn, STATE_DIRECTORY=str(tmp_path), WAD_CONFIG="")

    async def wad(*argv: str) -> tuple[int, str, str]:
        with trio.fail_after(120):
            done = await trio.run_process([sys.executable, "-m", "wad.cli.main", *argv], env=env,
                                          capture_stdout=True, capture_stderr=True,
                                          check=False)
        return done.returncode, done.stdout.decode(), done.stderr.decode()

    code, _out, err = await wad("import", "--organization-id", str(uuid.uuid4()), "--source",
                                "export", str(EXPORTS / "iphone_de"))
    assert code == 2
    assert "no organization with id" in err

    org = str((await organizations.create(db, name="Silk Road Tours")).id)
    base = ["import", "--organization-id", org, "--source", "export", "--timezone",
            "Asia/Bishkek"]
    code, out, err = await wad(*base, "--json", str(EXPORTS / "iphone_de"),
                               str(EXPORTS / "WhatsApp Chat mit Anna Schmidt.zip"), "--phone",
                               "Anna Schmidt=+49 151 23456789")
    assert code == 0, err
    report = json.loads(out)
    assert (report["state"], report["chatsImported"], report["messagesStored"]) == (
        "COMPLETED", 2, 8)
    assert report["languages"] == {"de": 2}

    code, out, err = await wad(*base, str(EXPORTS), "--phone", "Anna Schmidt=+49 151 23456789")
    assert code == 1, err  # two chats could not be imported
    assert "Import finished" in out
    assert re.search(r"skipped as duplicates +2 ", out)
    assert "Erik Lind is shown by name" in out
    assert "1 group skipped" in out
