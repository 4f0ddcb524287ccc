"""PostgreSQL's advisory locks and the connections that hold them: which daemon owns which
organization (`wad.org.ownership`), one import per organization, one queueing per organization.

Session locks belong to the connection that took them; `lock_in_transaction` lasts until the
caller's transaction ends.
"""

from __future__ import annotations

import uuid
from datetime import datetime

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


async def backend_pid(db: Executor) -> int:
    """The process id of this connection's database session."""
    return int(await db.fetchval("SELECT pg_backend_pid()"))


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


class HeldLock(msgspec.Struct, frozen=True, kw_only=True):
    """A granted single-key advisory lock and the backend (connection) that holds it."""

    pid: int
    classid: int
    objid: int


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """An organization's owner lease as the database records it."""

    organization_id: uuid.UUID
    node_id: str
    backend_pid: int
    expires_at: datetime


async def write_lease(db: Executor, *, organization_id: uuid.UUID, node: str,
                      lease_s: float) -> None:
    """Record that this connection owns the organization for `lease_s` seconds from now."""
    await db.execute(
        """INSERT INTO org_leases (organization_id, node_id, backend_pid, renewed_at, expires_at)
           VALUES ($1, $2, pg_backend_pid(), now(), now() + make_interval(secs => $3))
           ON CONFLICT (organization_id) DO UPDATE SET
               node_id = excluded.node_id, backend_pid = excluded.backend_pid,
               renewed_at = excluded.renewed_at, expires_at = excluded.expires_at""",
        organization_id, node, lease_s)


async def renew_leases(db: Executor, *, lease_s: float) -> set[uuid.UUID]:
    """Extend every lease of this connection by `lease_s` seconds from now (so that a live
    owner is never taken for a frozen one, whatever it holds); answers the organizations whose
    lease is still this connection's."""
    rows = await db.fetch(
        """UPDATE org_leases SET renewed_at = now(),
                                 expires_at = now() + make_interval(secs => $1)
           WHERE backend_pid = pg_backend_pid() RETURNING organization_id""",
        lease_s)
    return {r["organization_id"] for r in rows}


async def expired_leases(db: Executor, *, organization_ids: list[uuid.UUID]) -> list[Lease]:
    """The leases on those organizations that have expired (by the database's clock)."""
    return many(Lease, await db.fetch(
        """SELECT organization_id, node_id, backend_pid, expires_at FROM org_leases
           WHERE organization_id = ANY($1::uuid[]) AND expires_at < now()""",
        organization_ids))


async def advisory_locks_of(db: Executor, *, pids: list[int]) -> list[HeldLock]:
    """The single-key advisory locks the backends `pids` hold."""
    return many(HeldLock, await db.fetch(
        """SELECT pid, classid::bigint AS classid, objid::bigint AS objid FROM pg_locks
           WHERE locktype = 'advisory' AND objsubid = 1 AND granted AND pid = ANY($1::int[])""",
        pids))


async def terminate_backend(db: Executor, *, pid: int) -> bool:
    """End the database session `pid` (its session locks are released as it exits)."""
    return bool(await db.fetchval("SELECT pg_terminate_backend($1)", pid))


async def server_started(db: Executor) -> datetime:
    """When the database server last started (a different answer means it restarted)."""
    started: datetime = await db.fetchval("SELECT pg_postmaster_start_time()")
    return started


async def retake_lease(db: Executor, *, organization_id: uuid.UUID, node: str,
                       previous_pid: int, lease_s: float) -> bool:
    """Move the lease this daemon wrote from its previous lock connection (`previous_pid`) to
    this one, renewed, provided no connection has claimed the organization since; True when
    moved."""
    moved = await db.fetchval(
        """UPDATE org_leases SET backend_pid = pg_backend_pid(), renewed_at = now(),
                                 expires_at = now() + make_interval(secs => $4)
           WHERE organization_id = $1 AND node_id = $2 AND backend_pid = $3
           RETURNING true""",
        organization_id, node, previous_pid, lease_s)
    return bool(moved)


async def reserved_after_restart(db: Executor, *, organization_id: uuid.UUID, node: str,
                                 grace_s: float) -> bool:
    """True while another daemon's lease on the organization is reserved for it: for `grace_s`
    seconds after the database server started, a lease that was not given back stays its
    owner's to take again."""
    return bool(await db.fetchval(
        """SELECT EXISTS (SELECT 1 FROM org_leases
                          WHERE organization_id = $1 AND node_id <> $2
                            AND now() < pg_postmaster_start_time()
                                        + make_interval(secs => $3))""",
        organization_id, node, grace_s))


async def end_lease(db: Executor, *, organization_id: uuid.UUID) -> None:
    """Give back this connection's lease on the organization (it is not reserved for it)."""
    await db.execute("DELETE FROM org_leases WHERE organization_id = $1 "
                     "AND backend_pid = pg_backend_pid()", organization_id)


async def terminate_named_backend(db: Executor, *, pid: int, application_name: str) -> bool:
    """End the database session `pid` if it still runs under that application name (a pid alone
    may have been reused)."""
    return bool(await db.fetchval(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE pid = $1 AND application_name = $2", pid, application_name))
