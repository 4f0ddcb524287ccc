"""The database adapter: the only module that touches asyncpg.

asyncpg is an asyncio library; every call crosses into asyncio through `trio_asyncio.aio_as_trio`
here, so the rest of wad is plain Trio. Callers must run inside `trio_asyncio.open_loop()`.
Repositories take an `Executor` (the pool itself or a connection inside a transaction).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import asyncpg
import trio
from asyncpg import Record
from trio_asyncio import aio_as_trio


class Executor(Protocol):
    """What repositories need: run SQL with `$n` parameters."""

    async def execute(self, sql: str, *args: Any) -> str: ...
    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None: ...
    async def fetch(self, sql: str, *args: Any) -> list[Record]: ...
    async def fetchrow(self, sql: str, *args: Any) -> Record | None: ...
    async def fetchval(self, sql: str, *args: Any) -> Any: ...


# Errors that mean "the database is not there" (server down, restarting, connections cut), as
# opposed to "this statement is wrong": callers wait and try again for the first kind only.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, no socket, timed out (TimeoutError is an OSError)
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash, cannot connect now
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.InterfaceError,  # connection closed underneath, pool closing
)


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc` (or every error of a group) says the database cannot be reached now."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(_UNAVAILABLE)[1] is None  # nothing else in the group
    return isinstance(exc, _UNAVAILABLE)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class Connection:
    """One connection (in a transaction or held for locks), Trio-side."""

    def __init__(self, raw: asyncpg.Connection) -> None:
        self.raw = raw

    async def execute(self, sql: str, *args: Any) -> str:
        return await aio_as_trio(self.raw.execute)(sql, *args)

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        await aio_as_trio(self.raw.executemany)(sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        return await aio_as_trio(self.raw.fetch)(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Record | None:
        return await aio_as_trio(self.raw.fetchrow)(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await aio_as_trio(self.raw.fetchval)(sql, *args)

    async def copy_records(self, table: str, records: Sequence[Sequence[Any]],
                           columns: Sequence[str]) -> None:
        await aio_as_trio(self.raw.copy_records_to_table)(table, records=records, columns=columns)

    def is_closed(self) -> bool:
        return bool(self.raw.is_closed())


class Database:
    """The pool. Use `async with Database.open(dsn) as db:`."""

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        self.dsn = dsn

    @classmethod
    @asynccontextmanager
    async def open(cls, dsn: str, *, min_size: int = 2, max_size: int = 20,
                   timeout: float = 30.0) -> AsyncIterator[Database]:
        pool = await aio_as_trio(asyncpg.create_pool)(
            dsn, min_size=min_size, max_size=max_size, init=_init_connection, timeout=timeout,
            command_timeout=60,
        )
        try:
            yield cls(pool, dsn)
        finally:
            with trio.move_on_after(10, shield=True) as scope:
                await aio_as_trio(pool.close)()
            if scope.cancelled_caught:
                pool.terminate()

    async def execute(self, sql: str, *args: Any) -> str:
        return await aio_as_trio(self._pool.execute)(sql, *args)

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        await aio_as_trio(self._pool.executemany)(sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        return await aio_as_trio(self._pool.fetch)(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Record | None:
        return await aio_as_trio(self._pool.fetchrow)(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await aio_as_trio(self._pool.fetchval)(sql, *args)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A connection of the pool for the block's duration."""
        raw = await aio_as_trio(self._pool.acquire)()
        try:
            yield Connection(raw)
        finally:
            with trio.move_on_after(5, shield=True):
                await aio_as_trio(self._pool.release)(raw)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection inside a transaction: committed when the block ends, rolled back when it
        raises or is cancelled."""
        async with self.connection() as conn:
            tx = conn.raw.transaction()
            await aio_as_trio(tx.start)()
            try:
                yield conn
            except BaseException:
                with trio.move_on_after(5, shield=True):
                    await aio_as_trio(tx.rollback)()
                raise
            else:
                await aio_as_trio(tx.commit)()

    @asynccontextmanager
    async def dedicated(self, *, server_settings: dict[str, str] | None = None
                        ) -> AsyncIterator[Connection]:
        """A connection outside the pool (for advisory locks that must outlive pool churn),
        with these session settings (e.g. `tcp_keepalives_idle`) from its start."""
        raw = await aio_as_trio(asyncpg.connect)(self.dsn, server_settings=server_settings)
        await aio_as_trio(_init_connection)(raw)
        try:
            yield Connection(raw)
        finally:
            with trio.move_on_after(5, shield=True):
                await aio_as_trio(raw.close)()

    def pool_stats(self) -> tuple[int, int]:
        """(connections in the pool, idle connections)."""
        return self._pool.get_size(), self._pool.get_idle_size()

    async def ping(self) -> bool:
        """True when the database answers within 5 s."""
        with trio.move_on_after(5):
            try:
                return await self.fetchval("SELECT 1") == 1
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return False
        return False
