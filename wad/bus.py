"""The daemon's in-process event bus: what happened, for whoever listens (plugins, the event
stream, tests).

Publishing never blocks: each subscriber has a bounded buffer, and a subscriber that falls behind
loses the overflow (counted in `dropped` and logged), so a slow listener cannot stall an actor.
Every event gets a sequence number, increasing for the life of the bus.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from wad import log

_log = log.get("bus")


@dataclass(frozen=True)
class BusEvent:
    """One published fact: `kind` (e.g. `session.status`), the organization, a JSON-able payload."""

    seq: int
    kind: str
    org_id: uuid.UUID | None
    payload: dict[str, Any]
    at: float = field(default_factory=time.time)


@dataclass
class _Subscriber:
    send: trio.MemorySendChannel[BusEvent]
    org_id: uuid.UUID | None
    kinds: frozenset[str] | None
    dropped: int = 0


class EventBus:
    """Fan-out of `BusEvent`s to bounded subscriber channels."""

    def __init__(self) -> None:
        self._seq = itertools.count(1)
        self._subscribers: list[_Subscriber] = []

    def publish(self, kind: str, org_id: uuid.UUID | None, payload: dict[str, Any]) -> BusEvent:
        event = BusEvent(seq=next(self._seq), kind=kind, org_id=org_id, payload=payload)
        for sub in list(self._subscribers):
            if sub.org_id is not None and sub.org_id != org_id:
                continue
            if sub.kinds is not None and kind not in sub.kinds:
                continue
            try:
                sub.send.send_nowait(event)
            except trio.WouldBlock:
                sub.dropped += 1
                if sub.dropped in (1, 10, 100) or sub.dropped % 1000 == 0:
                    _log.warning("bus subscriber falling behind; events dropped",
                                 dropped=sub.dropped, kind=kind)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._subscribers.remove(sub)
        return event

    @contextmanager
    def subscribe(self, *, org_id: uuid.UUID | None = None, kinds: set[str] | None = None,
                  buffer: int = 1000) -> Iterator[trio.MemoryReceiveChannel[BusEvent]]:
        """Receive events (of one organization and/or some kinds) for the block's duration."""
        send, receive = trio.open_memory_channel[BusEvent](buffer)
        sub = _Subscriber(send=send, org_id=org_id, kinds=frozenset(kinds) if kinds else None)
        self._subscribers.append(sub)
        try:
            yield receive
        finally:
            if sub in self._subscribers:
                self._subscribers.remove(sub)
            send.close()
