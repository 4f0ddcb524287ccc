"""Where an organization's login lives on disk, what is kept of it, and the one way to delete it.

Layout under the state directory (`wad.browser.profile` names it; the session actor creates it):
`sessions/org-<id>/` is the live browser profile, `sessions/import-<id>/` the importer's own
(`wad import` without a running session); a logout or an unrecoverable session moves it
aside to `sessions/trash/org-<id>-<UTC time>/`; `sessions/.pack-org-<id>-*` and
`.restore-org-<id>-*` are the temporary folders of archiving and restoring. The daemon never deletes
the first two; `purge` (behind `wad session purge ORG --yes`) is the only code that does.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import trio

from wad.api.schemas import FolderOut
from wad.browser import profile as archive
from wad.browser.driver import find_browser_pid
from wad.db.pool import Database
from wad.db.repo import sessions as sessions_repo
from wad.errors import WadError

ACTIVE_STATES = ("CONNECTING", "QR_CODE_PENDING", "PAIRING_CODE_PENDING", "CONNECTED")


class PurgeRefused(WadError):
    """The organization's login is in use: disconnect or log out (or stop the import) first."""


on_purging: list[Callable[[uuid.UUID], Awaitable[None]]] = []
"""Awaited by `purge` once it holds the organization's row and decided to delete, before it
deletes anything (tests pause there to race a `connect` against it)."""


def trash_dirs(state_dir: Path, org_id: uuid.UUID) -> list[Path]:
    """The organization's profiles moved aside, oldest first."""
    root = archive.trash_dir(state_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob(f"{archive.trash_prefix(org_id)}*") if p.is_dir())


def describe_folder(path: Path) -> FolderOut:
    """Path, total size of the files under it, and when it last changed."""
    size = 0
    for entry in path.rglob("*"):
        try:
            if entry.is_file() and not entry.is_symlink():
                size += entry.stat().st_size
        except OSError:  # a file removed while we walk (Chromium's temporary files)
            continue
    modified = datetime.fromtimestamp(path.stat().st_mtime, tz=UTC)
    return FolderOut(path=str(path), size=size, modified_at=modified)


async def folders(state_dir: Path, org_id: uuid.UUID
                  ) -> tuple[FolderOut | None, list[FolderOut], FolderOut | None]:
    """(the live profile, the trash folders, the importer's profile), measured off the event
    loop; a profile that does not exist is None."""

    def measure() -> tuple[FolderOut | None, list[FolderOut], FolderOut | None]:
        live = archive.profile_dir(state_dir, org_id)
        importer = archive.import_profile_dir(state_dir, org_id)
        return (describe_folder(live) if live.is_dir() else None,
                [describe_folder(p) for p in trash_dirs(state_dir, org_id)],
                describe_folder(importer) if importer.is_dir() else None)

    return await trio.to_thread.run_sync(measure)


def profiles(state_dir: Path, org_id: uuid.UUID) -> list[Path]:
    """The organization's browser profiles on this node that exist: the daemon's and the
    importer's."""
    return [p for p in (archive.profile_dir(state_dir, org_id),
                        archive.import_profile_dir(state_dir, org_id)) if p.is_dir()]


async def purge(db: Database, state_dir: Path, org_id: uuid.UUID, *,
                running_here: Callable[[], bool] = lambda: False) -> tuple[int, list[str]]:
    """Delete every kept copy of the organization's login: its archive versions, its browser
    profiles on this node (the daemon's and the importer's), its trash and temporary folders.
    Answers (archives deleted, folders deleted).

    It holds the organization's session row for the whole purge, so a `connect` meanwhile waits
    for it and then starts from nothing. Raises `PurgeRefused`, deleting nothing, while the
    session should run, runs on this daemon (RUNNING_HERE), or a browser uses one of the
    profiles (a running import)."""
    async with db.transaction() as tx:
        row = await sessions_repo.lock(tx, organization_id=org_id)
        if row.should_run or row.state in ACTIVE_STATES or running_here():
            raise PurgeRefused(f"the session is {row.state}; disconnect or log out before "
                               "purging its data")
        for path in profiles(state_dir, org_id):
            pid = await trio.to_thread.run_sync(find_browser_pid, path)
            if pid is not None:
                raise PurgeRefused(f"a browser (process {pid}) uses {path}: stop the import "
                                   "or the session first")
        for hook in on_purging:
            await hook(org_id)
        folders = await delete_folders(state_dir, org_id)
        deleted = await sessions_repo.purge_archives(tx, organization_id=org_id, keep_latest=0)
    return deleted, folders


async def delete_folders(state_dir: Path, org_id: uuid.UUID) -> list[str]:
    """Delete the organization's profiles, trash and temporary folders; answer their paths."""

    def delete() -> list[str]:
        doomed = profiles(state_dir, org_id)
        doomed += trash_dirs(state_dir, org_id)
        sessions = archive.sessions_dir(state_dir)
        doomed += sorted(p for prefix in archive.work_prefixes(org_id)
                         for p in sessions.glob(prefix + "*") if p.is_dir())
        for path in doomed:
            shutil.rmtree(path)
        return [str(p) for p in doomed]

    return await trio.to_thread.run_sync(delete)
