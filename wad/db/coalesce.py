"""Concurrent lookups by key sharing one round trip.

A CRM polling the status of many organizations at once asks one row each time; each round trip
through trio-asyncio costs this process more CPU than the row. A `Coalescer` gathers the keys
asked while a fetch is under way and fetches them together next, so under load one round trip
answers many requests and when idle each request still makes its own at once.

The promise: **every answer comes from a fetch that started after it was asked**, so a change
committed before a lookup is always seen by it (no cache, no staleness); a lookup waits at
most for the fetch under way and then its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

import trio

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Batch(Generic[K, V]):
    def __init__(self) -> None:
        self.keys: set[K] = set()
        self.done = trio.Event()
        self.found: dict[K, V] = {}
        self.error: Exception | None = None
        self.abandoned = False  # its fetcher was cancelled: ask again


class Coalescer(Generic[K, V]):
    """Lookups through `fetch(keys) -> {key: value}` (a key it does not answer is absent),
    one fetch at a time, each for every key asked since the previous one started."""

    def __init__(self, fetch: Callable[[list[K]], Awaitable[dict[K, V]]]) -> None:
        self._fetch = fetch
        self._open: _Batch[K, V] | None = None
        """The batch that takes new keys (it waits for the fetch under way)."""
        self._fetching = trio.Lock()
        self.fetches = 0

    async def get(self, key: K) -> V | None:
        """The value for `key` (None when `fetch` has none), from a fetch started after this
        call; `fetch`'s error if it failed."""
        while True:
            batch = self._open
            if batch is None:
                batch = self._open = _Batch()
                batch.keys.add(key)
                await self._run(batch)
            else:
                batch.keys.add(key)
                await batch.done.wait()
            if batch.abandoned:
                continue
            if batch.error is not None:
                raise batch.error
            return batch.found.get(key)

    async def _run(self, batch: _Batch[K, V]) -> None:
        """Fetch `batch` once the fetch under way is done (its first asker does this); keys
        asked until then join it."""
        try:
            async with self._fetching:
                if self._open is batch:
                    self._open = None  # later keys go to the next batch
                self.fetches += 1
                try:
                    batch.found = await self._fetch(list(batch.keys))
                except Exception as exc:
                    batch.error = exc
        except BaseException:
            batch.abandoned = True
            if self._open is batch:
                self._open = None
            raise
        finally:
            batch.done.set()
