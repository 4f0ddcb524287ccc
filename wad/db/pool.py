"""The database adapter: the only module that touches asyncpg.

asyncpg is an asyncio library; every call crosses into asyncio through `trio_asyncio.aio_as_trio`
here, so the rest of wad is plain Trio. Callers must run inside `trio_asyncio.open_loop()`.
Repositories take an `Executor` (the pool itself or a connection inside a transaction).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import asyncpg
import trio
from asyncpg import Record
from trio_asyncio import aio_as_trio

from wad import log
from wad.supervise import Backoff

_log = log.get("db")
T = TypeVar("T")


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
    asyncpg.InternalClientError,  # a connection left half-way by a server that went away
)


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc` (or every error of a group) says the database cannot be reached now."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(_UNAVAILABLE)[1] is None  # nothing else in the group
    return isinstance(exc, _UNAVAILABLE)


WAIT_BACKOFF = Backoff(initial=0.5, max=5.0)
"""Waits between attempts of work that waits out a database outage: 0.5 s, 1 s ... 5 s."""


async def when_available(operation: Callable[[], Awaitable[T]], *, what: str,
                         backoff: Backoff = WAIT_BACKOFF) -> T:
    """Run `operation` until it succeeds, waiting per `backoff` while it fails because the
    database is unavailable (`database_unavailable`); any other error propagates at once.

    For work that can wait (a state change, a login archive, an enrichment result): it waits
    as long as the outage lasts, so an outage delays it and kills nothing. The caller's cancel
    scope bounds the wait."""
    failures = 0
    started = trio.current_time()
    while True:
        try:
            result = await operation()
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            failures += 1
            if failures == 1:
                _log.warning("database unavailable; waiting to retry", what=what,
                             error=f"{type(exc).__name__}: {exc}")
            await trio.sleep(backoff.delay(failures))
            continue
        if failures:
            _log.info("database back; done after waiting", what=what, attempts=failures + 1,
                      waited_s=round(trio.current_time() - started, 1))
        return result


class Availability:
    """Whether the database answered its last call: `unavailable_since` is the wall-clock time
    (UTC) of the first call that found it unavailable, None while it answers. Every call through
    `Database` (and its connections) updates it."""

    def __init__(self) -> None:
        self.unavailable_since: datetime | None = None

    def failed(self, exc: BaseException) -> None:
        if database_unavailable(exc) and self.unavailable_since is None:
            self.unavailable_since = datetime.now(UTC)
            _log.warning("database unavailable", error=f"{type(exc).__name__}: {exc}")

    def answered(self) -> None:
        if self.unavailable_since is not None:
            down = (datetime.now(UTC) - self.unavailable_since).total_seconds()
            self.unavailable_since = None
            _log.info("database available again", down_s=round(down, 1))

    def describe(self) -> str | None:
        """"database unavailable since <time>" during an outage, else None."""
        since = self.unavailable_since
        return None if since is None else f"database unavailable since {since.isoformat()}"


async def _tracked(availability: Availability | None, call: Awaitable[T]) -> T:
    if availability is None:
        return await call
    try:
        result = await call
    except Exception as exc:
        availability.failed(exc)
        raise
    availability.answered()
    return result


async def _init_connection(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _nothing_left_to_reset(conn: asyncpg.Connection) -> None:
    """The pool's reset on release: nothing beyond what asyncpg always does (roll back an open
    transaction, drop listener callbacks). wad keeps no session state on pooled connections:
    session advisory locks and `LISTEN` live on dedicated connections (`Database.dedicated`),
    and settings are never changed per session. asyncpg's default reset (`RESET ALL; UNLISTEN
    *; ...`) cost a second round trip for every query made through the pool."""


def leaves_connection_broken(exc: BaseException) -> bool:
    """Whether a call that raised `exc` (or a group holding one) may have left its connection
    unusable: the connection failed or the server went away in the middle of an exchange. A
    server shutting down reports an error and then vanishes before the exchange ends; asyncpg's
    connection stays half-way (its next call fails with "another operation is in progress"), so
    such a connection is closed, never handed out again. An error about the statement itself
    leaves the connection as good as it was."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(_UNAVAILABLE) is not None
    return isinstance(exc, _UNAVAILABLE)


async def _on_pool(pool: asyncpg.Pool, method: str, *args: Any) -> Any:
    """`method` of a pooled connection with `args` (asyncio side, one crossing from Trio); a
    connection the call may have broken is closed rather than put back."""
    async with pool.acquire() as raw:
        try:
            return await getattr(raw, method)(*args)
        except BaseException as exc:
            if leaves_connection_broken(exc):
                raw.terminate()
            raise


class Connection:
    """One connection (in a transaction or held for locks), Trio-side."""

    def __init__(self, raw: asyncpg.Connection, availability: Availability | None = None
                 ) -> None:
        self.raw = raw
        self._availability = availability
        self.unsure = False
        """A transaction's start or end on it did not finish: its state is unknown."""

    async def execute(self, sql: str, *args: Any) -> str:
        return await _tracked(self._availability, aio_as_trio(self.raw.execute)(sql, *args))

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        await _tracked(self._availability, aio_as_trio(self.raw.executemany)(sql, args))

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        return await _tracked(self._availability, aio_as_trio(self.raw.fetch)(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> Record | None:
        return await _tracked(self._availability, aio_as_trio(self.raw.fetchrow)(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await _tracked(self._availability, aio_as_trio(self.raw.fetchval)(sql, *args))

    async def copy_records(self, table: str, records: Sequence[Sequence[Any]],
                           columns: Sequence[str]) -> None:
        await aio_as_trio(self.raw.copy_records_to_table)(table, records=records, columns=columns)

    def is_closed(self) -> bool:
        return bool(self.raw.is_closed())

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A transaction on this connection (a savepoint when one is open already): committed
        when the block ends, rolled back when it raises or is cancelled. A start, commit or
        rollback that does not finish (cancelled under way, failed, or no answer within 5 s)
        marks the connection `unsure`: the pool then closes it instead of reusing it."""
        tx = self.raw.transaction()
        self.unsure = True
        await aio_as_trio(tx.start)()
        self.unsure = False
        try:
            yield self
        except BaseException:
            self.unsure = True
            with trio.move_on_after(5, shield=True):
                await aio_as_trio(tx.rollback)()
                self.unsure = False
            raise
        self.unsure = True
        await aio_as_trio(tx.commit)()
        self.unsure = False

    async def add_listener(self, channel: str, callback: Callable[[str], None]) -> None:
        """Call `callback(payload)` (from the event loop: it must not block) on every
        `NOTIFY channel` while this connection lives."""
        def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
            callback(payload)
        await aio_as_trio(self.raw.add_listener)(channel, on_notify)


@asynccontextmanager
async def atomic(db: Executor) -> AsyncIterator[Executor]:
    """`db` inside a transaction for the block, so that several statements (a change and its
    feed entry) commit or vanish together: a new one on the pool, or on a connection outside
    a transaction; a connection already in a transaction is used as it is (its transaction
    makes them one already, without a savepoint's two extra round trips). A statement that
    fails then leaves the caller's transaction aborted, as any of its statements would: a
    caller that goes on after a failure sets its own savepoint (as the importer does)."""
    if isinstance(db, Connection) and db.raw.is_in_transaction():
        yield db
    elif isinstance(db, Database | Connection):
        async with db.transaction() as conn:
            yield conn
    else:  # a stand-in Executor: no transactions to offer
        yield db


class Database:
    """The pool. Use `async with Database.open(dsn) as db:`."""

    def __init__(self, pool: asyncpg.Pool, dsn: str) -> None:
        self._pool = pool
        self.dsn = dsn
        self.availability = Availability()

    @classmethod
    @asynccontextmanager
    async def open(cls, dsn: str, *, min_size: int = 2, max_size: int = 20,
                   timeout: float = 30.0) -> AsyncIterator[Database]:
        pool = await aio_as_trio(asyncpg.create_pool)(
            dsn, min_size=min_size, max_size=max_size, init=_init_connection, timeout=timeout,
            command_timeout=60, reset=_nothing_left_to_reset,
        )
        try:
            yield cls(pool, dsn)
        finally:
            with trio.move_on_after(10, shield=True) as scope:
                await aio_as_trio(pool.close)()
            if scope.cancelled_caught:
                pool.terminate()

    async def _pooled(self, method: str, *args: Any) -> Any:
        """`method(*args)` on a connection of the pool (see `_on_pool`)."""
        return await _tracked(self.availability,
                              aio_as_trio(_on_pool)(self._pool, method, *args))

    async def execute(self, sql: str, *args: Any) -> str:
        return await self._pooled("execute", sql, *args)

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        await self._pooled("executemany", sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        return await self._pooled("fetch", sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Record | None:
        return await self._pooled("fetchrow", sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self._pooled("fetchval", sql, *args)

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A connection of the pool for the block's duration."""
        raw = await _tracked(self.availability, aio_as_trio(self._pool.acquire)())
        conn = Connection(raw, self.availability)
        broken = False
        try:
            yield conn
        except BaseException as exc:
            broken = leaves_connection_broken(exc)
            raise
        finally:
            if broken or conn.unsure or raw.is_in_transaction():
                # A call broke it, or a transaction's start or end was cut short (the
                # server may still hold it open). Closed, not handed to the next user (the
                # server rolls back; asyncpg's release would complain, which under
                # trio-asyncio is an error of the whole event loop).
                raw.terminate()
            with trio.move_on_after(5, shield=True):
                await aio_as_trio(self._pool.release)(raw)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """A connection inside a transaction: committed when the block ends, rolled back when it
        raises or is cancelled."""
        async with self.connection() as conn, conn.transaction() as tx:
            yield tx

    @asynccontextmanager
    async def dedicated(self, *, server_settings: dict[str, str] | None = None
                        ) -> AsyncIterator[Connection]:
        """A connection outside the pool (for advisory locks that must outlive pool churn),
        with these session settings (e.g. `tcp_keepalives_idle`) from its start."""
        raw = await _tracked(self.availability, aio_as_trio(asyncpg.connect)(
            self.dsn, server_settings=server_settings))
        await aio_as_trio(_init_connection)(raw)
        try:
            yield Connection(raw, self.availability)
        finally:
            with trio.move_on_after(5, shield=True):
                await aio_as_trio(raw.close)()

    def pool_stats(self) -> tuple[int, int]:
        """(connections in the pool, idle connections)."""
        return self._pool.get_size(), self._pool.get_idle_size()

    async def ping(self, timeout: float = 5.0) -> bool:
        """True when the database answers within `timeout` seconds (also recorded in
        `availability`: no answer in time counts as unavailable)."""
        with trio.move_on_after(timeout):
            try:
                return await self.fetchval("SELECT 1") == 1
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                return False
        self.availability.failed(TimeoutError(f"no answer within {timeout:g}s"))
        return False
