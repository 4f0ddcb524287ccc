"""The API's tokens kept in memory, so that a request is authenticated without the database.

A token found once (through the database, `tokens.use`) is kept by its hash. PostgreSQL announces
every revocation (also a deletion, or a change of role or organization) on `tokens.CHANNEL`
(migration 0012's trigger), and this cache `LISTEN`s on its own connection and forgets the token
named. The promise: **a token revoked on any daemon of the database is refused here within
`FRESH_S` (under a second)**, whatever happens to the listening connection:

- the cache answers only while the listening connection is known to be current: a round trip on
  it (`tokens.round_trip`) is made every `PING_S`, and PostgreSQL delivers a notification committed
  before a round trip's start ahead of its answer. An entry is served only while the last round
  trip that came back started less than `FRESH_S` ago; otherwise the request goes to the
  database, as without a cache;
- when the connection is lost (an error, a round trip that does not come back in time), the
  whole cache is dropped and every request goes to the database until listening again;
- a lookup that was under way when a notification came, or when listening (re)started, is not
  kept (a generation count tells), so a revocation cannot slip in between the lookup and its
  keeping.

`last_used_at`: a use answered from the cache is recorded in the database in batches, every
`RECORD_USE_S` (still at most once a minute per token, as `tokens.use` does): up to that much
later than a use through the database, which records it at once.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable

import trio

from wad import log
from wad.db.pool import WAIT_BACKOFF, Database, database_unavailable
from wad.db.repo import tokens as tokens_repo
from wad.db.repo.tokens import FoundToken

_log = log.get("api")

PING_S = 0.25
"""How often the listening connection is proved current."""
FRESH_S = 0.9
"""The cache answers only while a round trip started less than this ago has come back: the
longest a revocation can go unseen."""
RECORD_USE_S = 10.0
"""How often uses answered from the cache are written to `last_used_at`."""
MAX_ENTRIES = 10_000
"""Past this many tokens the cache starts again empty (a bound, not an expected size)."""


class TokenCache:
    """Active tokens by hash, answered from memory while revocations are being heard."""

    def __init__(self, db: Database, *, ping_s: float = PING_S, fresh_s: float = FRESH_S,
                 record_use_s: float = RECORD_USE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self.ping_s = ping_s
        self.fresh_s = fresh_s
        self.record_use_s = record_use_s
        self._clock = clock
        self._by_hash: dict[bytes, FoundToken] = {}
        self._used: set[uuid.UUID] = set()
        self._generation = 0
        self._confirmed_at = -math.inf
        """When the last round trip on the listening connection that came back started."""
        self.listening = False
        self.listener_pid: int | None = None
        """The listening connection's server process (while listening)."""
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._by_hash)

    @property
    def current(self) -> bool:
        """Whether the cache may answer now: listening, and proved current within `fresh_s`."""
        return self.listening and self._clock() - self._confirmed_at < self.fresh_s

    async def use(self, token_hash: bytes) -> FoundToken | None:
        """The active token with this hash (its use recorded), or None: from memory while the
        cache is current, else from the database (and kept when nothing changed meanwhile)."""
        if self.current:
            found = self._by_hash.get(token_hash)
            if found is not None:
                self.hits += 1
                self._used.add(found.token.id)
                return found
        self.misses += 1
        generation, current = self._generation, self.current
        found = await tokens_repo.use(self.db, token_hash=token_hash)
        if found is not None and current and generation == self._generation:
            if len(self._by_hash) >= MAX_ENTRIES:
                self._by_hash.clear()
            self._by_hash[token_hash] = found
        return found

    def forget(self, token_id: str) -> None:
        """Drop the token with this id (a notification's payload)."""
        self._generation += 1
        for digest, found in list(self._by_hash.items()):
            if str(found.token.id) == token_id:
                del self._by_hash[digest]

    def drop(self) -> None:
        """Forget every token and stop answering from memory (the listener is gone)."""
        self._generation += 1
        self.listening = False
        self.listener_pid = None
        self._confirmed_at = -math.inf
        self._by_hash.clear()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Listen for revocations and record uses until cancelled; a lost connection drops the
        cache and is opened again (with backoff); the database answers meanwhile."""
        task_status.started()
        failures = 0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._record_uses)
            while True:
                try:
                    await self._listen()
                except Exception as exc:
                    if not database_unavailable(exc) and not isinstance(
                            exc, (ConnectionError, TimeoutError)):
                        raise
                    failures += 1
                    if failures == 1:
                        _log.warning("token cache not listening; tokens are looked up in the "
                                     "database meanwhile", error=f"{type(exc).__name__}: {exc}")
                    await trio.sleep(WAIT_BACKOFF.delay(failures))
                else:
                    failures = 0

    async def _listen(self) -> None:
        """`LISTEN` and prove the connection current every `ping_s`; raises when it is lost,
        after dropping the cache."""
        try:
            async with self.db.dedicated() as conn:
                self.drop()  # whatever was kept before now was not heard about
                started = self._clock()
                await conn.add_listener(tokens_repo.CHANNEL, self.forget)
                self._confirmed_at = started
                self.listening = True
                self.listener_pid = conn.raw.get_server_pid()
                while True:
                    await trio.sleep(self.ping_s)
                    started = self._clock()
                    with trio.move_on_after(self.fresh_s) as waited:
                        await tokens_repo.round_trip(conn)
                    if waited.cancelled_caught:
                        raise TimeoutError("the token cache's listening connection did not "
                                           f"answer within {self.fresh_s:g} s")
                    self._confirmed_at = started
        finally:
            self.drop()

    async def _record_uses(self) -> None:
        while True:
            await trio.sleep(self.record_use_s)
            await self.record_uses()

    async def record_uses(self) -> None:
        """Write the uses answered from memory since the last time to `last_used_at`."""
        used, self._used = self._used, set()
        try:
            await tokens_repo.record_use(self.db, token_ids=sorted(used, key=str))
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            self._used |= used  # next time
