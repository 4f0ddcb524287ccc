"""The import's pieces that need no browser and no database: pacing on the mock clock, the
command line's options and refusals, derived message ids, the progress line and the report."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
import trio

from wad.cli.imports import ProgressBar, options_from, register
from wad.importer.options import ImportOptions
from wad.importer.pacing import Pacer
from wad.importer.report import ChatError, ImportReport, Progress, progress_line, render
from wad.importer.sources import chat_kind, derived_message_id, imported_rows, looks_like_number
from wad.payloads import ImportedMessage

ORG = uuid.UUID("8ffef617-5216-403e-9633-224a13d70670")


async def test_pacer_spaces_requests_one_a_second(autojump_clock: Any) -> None:
    pacer = Pacer(1.0)
    starts = []
    for _ in range(5):
        await pacer.wait()
        starts.append(trio.current_time())
        await trio.sleep(0.2)  # the request itself
    assert [round(b - a, 6) for a, b in zip(starts, starts[1:], strict=False)] == [1.0] * 4
    assert pacer.requests == 5
    # A request that took longer than the interval is not followed by a further wait.
    await trio.sleep(3)
    before = trio.current_time()
    await pacer.wait()
    assert trio.current_time() == before


async def test_pacer_is_shared_by_concurrent_callers(autojump_clock: Any) -> None:
    pacer = Pacer(0.5)
    starts: list[float] = []

    async def request() -> None:
        await pacer.wait()
        starts.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(request)
    starts.sort()
    assert [round(b - a, 6) for a, b in zip(starts, starts[1:], strict=False)] == [0.5] * 3


async def test_pacing_off_never_waits(autojump_clock: Any) -> None:
    pacer = Pacer(0)
    begin = trio.current_time()
    for _ in range(100):
        await pacer.wait()
    assert trio.current_time() == begin
    assert pacer.requests == 100


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wad")
    parser.add_argument("--config", default=None)
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["import", *argv])


def test_command_line_becomes_options() -> None:
    args = parse("--organization-id", str(ORG), "--limit", "5", "--dry-run",
                 "--no-skip-duplicates", "--pace", "0.5")
    options = options_from(args)
    assert options == ImportOptions(limit=5, dry_run=True, skip_duplicates=False, pace_s=0.5)
    assert args.organization_id == ORG

    args = parse("--organization-id", str(ORG), "--source", "export", "a.txt", "chats/",
                 "--me", "Silk Road Tours", "--phone", "Anna Schmidt=+49 151 23456789",
                 "--timezone", "Asia/Bishkek", "--date-order", "DMY")
    options = options_from(args)
    assert options.source == "export"
    assert [p.rsplit("/", 1)[-1] for p in options.paths] == ["a.txt", "chats"]
    assert all(os.path.isabs(p) for p in options.paths)
    assert options.source_options() == {
        "me": "Silk Road Tours", "timezone": "Asia/Bishkek", "date_order": "DMY",
        "phone:Anna Schmidt": "+49 151 23456789"}
    assert parse("--organization-id", str(ORG)).skip_duplicates is True


@pytest.mark.parametrize(("argv", "message"), [
    (["--source", "export"], "needs the paths"),
    (["some.txt"], "PATHS are for --source export"),
    (["--source", "export", "a.txt", "--phone", "Anna"], "NAME=NUMBER"),
    (["--pace", "-1"], "invalid option"),
])
def test_command_line_refuses_what_cannot_work(argv: list[str], message: str) -> None:
    with pytest.raises(Exception, match=message):
        options_from(parse("--organization-id", str(ORG), *argv))


def run_wad(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "wad.cli.main", *argv], capture_output=True,
                          text=True, env=full, timeout=60, check=False)


def test_use_llm_without_a_key_is_refused_before_anything_starts(tmp_path: Any) -> None:
    done = run_wad("import", "--organization-id", str(ORG), "--use-llm",
                   env={"WAD_CONFIG": "", "STATE_DIRECTORY": str(tmp_path)})
    assert done.returncode == 2
    assert "--use-llm needs an OpenRouter key" in done.stderr
    assert "--openrouter-key" in done.stderr and "OPENROUTER_API_KEY" in done.stderr
    assert not (tmp_path / "pg").exists()  # no database was started


def test_bad_organization_id_is_a_usage_error() -> None:
    done = run_wad("import", "--organization-id", "acme")
    assert done.returncode == 2
    assert "not an organization id" in done.stderr


def test_derived_ids_are_stable_and_tell_repeated_messages_apart() -> None:
    at = datetime(2024, 1, 15, 15, 5, tzinfo=UTC)
    ok = ImportedMessage(direction="IN", sender="CLIENT", sent_at=at, body="ok")
    rows = imported_rows(ORG, "+996555123456", "996555123456@c.us", [ok, ok])
    again = imported_rows(ORG, "+996555123456", "996555123456@c.us", [ok, ok])
    assert [r.wa_message_id for r in rows] == [r.wa_message_id for r in again]
    assert rows[0].wa_message_id != rows[1].wa_message_id
    assert rows[0].wa_message_id == derived_message_id("+996555123456", ok, 0)
    other_chat = imported_rows(ORG, "+996700987654", "996700987654@c.us", [ok])
    assert other_chat[0].wa_message_id != rows[0].wa_message_id
    assert (rows[0].direction, rows[0].sender, rows[0].status) == ("IN", "CLIENT", "RECEIVED")


def test_chat_kinds_and_number_titles() -> None:
    assert chat_kind("996555123456@c.us") == "chat"
    assert chat_kind("120363012345678901@g.us") == "group"
    assert chat_kind("status@broadcast") == "broadcast"
    assert chat_kind("123@newsletter") == "broadcast"
    assert chat_kind("1234567@broadcast") == "broadcast"
    assert looks_like_number("+996 555 123 456")
    assert not looks_like_number("Azamat 2")


async def test_progress_line_and_report_say_what_a_person_needs(autojump_clock: Any) -> None:
    progress = Progress(organization_id=ORG, source="whatsapp", dry_run=False)
    progress.state = "RUNNING"
    progress.chats_total = 40
    progress.chats_found = 44
    progress.groups_skipped = 3
    progress.broadcasts_skipped = 1
    await trio.sleep(60)
    progress.chats_imported, progress.chats_duplicate, progress.done_now = 8, 2, 10
    progress.messages_stored = 400
    line = progress_line(progress.report())
    assert "10/40 chats" in line and "400 messages" in line and "2 duplicates" in line
    assert "0 errors" in line and "10.0 chats/min" in line and "left 3:00" in line

    progress.chats_failed = 1
    progress.errors.append(ChatError(chat="996555000111@c.us", error="no phone number"))
    progress.statuses.update({"QUALIFIED": 5, "NEW_LEAD": 3})
    progress.languages.update({"ru": 6, "en": 2})
    progress.state = "COMPLETED"
    report = progress.report()
    text = render(report)
    assert "Import finished" in text
    assert "3 groups and 1 broadcast skipped" in text
    assert "996555000111@c.us: no phone number" in text
    assert "statuses:  QUALIFIED 5, NEW_LEAD 3" in text
    assert "languages: ru 6, en 2" in text
    encoded = json.loads(msgspec.json.encode(report))
    assert encoded["chatsImported"] == 8
    assert encoded["statuses"] == {"QUALIFIED": 5, "NEW_LEAD": 3}
    assert msgspec.json.decode(msgspec.json.encode(report), type=ImportReport) == report


async def test_progress_bar_writes_lines_when_not_a_terminal(autojump_clock: Any) -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, every_s=0)
    progress = Progress(organization_id=ORG, source="whatsapp", dry_run=True)
    progress.state = "LISTING"
    bar.update(progress.report())
    bar.update(progress.report())  # unchanged: not repeated
    progress.state, progress.chats_total = "RUNNING", 2
    progress.chats_imported = progress.done_now = 1
    await trio.sleep(1)
    bar.update(progress.report())
    progress.state = "COMPLETED"
    progress.chats_imported = progress.done_now = 2
    bar.update(progress.report())
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "listing chats…"
    assert lines[1].startswith("[############............] 1/2 chats")
    assert lines[2].startswith("[########################] 2/2 chats")
    assert len(lines) == 3
    assert "DRY RUN: nothing was written" in render(progress.report())


async def test_the_report_carries_what_the_import_plan_asks_for(autojump_clock: Any) -> None:
    """Seed 000's report: organization, date and time, chats and clients imported, messages
    with their average per client, duplicates, errors with reasons, statuses, languages."""
    progress = Progress(organization_id=ORG, source="export", dry_run=False,
                        organization_name="Soul KG")
    progress.state = "COMPLETED"
    progress.chats_found = progress.chats_total = 100
    progress.chats_imported, progress.chats_duplicate, progress.chats_failed = 95, 3, 2
    progress.clients_created, progress.clients_updated = 90, 5
    progress.messages_stored = progress.messages_now = 2375
    progress.messages_duplicate = 125
    progress.errors.append(ChatError(chat="a.txt", error="no phone number for this chat"))
    progress.statuses.update({"QUALIFIED": 25, "NEW_LEAD": 15})
    progress.languages.update({"en": 60, "ru": 25})
    progress.finished_wall = progress.started_wall
    report = progress.report()
    assert (report.clients_imported, report.messages_per_client) == (95, 25.0)
    text = render(report)
    assert text.splitlines()[0].startswith(f"Import finished: Soul KG ({ORG}), source export")
    assert f"date: {progress.started_wall:%Y-%m-%d %H:%M} UTC" in text
    for label, value in (("clients imported", 95), ("messages stored", 2375),
                         ("already stored", 125), ("average per client", 25),
                         ("skipped as duplicates", 3), ("errors", 2)):
        assert re.search(rf"^  {label} +{value}\b", text, re.MULTILINE), label
    assert "a.txt: no phone number for this chat" in text
    assert "statuses:  QUALIFIED 25, NEW_LEAD 15" in text
    encoded = json.loads(msgspec.json.encode(report))
    assert encoded["organizationName"] == "Soul KG"
    assert encoded["beganAt"] and encoded["endedAt"]
    assert (encoded["clientsImported"], encoded["messagesPerClient"]) == (95, 25.0)
    assert msgspec.json.decode(msgspec.json.encode(report), type=ImportReport) == report


def test_duplicates_are_decided_per_message_by_id_then_by_content_key() -> None:
    from wad.db.models import NewMessage
    from wad.db.repo.messages import content_key
    from wad.importer.duplicates import split_new

    def row(wa_id: str, body: str, second: int = 5, direction: str = "IN") -> NewMessage:
        return NewMessage(organization_id=ORG, wa_message_id=wa_id, wa_chat_id="x@c.us",
                          direction=direction, sender="CLIENT" if direction == "IN" else "HUMAN",  # type: ignore[arg-type]
                          sent_at=datetime(2024, 1, 15, 21, 5, second, tzinfo=UTC),
                          status="RECEIVED", body=body)

    live = [row("false_x_A", "Hello!"), row("false_x_B", "ok"), row("false_x_C", "ok", 40)]
    stored = [(r.wa_message_id, content_key(r)) for r in live]
    # The same messages from an export (no seconds, marks and spacing differ): all stored.
    exported = [row("IMPORT-1", "\u200eHello! ", 0), row("IMPORT-2", "OK", 0),
                row("IMPORT-3", "ok", 0)]
    assert split_new(exported, stored) == ([], 3)
    # Two "ok"s in the export, one of them stored: one is new.
    new, dups = split_new(exported[1:], stored[:2])
    assert ([r.wa_message_id for r in new], dups) == (["IMPORT-3"], 1)
    # Live history against messages stored from an export: matched by key; another live
    # message with the same key as a stored live one is not (its WhatsApp id decides).
    from_export = [(r.wa_message_id, content_key(r)) for r in exported]
    assert split_new(live, from_export) == ([], 3)
    other = row("false_x_D", "ok", 50)
    assert split_new([other], stored) == ([other], 0)
    # A different direction or minute is a different message.
    assert split_new([row("IMPORT-9", "ok", direction="OUT")], stored)[1] == 0
    assert content_key(row("a", "ok", 59)) != content_key(
        msgspec.structs.replace(row("a", "ok"), sent_at=datetime(2024, 1, 15, 21, 6, tzinfo=UTC)))
