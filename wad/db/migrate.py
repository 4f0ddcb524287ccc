"""Numbered SQL migrations (`wad/db/migrations/NNNN_name.sql`), applied in one transaction under
an advisory lock so that two daemons starting at once do not collide. Applying twice is a no-op."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

from wad.db.pool import Database

# An arbitrary constant that names "wad schema migrations" among advisory locks.
MIGRATION_LOCK_KEY = 0x7761645F6D6967  # "wad_mig"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Every migration shipped with wad, in order."""
    found = []
    for entry in resources.files("wad.db.migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a number: {versions}")
    return found


async def apply(db: Database) -> list[str]:
    """Apply what is missing; answer the names applied (empty when up to date)."""
    applied: list[str] = []
    async with db.transaction() as conn:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in available():
            if migration.version in done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                migration.version, migration.name,
            )
            applied.append(migration.name)
    return applied
