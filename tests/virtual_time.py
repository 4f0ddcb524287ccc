"""Virtual time for tests that use a real PostgreSQL on Trio's mock clock: round trips take no
virtual time, and the clock jumps to the next deadline only while nothing (no task, no query)
is under way, so every sleep lasts exactly its length."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg
import trio
import trio.testing
from trio_asyncio import aio_as_trio

from wad.db.pool import Connection, Database, _init_connection


class VirtualTimeDatabase(Database):
    """A pool whose round trips take no virtual time: `busy` counts the calls under way, and
    `drive_clock` only moves the clock while it is zero."""

    def __init__(self, pool: Any, dsn: str) -> None:
        super().__init__(pool, dsn)
        self.busy = 0
        self.idle = trio.Event()
        self.idle.set()

    @contextmanager
    def counted(self) -> Iterator[None]:
        self.busy += 1
        if self.idle.is_set():
            self.idle = trio.Event()
        try:
            yield
        finally:
            self.busy -= 1
            if self.busy == 0:
                self.idle.set()

    async def execute(self, sql: str, *args: Any) -> str:
        with self.counted():
            return await super().execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        with self.counted():
            return await super().fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        with self.counted():
            return await super().fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        with self.counted():
            return await super().fetchval(sql, *args)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        with self.counted():
            raw = await aio_as_trio(self._pool.acquire)()
        try:
            yield _CountedConnection(raw, self)
        finally:
            with self.counted(), trio.CancelScope(shield=True):
                await aio_as_trio(self._pool.release)(raw)

    @asynccontextmanager
    async def dedicated(self, *, server_settings: dict[str, str] | None = None
                        ) -> AsyncIterator[Connection]:
        with self.counted():
            raw = await aio_as_trio(asyncpg.connect)(self.dsn, server_settings=server_settings)
            await aio_as_trio(_init_connection)(raw)
        try:
            yield _CountedConnection(raw, self)
        finally:
            with self.counted(), trio.CancelScope(shield=True):
                await aio_as_trio(raw.close)()


class _CountedConnection(Connection):
    def __init__(self, raw: Any, db: VirtualTimeDatabase) -> None:
        super().__init__(raw)
        self._db = db

    async def execute(self, sql: str, *args: Any) -> str:
        with self._db.counted():
            return await super().execute(sql, *args)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        with self._db.counted():
            return await super().fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Any:
        with self._db.counted():
            return await super().fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        with self._db.counted():
            return await super().fetchval(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A savepoint (or a transaction) on this connection, its round trips counted."""
        tx = self.raw.transaction()
        with self._db.counted():
            await aio_as_trio(tx.start)()
        try:
            yield self
        except BaseException:
            with self._db.counted(), trio.CancelScope(shield=True):
                await aio_as_trio(tx.rollback)()
            raise
        else:
            with self._db.counted():
                await aio_as_trio(tx.commit)()


async def drive_clock(clock: trio.testing.MockClock, db: VirtualTimeDatabase) -> None:
    """Jump the clock to the next deadline whenever every task waits and no database call is
    under way: time passes only where the code sleeps, exactly as long as it sleeps."""
    while True:
        await trio.testing.wait_all_tasks_blocked()
        if db.busy:
            await db.idle.wait()
            continue
        ahead = trio.lowlevel.current_statistics().seconds_to_next_deadline
        if math.isinf(ahead):
            await trio.to_thread.run_sync(time.sleep, 0.002)  # only outside work can wake us
            continue
        clock.jump(max(0.0, ahead))


@asynccontextmanager
async def virtual_time_database(clock: trio.testing.MockClock, dsn: str
                                ) -> AsyncIterator[VirtualTimeDatabase]:
    """A database on which virtual time stands still during round trips, and a clock that
    jumps to the next deadline whenever everything waits: hours of work take a moment, and
    every sleep lasts exactly its length."""
    pool = await aio_as_trio(asyncpg.create_pool)(
        dsn, min_size=2, max_size=8, init=_init_connection, command_timeout=None,
        max_inactive_connection_lifetime=0)
    db = VirtualTimeDatabase(pool, dsn)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drive_clock, clock, db)
            yield db
            nursery.cancel_scope.cancel()
    finally:
        with trio.move_on_after(10, shield=True):
            await aio_as_trio(pool.close)()
