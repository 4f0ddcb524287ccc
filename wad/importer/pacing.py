"""Pacing of WhatsApp requests: at most one per interval, counted."""

from __future__ import annotations

import trio


class Pacer:
    """Spaces the starts of requests at least `interval_s` apart (0: no pacing) and counts them.

    The first request goes at once; each later one waits until `interval_s` after the previous
    one started. Shared by every request of one import, whichever chat it is for."""

    def __init__(self, interval_s: float = 1.0) -> None:
        if interval_s < 0:
            raise ValueError("interval_s must not be negative")
        self.interval_s = interval_s
        self.requests = 0
        self.waited_s = 0.0
        self._last: float | None = None
        self._lock = trio.Lock()

    async def wait(self) -> None:
        """Return when the next request may start (and count it)."""
        async with self._lock:
            now = trio.current_time()
            if self._last is not None and self.interval_s > 0:
                due = self._last + self.interval_s
                if due > now:
                    self.waited_s += due - now
                    await trio.sleep_until(due)
                    now = trio.current_time()
            self._last = now
            self.requests += 1
