"""The recent events of each organization, kept so that an event stream can resume.

`EventLog` subscribes to the daemon's bus as soon as it is made (events published before its
task runs wait in the subscription's buffer) and keeps, per organization, a bounded ring of the
events a CRM sees on `GET /api/whatsapp/events/{org}`: session status changes, messages received
and sent, message status changes and client status changes.

**The resume window**: the last `capacity` events (default 1000) of each organization, for the
life of the daemon. An event's id is `<boot>-<seq>`: `boot` names this event log (a new daemon
has a new one) and `seq` is the bus's sequence number, increasing across organizations. A
reader that comes back with the id of the last event it saw gets every later event of its
organizations, in order, with none missing, as long as none of them has left the ring; otherwise
(a daemon restart, or more than `capacity` events since) it is told to `reset`: reload the state
from the API, then follow.

A reader never holds up the bus or an actor: it follows the rings with its own cursor, and the
log's single subscription has a buffer of its own.
"""

from __future__ import annotations

import collections
import secrets
import uuid
from collections.abc import AsyncGenerator, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Literal

import trio

from wad import log
from wad.bus import (
    ClientStatusChanged,
    Event,
    EventBus,
    MessageReceived,
    MessageSent,
    MessageStatusChanged,
    SessionIncompatible,
    SessionStatus,
)

_log = log.get("eventlog")

STREAM_KINDS: frozenset[type[Event]] = frozenset({
    SessionStatus,
    SessionIncompatible,
    MessageReceived,
    MessageSent,
    MessageStatusChanged,
    ClientStatusChanged,
})
"""The bus events a CRM can follow (as published by the session and inbound actors)."""

DEFAULT_CAPACITY = 1000
"""Events kept per organization for resuming."""

SUBSCRIPTION_BUFFER = 10_000
"""Events the log's bus subscription holds while its task catches up."""


@dataclass(frozen=True)
class Item:
    """What a reader receives, in order:

    - `start` (once, first): following from `cursor` (the sequence number the reader can resume
      after); `resumed` when it continues exactly after the id it gave;
    - `reset`: events may be missing (the id was of another daemon run, or too old, or the
      reader fell behind): reload the state from the API; following again from `cursor`;
    - `snapshot`: the newest `session.status` of an organization, from before `cursor` (after
      `start` or `reset` when not resumed), so that the reader knows the state and the QR;
    - `event`: an event after the cursor;
    - `idle`: nothing happened for a while (a chance for a keep-alive).
    """

    type: Literal["start", "reset", "snapshot", "event", "idle"]
    event: Event | None = None
    cursor: int = 0
    resumed: bool = False
    reason: str = ""


class _Ring:
    """One organization's recent events, oldest first, and the newest one that left."""

    def __init__(self, capacity: int) -> None:
        self.events: collections.deque[Event] = collections.deque(maxlen=capacity)
        self.evicted_seq = 0  # every event up to this one may be gone
        self.last_status: Event | None = None  # the newest session.status, never evicted

    def append(self, event: Event) -> None:
        if len(self.events) == self.events.maxlen:
            self.evicted_seq = self.events[0].seq
        self.events.append(event)
        if isinstance(event, SessionStatus):
            self.last_status = event

    def after(self, seq: int) -> list[Event]:
        if not self.events or self.events[-1].seq <= seq:
            return []
        # The ring is short and sorted; walk back from the newest end.
        found = []
        for event in reversed(self.events):
            if event.seq <= seq:
                break
            found.append(event)
        found.reverse()
        return found


class EventLog:
    """Bounded per-organization history of the stream's events, with resumable readers.

    Make it with the daemon's bus, run `run` in a nursery, and read with `follow`."""

    def __init__(self, bus: EventBus, *, capacity: int = DEFAULT_CAPACITY,
                 kinds: Iterable[type[Event]] = STREAM_KINDS) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.kinds = tuple(kinds)
        self.boot = secrets.token_hex(4)
        self.last_seq = 0
        self._rings: dict[uuid.UUID, _Ring] = {}
        self._changed = trio.Event()
        self._closed = False
        self._stack = ExitStack()
        self._events = self._stack.enter_context(
            bus.subscribe(kinds=set(self.kinds), buffer=SUBSCRIPTION_BUFFER))

    # -- writing ---------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[EventLog] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Take events from the bus into the rings until cancelled; then readers end."""
        try:
            task_status.started(self)
            async for event in self._events:
                self.add(event)
        finally:
            self.close()

    def add(self, event: Event) -> None:
        """Keep one event (events without an organization are not streamed)."""
        if event.org_id is None or not isinstance(event, self.kinds):
            return
        ring = self._rings.get(event.org_id)
        if ring is None:
            ring = self._rings[event.org_id] = _Ring(self.capacity)
        ring.append(event)
        self.last_seq = max(self.last_seq, event.seq)
        self._wake()

    def close(self) -> None:
        """Stop taking events and end every reader (the daemon is stopping)."""
        if not self._closed:
            self._closed = True
            self._stack.close()
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # -- reading ---------------------------------------------------------------------------------

    def event_id(self, event: Event) -> str:
        """The id a reader gives back as `Last-Event-ID`."""
        return f"{self.boot}-{event.seq}"

    def parse_id(self, value: str | None) -> int | None:
        """The sequence number of a `Last-Event-ID` of this log; None when it is absent, of
        another daemon's life, or malformed (the reader must reset)."""
        if not value:
            return None
        boot, _, seq = value.strip().partition("-")
        if boot != self.boot or not seq.isdigit():
            return None
        return int(seq)

    def _selected(self, orgs: frozenset[uuid.UUID] | None) -> list[_Ring]:
        if orgs is None:
            return list(self._rings.values())
        return [ring for org_id, ring in self._rings.items() if org_id in orgs]

    def since(self, orgs: frozenset[uuid.UUID] | None, seq: int) -> tuple[list[Event], bool]:
        """(the kept events of `orgs` (None: all) after `seq`, in order; whether some events
        after `seq` may have left the ring already)."""
        rings = self._selected(orgs)
        gap = any(ring.evicted_seq > seq for ring in rings)
        events = [e for ring in rings for e in ring.after(seq)]
        events.sort(key=lambda e: e.seq)
        return events, gap

    def latest_status(self, orgs: frozenset[uuid.UUID] | None) -> list[Event]:
        """The newest `session.status` event of each of `orgs` (None: all), oldest first."""
        found = [ring.last_status for ring in self._selected(orgs) if ring.last_status]
        return sorted(found, key=lambda e: e.seq)

    async def follow(self, orgs: frozenset[uuid.UUID] | None, last_id: str | None = None, *,
                     idle_s: float | None = None) -> AsyncGenerator[Item, None]:
        """The events of `orgs` (None: every organization) as they come, until the log closes
        (see `Item` for what comes in which order). With `idle_s`, an `idle` item after that
        long without an item for this reader (events of other organizations do not count)."""
        seq = self.parse_id(last_id)
        if seq is not None and seq > self.last_seq:
            seq = None  # an id from the future: not this run's after all
        reason = ""
        if seq is not None:
            _, gap = self.since(orgs, seq)
            if gap:
                seq, reason = None, "some events after that id are no longer kept"
        elif last_id:
            reason = "that event id is not of this run of the daemon"
        if seq is not None:
            cursor = seq
            yield Item("start", cursor=cursor, resumed=True)
        else:
            cursor = self.last_seq
            yield Item("start", cursor=cursor)
            if reason:
                yield Item("reset", cursor=cursor, reason=reason)
            for event in self.latest_status(orgs):
                yield Item("snapshot", event)
        # Measured from the last item given, not from each wake-up: events of other
        # organizations wake this reader too, and must not keep its `idle` from coming.
        idle = idle_s if idle_s is not None else float("inf")
        idle_at = trio.current_time() + idle
        while not self._closed:
            changed = self._changed
            events, gap = self.since(orgs, cursor)
            if gap:
                # The reader fell more than a ring behind while it was being written to.
                cursor = self.last_seq
                yield Item("reset", cursor=cursor, reason="the reader fell behind")
                for event in self.latest_status(orgs):
                    yield Item("snapshot", event)
                continue
            for event in events:
                cursor = event.seq
                yield Item("event", event)
            if events:
                idle_at = trio.current_time() + idle
                continue
            with trio.move_on_at(idle_at) as wait:
                await changed.wait()
            if wait.cancelled_caught:
                yield Item("idle")
                idle_at = trio.current_time() + idle
