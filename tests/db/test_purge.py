"""Purge (issue 17, part 8): it deletes every profile of the organization on this node, the
importer's too, and cannot race with `connect`: a connect made while a purge runs waits for it
and then starts from nothing. The real organization manager and control API on a real
PostgreSQL; only the browser session is a stand-in that, like the real one, restores from the
archives it finds and writes its profile."""

from __future__ import annotations

import functools
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.support.api import serving
from wad.api import session_data
from wad.api.context import Services
from wad.browser import profile as archive
from wad.bus import EventBus
from wad.config import DaemonSettings, Settings
from wad.db.pool import Database
from wad.db.repo import organizations
from wad.db.repo import sessions as sessions_repo
from wad.org.manager import OrgManager


class RestoringSession:
    """Starts like `SessionActor`: counts the archives it could restore from, writes its
    profile, then reports CONNECTED and runs until stopped."""

    def __init__(self, started: list[RestoringSession], *, org_id: uuid.UUID, db: Database,
                 settings: Settings, **_: Any) -> None:
        self.org_id, self.db, self.settings = org_id, db, settings
        self.state = "DISCONNECTED"
        self.session = None
        self.browser_starts = 0
        self.page_open = trio.Event()
        self.finished = trio.Event()
        self.archives_found = -1
        started.append(self)

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started(self)
        self.browser_starts += 1
        self.archives_found = len(await sessions_repo.list_archives(
            self.db, organization_id=self.org_id))
        profile = archive.profile_dir(self.settings.state_path, self.org_id)
        profile.mkdir(parents=True, exist_ok=True)
        (profile / "Cookies").write_bytes(b"a fresh login")
        self.state = "CONNECTED"
        await sessions_repo.set_state(self.db, organization_id=self.org_id, state="CONNECTED")
        self.page_open.set()
        await trio.sleep_forever()


async def _kept(db: Database, state_dir: Path, org: uuid.UUID) -> None:
    """Two archives, the daemon's and the importer's profiles, a trash folder."""
    for n in range(2):
        data = f"archive {n}".encode()
        await sessions_repo.add_archive(db, organization_id=org, archive=data,
                                        sha256=bytes(32), size=len(data))
    for folder in (archive.profile_dir(state_dir, org), archive.import_profile_dir(state_dir, org),
                   archive.trash_dir(state_dir) / f"{archive.trash_prefix(org)}20260101T0000Z"):
        folder.mkdir(parents=True)
        (folder / "Cookies").write_bytes(b"an old login")


async def _lock_waiters(db: Database) -> int:
    return int(await db.fetchval(
        """SELECT count(*) FROM pg_stat_activity
           WHERE datname = current_database() AND wait_event_type = 'Lock'"""))


async def test_purge_deletes_every_profile_and_a_connect_meanwhile_waits_for_it(
        db: Database, state_dir: Path, nursery: trio.Nursery,
        monkeypatch: pytest.MonkeyPatch) -> None:
    org = (await organizations.create(db, name="Purged")).id
    await _kept(db, state_dir, org)
    # Logged out before: the row exists (a purge must lock it, not only create it).
    await sessions_repo.set_state(db, organization_id=org, state="LOGGED_OUT")
    settings = Settings(daemon=DaemonSettings(state_dir=str(state_dir)))
    started: list[RestoringSession] = []
    manager = OrgManager(settings=settings, db=db, driver=None, bus=EventBus(), actors=[],
                         session_factory=functools.partial(RestoringSession, started))
    await nursery.start(manager.run)

    paused, release = trio.Event(), trio.Event()

    async def pause(_org: uuid.UUID) -> None:
        paused.set()
        await release.wait()

    monkeypatch.setattr(session_data, "on_purging", [pause])
    answers: dict[str, Any] = {}
    async with serving(db, state_dir, nursery, max_body_bytes=4096,
                       services=Services(orgs=manager)) as api:
        sock = api.socket_client()

        async def purge() -> None:
            answers["purge"] = await sock.post(f"/api/sessions/{org}/purge",
                                               json={"confirm": True})

        async def connect() -> None:
            answers["connect"] = await sock.post("/api/whatsapp/connect",
                                                 json={"organizationId": str(org)})

        with trio.fail_after(60):
            async with trio.open_nursery() as calls:
                calls.start_soon(purge)
                await paused.wait()  # the purge holds the row and is about to delete
                calls.start_soon(connect)
                # The connect waits on the purge's lock (or, were there none, answers).
                while await _lock_waiters(db) < 1 and "connect" not in answers:
                    await trio.sleep(0.05)
                assert "connect" not in answers
                assert started == []
                release.set()
        assert answers["purge"].status_code == 200, answers["purge"].text
        assert answers["connect"].status_code == 202, answers["connect"].text
        result = answers["purge"].json()
        assert result["archivesDeleted"] == 2
        assert sorted(Path(p).name for p in result["foldersDeleted"]) == sorted(
            [f"org-{org}", f"import-{org}", f"{archive.trash_prefix(org)}20260101T0000Z"])
        assert not archive.import_profile_dir(state_dir, org).exists()

        # The connect went ahead after the purge: its session found nothing to restore and
        # its new profile is kept.
        with trio.fail_after(30):
            while not started or started[0].state != "CONNECTED":
                await trio.sleep(0.05)
        assert started[0].archives_found == 0
        profile = archive.profile_dir(state_dir, org)
        assert (profile / "Cookies").read_bytes() == b"a fresh login"

        # Now that it runs, a purge is refused and deletes nothing.
        monkeypatch.setattr(session_data, "on_purging", [])
        r = await sock.post(f"/api/sessions/{org}/purge", json={"confirm": True})
        assert r.status_code == 409
        assert "disconnect" in r.json()["error"]["message"]
        assert profile.is_dir()


async def test_purge_is_refused_while_a_browser_uses_the_importers_profile(
        db: Database, state_dir: Path, nursery: trio.Nursery) -> None:
    org = (await organizations.create(db, name="Importing")).id
    await _kept(db, state_dir, org)
    in_use = archive.import_profile_dir(state_dir, org)
    # A process whose command line says it is a browser on that profile (as Chromium's does).
    browser = await trio.lowlevel.open_process(
        [sys.executable, "-c", "import time; time.sleep(120)", f"--user-data-dir={in_use}"])
    try:
        async with serving(db, state_dir, nursery, max_body_bytes=4096) as api:
            r = await api.socket_client().post(f"/api/sessions/{org}/purge",
                                               json={"confirm": True})
            assert r.status_code == 409, r.text
            assert f"process {browser.pid}" in r.json()["error"]["message"]
            assert in_use.is_dir()
            assert archive.profile_dir(state_dir, org).is_dir()
            assert len(await sessions_repo.list_archives(db, organization_id=org)) == 2
            kept = (await api.socket_client().get(f"/api/sessions/{org}/backups")).json()
            assert kept["importProfile"]["path"] == str(in_use)
    finally:
        browser.kill()
        await browser.wait()
