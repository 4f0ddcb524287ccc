"""Which daemon runs which organization: PostgreSQL advisory locks on one connection.

A daemon runs an organization only while it holds that organization's session-level advisory
lock on its lock connection. When the daemon dies or its connection breaks, PostgreSQL drops the
locks and another daemon may claim them; the daemon that lost its connection must stop its
organizations at once (the manager does, when `alive()` fails), so no two daemons ever drive
the same account.
"""

from __future__ import annotations

import uuid

import trio

from wad.db.pool import Connection
from wad.db.repo import locks

APPLICATION_PREFIX = "wad-owner:"


def lock_key(org_id: uuid.UUID) -> int:
    """The organization's advisory lock key: its UUID's first 8 bytes as a signed 64-bit int."""
    return int.from_bytes(org_id.bytes[:8], "big", signed=True)


def _key_from_lock(classid: int, objid: int) -> int:
    """pg_locks shows a bigint key as classid (high 32 bits) and objid (low 32 bits)."""
    return int.from_bytes(((classid << 32) | objid).to_bytes(8, "big"), "big", signed=True)


class Ownership:
    """This daemon's lock connection. Calls are serialised (one connection, one query at a
    time)."""

    def __init__(self, conn: Connection, node: str) -> None:
        self.conn = conn
        self.node = node
        self._lock = trio.Lock()

    async def setup(self) -> None:
        async with self._lock:
            await locks.set_application_name(self.conn, name=APPLICATION_PREFIX + self.node)

    async def try_claim(self, org_id: uuid.UUID) -> bool:
        """Take the organization's lock if no daemon holds it; True when this daemon has it."""
        async with self._lock:
            return await locks.try_lock(self.conn, key=lock_key(org_id))

    async def release(self, org_id: uuid.UUID) -> None:
        async with self._lock:
            await locks.unlock(self.conn, key=lock_key(org_id))

    async def alive(self, timeout: float) -> bool:
        """True when the lock connection answers within `timeout` seconds."""
        with trio.move_on_after(timeout):
            try:
                async with self._lock:
                    return await locks.ping(self.conn)
            except Exception:
                return False
        return False

    async def held_keys(self) -> set[int]:
        """Keys of every organization lock held by any daemon."""
        async with self._lock:
            held = await locks.held_single_key_locks(self.conn)
        return {_key_from_lock(lock.classid, lock.objid) for lock in held}

    async def live_daemons(self) -> int:
        """How many daemons hold a lock connection to this database (this one included)."""
        async with self._lock:
            count = await locks.count_connections(self.conn,
                                                  application_prefix=APPLICATION_PREFIX)
        return max(1, count)
