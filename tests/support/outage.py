"""A PostgreSQL cluster of a test's own, which the test stops and starts again: a database
outage, without touching the session's shared cluster."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from wad.db import migrate
from wad.db.embedded import EmbeddedPostgres
from wad.db.pool import Database


class OwnDatabase:
    """The cluster and its DSN; `stop` and `start` make and end the outage."""

    def __init__(self, root: Path) -> None:
        self.cluster = EmbeddedPostgres(root / "pg-own", fsync=False)
        self.dsn = ""

    async def stop(self) -> None:
        await trio.to_thread.run_sync(functools.partial(self.cluster.stop, mode="fast"))

    async def start(self) -> None:
        self.dsn = await trio.to_thread.run_sync(self.cluster.start)


@asynccontextmanager
async def own_database(state_dir: Path, *, setup_sql: str = "",
                       migrated: bool = True) -> AsyncIterator[OwnDatabase]:
    """A running cluster under `state_dir` (migrated, then `setup_sql` run, unless told not
    to), stopped at the end whatever happened."""
    own = OwnDatabase(state_dir)
    await own.start()
    try:
        if migrated or setup_sql:
            async with Database.open(own.dsn, min_size=1, max_size=1) as setup:
                if migrated:
                    await migrate.apply(setup)
                if setup_sql:
                    await setup.execute(setup_sql)
        yield own
    finally:
        await trio.to_thread.run_sync(functools.partial(own.cluster.stop, mode="immediate"))
