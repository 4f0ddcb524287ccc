"""The API's token cache (`wad.api.token_cache`) on real PostgreSQL and real HTTP: two daemons
(two apps, each with its own pool and cache) on one database; a token revoked on one is refused
by the other within a second while the other's cache holds it; a lost listening connection
drops the cache, so that nothing stale is ever answered."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from tests.support.api import LiveApi, serving
from wad.api.token_cache import FRESH_S, TokenCache
from wad.db.pool import Database
from wad.db.repo import tokens as tokens_repo


@pytest.fixture
async def two_daemons(dsn: str, tmp_path: Path, nursery: trio.Nursery
                      ) -> AsyncIterator[tuple[LiveApi, LiveApi]]:
    """Two apps served on one database, each with its own pool (and so its own cache)."""
    async with Database.open(dsn, min_size=1, max_size=5) as db_a, \
            Database.open(dsn, min_size=1, max_size=5) as db_b, \
            serving(db_a, tmp_path / "a", nursery, max_body_bytes=4096) as a, \
            serving(db_b, tmp_path / "b", nursery, max_body_bytes=4096) as b:
        await until_listening(a.ctx.token_cache())
        await until_listening(b.ctx.token_cache())
        yield a, b


async def until_listening(cache: TokenCache, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not cache.current:
            await trio.sleep(0.02)


async def cached_token(api: LiveApi, org: uuid.UUID) -> tuple[str, str]:
    """A new AGENT token of `org`, used twice on `api`: the second use answered from its cache.
    Answers (token, its id)."""
    created = await api.create_token("AGENT", org)
    client = api.client(created["token"])
    cache = api.ctx.token_cache()
    assert (await client.get(f"/api/whatsapp/status/{org}")).status_code == 200
    hits = cache.hits
    assert (await client.get(f"/api/whatsapp/status/{org}")).status_code == 200
    assert cache.hits == hits + 1, "the second use was not answered from the cache"
    return created["token"], created["id"]


async def test_a_token_revoked_on_another_daemon_is_refused_within_a_second(
        two_daemons: tuple[LiveApi, LiveApi]) -> None:
    a, b = two_daemons
    org = await a.create_org()
    token, token_id = await cached_token(a, org)
    # Revoked through the other daemon: this one hears of it only through PostgreSQL.
    r = await b.socket_client().delete(f"/api/tokens/{token_id}")
    assert r.status_code == 200, r.text
    revoked_at = time.monotonic()
    client = a.client(token)
    while True:
        status = (await client.get(f"/api/whatsapp/status/{org}")).status_code
        if status == 401:
            break
        assert status == 200
        assert time.monotonic() - revoked_at < 1.0, "a revoked token was still served after 1 s"
        await trio.sleep(0.01)
    assert time.monotonic() - revoked_at < 1.0
    assert len(a.ctx.token_cache()) == 0
    # The daemon that revoked it refused it at once.
    assert (await b.client(token).get(f"/api/whatsapp/status/{org}")).status_code == 401


async def test_a_lost_listening_connection_drops_the_cache(
        two_daemons: tuple[LiveApi, LiveApi]) -> None:
    a, _ = two_daemons
    cache = a.ctx.token_cache()
    org = await a.create_org()
    token, token_id = await cached_token(a, org)
    assert len(cache) == 1
    listener = cache.listener_pid
    assert listener is not None
    assert await a.ctx.db.fetchval("SELECT pg_terminate_backend($1)", listener)
    # The listener's next round trip fails (within `ping_s`): the cache is dropped at once.
    with trio.fail_after(FRESH_S):
        while cache.listening:
            await trio.sleep(0.01)
    assert len(cache) == 0 and not cache.current
    # Revoked while nobody listens (the notification goes nowhere): refused at once, from the
    # database.
    assert await tokens_repo.revoke(a.ctx.db, token_id=uuid.UUID(token_id))
    assert (await a.client(token).get(f"/api/whatsapp/status/{org}")).status_code == 401
    # Listening again, the cache answers again.
    await until_listening(cache)
    await cached_token(a, org)


async def test_uses_answered_from_the_cache_are_recorded(db: Database, tmp_path: Path,
                                                         nursery: trio.Nursery) -> None:
    async with serving(db, tmp_path, nursery, max_body_bytes=4096) as api:
        cache = api.ctx.token_cache()
        await until_listening(cache)
        org = await api.create_org()
        token, token_id = await cached_token(api, org)
        tid = uuid.UUID(token_id)
        # Make the recorded use old enough to be written again (at most once a minute).
        await db.execute("UPDATE api_tokens SET last_used_at = now() - interval '2 minutes' "
                         "WHERE id = $1", tid)
        before = await db.fetchval("SELECT last_used_at FROM api_tokens WHERE id = $1", tid)
        hits = cache.hits
        assert (await api.client(token).get(f"/api/whatsapp/status/{org}")).status_code == 200
        assert cache.hits == hits + 1
        assert await db.fetchval("SELECT last_used_at FROM api_tokens WHERE id = $1",
                                 tid) == before  # not yet: in the next batch
        await cache.record_uses()
        after = await db.fetchval("SELECT last_used_at FROM api_tokens WHERE id = $1", tid)
        assert after > before
