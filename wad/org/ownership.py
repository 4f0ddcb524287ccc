"""Which daemon runs which organization: PostgreSQL advisory locks on one connection, and a
lease renewed beside them.

A daemon runs an organization only while it holds that organization's session-level advisory
lock on its lock connection. When the daemon dies or its connection breaks, PostgreSQL drops the
locks and another daemon may claim them; the daemon that lost its connection sends nothing from
then on, and stops its organizations at once unless the database itself is unavailable: then it
keeps them running until it reconnects, and takes back (`retake`) those whose lease no other
daemon claimed meanwhile. For `lease_s` after the database server starts, another daemon's
claim leaves an organization whose lease names a different daemon to that daemon
(`try_claim`), so the previous owner gets it back first after a restart.

A daemon that is frozen (SIGSTOP, a stuck event loop) keeps its connection, and so its locks,
as long as the host answers TCP. Hence the lease: the owner renews it in `org_leases` every
`lease_renew_interval_s`; once it is `lease_s` old, another daemon ends the owner's lock
connection (`pg_terminate_backend` of the pid recorded with the lease), which releases the
locks, and claims the organizations. The owner itself treats its lease as valid only until one
renewal interval before that expiry (by its own clock, from when it asked for the renewal), and
sends nothing for an organization while its lease is not valid (fencing); when it wakes up it
finds its connection ended or its lease gone and stops those organizations.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import trio

from wad.config import Settings
from wad.db.pool import Connection, Database
from wad.db.repo import locks

APPLICATION_PREFIX = "wad-owner:"


def lock_key(org_id: uuid.UUID) -> int:
    """The organization's advisory lock key: its UUID's first 8 bytes as a signed 64-bit int."""
    return int.from_bytes(org_id.bytes[:8], "big", signed=True)


def _key_from_lock(classid: int, objid: int) -> int:
    """pg_locks shows a bigint key as classid (high 32 bits) and objid (low 32 bits)."""
    return int.from_bytes(((classid << 32) | objid).to_bytes(8, "big"), "big", signed=True)


class Lease:
    """This daemon's lease on one organization, as this daemon knows it: valid until a local
    deadline (`trio.current_time()`) that each renewal moves forward; lost for good once a
    renewal finds it gone. The default is valid forever (an organization run without a
    manager, as in some tests)."""

    def __init__(self, valid_until: float = math.inf) -> None:
        self.valid_until = valid_until
        self.lost = False
        self._changed = trio.Event()

    def valid(self) -> bool:
        return not self.lost and trio.current_time() < self.valid_until

    def extend(self, until: float) -> None:
        """A renewal succeeded: valid until `until` (never moved back)."""
        self.valid_until = max(self.valid_until, until)
        self._changed.set()
        self._changed = trio.Event()

    def lapse(self) -> None:
        """The lock connection is lost: not valid until a renewal says otherwise."""
        self.valid_until = min(self.valid_until, trio.current_time())

    def lose(self) -> None:
        """Another daemon may own the organization now: never valid again."""
        self.lost = True
        self._changed.set()

    async def wait_valid(self) -> None:
        """Return while the lease is valid; wait for a renewal otherwise. A lost lease never
        returns (the manager stops the organization, which cancels the waiter)."""
        while not self.valid():
            if self.lost:
                await trio.sleep_forever()
            await self._changed.wait()  # expired: until the next renewal (or the loss)


def keepalive_settings(settings: Settings) -> dict[str, str]:
    """TCP keepalive for the lock connection, so that PostgreSQL notices a silent host (and
    drops its locks) within about 4 x `tcp_keepalive_s` (ignored on unix sockets)."""
    seconds = str(settings.daemon.tcp_keepalive_s)
    return {"tcp_keepalives_idle": seconds, "tcp_keepalives_interval": seconds,
            "tcp_keepalives_count": "3"}


@asynccontextmanager
async def lock_connection(db: Database, settings: Settings) -> AsyncIterator[Ownership]:
    """This daemon's lock connection (TCP keepalive on, named in `pg_stat_activity`)."""
    async with db.dedicated(server_settings=keepalive_settings(settings)) as conn:
        owner = Ownership(conn, settings.node)
        await owner.setup()
        yield owner


class Ownership:
    """This daemon's lock connection. Calls are serialised (one connection, one query at a
    time)."""

    def __init__(self, conn: Connection, node: str) -> None:
        self.conn = conn
        self.node = node
        self.application_name = (APPLICATION_PREFIX + node)[:63]
        self._lock = trio.Lock()
        self.backend_pid = 0
        self.server_started: datetime | None = None
        """When the database server this connection reached had started."""
        self.last_answer = trio.current_time()
        """When a query on the lock connection last succeeded (`trio.current_time()`)."""

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        """The lock connection, for one caller at a time; a block that ends without an error
        counts as an answer."""
        async with self._lock:
            yield self.conn
            self.last_answer = trio.current_time()

    async def setup(self) -> None:
        async with self._connection() as conn:
            await locks.set_application_name(conn, name=self.application_name)
            self.backend_pid = await locks.backend_pid(conn)
            self.server_started = await locks.server_started(conn)

    async def try_claim(self, org_id: uuid.UUID, *, lease_s: float | None = None) -> bool:
        """Take the organization's lock if no daemon holds it; True when this daemon has it.
        With `lease_s`, the lease is recorded with the lock (or the lock is given back), and an
        organization whose lease is reserved for another daemon (for `lease_s` after the
        database server started: see `retake`) is left to it."""
        async with self._connection() as conn:
            if not await locks.try_lock(conn, key=lock_key(org_id)):
                return False
            if lease_s is not None:
                try:
                    if await locks.reserved_after_restart(conn, organization_id=org_id,
                                                          node=self.node, grace_s=lease_s):
                        await locks.unlock(conn, key=lock_key(org_id))
                        return False
                    await locks.write_lease(conn, organization_id=org_id, node=self.node,
                                            lease_s=lease_s)
                except BaseException:
                    with trio.move_on_after(5, shield=True):
                        await locks.unlock(conn, key=lock_key(org_id))
                    raise
            return True

    async def renew(self, *, lease_s: float) -> set[uuid.UUID]:
        """Renew every lease of this lock connection; answers the organizations whose lease it
        still has."""
        async with self._connection() as conn:
            return await locks.renew_leases(conn, lease_s=lease_s)

    async def end_expired_owners(self, org_ids: list[uuid.UUID]) -> list[uuid.UUID]:
        """For those organizations, end the lock connection of every other daemon whose lease
        has expired while it still holds the organization's lock; answers the organizations
        freed that way (claimable once the ended session has exited)."""
        if not org_ids:
            return []
        async with self._connection() as conn:
            expired = [lease for lease in await locks.expired_leases(
                conn, organization_ids=org_ids) if lease.backend_pid != self.backend_pid]
            if not expired:
                return []
            held = await locks.advisory_locks_of(
                conn, pids=sorted({lease.backend_pid for lease in expired}))
            holding = {(lock.pid, _key_from_lock(lock.classid, lock.objid)) for lock in held}
            freed = [lease for lease in expired
                     if (lease.backend_pid, lock_key(lease.organization_id)) in holding]
            for pid in sorted({lease.backend_pid for lease in freed}):
                await locks.terminate_backend(conn, pid=pid)
        return [lease.organization_id for lease in freed]

    async def retake(self, org_id: uuid.UUID, previous: Ownership, *, lease_s: float) -> bool:
        """Take back, on this connection, an organization this daemon kept running while its
        previous lock connection `previous` was lost to a database outage: True when the lock is
        free and the lease is still the one `previous` held (no daemon claimed it meanwhile);
        the lease then moves here, renewed. False: another daemon owns or owned it since."""
        async with self._connection() as conn:
            if not await locks.try_lock(conn, key=lock_key(org_id)):
                return False
            moved = False
            try:
                moved = await locks.retake_lease(conn, organization_id=org_id, node=self.node,
                                                 previous_pid=previous.backend_pid,
                                                 lease_s=lease_s)
            finally:
                if not moved:
                    with trio.move_on_after(5, shield=True):
                        await locks.unlock(conn, key=lock_key(org_id))
            return moved

    async def end_previous(self, previous: Ownership) -> None:
        """End `previous`, this daemon's lost lock connection, if the database still runs it
        (the outage was the network's, not a restart), so that its locks are free to retake;
        waits up to 5 s for them to go."""
        if previous.server_started != self.server_started:
            return  # the server restarted: that session and its locks are gone
        async with self._connection() as conn:
            ended = await locks.terminate_named_backend(
                conn, pid=previous.backend_pid, application_name=previous.application_name)
            with trio.move_on_after(5):
                while ended:
                    ended = bool(await locks.advisory_locks_of(conn,
                                                               pids=[previous.backend_pid]))
                    await trio.sleep(0.1 if ended else 0)

    async def release(self, org_id: uuid.UUID) -> None:
        """Give the organization up: its lease (not reserved for this daemon) and its lock."""
        async with self._connection() as conn:
            await locks.end_lease(conn, organization_id=org_id)
            await locks.unlock(conn, key=lock_key(org_id))

    async def alive(self, timeout: float) -> bool:
        """False when a query on the lock connection fails, or when a ping gets no answer for
        `timeout` seconds while nothing else on it answers either; slow answers on a loaded
        host are not a loss."""
        asked = trio.current_time()
        with trio.move_on_after(timeout):
            try:
                async with self._connection() as conn:
                    return await locks.ping(conn)
            except Exception:
                return False
        return self.last_answer > asked  # another query answered meanwhile

    async def held_keys(self) -> set[int]:
        """Keys of every organization lock held by any daemon."""
        async with self._connection() as conn:
            held = await locks.held_single_key_locks(conn)
        return {_key_from_lock(lock.classid, lock.objid) for lock in held}

    async def live_daemons(self) -> int:
        """How many daemons hold a lock connection to this database (this one included)."""
        async with self._connection() as conn:
            count = await locks.count_connections(conn, application_prefix=APPLICATION_PREFIX)
        return max(1, count)
