"""`wad secret rotate`: re-seal every login archive under the current archive key.

Run by the daemon (behind `POST /api/secret/rotate`), which holds the keys: the current secret
(`WAD_SECRET_KEY`) and the previous one (`WAD_SECRET_KEY_OLD`), both accepted for reading while
this runs, so sessions keep restoring throughout. Archives are re-sealed one at a time (an
archive's content is unchanged; only its sealing and key id change). Format-1 archives, sealed
before key ids existed, are re-sealed in format 2 the same way.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import msgspec
import trio

from wad import log
from wad.browser import profile as archive
from wad.db.pool import Executor
from wad.db.repo import sessions as sessions_repo

_log = log.get("archive")


class RotationFailure(msgspec.Struct, kw_only=True, rename="camel"):
    archive_id: int
    organization_id: uuid.UUID
    error: str


class RotationResult(msgspec.Struct, kw_only=True, rename="camel"):
    """What a rotation (batch) did: archives re-sealed under `key_id`, those it could not open,
    the last archive id it looked at, and whether no archive after that one is left (the
    answer of `POST /api/secret/rotate`, so JSON names are camelCase: `keyId`)."""

    key_id: str
    resealed: int
    failed: list[RotationFailure]
    last_id: int
    done: bool


async def rotate(db: Executor, keys: archive.Keyring, work_parent: Path, *, after_id: int = 0,
                 limit: int | None = None) -> RotationResult:
    """Re-seal the archives (ids after `after_id`, at most `limit`; None: all) not sealed with
    the current key. An archive no configured key opens is reported and left as it is."""
    resealed = 0
    failed: list[RotationFailure] = []
    batch = await sessions_repo.archives_not_under(db, key_id=keys.current.key_id,
                                                   after_id=after_id, limit=limit)
    with archive.work_dir(work_parent, ".rotate-") as work:
        for archive_id, org_id in batch:
            row = await sessions_repo.get_archive(db, archive_id=archive_id)
            if row is None:  # pruned meanwhile
                continue
            try:
                sealed = await trio.to_thread.run_sync(archive.reseal, row.archive, keys, org_id,
                                                       work)
            except archive.ArchiveError as exc:
                _log.error("login archive cannot be re-sealed", archive_id=archive_id,
                           org=str(org_id), error=str(exc))
                failed.append(RotationFailure(archive_id=archive_id, organization_id=org_id,
                                              error=str(exc)))
                continue
            if sealed is not None and await sessions_repo.replace_archive(
                    db, archive_id=archive_id, archive=sealed, key_id=keys.current.key_id,
                    previous_key_id=row.key_id):
                resealed += 1
    _log.info("login archives re-sealed", key_id=keys.current.key_id, resealed=resealed,
              failed=len(failed))
    return RotationResult(key_id=keys.current.key_id, resealed=resealed, failed=failed,
                          last_id=batch[-1][0] if batch else after_id,
                          done=limit is None or len(batch) < limit)
