"""The bus's typed seams: every event and signal is declared in `wad.bus` as a member of its
tagged union, events and signals travel on separate channels, and every event kind that the
metrics count or the event stream shows is published by production code."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from tests.support.bus_helpers import event
from wad import bus
from wad.observe.metrics import BUS_KINDS

WAD = Path(__file__).resolve().parent.parent.parent / "wad"


def subclasses(base: type) -> set[type]:
    found: set[type] = set()
    todo: list[type] = [base]
    while todo:
        subs: list[type] = todo.pop().__subclasses__()
        for sub in subs:
            if sub.__module__ == "wad.bus":
                found.add(sub)
                todo.append(sub)
    return found


def extended(classes: set[type]) -> set[type]:
    """Those of `classes` that another of them extends: private bases that declare what some
    events share (`bus._CarriesMessage`), never events or signals of their own."""
    return {parent for cls in classes for parent in cls.__mro__[1:] if parent in classes}


def test_every_event_and_signal_is_in_its_union_with_a_tag_of_its_own() -> None:
    events = set(bus.AnyEvent.__args__)  # type: ignore[attr-defined]
    signals = set(bus.AnySignal.__args__)  # type: ignore[attr-defined]
    for root, union in ((bus.Event, events), (bus.Signal, signals)):
        declared = subclasses(root)
        bases = extended(declared)
        assert declared - bases == union
        assert not bases & union
        assert all(base.__name__.startswith("_") for base in bases)
    for union in (events, signals):
        tags = [cls.__struct_config__.tag for cls in union]
        assert len(tags) == len(set(tags))


@pytest.mark.parametrize("kind", sorted(cls.__struct_config__.tag
                                        for cls in bus.AnyEvent.__args__))  # type: ignore[attr-defined]
def test_events_round_trip_through_json_by_their_kind(kind: str) -> None:
    examples: dict[str, dict[str, Any]] = {
        "message.received": {"body": "Салам"}, "message.sent": {"body": "Hi"},
        "message.status_changed": {"to_status": "READ"},
        "client.status_changed": {"to_status": "QUALIFIED"},
        "message.stored": {"id": str(uuid.uuid4())},
        "session.status": {"state": "CONNECTED"},
        "message.edited": {"id": "x", "wa_message_id": "y"},
        "agent.reply_queued": {"outbox_id": "o", "message_id": "m", "agent": "a",
                               "not_before": "2025-07-01T09:00:00+00:00"},
        "outbox.status": {"id": "o", "status": "SENT", "attempts": 1, "wa_message_id": None,
                          "error": None},
        "outbound.paused": {"reason": "why"},
        "outbound.resumed": {"previous_reason": "why"},
        "outbox.refused": {"limit": "hour", "count": 2},
        "plugin.error": {"plugin": "p", "hook": "h"},
        "session.incompatible": {"version": "2.3000.1", "missing": ["X.y is missing"],
                                 "reason": "WhatsApp Web 2.3000.1: X.y is missing"},
        "message.processing_failed": {"id": "m", "wa_message_id": "w", "attempts": 5,
                                      "error": "TimeoutError: agent", "parked": True}}
    made = event(kind, uuid.uuid4(), examples[kind])
    assert made.kind == kind
    decoded = msgspec.json.decode(msgspec.json.encode(made), type=bus.AnyEvent)
    assert type(decoded) is type(made)
    assert decoded.payload() == made.payload()
    assert not {"kind", "org_id", "seq"} & set(made.payload())  # the envelope stays out


async def test_events_and_signals_travel_on_separate_channels() -> None:
    b = bus.EventBus()
    org, other = uuid.uuid4(), uuid.uuid4()
    with b.subscribe() as events, b.listen(org_id=org) as signals:
        first = b.publish(bus.SendsRefused(org_id=org, limit="hour"))
        b.signal(bus.Queued(org_id=org, count=2))
        b.signal(bus.Queued(org_id=other, count=1))
        second = b.publish(bus.SendsRefused(org_id=other, limit="day"))
        assert (first.seq, second.seq) == (1, 2)  # signals take no sequence number
        assert [events.receive_nowait(), events.receive_nowait()] == [first, second]
        assert signals.receive_nowait() == bus.Queued(org_id=org, count=2)
        with pytest.raises(trio.WouldBlock):
            events.receive_nowait()
        with pytest.raises(trio.WouldBlock):
            signals.receive_nowait()


def production_sources() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in WAD.rglob("*.py")
                     if p.name != "bus.py")


FOLLOWED = sorted(BUS_KINDS, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", FOLLOWED, ids=[c.__name__ for c in FOLLOWED])
def test_every_counted_or_streamed_event_is_published_by_production_code(
        cls: type[bus.Event]) -> None:
    # A metric fed by an event nothing publishes can never move (as `wad_sends_refused_total`
    # once could not): each kind the metrics follow has a `publish(Kind(` in wad.
    name = cls.__name__
    assert re.search(rf"\.publish\(\s*{name}\(", production_sources()), name
