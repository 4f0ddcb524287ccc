from wad.db import migrate
from wad.db.pool import Database


async def test_migrations_twice_is_noop(empty_dsn: str) -> None:
    async with Database.open(empty_dsn, min_size=1, max_size=2) as db:
        first = await migrate.apply(db)
        second = await migrate.apply(db)
        assert first and first[0].startswith("0001_")
        assert second == []
        assert await db.fetchval("SELECT count(*) FROM schema_migrations") == len(first)



async def test_a_query_through_the_pool_is_one_round_trip(dsn: str) -> None:
    """Releasing a pooled connection sends nothing to the server: asyncpg's default reset
    (`RESET ALL; UNLISTEN *; ...`) doubled the round trips of every query. Seen here as a
    session setting that survives from one query to the next on the pool's only connection."""
    async with Database.open(dsn, min_size=1, max_size=1) as db:
        backend = await db.fetchval("SELECT pg_backend_pid()")
        await db.execute("SELECT set_config('wad.probe', 'kept', false)")
        assert await db.fetchval("SELECT pg_backend_pid()") == backend
        assert await db.fetchval("SELECT current_setting('wad.probe', true)") == "kept"
