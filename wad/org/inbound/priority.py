"""Storing before processing, across the daemon's inbound actors, while a flood comes.

Messages that come at a human pace are processed as they come (after their delay). When an
organization's page hands over more than `FLOOD_RATE` events in a second, or `FLOOD_BATCH` at
once (a phone coming back online, a broadcast's answers), the daemon is in a flood: processing,
in every organization,
waits until no flood has been seen for `QUIET_S`, and at most `MAX_WAIT_S` per message. The
flood is then stored at the speed of storing alone, instead of sharing the CPU and the database
with the processing of the messages stored a moment before; processing catches up afterwards,
many messages at once.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

import trio

FLOOD_RATE = 20
"""Events a second from one organization's page above which it floods."""
FLOOD_BATCH = 10
"""Events taken together (they piled up while the previous batch was stored) that make a
flood."""
QUIET_S = 0.5
"""Processing goes on once no flood has been seen for this long."""
MAX_WAIT_S = 2.0
"""A message's processing waits at most this long for its turn: a flood that does not end does
not hold processing back for good."""


class StoreFirst:
    """The turn of processing, shared by the daemon's inbound actors: each one's store loop
    calls `taken(source, n)` for each batch of N events it takes; processing awaits `turn()`."""

    def __init__(self, *, flood_rate: int = FLOOD_RATE, flood_batch: int = FLOOD_BATCH,
                 quiet_s: float = QUIET_S, max_wait_s: float = MAX_WAIT_S) -> None:
        self.flood_rate = flood_rate
        self.flood_batch = flood_batch
        self.quiet_s = quiet_s
        self.max_wait_s = max_wait_s
        self._window: dict[Hashable, tuple[float, int]] = {}
        """Per source: when its current one-second window started, events taken in it."""
        self._flood_seen = -math.inf

    def taken(self, source: Hashable, events: int) -> None:
        """SOURCE (an organization) took a batch of EVENTS to store."""
        now = trio.current_time()
        started, count = self._window.get(source, (now, 0))
        if now - started >= 1.0:
            started, count = now, 0
        count += events
        self._window[source] = (started, count)
        if count > self.flood_rate or events >= self.flood_batch:
            self._flood_seen = now

    @property
    def flooding(self) -> bool:
        """Whether a flood was seen in the last `quiet_s`."""
        return trio.current_time() - self._flood_seen < self.quiet_s

    async def turn(self) -> None:
        """At once outside a flood; in one, once no flood has been seen for `quiet_s`, or after
        `max_wait_s`."""
        deadline = trio.current_time() + self.max_wait_s
        while self.flooding and trio.current_time() < deadline:  # noqa: ASYNC110
            # A flood is seen batch by batch (no event to wait for): look again when it would
            # be over.
            await trio.sleep_until(min(self._flood_seen + self.quiet_s, deadline))
