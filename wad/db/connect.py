"""Opening wad's database: the configured one, or the private cluster under `STATE_DIR/pg`,
migrated; and the trio-asyncio loop that asyncpg (and Playwright) run on.

The daemon, `wad import`, `wad db migrate` and the demo all open it this way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio_asyncio

from wad import log
from wad.config import Settings
from wad.db import migrate
from wad.db.embedded import EmbeddedPostgres
from wad.db.pool import Database

_log = log.get("daemon")


@asynccontextmanager
async def open_database(settings: Settings, *, owner: bool = True,
                        pool_max: int | None = None) -> AsyncIterator[Database]:
    """The configured database, or the private cluster under `STATE_DIR/pg`; migrated.

    The daemon is the cluster's `owner` and stops it on exit (also one a killed daemon left
    running). Other commands (`wad db migrate`, `wad import`) stop it only if they started it,
    so they never take the database away from a running daemon."""
    cluster: EmbeddedPostgres | None = None
    stop_cluster = False
    dsn = settings.database.dsn
    if not dsn:
        cluster = EmbeddedPostgres(settings.state_path.absolute() / "pg",
                                   bindir=settings.database.postgres_bindir)
        stop_cluster = owner or not cluster.running()
        _log.info("starting embedded PostgreSQL", data_dir=str(cluster.data_dir))
        dsn = await trio.to_thread.run_sync(cluster.start)
    try:
        async with Database.open(dsn, min_size=min(settings.database.pool_min, pool_max or 1000),
                                 max_size=pool_max or settings.database.pool_max) as db:
            applied = await migrate.apply(db)
            if applied:
                _log.info("migrations applied", migrations=applied)
            yield db
    finally:
        if cluster is not None and stop_cluster:
            with trio.CancelScope(shield=True):
                _log.info("stopping embedded PostgreSQL")
                await trio.to_thread.run_sync(cluster.stop)


@asynccontextmanager
async def asyncio_loop() -> AsyncIterator[None]:
    """The trio-asyncio loop for asyncpg and Playwright: the caller's if one is open (tests, the
    demo), else a new one for the block."""
    if trio_asyncio.current_loop.get() is not None:
        yield
        return
    async with trio_asyncio.open_loop():
        yield
