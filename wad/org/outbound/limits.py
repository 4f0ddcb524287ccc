"""Rate-window arithmetic for the outbound queue: pure functions over send times.

A send counts in a window from the moment WhatsApp confirmed it (`outbox.sent_at`), which is
never earlier than the moment it really left; sends still waiting for that confirmation count as
if they happened now. With both rules, starting a send only when every window has room keeps
every window of real send times within its limit, also across restarts (the times come from the
database). The minute window paces the queue (a message waits); the hour and day windows also
refuse at the door (HTTP 429), counting what is queued as if it were already sent.

Within the windows, sends are spread out as a person would send them (`Pacing`): each send
starts a gap after the previous one, the even spacing of the minute limit shortened by a random
part of itself, and a short burst window (5 in any 10 s by default) caps what any moment sees.
Twenty messages at twenty a minute thus go about three seconds apart, not all in one second.

Times are timezone-aware datetimes from a `Clock`: the wall clock in the daemon, a clock that
follows Trio's (mock) clock in tests.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

import trio

from wad.supervise import Backoff

WindowName = Literal["minute", "hour", "day", "burst"]

MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


class Clock(Protocol):
    """Where "now" comes from."""

    def now(self) -> datetime: ...


class WallClock:
    """The system's clock, in UTC (what the database's `now()` also reads)."""

    def now(self) -> datetime:
        return datetime.now(UTC)


class TrioClock:
    """Follows Trio's clock from an anchor: with `trio.testing.MockClock` time passes only when
    the test (or autojump) moves it. Create it inside `trio.run`."""

    def __init__(self, epoch: datetime | None = None) -> None:
        self._epoch = epoch or datetime.now(UTC)
        self._t0 = trio.current_time()

    def now(self) -> datetime:
        return self._epoch + timedelta(seconds=trio.current_time() - self._t0)


@dataclass(frozen=True)
class Window:
    """At most `limit` sends in any `length` of time."""

    name: WindowName
    length: timedelta
    limit: int


def windows(*, per_minute: int, per_hour: int, per_day: int) -> tuple[Window, ...]:
    return (Window("minute", MINUTE, per_minute), Window("hour", HOUR, per_hour),
            Window("day", DAY, per_day))


@dataclass(frozen=True)
class Pacing:
    """How sends are spread out within the limits."""

    jitter: float = 0.25
    """Each gap is the even spacing of the minute limit less a random part of up to this share
    of it (0.25: between 75% and 100% of 60 s / limit)."""
    burst_limit: int = 5
    """At most this many sends in any `burst_window`..."""
    burst_window: timedelta = timedelta(seconds=10)

    def window(self) -> Window:
        """The burst cap, as one more window for `next_send_at`."""
        return Window("burst", self.burst_window, self.burst_limit)

    def gap(self, per_minute: int, draw: float) -> timedelta:
        """The pause between the starts of two sends at `per_minute`, for a random `draw` in
        [0, 1): never shorter than (1 - jitter) of the even spacing, never longer than it, so
        the minute limit can still be used in full."""
        even = 60.0 / per_minute
        return timedelta(seconds=even * (1.0 - self.jitter * draw))


def in_window(sent: Sequence[datetime], now: datetime, length: timedelta) -> int:
    """How many of `sent` (sorted, oldest first) fall in the window ending at `now`:
    `(now - length, now]`. A send exactly `length` ago has just left it."""
    return bisect.bisect_right(sent, now) - bisect.bisect_right(sent, now - length)


def _room_at(sent: Sequence[datetime], now: datetime, window: Window, used: int, wanted: int
             ) -> datetime | None:
    """When `wanted` more sends fit in `window` given `used` (sends in it plus those counted as
    happening now). `now` if they fit already; None when only sends that have not happened yet
    are in the way (they leave the window only after they happen)."""
    excess = used + wanted - window.limit
    if excess <= 0:
        return now
    start = bisect.bisect_right(sent, now - window.length)
    recorded = bisect.bisect_right(sent, now) - start
    if excess > recorded:
        return None
    # The window has room once the `excess` oldest sends in it have left.
    return sent[start + excess - 1] + window.length


def next_send_at(sent: Sequence[datetime], now: datetime, *, in_flight: int,
                 limits: Sequence[Window]) -> datetime | None:
    """The earliest time (>= `now`) at which one more send keeps every window within its limit,
    given the confirmed sends `sent` (oldest first) and `in_flight` sends not confirmed yet.
    None when the sends in flight alone fill a window: wait for one of them to finish."""
    latest = now
    for window in limits:
        used = in_window(sent, now, window.length) + in_flight
        at = _room_at(sent, now, window, used, 1)
        if at is None:
            return None
        latest = max(latest, at)
    return latest


@dataclass(frozen=True)
class Refusal:
    """Why a send is refused at the door: which window, its limit, how many sends it still
    takes now, and when there will be room for the refused ones."""

    window: WindowName
    limit: int
    remaining: int
    reset_at: datetime

    def retry_after_s(self, now: datetime) -> int:
        """Whole seconds until `reset_at` (at least 1), for `Retry-After`."""
        seconds = (self.reset_at - now).total_seconds()
        return max(1, int(seconds) + (0 if seconds == int(seconds) else 1))

    def message(self, now: datetime) -> str:
        per = {"minute": "a minute", "hour": "an hour", "day": "a day"}[self.window]
        return (f"{self.window} limit reached: at most {self.limit} messages {per}; "
                f"{self.remaining} remaining; room again at {self.reset_at.isoformat()} "
                f"(in {self.retry_after_s(now)} s)")


def door_check(sent: Sequence[datetime], now: datetime, *, pending: int, wanted: int,
               limits: Sequence[Window]) -> Refusal | None:
    """None when `wanted` more messages fit in every given window, counting the confirmed sends
    `sent` (oldest first) and the `pending` ones (queued or in flight) as used now; else the
    first window that refuses. Its `reset_at` is when enough confirmed sends have left it; when
    queued messages alone fill it, a whole window from now (they will be sent from now on)."""
    for window in limits:
        used = in_window(sent, now, window.length) + pending
        if used + wanted <= window.limit:
            continue
        at = _room_at(sent, now, window, used, wanted)
        return Refusal(window=window.name, limit=window.limit,
                       remaining=max(0, window.limit - used),
                       reset_at=at if at is not None else now + window.length)
    return None


def retry_delay(attempt: int, *, initial_s: float) -> float:
    """Seconds before the next try after failed attempt `attempt` (1-based): 2 s, 4 s, 8 s with
    the default `initial_s` of 2."""
    return Backoff(initial=initial_s, max=math.inf).delay(attempt)
