"""Hostile export files (issue 17, part 8): a zip bomb, entry and attachment names outside the
export, and files over the configured limits (`[imports]`) are refused whole with a clear
reason, and nothing of them is written: no client, no message, no file. The same chat within
the limits imports (so the refusals are the limits' doing)."""

from __future__ import annotations

import uuid
import zipfile
from pathlib import Path
from typing import Any

import trio

from wad.cli.imports import import_here
from wad.config import DatabaseSettings, ImportSettings, Settings
from wad.db.pool import Database
from wad.db.repo import organizations
from wad.importer.options import ImportOptions
from wad.importer.report import ImportReport

EXPORTS = Path(__file__).resolve().parent.parent / "data" / "exports"
CHAT_NAME = "WhatsApp Chat with +1 415 555 2671.txt"
CHAT = (EXPORTS / CHAT_NAME).read_bytes()


async def _import(db: Database, dsn: str, path: Path, **limits: Any) -> tuple[ImportReport,
                                                                           dict[str, int]]:
    org = (await organizations.create(db, name=f"Tours {uuid.uuid4().hex[:6]}")).id
    settings = Settings(database=DatabaseSettings(dsn=dsn), imports=ImportSettings(**limits))
    options = ImportOptions(source="export", paths=[str(path)], timezone="Asia/Bishkek",
                            pace_s=0)
    with trio.fail_after(60):
        report = await import_here(settings, org, options)
    row = await db.fetchrow(
        """SELECT (SELECT count(*) FROM clients WHERE organization_id = $1) AS clients,
                  (SELECT count(*) FROM messages WHERE organization_id = $1) AS messages""", org)
    assert row is not None
    return report, dict(row)


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


async def _refused(db: Database, dsn: str, path: Path, reason: str, **limits: Any) -> None:
    folder = path.parent
    before = _files(folder)
    report, stored = await _import(db, dsn, path, **limits)
    assert report.state == "COMPLETED"
    assert (report.chats_imported, report.chats_failed, report.messages_stored) == (0, 1, 0)
    [error] = report.errors
    assert "refused, nothing of it imported" in error.error, error.error
    assert reason in error.error, error.error
    assert stored == {"clients": 0, "messages": 0}
    assert _files(folder) == before  # nothing unpacked, nothing written beside it


def _zip(path: Path, entries: list[tuple[str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
    return path


async def test_the_chat_within_the_limits_imports(db: Database, dsn: str, tmp_path: Path
                                                  ) -> None:
    path = _zip(tmp_path / "WhatsApp Chat - ok.zip", [(CHAT_NAME, CHAT),
                                                      ("IMG-1.jpg", b"\xff\xd8" * 1000)])
    report, stored = await _import(db, dsn, path, max_file_bytes=len(CHAT) + 1,
                                   max_entries=2, max_archive_bytes=len(CHAT) + 2000)
    assert (report.chats_imported, report.chats_failed) == (1, 0), report.errors
    assert stored == {"clients": 1, "messages": 4}


async def test_a_zip_bomb_is_refused(db: Database, dsn: str, tmp_path: Path) -> None:
    # 16 MiB of zeros deflate to about 16 KiB: a ratio near 1000.
    bomb = _zip(tmp_path / "WhatsApp Chat - bomb.zip",
                [(CHAT_NAME, CHAT), ("VID-1.mp4", bytes(16 << 20))])
    assert bomb.stat().st_size < 100_000
    await _refused(db, dsn, bomb, "'VID-1.mp4' is compressed")
    await _refused(db, dsn, bomb, "zip bomb")
    # The chat text itself as the bomb: repeated lines.
    line = CHAT.splitlines(keepends=True)[1]
    text_bomb = _zip(tmp_path / "WhatsApp Chat - text.zip", [(CHAT_NAME, line * 200_000)])
    await _refused(db, dsn, text_bomb, "zip bomb")


async def test_names_outside_the_export_are_refused(db: Database, dsn: str, tmp_path: Path
                                                    ) -> None:
    for name in ("../../escape.txt", "/etc/cron.d/escape.txt", "chats/../../escape.txt",
                 "..\\..\\escape.txt", "C:/escape.txt"):
        folder = tmp_path / uuid.uuid4().hex
        folder.mkdir()
        path = _zip(folder / "WhatsApp Chat - traversal.zip", [(name, CHAT)])
        await _refused(db, dsn, path, "named outside the zip")
    assert not (tmp_path.parent / "escape.txt").exists()

    # A chat naming an attachment outside its folder: never looked up, the chat refused.
    folder = tmp_path / "export"
    folder.mkdir()
    (tmp_path / "secret.jpg").write_bytes(b"not for the import")
    lines = CHAT.decode().splitlines()
    lines.insert(2, lines[1].split(" - ")[0] + " - +1 (415) 555-2671: "
                 "../secret.jpg (file attached)")
    text = folder / CHAT_NAME
    text.write_text("\n".join(lines) + "\n")
    await _refused(db, dsn, text, "names the attachment '../secret.jpg', which is outside")


async def test_files_over_the_limits_are_refused(db: Database, dsn: str, tmp_path: Path
                                                 ) -> None:
    text = tmp_path / CHAT_NAME
    text.write_bytes(CHAT)
    await _refused(db, dsn, text, "imports.max_file_bytes", max_file_bytes=len(CHAT) - 1)

    folder = tmp_path / "zips"
    folder.mkdir()
    path = _zip(folder / "WhatsApp Chat - big.zip", [(CHAT_NAME, CHAT)])
    await _refused(db, dsn, path, "imports.max_file_bytes", max_file_bytes=len(CHAT) - 1)
    many = _zip(folder / "WhatsApp Chat - many.zip",
                [(CHAT_NAME, CHAT), *((f"IMG-{n}.jpg", b"x") for n in range(4))])
    await _refused(db, dsn, many, "5 entries, more than 4 (imports.max_entries)", max_entries=4)
    await _refused(db, dsn, many, "imports.max_archive_bytes",
                   max_archive_bytes=len(CHAT) + 3)
