"""`atomic`: the statements of a change and its feed entry commit or vanish together, in a
transaction of their own, or in the caller's open one as it is (no savepoint)."""

from __future__ import annotations

import asyncpg
import pytest

from wad.db.pool import Connection, Database, atomic


class _Undo(Exception):
    """Raised to roll the test's transaction back."""


async def test_atomic_opens_a_transaction_on_a_connection_outside_one(dsn: str) -> None:
    async with Database.open(dsn, min_size=1, max_size=1) as db, db.connection() as conn:
        assert not conn.raw.is_in_transaction()
        async with atomic(conn) as inner:
            assert conn.raw.is_in_transaction()
            assert await inner.fetchval("SELECT 1") == 1
        assert not conn.raw.is_in_transaction()  # committed at the block's end


async def test_atomic_joins_an_open_transaction_without_a_savepoint(dsn: str) -> None:
    async with Database.open(dsn, min_size=1, max_size=1) as db:
        seen: list[str] = []

        async def fail_inside(tx: Connection) -> None:
            async with atomic(tx) as inner:
                assert inner is tx
                await inner.fetchval("SELECT 1 / 0")

        async def in_a_transaction() -> None:
            async with db.transaction() as tx:
                try:
                    await fail_inside(tx)
                except asyncpg.DivisionByZeroError:
                    seen.append("the failure")
                # No savepoint was taken (two round trips saved on every change written in a
                # caller's transaction): the failure aborted the caller's transaction, as any
                # of its own statements would have.
                try:
                    await tx.fetchval("SELECT 1")
                except asyncpg.InFailedSQLTransactionError:
                    seen.append("the transaction aborted")
                raise _Undo

        with pytest.raises(_Undo):
            await in_a_transaction()
        assert seen == ["the failure", "the transaction aborted"]
        assert await db.fetchval("SELECT 1") == 1  # the pool's connection is sound again
