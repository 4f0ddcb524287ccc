"""Login archives against the real thing (issue 17): a restore killed halfway, then a daemon
start that restores without a QR; `wad secret rotate` on a running daemon, then restores with
the new key only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from tests.support.archives import KEY, NEW_KEY, killed_restore, make_profile
from tests.support.daemonproc import start_daemon
from tests.support.stack import open_stack
from wad.browser import profile as archive
from wad.cli import main as cli
from wad.db.pool import Database
from wad.db.repo import organizations
from wad.db.repo import sessions as sessions_repo
from wad.org import rotation


async def test_killed_restore_then_start_restores_without_qr_and_after_rotation(
        state_dir: Path, dsn: str) -> None:
    async with open_stack(state_dir, dsn) as stack:
        stack.settings.secret_key = KEY
        await stack.phone.create_account("996700000071", "Archive Tours")
        await stack.start_daemon()
        stack.record_states()
        org = await stack.new_org()
        await stack.link_by_qr(org, "996700000071")
        await stack.stop_daemon()  # stores the archive
        row = await sessions_repo.latest_archive(stack.db, organization_id=org)
        assert row is not None

        # A new machine: the profile is gone and the first restore is killed halfway.
        profile = archive.profile_dir(state_dir, org)
        shutil.rmtree(profile)
        with killed_restore(state_dir, org, row, profile, {"WAD_SECRET_KEY": KEY}):
            assert not profile.exists()
        stack.states.clear()
        await stack.start_daemon()
        await stack.wait_published(org, "CONNECTED")
        assert "QR_CODE_PENDING" not in stack.states[org]
        used = await sessions_repo.get_archive(stack.db, archive_id=row.id)
        assert used is not None and used.restored_at is not None  # remembered as good
        assert not list(archive.sessions_dir(state_dir).glob(".restore-*"))
        await stack.stop_daemon()

        # Rotation: the daemon runs with the new key and the old one, every archive is
        # re-sealed (what `wad secret rotate` asks the daemon to do), then the old key goes.
        stack.settings.secret_key, stack.settings.secret_key_old = NEW_KEY, KEY
        keys = archive.keyring(state_dir, NEW_KEY, [KEY])
        result = await rotation.rotate(stack.db, keys, archive.sessions_dir(state_dir))
        assert result.resealed >= 1 and result.failed == []
        stack.settings.secret_key_old = ""
        shutil.rmtree(profile)
        stack.states.clear()
        await stack.start_daemon()
        await stack.wait_published(org, "CONNECTED")
        assert "QR_CODE_PENDING" not in stack.states[org]
        rows = await sessions_repo.list_archives(stack.db, organization_id=org)
        assert {r.key_id for r in rows} == {keys.current.key_id}
        assert any(r.restored_at is not None for r in rows)
        assert len(await stack.phone.devices("996700000071")) == 1  # the same linked device


async def test_wad_secret_rotate_on_a_running_daemon(
        state_dir: Path, dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    async with Database.open(dsn, min_size=1, max_size=2) as db:
        org = (await organizations.create(db, name="Rotated")).id
        old = archive.keyring(state_dir, KEY).current
        for i in range(3):
            work = state_dir / f"p{i}"
            packed = archive.pack_login(make_profile(work / "profile", login=f"V{i}".encode()), work)
            await sessions_repo.add_archive(
                db, organization_id=org, archive=archive.seal_file(packed.path, old, org),
                sha256=packed.sha256, size=packed.size, key_id=old.key_id)
        daemon = await trio.to_thread.run_sync(lambda: start_daemon(state_dir, env={
            "WAD_DATABASE_URL": dsn, "WAD_SECRET_KEY": NEW_KEY, "WAD_SECRET_KEY_OLD": KEY}))
        try:
            capsys.readouterr()
            code = await trio.to_thread.run_sync(
                cli.main, ["--config", str(state_dir / "wad.toml"), "secret", "rotate"])
            out = capsys.readouterr().out
        finally:
            assert daemon.stop() == 0
        assert code == 0, out
        new = archive.keyring(state_dir, NEW_KEY).current
        assert f"re-sealed 3 archives under key {new.key_id}" in out
        rows = await sessions_repo.list_archives(db, organization_id=org)
        assert {r.key_id for r in rows} == {new.key_id}
        newest = await sessions_repo.get_archive(db, archive_id=rows[0].id)
        assert newest is not None
        target = state_dir / "restored"
        assert archive.restore(newest.archive, archive.keyring(state_dir, NEW_KEY), org,
                               newest.sha256, target) == new.key_id
        assert next(target.glob("Default/IndexedDB/*/000003.log")).read_bytes() == b"V2" * 50
