"""Exported chats in thirteen locale and platform formats (`tests/data/export_locales/`: Android
and iPhone; en-US, en-GB, de, ru, fr, es, pl, ar; `.txt` and `.zip`), each with its expected
messages written beside it, read with no options at all: every message's line, time, direction,
type, text or caption and location coordinates; calls with their kind and duration; view-once
media; deleted messages and edited markers left out of the text. The owner is found from the
file or zip name, or from the organization's linked account (push name or number); when nothing
decides, the error lists the authors."""

from __future__ import annotations

import json
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import trio
import wad_export_import
from wad_export_import.parser import ExportedChat, ExportOptions, read_location

from wad.cli.imports import import_here
from wad.config import DatabaseSettings, Settings
from wad.db.pool import Database
from wad.db.repo import organizations
from wad.db.repo import sessions as sessions_repo
from wad.importer.options import ImportOptions

LOCALES = Path(__file__).resolve().parent.parent / "data" / "export_locales"
CASES = sorted(p.name for p in LOCALES.iterdir() if (p / "expected.json").is_file())
ACCOUNT_NAME = "Silk Road Tours"
ACCOUNT_PHONE = "+996 555 900 900"


def expected(case: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads((LOCALES / case / "expected.json").read_text("utf-8"))
    return found


def materialize(case: str, folder: Path) -> Path:
    """The case's export under the name WhatsApp gives it (a `.zip` holding the chat when the
    phone shares one)."""
    meta = expected(case)
    text = (LOCALES / case / "chat.txt").read_text("utf-8")
    target = folder / case / meta["file"]
    target.parent.mkdir(parents=True)
    if meta.get("zip"):
        with zipfile.ZipFile(target, "w") as archive:
            archive.writestr(meta["zip"], text)
    else:
        target.write_text(text, encoding="utf-8")
    return target


def as_rows(chat: ExportedChat) -> list[list[Any]]:
    """[line, local time, direction, type, text or caption, [lat, lng] or None] per message."""
    return [[m.line, m.sent_at.replace(tzinfo=None).isoformat(sep=" "),  # type: ignore[attr-defined]
             m.direction, m.type, m.body if m.type == "text" else m.caption,
             [m.media["latitude"], m.media["longitude"]]
             if m.media and "latitude" in m.media else None] for m in chat.messages]


def test_the_labelled_set_is_large_and_covers_every_case() -> None:
    metas = [expected(c) for c in CASES]
    assert len(CASES) >= 10
    assert sum(len(m["messages"]) for m in metas) >= 150
    types = {row[3] for m in metas for row in m["messages"]}
    assert {"text", "image", "video", "audio", "document", "vcard", "location", "call",
            "other"} <= types
    assert sum(bool(m.get("zip")) for m in metas) >= 3
    assert sum(bool(m.get("account")) for m in metas) >= 2


@pytest.mark.parametrize("case", CASES)
def test_every_message_exact_with_no_options(case: str, tmp_path: Path) -> None:
    meta = expected(case)
    options = {"account_name": ACCOUNT_NAME, "account_phone": ACCOUNT_PHONE} \
        if meta.get("account") else {}
    [chat] = read_location(str(materialize(case, tmp_path)), ExportOptions.from_options(options))
    assert as_rows(chat) == meta["messages"]
    assert (chat.phone, chat.name, chat.is_group) == (meta["phone"], meta["name"], False)
    by_line = {m.line: m for m in chat.messages}  # type: ignore[attr-defined]
    for line, facts in meta.get("calls", {}).items():
        assert by_line[int(line)].media == facts, line
    for line in meta.get("view_once", []):
        media = by_line[line].media
        assert media is not None and media["view_once"] is True
    if meta["phone"] is None:
        # A contact saved by name: the messages are read; the number must be given.
        assert len(chat.problems) == 1 and "give the number with --phone" in chat.problems[0]
    else:
        assert chat.problems == []
    # Nothing of the markers is left in any text.
    texts = [m.body or m.caption or "" for m in chat.messages]
    assert not [t for t in texts if "<" in t or "\u200e" in t or t.strip() != t]


@pytest.mark.parametrize("case", [c for c in CASES if expected(c).get("account")])
def test_without_the_account_nothing_decides_and_the_error_lists_the_authors(
        case: str, tmp_path: Path) -> None:
    [chat] = read_location(str(materialize(case, tmp_path)), ExportOptions())
    assert chat.messages == []
    [problem] = chat.problems
    assert "cannot tell the account owner's messages" in problem
    assert "give the owner's name with --me" in problem
    for author in chat.authors:
        assert repr(author) in problem


def test_the_account_decides_before_the_file_name() -> None:
    """A file named after the owner (renamed by hand) does not fool the import when the
    linked account names the owner."""
    text = ("15/01/2024, 21:05 - Aibek: Salam, is there a tour tomorrow?\n"
            "15/01/2024, 21:06 - Silk Road Tours: Yes, at 9:00.\n")
    options = ExportOptions.from_options({"account_name": "silk road tours",
                                          "phone:Aibek": "+996700987654"})
    chat = wad_export_import.parse_chat(text, label="x.txt", key="x", title="Silk Road Tours",
                                        options=options)
    assert [(m.direction, m.author) for m in chat.messages] == [  # type: ignore[attr-defined]
        ("IN", "Aibek"), ("OUT", "Silk Road Tours")]


@pytest.mark.parametrize(("title", "locale"), [
    ("WhatsApp Chat with +996 555 123 456.txt", "Android en"),
    ("WhatsApp-Chat mit +996 555 123 456.txt", "Android de"),
    ("Чат WhatsApp с +996 555 123 456.txt", "Android ru"),
    ("Chat de WhatsApp con +996 555 123 456.txt", "Android es"),
    ("Discussion WhatsApp avec +996 555 123 456.txt", "Android fr"),
    ("Czat WhatsApp z +996 555 123 456.txt", "Android pl"),
    ("دردشة واتساب مع +996 555 123 456.txt", "Android ar"),
    ("WhatsApp Chat - +996 555 123 456.zip", "iPhone"),
    ("WhatsApp Chat with +996 555 123 456 (1).txt", "downloaded twice"),
])
def test_the_file_name_names_the_contact_in_every_locale(title: str, locale: str) -> None:
    # Both authors by number: only the file name tells who the contact is.
    text = ("15/01/2024, 21:05 - +996 555 123 456: Salam!\n"
            "15/01/2024, 21:06 - +996 555 900 900: Salam, how can we help?\n")
    name = wad_export_import.parser.title_name(title)
    chat = wad_export_import.parse_chat(text, label=title, key="k", title=name,
                                        options=ExportOptions())
    assert [m.direction for m in chat.messages] == ["IN", "OUT"], locale
    assert chat.phone == "+996555123456"


@pytest.mark.parametrize(("line", "facts"), [
    ("Missed voice call", {"call": "voice", "missed": True}),
    ("\u200eVideo call, \u200e1 hr 2 min", {"call": "video", "missed": False,
                                            "duration_s": 3720}),
    ("Voice call, 0:45", {"call": "voice", "missed": False, "duration_s": 45}),
    ("Аудиозвонок, 35 сек", {"call": "voice", "missed": False, "duration_s": 35}),
    ("Połączenie wideo, 3 min", {"call": "video", "missed": False, "duration_s": 180}),
    ("Appel vidéo manqué", {"call": "video", "missed": True}),
    ("مكالمة فيديو، ٥ دقائق", {"call": "video", "missed": False, "duration_s": 300}),
])
def test_calls_in_many_locales(line: str, facts: dict[str, Any]) -> None:
    text = (f"15/01/2024, 21:05 - +996 555 123 456: {line}\n"
            "15/01/2024, 21:06 - Silk Road Tours: Video call tomorrow?\n")
    chat = wad_export_import.parse_chat(text, label="x", key="x", title=None,
                                        options=ExportOptions())
    call, reply = chat.messages
    assert (call.type, call.media) == ("call", facts)
    assert (reply.type, reply.body) == ("text", "Video call tomorrow?")  # not a call
    assert call.sent_at.replace(tzinfo=None) == datetime(2024, 1, 15, 21, 5)


def test_a_link_in_a_text_is_not_a_location() -> None:
    text = ("15/01/2024, 21:05 - +996 555 123 456: see https://example.com/tours please\n"
            "15/01/2024, 21:06 - Silk Road Tours: Here: https://maps.google.com/?q=42.1,74.2\n"
            "15/01/2024, 21:07 - Silk Road Tours: Live location shared\n")
    chat = wad_export_import.parse_chat(text, label="x", key="x", title=None,
                                        options=ExportOptions())
    text_msg, place, live = chat.messages
    assert text_msg.type == "text"
    assert (place.type, place.caption, place.media) == ("location", "Here", {
        "url": "https://maps.google.com/?q=42.1,74.2", "latitude": 42.1, "longitude": 74.2,
        "name": "Here"})
    assert (live.type, live.media) == ("location", {"live": True})


# Importing them ------------------------------------------------------------------------------


async def test_import_with_no_options_stores_every_message_exact(db: Database, dsn: str,
                                                                 tmp_path: Path) -> None:
    """The whole set in one folder, no `--me`, no time zone: the organization's session record
    (its push name and number) and the file names decide the owner. Contacts saved by name
    need their number; given it, their chats come in too. Again: nothing is added."""
    org = (await organizations.create(db, name="Silk Road Tours")).id
    await sessions_repo.set_state(db, organization_id=org, state="DISCONNECTED",
                                  phone_number="+996555900900", push_name=ACCOUNT_NAME)
    folder = tmp_path / "exports"
    for case in CASES:
        materialize(case, folder)
    settings = Settings(database=DatabaseSettings(dsn=dsn))
    named = {expected(c)["name"]: expected(c)["phone_option"] for c in CASES
             if expected(c)["phone"] is None}
    with trio.fail_after(120):
        first = await import_here(settings, org, ImportOptions(source="export",
                                                               paths=[str(folder)]))
    assert all("give the number with --phone" in e.error for e in first.errors), first.errors
    assert (first.chats_imported, first.chats_failed) == (len(CASES) - len(named), len(named))
    assert all("give the number with --phone" in e.error for e in first.errors), first.errors
    with trio.fail_after(120):
        second = await import_here(settings, org, ImportOptions(
            source="export", paths=[str(folder)], phones=named))
    assert (second.chats_imported, second.chats_duplicate, second.chats_failed) == (
        len(named), len(CASES) - len(named), 0)

    zone = datetime.now().astimezone().tzinfo
    rows = await db.fetch(
        """SELECT c.phone, m.sent_at, m.direction, m.type, m.body, m.caption, m.media
           FROM messages m JOIN conversations v ON v.id = m.conversation_id
           JOIN clients c ON c.id = v.client_id WHERE m.organization_id = $1""", org)
    stored = sorted(
        (r["phone"], r["sent_at"].astimezone(zone).replace(tzinfo=None).isoformat(sep=" "),
         r["direction"], r["type"], r["body"] if r["type"] == "text" else r["caption"],
         json.dumps([r["media"]["latitude"], r["media"]["longitude"]])
         if r["media"] and "latitude" in r["media"] else "null") for r in rows)
    wanted = []
    for case in CASES:
        meta = expected(case)
        phone = meta["phone"] or "+" + "".join(ch for ch in meta["phone_option"] if ch.isdigit())
        wanted += [(phone, when, direction, kind, text, json.dumps(coords))
                   for _line, when, direction, kind, text, coords in meta["messages"]]
    assert stored == sorted(wanted)

    with trio.fail_after(120):
        again = await import_here(settings, org, ImportOptions(
            source="export", paths=[str(folder)], phones=named))
    assert (again.messages_stored, again.messages_duplicate, again.chats_duplicate) == (
        0, len(wanted), len(CASES))


async def test_a_chat_that_cannot_be_written_loses_only_itself(db: Database, dsn: str,
                                                               tmp_path: Path) -> None:
    """Chats fetched together are written in one transaction, each under a savepoint: a chat
    PostgreSQL refuses (a NUL character in a message) is reported, the others are stored."""
    org = (await organizations.create(db, name="Silk Road Tours")).id
    (tmp_path / "WhatsApp Chat with +996 555 123 456.txt").write_text(
        "15/01/2024, 21:05 - +996 555 123 456: Salam!\n"
        "15/01/2024, 21:06 - Silk Road Tours: Salam, how can we help?\n", encoding="utf-8")
    (tmp_path / "WhatsApp Chat with +996 700 987 654.txt").write_text(
        "15/01/2024, 21:05 - +996 700 987 654: broken \x00 text\n"
        "15/01/2024, 21:06 - Silk Road Tours: Hello\n", encoding="utf-8")
    settings = Settings(database=DatabaseSettings(dsn=dsn))
    with trio.fail_after(60):
        report = await import_here(settings, org, ImportOptions(
            source="export", paths=[str(tmp_path)], timezone="UTC"))
    assert (report.state, report.chats_imported, report.chats_failed,
            report.messages_stored) == ("COMPLETED", 1, 1, 2)
    [error] = report.errors
    assert "700 987 654" in error.chat
    phones = [r["phone"] for r in await db.fetch(
        "SELECT phone FROM clients WHERE organization_id = $1", org)]
    assert phones == ["+996555123456"]
    assert await db.fetchval("SELECT count(*) FROM messages WHERE organization_id = $1", org) == 2
