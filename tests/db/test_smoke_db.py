from wad.db import migrate
from wad.db.pool import Database


async def test_migrations_twice_is_noop(empty_dsn: str) -> None:
    async with Database.open(empty_dsn, min_size=1, max_size=2) as db:
        first = await migrate.apply(db)
        second = await migrate.apply(db)
        assert first and first[0].startswith("0001_")
        assert second == []
        assert await db.fetchval("SELECT count(*) FROM schema_migrations") == len(first)
