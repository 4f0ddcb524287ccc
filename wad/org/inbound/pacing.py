"""Pacing of the extra WhatsApp requests an organization makes on its own initiative (looking up
a new client's contact card and profile picture): at most N in any window of 60 s, with a
random pause between two requests, so the account does not look like a script.

Time is Trio's clock, so tests run it on the mock clock.
"""

from __future__ import annotations

import random
from collections import deque

import trio


class RequestPacer:
    """Hands out permission for one request at a time. `await pacer.wait()` returns when a
    request may be made now; it is then counted. Fair: callers are served in arrival order."""

    def __init__(self, *, per_window: int = 5, window_s: float = 60.0,
                 pause_min_s: float = 0.5, pause_max_s: float = 2.0,
                 rng: random.Random | None = None) -> None:
        if per_window < 1:
            raise ValueError("per_window must be at least 1")
        if not 0 <= pause_min_s <= pause_max_s:
            raise ValueError("pauses must satisfy 0 <= pause_min_s <= pause_max_s")
        self.per_window = per_window
        self.window_s = window_s
        self.pause_min_s = pause_min_s
        self.pause_max_s = pause_max_s
        self._rng = rng or random.Random()
        self._recent: deque[float] = deque(maxlen=per_window)
        self._lock = trio.Lock()  # trio's Lock is fair: first come, first served

    def next_allowed(self) -> float:
        """The earliest time (Trio's clock) the next request could be made, pause excluded."""
        if len(self._recent) < self.per_window:
            return trio.current_time()
        # The window (t - window_s, t] may hold per_window - 1 earlier requests at most.
        return self._recent[0] + self.window_s

    async def wait(self) -> None:
        """Wait for permission to make one request, and count it."""
        async with self._lock:
            earliest = self.next_allowed()
            if self._recent:
                pause = self._rng.uniform(self.pause_min_s, self.pause_max_s)
                earliest = max(earliest, self._recent[-1] + pause)
            await trio.sleep_until(earliest)
            self._recent.append(trio.current_time())
