"""PostgreSQL's advisory locks and the connections that hold them: which daemon owns which
organization (`wad.org.ownership`), one import per organization, one queueing per organization.

Session locks belong to the connection that took them; `lock_in_transaction` lasts until the
caller's transaction ends.
"""

from __future__ import annotations

import msgspec

from wad.db.pool import Executor
from wad.db.repo import many


class AdvisoryLock(msgspec.Struct, frozen=True, kw_only=True):
    """A granted single-key advisory lock, as `pg_locks` splits its 64-bit key."""

    classid: int
    objid: int


async def set_application_name(db: Executor, *, name: str) -> None:
    """Name this connection in `pg_stat_activity` (at most 63 characters are kept)."""
    await db.execute("SELECT set_config('application_name', $1, false)", name[:63])


async def ping(db: Executor) -> bool:
    """True when the connection answers a query."""
    return bool(await db.fetchval("SELECT true"))


async def try_lock(db: Executor, *, key: int) -> bool:
    """Take the session lock `key` unless another connection holds it; True when taken."""
    return bool(await db.fetchval("SELECT pg_try_advisory_lock($1)", key))


async def try_lock_pair(db: Executor, *, class_id: int, key: int) -> bool:
    """The same for a lock named by two 32-bit integers."""
    return bool(await db.fetchval("SELECT pg_try_advisory_lock($1::int, $2::int)",
                                  class_id, key))


async def unlock(db: Executor, *, key: int) -> None:
    """Release the session lock `key` this connection holds."""
    await db.fetchval("SELECT pg_advisory_unlock($1)", key)


async def lock_in_transaction(db: Executor, *, name: str) -> None:
    """Wait for the transaction lock named `name`; it lasts until the transaction ends."""
    await db.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", name)


async def held_single_key_locks(db: Executor) -> list[AdvisoryLock]:
    """Every granted single-key (64-bit) advisory lock, of any connection."""
    return many(AdvisoryLock, await db.fetch(
        "SELECT classid::bigint AS classid, objid::bigint AS objid FROM pg_locks "
        "WHERE locktype = 'advisory' AND objsubid = 1 AND granted"))


async def count_connections(db: Executor, *, application_prefix: str) -> int:
    """How many connections have an application name starting with `application_prefix`."""
    return int(await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE $1",
        application_prefix + "%") or 0)
