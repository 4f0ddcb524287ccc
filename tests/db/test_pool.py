"""The pool's promise when a connection breaks under a call: the caller gets an error that says
"the database is unavailable" (so the waiting loops wait and retry), and the connection is
closed, never handed to the next caller."""

from __future__ import annotations

import asyncpg
import pytest
import trio

from wad.db.pool import Database, database_unavailable, leaves_connection_broken


def test_which_errors_leave_a_connection_broken() -> None:
    # Errors of the statement: the connection is as good as it was.
    assert not leaves_connection_broken(asyncpg.UniqueViolationError("duplicate key"))
    assert not leaves_connection_broken(asyncpg.PostgresSyntaxError("syntax error"))
    assert not leaves_connection_broken(ValueError("a caller's own error"))
    # The connection or the server went away under the call.
    assert leaves_connection_broken(asyncpg.exceptions.AdminShutdownError("shutting down"))
    assert leaves_connection_broken(asyncpg.ConnectionDoesNotExistError("closed"))
    assert leaves_connection_broken(ConnectionResetError("reset by peer"))
    # What asyncpg says when a connection left half-way by a vanished server is used again:
    # both broken and a sign of an outage (waited out, not a crash).
    stuck = asyncpg.InternalClientError(
        "cannot switch to state 12; another operation (2) is in progress")
    assert leaves_connection_broken(stuck)
    assert database_unavailable(stuck)
    assert leaves_connection_broken(ExceptionGroup("nursery", [ValueError("x"), stuck]))
    assert not leaves_connection_broken(ExceptionGroup("nursery", [ValueError("x")]))


@pytest.mark.parametrize("through", ["pool", "connection"])
async def test_a_connection_whose_server_process_dies_under_a_call_is_not_reused(
        dsn: str, through: str) -> None:
    async with Database.open(dsn, min_size=1, max_size=1) as db:
        victim = await db.fetchval("SELECT pg_backend_pid()")
        failures: list[BaseException] = []

        async def sleep_on_the_victim() -> None:
            try:
                if through == "pool":
                    await db.fetchval("SELECT pg_sleep(30)")
                else:
                    async with db.connection() as conn:
                        await conn.fetchval("SELECT pg_sleep(30)")
            except Exception as exc:
                failures.append(exc)

        async with db.dedicated() as killer, trio.open_nursery() as nursery:
            nursery.start_soon(sleep_on_the_victim)
            with trio.fail_after(10):
                while not await killer.fetchval(
                        "SELECT true FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                        victim):
                    await trio.sleep(0.05)
            assert await killer.fetchval("SELECT pg_terminate_backend($1)", victim)
        assert len(failures) == 1
        assert database_unavailable(failures[0]), repr(failures[0])
        with trio.fail_after(10):
            assert await db.fetchval("SELECT pg_backend_pid()") != victim
        assert db.availability.unavailable_since is None  # answered again
