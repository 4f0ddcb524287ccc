"""Where an organization's login lives on disk, what is kept of it, and the one way to delete it.

Layout under the state directory (`wad.browser.profile` names it; the session actor creates it):
`sessions/org-<id>/` is the live browser profile; a logout or an unrecoverable session moves it
aside to `sessions/trash/org-<id>-<UTC time>/`; `sessions/.pack-org-<id>-*` and
`.restore-org-<id>-*` are the temporary folders of archiving and restoring. The daemon never deletes
the first two; `purge` (behind `wad session purge ORG --yes`) is the only code that does.
"""

from __future__ import annotations

import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

import trio

from wad.api.schemas import FolderOut
from wad.browser import profile as archive


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


async def folders(state_dir: Path, org_id: uuid.UUID) -> tuple[FolderOut | None, list[FolderOut]]:
    """(the live profile if present, the trash folders), measured off the event loop."""

    def measure() -> tuple[FolderOut | None, list[FolderOut]]:
        live = archive.profile_dir(state_dir, org_id)
        profile = describe_folder(live) if live.is_dir() else None
        return profile, [describe_folder(p) for p in trash_dirs(state_dir, org_id)]

    return await trio.to_thread.run_sync(measure)


async def delete_folders(state_dir: Path, org_id: uuid.UUID) -> list[str]:
    """Delete the live profile and every trash folder of the organization; answer their paths."""

    def delete() -> list[str]:
        doomed = [p for p in [archive.profile_dir(state_dir, org_id)] if p.is_dir()]
        doomed += trash_dirs(state_dir, org_id)
        sessions = archive.sessions_dir(state_dir)
        doomed += sorted(p for prefix in archive.work_prefixes(org_id)
                         for p in sessions.glob(prefix + "*") if p.is_dir())
        for path in doomed:
            shutil.rmtree(path)
        return [str(p) for p in doomed]

    return await trio.to_thread.run_sync(delete)
