"""Login archives with a lifecycle (issue 17): deterministic packing, retention, restores that
cannot half-fail, keys bound to the organization, rotation. Real files, real PostgreSQL."""

from __future__ import annotations

import gzip
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trio

from tests.support import api as test_api_support
from tests.support.api import LiveApi
from tests.support.archives import KEY, NEW_KEY, killed_restore, make_profile
from wad.api import session_data
from wad.browser import profile as archive
from wad.bus import EventBus
from wad.cli import control as ctl
from wad.config import ArchiveSettings, DaemonSettings, Settings
from wad.config import load as load_config
from wad.db.pool import Database
from wad.db.repo import organizations
from wad.db.repo import sessions as sessions_repo
from wad.errors import ConfigError
from wad.observe.metrics import Metrics
from wad.org import rotation
from wad.org.session import SessionActor

ROOT = Path(__file__).resolve().parent.parent.parent


def _login_of(profile: Path) -> bytes:
    return next(profile.glob("Default/IndexedDB/*/000003.log")).read_bytes()


def _settings(state_dir: Path, *, secret: str = KEY, old: str = "", keep_latest: int = 5,
              keep_daily_days: int = 7) -> Settings:
    settings = Settings(daemon=DaemonSettings(state_dir=str(state_dir)),
                        archives=ArchiveSettings(keep_latest=keep_latest,
                                                 keep_daily_days=keep_daily_days))
    settings.secret_key = secret
    settings.secret_key_old = old
    return settings


def _actor(db: Database, org: uuid.UUID, settings: Settings) -> SessionActor:
    return SessionActor(org_id=org, settings=settings, db=db, driver=None, bus=EventBus())


async def _org(db: Database, name: str = "Tours") -> uuid.UUID:
    return (await organizations.create(db, name=name)).id


# -- packing ------------------------------------------------------------------------------------


def test_packing_is_deterministic_and_holds_only_the_login(tmp_path: Path) -> None:
    profile = make_profile(tmp_path / "a")
    first = archive.pack_profile(profile)
    assert archive.pack_profile(profile) == first
    assert first[4:8] == b"\0\0\0\0"  # no time in the gzip header
    # Other file times, another folder: the same bytes.
    for path in profile.rglob("*"):
        os.utime(path, (1_000_000, 1_000_000))
    moved = tmp_path / "b"
    shutil.copytree(profile, moved)
    assert archive.pack_profile(moved) == first

    restored = tmp_path / "restored"
    archive.unpack_profile(first, restored)
    names = sorted(p.relative_to(restored).as_posix() for p in restored.rglob("*") if p.is_file())
    assert names == ["Default/Cookies",
                     "Default/IndexedDB/https_web.whatsapp.com_0.indexeddb.leveldb/000003.log",
                     "Default/Local Storage/leveldb/000005.ldb"]

    make_profile(profile, login=b"CHANGED")
    assert archive.digest(archive.pack_profile(profile)) != archive.digest(first)
    assert len(gzip.decompress(first)) > 0


def test_retention_keeps_newest_daily_and_the_restored_one() -> None:
    @dataclass
    class A:
        id: int
        created_at: datetime
        restored_at: datetime | None = None

    now = datetime(2026, 12, 4, 12, tzinfo=UTC)
    # Ten archives, one every 12 hours going back: ids 10 (newest) .. 1.
    rows = [A(i, now - timedelta(hours=12 * (10 - i))) for i in range(1, 11)]
    assert archive.retained(rows, now=now, keep_latest=3, keep_daily_days=0) == {8, 9, 10}
    # One a day for 3 days: the newest of Dec 4 (10), Dec 3 (8), Dec 2 (6); Dec 1 is too old.
    assert archive.retained(rows, now=now, keep_latest=1, keep_daily_days=3) == {10, 8, 6}
    rows[1].restored_at = now  # id 2 restored a profile once
    assert archive.retained(rows, now=now, keep_latest=1, keep_daily_days=0) == {10, 2}


# -- saves and retention ------------------------------------------------------------------------


async def test_unchanged_profile_stores_one_archive(db: Database, state_dir: Path) -> None:
    org = await _org(db)
    actor = _actor(db, org, _settings(state_dir))
    make_profile(actor.profile_dir)
    assert await actor.save_archive(reason="test") is True
    assert await actor.save_archive(reason="test") is False
    for path in actor.profile_dir.rglob("*"):  # touched, same content: still nothing new
        os.utime(path)
    assert await actor.save_archive(reason="test") is False
    stored = await sessions_repo.list_archives(db, organization_id=org)
    assert len(stored) == 1
    assert stored[0].key_id == archive.keyring(state_dir, KEY).current.key_id
    assert not list(actor.sessions_dir.glob(".pack-*"))  # the work folder is gone


async def test_retention_keeps_three_and_the_newest_restores(db: Database, state_dir: Path,
                                                            nursery: trio.Nursery) -> None:
    metrics = Metrics(db=db)
    await nursery.start(metrics.run)
    org = await _org(db)
    actor = _actor(db, org, _settings(state_dir, keep_latest=3, keep_daily_days=0))
    for i in range(10):
        make_profile(actor.profile_dir, login=f"VERSION-{i}".encode())
        assert await actor.save_archive(reason="test")
    kept = await sessions_repo.list_archives(db, organization_id=org)
    assert len(kept) == 3
    assert metrics.registry.get_sample_value(
        "wad_session_archives_pruned_total", {"organization": str(org)}) == 7

    shutil.rmtree(actor.profile_dir)
    fresh = _actor(db, org, _settings(state_dir, keep_latest=3, keep_daily_days=0))
    await fresh._restore_if_missing()
    assert _login_of(fresh.profile_dir) == b"VERSION-9" * 50
    assert fresh.restored_archive_id == kept[0].id
    again = await sessions_repo.list_archives(db, organization_id=org)
    assert again[0].restored_at is not None


async def test_corrupt_newest_falls_back_and_the_restored_one_is_kept(
        db: Database, state_dir: Path) -> None:
    org = await _org(db)
    settings = _settings(state_dir, keep_latest=2, keep_daily_days=0)
    actor = _actor(db, org, settings)
    for i in range(3):
        make_profile(actor.profile_dir, login=f"VERSION-{i}".encode())
        await actor.save_archive(reason="test")
    newest, previous = await sessions_repo.list_archives(db, organization_id=org)
    row = await sessions_repo.get_archive(db, archive_id=newest.id)
    assert row is not None
    damaged = row.archive[:40] + bytes([row.archive[40] ^ 0xFF]) + row.archive[41:]
    await db.execute("UPDATE session_archives SET archive = $2 WHERE id = $1", newest.id, damaged)

    shutil.rmtree(actor.profile_dir)
    await actor._restore_if_missing()
    assert _login_of(actor.profile_dir) == b"VERSION-1" * 50
    assert actor.restored_archive_id == previous.id
    assert not list(actor.sessions_dir.glob(".restore-*"))

    # Newer saves push it out of "the newest 2", but it restored a profile: it stays.
    for i in range(3, 6):
        make_profile(actor.profile_dir, login=f"VERSION-{i}".encode())
        await actor.save_archive(reason="test")
    ids = [a.id for a in await sessions_repo.list_archives(db, organization_id=org)]
    assert len(ids) == 3 and previous.id in ids


# -- restores that cannot half-fail -------------------------------------------------------------


async def test_a_restore_killed_halfway_leaves_no_profile_and_the_next_one_works(
        db: Database, state_dir: Path) -> None:
    org = await _org(db)
    actor = _actor(db, org, _settings(state_dir))
    make_profile(actor.profile_dir, login=b"THE-LOGIN")
    await actor.save_archive(reason="test")
    shutil.rmtree(actor.profile_dir)
    row = await sessions_repo.latest_archive(db, organization_id=org)
    assert row is not None

    with killed_restore(state_dir, org, row, actor.profile_dir, {"WAD_SECRET_KEY": KEY}) as half:
        assert not actor.profile_dir.exists()  # the partial files are elsewhere
        assert half.is_relative_to(actor.sessions_dir) and ".restore-org-" in str(half)
    leftover = next(actor.sessions_dir.glob(f".restore-org-{org}-*"))

    await actor._restore_if_missing()
    assert _login_of(actor.profile_dir) == b"THE-LOGIN" * 50
    assert not leftover.exists()  # the leftover is cleaned up

    # A purge also removes such leftovers (they hold login data).
    shutil.rmtree(actor.profile_dir)
    with killed_restore(state_dir, org, row, actor.profile_dir, {"WAD_SECRET_KEY": KEY}):
        pass
    leftover = next(actor.sessions_dir.glob(f".restore-org-{org}-*"))
    deleted = await session_data.delete_folders(state_dir, org)
    assert deleted == [str(leftover)]
    assert not leftover.exists()


# -- keys ---------------------------------------------------------------------------------------


def test_short_secret_is_refused_at_start_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="WAD_SECRET_KEY: must be at least 32 bytes, got 9"):
        load_config(env={"WAD_SECRET_KEY": "too-short"})
    with pytest.raises(archive.ArchiveError, match="WAD_SECRET_KEY"):
        archive.keyring(tmp_path, "too-short")
    assert load_config(env={"WAD_SECRET_KEY": KEY}).secret_key == KEY


async def test_archive_moved_to_another_organization_does_not_decrypt(
        db: Database, state_dir: Path) -> None:
    a, b = await _org(db, "A"), await _org(db, "B")
    actor_b = _actor(db, b, _settings(state_dir))
    make_profile(actor_b.profile_dir, login=b"B-LOGIN")
    await actor_b.save_archive(reason="test")
    actor_a = _actor(db, a, _settings(state_dir))
    make_profile(actor_a.profile_dir, login=b"A-LOGIN")
    await actor_a.save_archive(reason="test")
    moved = await sessions_repo.latest_archive(db, organization_id=a)
    assert moved is not None
    await db.execute("UPDATE session_archives SET organization_id = $2 WHERE id = $1",
                     moved.id, b)

    target = state_dir / "b-profile"
    keys = archive.keyring(state_dir, KEY)
    with pytest.raises(archive.ArchiveError, match="belongs to another organization"):
        archive.restore(moved.archive, keys, b, moved.sha256, target)
    assert not target.exists()

    # B's session skips the foreign archive (its newest row) and restores B's own login.
    shutil.rmtree(actor_b.profile_dir)
    await actor_b._restore_if_missing()
    assert _login_of(actor_b.profile_dir) == b"B-LOGIN" * 50
    assert actor_b.restored_archive_id != moved.id
    still = await sessions_repo.get_archive(db, archive_id=moved.id)
    assert still is not None and still.archive == moved.archive  # nothing overwritten


async def test_rotation_reseals_every_archive_and_the_new_key_restores(
        db: Database, state_dir: Path) -> None:
    org = await _org(db)
    old = _actor(db, org, _settings(state_dir, secret=KEY))
    make_profile(old.profile_dir, login=b"FORMAT-1")
    # An archive sealed the pre-0004 way (format 1, SHA-256 of the secret, no key id).
    plain = archive.pack_profile(old.profile_dir)
    await sessions_repo.add_archive(
        db, organization_id=org, archive=archive.seal(plain, archive.load_key(state_dir, KEY)),
        sha256=bytes.fromhex(archive.digest(plain)), size=len(plain))
    for i in range(2):
        make_profile(old.profile_dir, login=f"OLD-KEY-{i}".encode())
        await old.save_archive(reason="test")
    shutil.rmtree(old.profile_dir)

    # With only the new key, the old archives do not open (and nothing is written).
    new_only = _actor(db, org, _settings(state_dir, secret=NEW_KEY))
    await new_only._restore_if_missing()
    assert not new_only.profile_dir.exists()

    # During the rotation both keys read; afterwards every archive is under the new key.
    both = archive.keyring(state_dir, NEW_KEY, [KEY])
    first = await rotation.rotate(db, both, archive.sessions_dir(state_dir), limit=2)
    assert (first.resealed, first.failed, first.done) == (2, [], False)
    mid = await sessions_repo.list_archives(db, organization_id=org)
    old_id, new_id = archive.keyring(state_dir, KEY).current.key_id, both.current.key_id
    assert [r.key_id for r in mid] == [old_id, new_id, new_id]  # newest first: one to go
    new_only_mid = _actor(db, org, _settings(state_dir, secret=NEW_KEY, old=KEY))
    await new_only_mid._restore_if_missing()  # both keys read while the rotation runs
    assert _login_of(new_only_mid.profile_dir) == b"OLD-KEY-1" * 50
    shutil.rmtree(new_only_mid.profile_dir)
    rest = await rotation.rotate(db, both, archive.sessions_dir(state_dir),
                                 after_id=first.last_id, limit=2)
    assert (rest.resealed, rest.failed, rest.done) == (1, [], True)
    rows = await sessions_repo.list_archives(db, organization_id=org)
    assert {r.key_id for r in rows} == {both.current.key_id}
    again = await rotation.rotate(db, both, archive.sessions_dir(state_dir))
    assert again.resealed == 0

    await new_only._restore_if_missing()
    assert _login_of(new_only.profile_dir) == b"OLD-KEY-1" * 50
    for row in rows:  # the former format-1 archive too
        target = state_dir / f"check-{row.id}"
        full = await sessions_repo.get_archive(db, archive_id=row.id)
        assert full is not None
        archive.restore(full.archive, archive.keyring(state_dir, NEW_KEY), org, full.sha256,
                        target)
    assert _login_of(state_dir / f"check-{rows[-1].id}") == b"FORMAT-1" * 50


def test_wrong_key_and_truncation_are_refused(tmp_path: Path) -> None:
    org = uuid.uuid4()
    path = tmp_path / "plain"
    path.write_bytes(os.urandom(archive.CHUNK * 2 + 10))  # three chunks
    key = archive.keyring(tmp_path, KEY).current
    sealed = archive.seal_file(path, key, org)
    with open(tmp_path / "out", "wb") as out:
        assert archive.open_to_file(sealed, archive.keyring(tmp_path, KEY), org, out) == key.key_id
    assert (tmp_path / "out").read_bytes() == path.read_bytes()
    with open(tmp_path / "out", "wb") as out, pytest.raises(archive.ArchiveError,
                                                            match="not configured"):
        archive.open_to_file(sealed, archive.keyring(tmp_path, NEW_KEY), org, out)
    cut = sealed[:archive.CHUNK + 16 + 20]  # only the first chunk: not marked last
    with open(tmp_path / "out", "wb") as out, pytest.raises(archive.ArchiveError):
        archive.open_to_file(cut, archive.keyring(tmp_path, KEY), org, out)


# -- what is kept, as the API and `wad session backups` show it ---------------------------------

live_api = test_api_support.live_api


async def test_backups_show_key_id_and_the_restored_archive(
        live_api: LiveApi, state_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = live_api.ctx.db
    org = await live_api.create_org("Kept")
    actor = _actor(db, org, _settings(state_dir))
    for i in range(2):
        make_profile(actor.profile_dir, login=f"V{i}".encode())
        await actor.save_archive(reason="test")
    shutil.rmtree(actor.profile_dir)
    await actor._restore_if_missing()
    with trio.fail_after(30):
        kept = (await live_api.socket_client().get(f"/api/sessions/{org}/backups")).json()
    key_id = archive.keyring(state_dir, KEY).current.key_id
    assert [a["keyId"] for a in kept["archives"]] == [key_id, key_id]
    assert kept["archives"][0]["restoredAt"] is not None
    assert kept["archives"][1]["restoredAt"] is None
    ctl._print_backups({"name": "Kept", "id": str(org)}, kept)
    out = capsys.readouterr().out
    assert "LAST RESTORED" in out and key_id in out


async def test_a_profile_written_during_the_copy_is_copied_again(
        db: Database, state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    org = await _org(db)
    actor = _actor(db, org, _settings(state_dir))
    make_profile(actor.profile_dir)
    log = next(actor.profile_dir.glob("Default/IndexedDB/*/000003.log"))
    copy = shutil.copyfile
    writes = {"left": 1}

    def copy_while_chromium_writes(src: Path, dst: Path) -> object:
        if writes["left"] and src == log:  # Chromium appends while the copy runs
            writes["left"] -= 1
            with log.open("ab") as handle:
                handle.write(b"+MORE")
        return copy(src, dst)

    monkeypatch.setattr(shutil, "copyfile", copy_while_chromium_writes)
    assert await actor.save_archive(reason="test")  # the second copy was consistent
    shutil.rmtree(actor.profile_dir)
    await actor._restore_if_missing()
    assert _login_of(actor.profile_dir).endswith(b"+MORE")

    writes["left"] = 10_000  # it never stops writing: this save is skipped, the run goes on
    assert await actor.save_archive(reason="test") is False
    assert len(await sessions_repo.list_archives(db, organization_id=org)) == 1
