"""Following the durable change feed (`wad.db.repo.changes`): wake-ups and retention.

The feed lives in PostgreSQL, so any daemon of the database serves any organization's feed:
readers (the event stream, webhooks) page it from their cursor. `Wakeup` tells them when to
look again: it `LISTEN`s on the feed's channel over a connection of its own, and wakes every
waiter on each notification; a waiter also wakes after `poll_s` in any case, so a notification
lost with a broken connection delays a reader, never loses it a change.

`ChangeFeed` is the daemon's service (a child of its supervision tree): the wake-up of the
API's readers, and the pruning of entries older than the retention.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import trio

from wad import log
from wad.config import FeedSettings
from wad.db.pool import WAIT_BACKOFF, Database, database_unavailable
from wad.db.repo import changes

_log = log.get("feed")

PRUNE_BATCH = 10_000
"""Entries deleted per statement while pruning (short locks, however much is due)."""


class Wakeup:
    """Wakes waiters when a change was committed (any organization's), or every `poll_s`."""

    def __init__(self, poll_s: float) -> None:
        self.poll_s = poll_s
        self.notifications = 0
        self._event = trio.Event()

    def wake(self) -> None:
        self._event.set()
        self._event = trio.Event()

    def _notified(self, _payload: str) -> None:
        self.notifications += 1
        self.wake()

    async def wait(self, timeout: float | None = None) -> None:
        """Until a change is announced, or `timeout` (at most `poll_s`) passed."""
        limit = self.poll_s if timeout is None else min(timeout, self.poll_s)
        with trio.move_on_after(limit):
            await self._event.wait()

    async def listen(self, db: Database, *,
                     task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """`LISTEN` until cancelled; raises when the connection breaks (the caller restarts
        it), waking every waiter first so that they look at once."""
        try:
            async with db.dedicated() as conn:
                await conn.add_listener(changes.CHANNEL, self._notified)
                task_status.started()
                while True:
                    await trio.sleep(self.poll_s)
                    if conn.is_closed():
                        raise ConnectionError("the change feed's listening connection closed")
                    # A cheap round trip finds a connection that died silently.
                    await changes.round_trip(conn)
        finally:
            self.wake()


class ChangeFeed:
    """The daemon's change-feed service: `wakeup` for the API's readers, and pruning."""

    def __init__(self, db: Database, settings: FeedSettings) -> None:
        self.db = db
        self.settings = settings
        self.wakeup = Wakeup(settings.poll_s)

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.settings.retention_days)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Listen and prune until cancelled. A database outage stops neither: they wait it
        out (readers poll meanwhile); any other error propagates (the supervisor restarts the
        service)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._listen)
            task_status.started()
            while True:
                try:
                    await self.prune()
                except Exception as exc:
                    if not database_unavailable(exc):
                        raise
                    _log.warning("change feed not pruned: database unavailable",
                                 error=f"{type(exc).__name__}: {exc}")
                await trio.sleep(self.settings.prune_interval_s)

    async def _listen(self) -> None:
        failures = 0
        while True:
            try:
                await self.wakeup.listen(self.db)
            except Exception as exc:
                if not database_unavailable(exc) and not isinstance(exc, ConnectionError):
                    raise
                failures += 1
                if failures == 1:
                    _log.warning("change feed not listening; readers poll meanwhile",
                                 error=f"{type(exc).__name__}: {exc}")
                await trio.sleep(WAIT_BACKOFF.delay(failures))

    async def prune(self, now: datetime | None = None) -> int:
        """Delete the entries older than the retention; answers how many."""
        older_than = (now or datetime.now(UTC)) - self.retention
        total = 0
        while True:
            done = await changes.prune(self.db, older_than=older_than, batch=PRUNE_BATCH)
            total += done
            if done < PRUNE_BATCH:
                break
        if total:
            _log.info("change feed pruned", entries=total, older_than=older_than.isoformat())
        return total
