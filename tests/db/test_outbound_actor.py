"""The outbound actor on Trio's mock clock, against a real PostgreSQL.

Chromium cannot run on virtual time, so the page is a stand-in (`FakePage`): it keeps its own
copy of what it sent (what `message_exists` finds), a "server" that records each send after
`delay_s` (like the simulator's slow sends), and publishes each confirmation the way the inbound
actor does (`message.ack` on the bus). What the server recorded, and when, is what the
assertions check. The same behaviour against the simulator and a real Chromium is in
tests/live/test_outbound_live.py.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
import trio.testing

from tests.virtual_time import VirtualTimeDatabase, virtual_time_database
from wad.browser.driver import BridgeError, SessionClosed
from wad.browser.events import Message, MessagePage, SentInfo
from wad.bus import Ack, EventBus, MessageSent, OutboxStatus, SendingPaused, SendingResumed
from wad.config import OutboundSettings
from wad.db.models import OutboxItem
from wad.db.pool import Database
from wad.db.repo import changes
from wad.db.repo import organizations as orgs_repo
from wad.db.repo import outbox as outbox_repo
from wad.db.repo import sessions as sessions_repo
from wad.org.outbound import settings as settings_mod
from wad.org.outbound.actor import OutboundActor
from wad.org.outbound.limits import TrioClock
from wad.org.outbound.queue import queue_message
from wad.org.outbound.settings import RateLimitingPatch, SettingsPatch
from wad.org.ownership import Lease
from wad.whatsapp import ids

EPOCH = datetime(2025, 7, 1, 9, 0, tzinfo=UTC)
CLIENT = "+996555123456"
OTHER = "+996700654321"


@pytest.fixture
async def clocked(mock_clock: trio.testing.MockClock, dsn: str
                  ) -> AsyncIterator[VirtualTimeDatabase]:
    """A real database on virtual time (see tests/virtual_time.py)."""
    async with virtual_time_database(mock_clock, dsn) as db:
        yield db


@dataclass
class Record:
    """A send as the server recorded it."""

    at: float
    id: str
    chat: str
    text: str
    result: str


@dataclass
class FakePage:
    """The page and its server (see the module docstring)."""

    bus: EventBus
    org_id: uuid.UUID
    nursery: trio.Nursery
    delay_s: float | Callable[[str], float] = 0.0
    fail: Callable[[str], bool] = lambda chat: False  # noqa: E731
    """Chats whose sends the server refuses (ack -1)."""
    broken: Callable[[str], bool] = lambda chat: False  # noqa: E731
    """Chats where the page throws instead of sending (like a number not on WhatsApp)."""
    dies: Callable[[], bool] = lambda: False  # noqa: E731
    """Whether the browser is gone when the next send is asked of it."""
    local: dict[str, str] = field(default_factory=dict)
    server: list[Record] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    typing_log: list[tuple[float, str, bool]] = field(default_factory=list)
    not_on_whatsapp: set[str] = field(default_factory=set)
    """Numbers (E.164) that do not use WhatsApp, as `number_exists` answers."""
    asked: list[tuple[float, str]] = field(default_factory=list)
    """When each number was asked whether it uses WhatsApp."""
    _generation: int = 0
    _pending: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    _ready: set[str] = field(default_factory=set)

    def counts(self) -> Counter[str]:
        return Counter(r.id for r in self.server)

    def ok(self) -> list[Record]:
        return [r for r in self.server if r.result == "OK"]

    async def send_text(self, chat: str, text: str, *, message_id: str | None = None
                        ) -> SentInfo:
        assert message_id is not None
        if self.dies():
            raise SessionClosed("the browser session is gone (crash)")
        if self.broken(chat):
            raise BridgeError(f"sendText: {chat} is not on WhatsApp")
        sid = f"true_{chat}_{message_id}"
        if sid in self.local:
            return SentInfo(id=sid, chat_id=chat, timestamp=0, already_existed=True)
        self.local[sid] = chat
        self._pending[sid] = (chat, text, self._generation)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.nursery.start_soon(self._deliver, sid, self._generation)
        return SentInfo(id=sid, chat_id=chat, timestamp=int(trio.current_time()))

    async def _deliver(self, sid: str, generation: int) -> None:
        chat = self._pending[sid][0]
        await trio.sleep(self.delay_s(chat) if callable(self.delay_s) else self.delay_s)
        pending = self._pending.get(sid)
        if pending is None or pending[2] != generation:  # lost in a crash since
            return
        self._ready.add(sid)
        # Like WhatsApp's server, it takes a chat's messages in the order the page sent them.
        for waiting in [other for other, (c, _, _) in self._pending.items() if c == chat]:
            if waiting not in self._ready:
                break
            self._ready.discard(waiting)
            self._record(waiting)

    def _record(self, sid: str) -> None:
        chat, text, _ = self._pending.pop(sid)
        self.in_flight -= 1
        failed = self.fail(chat)
        self.server.append(Record(trio.current_time(), sid, chat, text,
                                  "ERROR" if failed else "OK"))
        self.bus.signal(Ack(org_id=self.org_id, wa_message_id=sid, wa_chat_id=chat,
                            ack=-1 if failed else 1, status="ERROR" if failed else "SENT",
                            changed=True))

    async def message_exists(self, serialized_id: str) -> bool:
        return serialized_id in self.local

    async def number_exists(self, phone: str) -> str | None:
        self.asked.append((trio.current_time(), phone))
        return None if phone in self.not_on_whatsapp else f"{phone.lstrip('+')}@c.us"

    async def typing(self, chat: str, on: bool) -> None:
        self.typing_log.append((trio.current_time(), chat, on))

    async def fetch_messages(self, chat: str, *, before: str | None = None, limit: int = 50
                             ) -> MessagePage:
        mine = [sid for sid, c in self.local.items() if c == chat]
        if not mine:
            raise BridgeError(f"fetchMessages: no chat {chat}")
        return MessagePage(messages=[
            Message(id=sid, from_me=True, chat_id=chat, type="chat") for sid in mine],
            next_cursor=None)

    def crash(self, *, reached_server: bool) -> None:
        """The browser dies. Sends under way either reached the server first or are lost; the
        page that comes back holds what the server has."""
        if reached_server:
            for sid in list(self._pending):
                self._record(sid)
        self._pending.clear()
        self._ready.clear()
        self.in_flight = 0
        self._generation += 1
        self.local = {r.id: r.chat for r in self.server if r.result == "OK"}


@dataclass
class FakeSession:
    """What the actor reads of the session actor."""

    session: Any
    state: str = "CONNECTED"
    connected: trio.Event = field(default_factory=trio.Event)

    def connect(self) -> None:
        self.connected.set()

    def reconnect(self) -> None:
        self.connected = trio.Event()
        self.connected.set()


@dataclass
class Harness:
    db: Database
    bus: EventBus
    org_id: uuid.UUID
    page: FakePage
    session: FakeSession
    clock: TrioClock
    nursery: trio.Nursery
    config: OutboundSettings = field(default_factory=lambda: OutboundSettings(
        poll_interval_s=1.0, pacing=False))
    """Pacing off: these tests are about the windows; the pacing tests turn it on."""

    def actor(self) -> OutboundActor:
        return OutboundActor(org_id=self.org_id, db=self.db, bus=self.bus, session=self.session,
                             config=self.config, clock=self.clock)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[OutboundActor]:
        actor = self.actor()
        async with trio.open_nursery() as nursery:
            await nursery.start(actor.run)
            yield actor
            nursery.cancel_scope.cancel()

    async def queue(self, text: str, *, to: str = CLIENT, **kw: Any) -> OutboxItem:
        item, created = await queue_message(self.db, organization_id=self.org_id, to=to,
                                            content=text, clock=self.clock, bus=self.bus, **kw)
        assert created
        return item

    async def limits(self, **changes: int) -> None:
        await settings_mod.update(self.db, self.org_id, SettingsPatch(
            rate_limiting=RateLimitingPatch(**changes)))

    async def item(self, item_id: uuid.UUID) -> OutboxItem:
        found = await outbox_repo.get(self.db, outbox_id=item_id)
        assert found is not None
        return found

    async def statuses(self) -> Counter[str]:
        rows = await self.db.fetch("SELECT status FROM outbox WHERE organization_id = $1",
                                   self.org_id)
        return Counter(r["status"] for r in rows)


async def until(predicate: Callable[[], Any], *, step_s: float = 0.05,
                limit_s: float = 100_000.0) -> None:
    """Poll (in virtual time) until `await predicate()` is true."""
    with trio.fail_after(limit_s):
        while not await predicate():
            await trio.sleep(step_s)


@pytest.fixture
async def harness(clocked: VirtualTimeDatabase, nursery: trio.Nursery) -> Harness:
    org = await orgs_repo.create(clocked, name="Issyk-Kul Tours")
    bus = EventBus()
    page = FakePage(bus=bus, org_id=org.id, nursery=nursery)
    session = FakeSession(session=page)
    session.connect()
    return Harness(db=clocked, bus=bus, org_id=org.id, page=page, session=session,
                   clock=TrioClock(EPOCH), nursery=nursery)


STORED_TIME_PRECISION_S = 1e-5
"""Send times are stored to the microsecond, and the limiter counts from the stored ones: a send
the window's length after another, as stored, may look a microsecond closer on the page's own
(float) clock. Two sends that far apart are in different windows."""


def max_in_any_window(times: list[float], length: float) -> int:
    """The most of `times` that any half-open window `[t, t + length)` holds (sends within the
    stored times' precision of the window's end count as outside it)."""
    ordered = sorted(times)
    best = 0
    for i, start in enumerate(ordered):
        best = max(best, sum(1 for t in ordered[i:]
                             if t < start + length - STORED_TIME_PRECISION_S))
    return best


# -- pacing -----------------------------------------------------------------------------------


async def test_the_eleventh_message_in_a_minute_waits_for_the_window(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    h = harness
    t0 = trio.current_time()
    items = [await h.queue(f"Здравствуйте! Сообщение {i}") for i in range(11)]  # none refused
    async with h.running() as actor:
        await until(lambda: _true(len(h.page.ok()) >= 10))
        await trio.sleep(50)
        assert len(h.page.ok()) == 10
        assert actor.waiting_until is not None  # waiting for the window, not for anything else
        assert (await h.item(items[10].id)).status == "QUEUED"
        await until(lambda: _true(len(h.page.ok()) == 11))
    times = [r.at - t0 for r in h.page.ok()]
    first_ten, eleventh = times[:10], times[10]
    assert max(first_ten) < 1.0  # the first ten go at once
    assert 60.0 <= eleventh - min(first_ten) < 61.0  # the eleventh when the first one left
    assert [r.text for r in h.page.ok()] == [f"Здравствуйте! Сообщение {i}" for i in range(11)]
    assert await h.statuses() == Counter({"SENT": 11})


async def _true(value: bool) -> bool:
    return value


async def test_no_window_ever_holds_more_than_its_limit_across_a_restart(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    """35 messages at 10 a minute with sends that take 0.5-4 s, and the daemon restarted in
    the middle (a send in flight at that moment): every 60 s window of what the server got holds
    at most 10, and so does every window of the times stored in the database."""
    h = harness
    h.page.delay_s = lambda chat: 0.5 + (len(h.page.server) * 7 % 8) / 2
    for i in range(35):
        await h.queue(f"message {i}")
    async with h.running():
        await until(lambda: _true(len(h.page.ok()) >= 15))
        await until(lambda: _true(h.page.in_flight > 0))
        interrupted = h.page.in_flight
    h.page.crash(reached_server=True)  # the daemon died with sends under way
    h.session.reconnect()
    async with h.running() as actor:
        await until(lambda: _true(len(h.page.ok()) >= 35))
        await until(lambda: _statuses_are(h, {"SENT": 35}))
    assert actor.stats.found_in_chat == interrupted  # found in the chat, not sent again
    assert set(h.page.counts().values()) == {1}
    assert max_in_any_window([r.at for r in h.page.ok()], 60.0) == 10
    stored = await outbox_repo.sent_times_since(h.db, organization_id=h.org_id,
                                                since=EPOCH - timedelta(days=1))
    assert len(stored) == 35
    assert max_in_any_window([t.timestamp() for t in stored], 60.0) == 10


async def _statuses_are(h: Harness, wanted: dict[str, int]) -> bool:
    return await h.statuses() == Counter(wanted)


async def test_the_hour_limit_paces_the_queue_too(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    """Queued before the limit was lowered (the door let them in): the actor still keeps the
    hour window."""
    h = harness
    await h.limits(messages_per_minute=20, messages_per_hour=30)
    items = [await h.queue(f"m{i}") for i in range(12)]
    await h.limits(messages_per_minute=5, messages_per_hour=10)
    t0 = trio.current_time()
    async with h.running():
        await until(lambda: _true(len(h.page.ok()) == 12), step_s=10)
    times = [r.at - t0 for r in h.page.ok()]
    assert max_in_any_window(times, 60.0) == 5
    assert max_in_any_window(times, 3600.0) == 10
    assert times[10] >= times[0] + 3600.0  # the 11th waited for the hour window
    assert (await h.item(items[11].id)).status == "SENT"


async def test_never_more_sends_in_flight_than_the_concurrency(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    h = harness
    await h.limits(messages_per_minute=20, concurrency=2)
    h.page.delay_s = 5.0
    for i in range(8):
        await h.queue(f"m{i}")
    async with h.running() as actor:
        await until(lambda: _true(len(h.page.ok()) == 8))
    assert h.page.max_in_flight == 2
    assert actor.stats.max_in_flight == 2
    times = sorted(r.at for r in h.page.ok())
    # Two at a time, each pair taking the 5 s a send takes.
    assert [round(b - a) for a, b in zip(times[::2], times[2::2], strict=False)] == [5, 5, 5]


async def test_higher_priority_first_then_oldest(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    h = harness
    await h.limits(concurrency=1)
    for text, priority in [("normal 1", 1), ("urgent 1", 10), ("agent 1", 5), ("normal 2", 1),
                           ("urgent 2", 10), ("agent 2", 5)]:
        await h.queue(text, priority=priority)
    async with h.running():
        await until(lambda: _true(len(h.page.ok()) == 6))
    assert [r.text for r in h.page.ok()] == [
        "urgent 1", "urgent 2", "agent 1", "agent 2", "normal 1", "normal 2"]


async def test_a_delayed_message_waits_for_its_time(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    h = harness
    t0 = trio.current_time()
    await h.queue("typed by a person", delay_s=7.5)
    await h.queue("right away")
    async with h.running():
        await until(lambda: _true(len(h.page.ok()) == 2))
    first, second = h.page.ok()
    assert (first.text, second.text) == ("right away", "typed by a person")
    assert second.at - t0 >= 7.5


async def test_nothing_is_sent_while_the_session_is_not_connected(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    h = harness
    h.session.connected = trio.Event()
    await h.queue("hello")
    async with h.running():
        await trio.sleep(30)
        assert h.page.server == []
        h.session.connected.set()
        await until(lambda: _true(len(h.page.ok()) == 1))


# -- failures ---------------------------------------------------------------------------------


async def test_a_refused_send_is_retried_after_2_4_8_s_under_new_ids_then_failed(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    h = harness
    h.page.fail = lambda chat: chat.startswith("996555")
    t0 = trio.current_time()
    doomed = await h.queue("to a number WhatsApp refuses")
    fine = await h.queue("to another client", to=OTHER)
    async with h.running() as actor:
        await until(lambda: _status_is(h, doomed.id, "FAILED"))
    attempts = [r for r in h.page.server if r.chat.startswith("996555")]
    assert [round(r.at - t0, 3) for r in attempts] == [0, 2, 6, 14]  # retried 3 times
    assert len({r.id for r in attempts}) == 4  # a refused id is spent: each try had its own
    final = await h.item(doomed.id)
    assert final.attempts == 4
    assert final.last_error == "WhatsApp refused the message (ack -1) (gave up after 4 attempts)"
    got = await outbox_repo.get_with_events(h.db, outbox_id=doomed.id)
    assert got is not None
    assert [e.status for e in got[1]] == ["QUEUED"] + ["SENDING", "QUEUED"] * 3 + [
        "SENDING", "FAILED"]
    assert (await h.item(fine.id)).status == "SENT"
    assert (actor.stats.retried, actor.stats.failed, actor.stats.sent) == (3, 1, 1)
    row = await sessions_repo.get(h.db, organization_id=h.org_id)
    assert row is None or not row.sending_paused  # one failure is no alarm


async def _status_is(h: Harness, item_id: uuid.UUID, status: str) -> bool:
    return (await h.item(item_id)).status == status


async def test_an_exception_in_the_page_is_retried_under_the_same_id(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    h = harness
    calls: list[float] = []

    def broken(chat: str) -> bool:
        calls.append(trio.current_time())
        return len(calls) <= 2  # the page throws twice, then sends

    h.page.broken = broken
    t0 = trio.current_time()
    item = await h.queue("hello")
    async with h.running():
        await until(lambda: _status_is(h, item.id, "SENT"))
    assert [round(t - t0, 3) for t in calls] == [0, 2, 6]
    final = await h.item(item.id)
    assert final.attempts == 3
    assert [r.id for r in h.page.ok()] == [f"true_996555123456@c.us_{item_id_of(final)}"]


async def test_a_browser_that_dies_under_a_send_costs_the_message_no_attempt(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    """Even with no retries allowed: the send was cut short, not refused."""
    h = harness
    h.config = OutboundSettings(poll_interval_s=1.0, max_retries=0)
    deaths = iter([True, True, False])
    h.page.dies = lambda: next(deaths, False)
    item = await h.queue("hello")
    async with h.running() as actor:
        await until(lambda: _status_is(h, item.id, "SENT"))
    final = await h.item(item.id)
    assert final.attempts == 1
    assert len(h.page.ok()) == 1
    assert actor.stats.requeued == 2
    got = await outbox_repo.get_with_events(h.db, outbox_id=item.id)
    assert got is not None
    assert [(e.status, e.detail) for e in got[1]] == [
        ("QUEUED", None),
        ("SENDING", "attempt 1"),
        ("QUEUED", "interrupted: the browser session is gone (crash)"),
        ("SENDING", "attempt 1"),
        ("QUEUED", "interrupted: the browser session is gone (crash)"),
        ("SENDING", "attempt 1"), ("SENT", None)]


def item_id_of(item: OutboxItem) -> str:
    assert item.wa_message_id is not None
    return item.wa_message_id


async def test_a_send_that_is_never_confirmed_is_found_in_the_chat_not_resent(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    """No confirmation within `confirm_timeout_s` (a hung server), but the page holds the
    message: it is SENT (WhatsApp Web delivers it), never sent a second time."""
    h = harness
    h.config = OutboundSettings(poll_interval_s=1.0, confirm_timeout_s=30.0)
    h.page.delay_s = 3600.0
    item = await h.queue("hello")
    async with h.running():
        await until(lambda: _status_is(h, item.id, "SENT"))
    assert len(h.page.local) == 1
    assert h.page.server == []  # still stuck; nothing was sent twice


# -- at most once across a crash ----------------------------------------------------------------


@pytest.mark.parametrize("reached_server", [True, False])
async def test_a_crash_during_a_send_never_sends_twice_and_loses_nothing(
        mock_clock: trio.testing.MockClock, harness: Harness, reached_server: bool) -> None:
    h = harness
    h.page.delay_s = 10.0
    first = await h.queue("in flight when the daemon dies")
    second = await h.queue("still queued")
    async with h.running():
        await until(lambda: _true(h.page.in_flight == 2))
        await trio.sleep(1)
    assert await h.statuses() == Counter({"SENDING": 2})
    h.page.crash(reached_server=reached_server)
    h.page.delay_s = 0.5
    h.session.reconnect()
    async with h.running() as actor:
        await until(lambda: _statuses_are(h, {"SENT": 2}))
    assert sorted(r.text for r in h.page.ok()) == ["in flight when the daemon dies",
                                                   "still queued"]
    assert set(h.page.counts().values()) == {1}
    if reached_server:
        assert actor.stats.found_in_chat == 2
        assert actor.stats.requeued == 0
    else:
        assert actor.stats.found_in_chat == 0
        assert actor.stats.requeued == 2
    for item in (first, second):
        assert (await h.item(item.id)).message_id is not None


# -- the circuit breaker ------------------------------------------------------------------------


async def test_too_many_failures_stop_sending_and_keep_the_queue(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    h = harness
    h.config = OutboundSettings(poll_interval_s=1.0, max_retries=0)
    await h.limits(concurrency=1)
    h.page.fail = lambda chat: True
    for i in range(6):
        await h.queue(f"m{i}")
    with h.bus.subscribe(org_id=h.org_id, kinds={SendingPaused}) as paused:
        async with h.running():
            await until(lambda: _paused(h))
            event = await paused.receive()
            await trio.sleep(60)
            kept = await h.statuses()
            h.page.fail = lambda chat: False
            await sessions_repo.set_sending_paused(h.db, organization_id=h.org_id,
                                                   paused=False)
            h.bus.signal(SendingResumed(org_id=h.org_id, was_paused=True))
            await until(lambda: _true(len(h.page.ok()) == kept["QUEUED"]))
    assert kept["FAILED"] == 3  # more than 2% of the last 100: three failures
    assert kept["QUEUED"] == 3  # the rest was kept, not tried
    assert event.payload()["reason"] == ("3 of the latest 3 sends failed (more than 2% of the "
                                       "last 100)")
    assert await h.statuses() == Counter({"FAILED": 3, "SENT": 3})


async def _paused(h: Harness) -> bool:
    row = await sessions_repo.get(h.db, organization_id=h.org_id)
    return row is not None and row.sending_paused


# -- sends paced like a person ----------------------------------------------------------------


def paced(**changes: Any) -> OutboundSettings:
    return OutboundSettings(poll_interval_s=1.0, pacing=True, **changes)


async def paced_backlog(h: Harness, count: int, text: str, *, messages_per_hour: int,
                        **pacing: Any) -> float:
    """Paces the harness (with `pacing` changes) at 20 a minute and `messages_per_hour`
    (10000 a day, 10 at once), queues `count` messages (`text` with its number), and answers
    the time once they are queued."""
    h.config = paced(**pacing)
    await h.limits(messages_per_minute=20, messages_per_hour=messages_per_hour,
                   messages_per_day=10000, concurrency=10)
    for i in range(count):
        await h.queue(text.format(i))
    return trio.current_time()


def gaps(times: list[float]) -> list[float]:
    ordered = sorted(times)
    return [b - a for a, b in zip(ordered, ordered[1:], strict=False)]


async def test_a_backlog_at_20_a_minute_is_spread_out_and_uses_the_limit(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    """Two minutes of backlog at 20 a minute: at least 95% of the allowed 40 sends, no 60 s
    window over 20, no 10 s window over 5, no two sends closer than 1.5 s."""
    h = harness
    t0 = await paced_backlog(h, 60, "Добрый день! Предложение {}", messages_per_hour=1000)
    async with h.running():
        await trio.sleep(120)
    times = [r.at - t0 for r in h.page.ok() if r.at - t0 < 120]
    assert len(times) >= 0.95 * 40
    assert max_in_any_window(times, 60.0) <= 20
    assert max_in_any_window(times, 10.0) <= 5
    assert min(gaps(times)) >= 1.5
    assert len(set(round(g, 3) for g in gaps(times))) > 5  # jittered, not a metronome


async def test_pacing_holds_at_the_highest_limit_too(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    """Whatever the limit, the burst cap holds: never more than 5 sends in any 10 s."""
    h = harness
    t0 = await paced_backlog(h, 30, "message {}", messages_per_hour=1200, pacing_jitter=0.5)
    async with h.running():
        await until(lambda: _true(len(h.page.ok()) == 30))
    times = [round(r.at - t0, 6) for r in h.page.ok()]
    assert max_in_any_window(times, 10.0) <= 5
    assert min(gaps(times)) >= 1.5  # 3 s spacing, shortened by at most half


async def test_an_urgent_message_skips_the_gap_but_not_the_limits(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    h = harness
    h.config = paced()
    await h.limits(messages_per_minute=2, concurrency=3)  # a gap of 22.5-30 s
    await h.queue("first")
    t0 = trio.current_time()
    async with h.running():
        await until(lambda: _true(len(h.page.ok()) == 1))
        await h.queue("normal")
        await h.queue("urgent", priority=10)
        await until(lambda: _true(len(h.page.ok()) == 2))
        second = h.page.ok()[1]
        assert second.text == "urgent" and second.at - t0 < 1.0  # no gap for it
        await trio.sleep(10)
        assert len(h.page.ok()) == 2  # the minute holds 2: "normal" waits for the window
        await until(lambda: _true(len(h.page.ok()) == 3))
    assert h.page.ok()[2].text == "normal" and h.page.ok()[2].at - t0 >= 60.0


async def test_the_gap_holds_across_a_restart(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    """A restarted actor keeps the gap after the last send it finds in the database."""
    h = harness
    h.config = paced()
    await h.limits(messages_per_minute=4)  # a gap of 11.25-15 s
    await h.queue("before the restart")
    async with h.running():
        await until(lambda: _true(len(h.page.ok()) == 1))
    await h.queue("after the restart")
    async with h.running():
        await until(lambda: _true(len(h.page.ok()) == 2))
    first, second = h.page.ok()
    assert second.at - first.at >= 11.25


async def test_typing_shows_before_the_send_for_a_time_that_grows_with_the_text(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    h = harness
    h.config = paced(typing=True, typing_chars_per_s=20.0, typing_max_s=4.0)
    await h.limits(concurrency=1)
    short = await h.queue("Да")
    await h.queue("Здравствуйте! Тур на Иссык-Куль на выходные стоит 12 000 сом. " * 3)
    async with h.running() as actor:
        await until(lambda: _statuses_are(h, {"SENT": 2}))
    assert actor.stats.typing_shown == 2
    chat = h.page.ok()[0].chat
    assert [(c, on) for _, c, on in h.page.typing_log] == [(chat, True), (chat, True)]
    (typed_short, _, _), (typed_long, _, _) = h.page.typing_log
    sent_short, sent_long = h.page.ok()
    assert sent_short.at - typed_short == pytest.approx(len(short.content) / 20.0, abs=0.05)
    assert sent_long.at - typed_long == pytest.approx(4.0, abs=0.05)  # capped


async def test_one_numbers_messages_reach_it_in_queue_order_while_others_go_side_by_side(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    """A long text types for 4 s, the short one queued after it for 0.1 s: the short one
    still reaches the client second; a message to another number does not wait for them."""
    h = harness
    h.config = OutboundSettings(poll_interval_s=1.0, pacing=False, typing=True,
                                typing_chars_per_s=20.0, typing_max_s=4.0)
    await h.limits(concurrency=3)
    long = "Здравствуйте! Тур на Иссык-Куль на выходные стоит 12 000 сом. " * 3
    await h.queue(long)
    await h.queue("Да")
    await h.queue("Добрый день", to=OTHER)
    async with h.running():
        await until(lambda: _statuses_are(h, {"SENT": 3}))
    to_client = [r.text for r in h.page.ok() if r.chat == ids.user_chat(CLIENT)]
    assert to_client == [long, "Да"]
    order = [r.text for r in h.page.ok()]
    assert order.index("Добрый день") < order.index(long)  # not held back by the other chat


async def test_without_typing_nothing_is_shown(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    h = harness
    h.config = paced()
    await h.queue("Здравствуйте")
    async with h.running() as actor:
        await until(lambda: _statuses_are(h, {"SENT": 1}))
    assert h.page.typing_log == [] and actor.stats.typing_shown == 0


# -- fencing ----------------------------------------------------------------------------------


async def test_nothing_is_claimed_or_sent_while_the_lease_is_not_valid(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    h = harness
    lease = Lease(valid_until=trio.current_time() - 1)  # expired: the daemon was frozen
    actor = OutboundActor(org_id=h.org_id, db=h.db, bus=h.bus, session=h.session,
                          config=h.config, clock=h.clock, lease=lease)
    item = await h.queue("Ваш тур подтверждён")
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await trio.sleep(120)
        assert h.page.server == []  # nothing sent
        assert (await h.item(item.id)).status == "QUEUED"  # nor claimed
        lease.extend(trio.current_time() + 60)  # renewed: sending goes on
        await until(lambda: _true(len(h.page.ok()) == 1))
        lease.lose()  # another daemon took over: nothing more is sent
        second = await h.queue("И ещё одно")
        await trio.sleep(120)
        assert len(h.page.server) == 1
        assert (await h.item(second.id)).status == "QUEUED"
        nursery.cancel_scope.cancel()


# -- sends to the end: expiry, numbers checked, the feed ----------------------------------------


_OUTBOUND_KINDS = ("message.sent", "send.", "sending.")
"""The feed entries the outbound path writes (queueing also writes `client.created` and the
like: those are the inbound side's business)."""


async def _feed(h: Harness) -> list[tuple[str, dict[str, Any]]]:
    """The outbound path's feed entries, in order."""
    return [(c.kind, c.data) for c in await changes.page(h.db, organization_id=h.org_id,
                                                         after=0, limit=1000)
            if c.kind.startswith(_OUTBOUND_KINDS)]


async def test_a_message_not_sent_before_it_expires_is_never_sent(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    """Held back by its delay past its expiry: `EXPIRED` when the expiry passes (not at the
    next look at the queue), in the feed and on the bus, and never sent after."""
    h = harness
    h.config = OutboundSettings(poll_interval_s=30.0, pacing=False)
    t0 = trio.current_time()
    late = await h.queue("Скидка до 9:01", delay_s=120,
                         expires_at=h.clock.now() + timedelta(seconds=45))
    kept = await h.queue("без срока", delay_s=120)
    with h.bus.subscribe(org_id=h.org_id, kinds={OutboxStatus}) as statuses:
        async with h.running() as actor:
            event = await statuses.receive()
            assert isinstance(event, OutboxStatus)
            expired_after = trio.current_time() - t0
            await until(lambda: _true(len(h.page.ok()) == 1))
            await trio.sleep(60)
    final = await h.item(late.id)
    assert (event.id, event.status) == (str(late.id), "EXPIRED")
    assert 45 <= expired_after < 46
    assert final.status == "EXPIRED"
    assert final.sending_started_at is None and final.attempts == 0
    assert [r.text for r in h.page.server] == ["без срока"]
    assert (await h.item(kept.id)).status == "SENT"
    assert actor.stats.expired == 1
    feed = await _feed(h)
    assert final.expires_at is not None
    assert feed[0] == ("send.expired", {"sendId": str(late.id), "to": CLIENT,
                                        "expiresAt": final.expires_at.isoformat()})
    assert [kind for kind, _ in feed] == ["send.expired", "message.sent"]


async def test_every_final_state_reaches_the_feed_and_the_bus_with_the_send_id(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    h = harness
    h.config = OutboundSettings(poll_interval_s=1.0, pacing=False, max_retries=0)
    nowhere = "+996700999888"
    h.page.not_on_whatsapp = {nowhere}
    h.page.fail = lambda chat: chat.startswith("996700654321")
    with h.bus.subscribe(org_id=h.org_id, kinds={OutboxStatus, MessageSent}) as events:
        sent = await h.queue("дойдёт")
        refused = await h.queue("откажут", to=OTHER)
        missing = await h.queue("некому", to=nowhere)
        expiring = await h.queue("опоздает", delay_s=60,
                                 expires_at=h.clock.now() + timedelta(seconds=10))
        async with h.running():
            for item, status in ((sent, "SENT"), (refused, "FAILED"), (missing, "FAILED"),
                                 (expiring, "EXPIRED")):
                await until(lambda i=item, s=status: _status_is(h, i.id, s))  # type: ignore[misc]
            await trio.sleep(1)
        published = []
        while True:
            try:
                published.append(events.receive_nowait())
            except trio.WouldBlock:
                break
    by_send = {(c[1]["sendId"], c[0]): c[1] for c in await _feed(h)}
    stored = await h.item(sent.id)
    assert by_send[(str(sent.id), "message.sent")] == {
        "sendId": str(sent.id), "to": CLIENT, "messageId": str(stored.message_id),
        "waMessageId": f"true_996555123456@c.us_{stored.wa_message_id}",
        "conversationId": str(stored.conversation_id), "clientId": str(stored.client_id),
        "attempts": 1}
    assert by_send[(str(refused.id), "send.failed")]["reason"] == "REFUSED"
    assert by_send[(str(missing.id), "send.failed")] == {
        "sendId": str(missing.id), "to": nowhere, "reason": "NOT_ON_WHATSAPP",
        "error": f"{nowhere} is not on WhatsApp", "attempts": 1}
    assert (str(expiring.id), "send.expired") in by_send
    assert len(by_send) == 4
    finals = {(e.id, e.status, e.reason) for e in published if isinstance(e, OutboxStatus)
              and e.status in ("SENT", "FAILED", "EXPIRED")}
    assert finals == {(str(sent.id), "SENT", None), (str(refused.id), "FAILED", "REFUSED"),
                      (str(missing.id), "FAILED", "NOT_ON_WHATSAPP"),
                      (str(expiring.id), "EXPIRED", None)}
    announced = [e.message for e in published if isinstance(e, MessageSent)]
    assert [m.send_id for m in announced] == [sent.id]


async def test_numbers_without_whatsapp_fail_at_once_without_a_send_or_the_breaker(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    """Five unknown numbers in a row: each asked once (paced, the answers kept), each failed
    at its first attempt without a send, and sending goes on."""
    h = harness
    nowhere = [f"+99670099900{i}" for i in range(5)]
    h.page.not_on_whatsapp = set(nowhere)
    t0 = trio.current_time()
    doomed = [await h.queue(f"в никуда {i}", to=n) for i, n in enumerate(nowhere)]
    doomed.append(await h.queue("ещё раз", to=nowhere[0]))  # the kept answer: not asked again
    fine = await h.queue("клиенту", to=CLIENT)
    async with h.running() as actor:
        for item in doomed:
            await until(lambda i=item: _status_is(h, i.id, "FAILED"))  # type: ignore[misc]
        await until(lambda: _status_is(h, fine.id, "SENT"))
        follow_up = await h.queue("второе сообщение", to=CLIENT)  # a known chat: not asked
        await until(lambda: _status_is(h, follow_up.id, "SENT"))
    failed = [await h.item(i.id) for i in doomed]
    assert {(f.status, f.fail_reason, f.attempts) for f in failed} == {
        ("FAILED", "NOT_ON_WHATSAPP", 1)}
    assert [r.text for r in h.page.server] == ["клиенту", "второе сообщение"]
    # Each number asked once (the repeated one not again). Sends run side by side (the
    # concurrency slots), so which of two new numbers is asked first is theirs to race.
    assert Counter(phone for _, phone in h.page.asked) == Counter([*nowhere, CLIENT])
    times = [at - t0 for at, _ in h.page.asked]
    assert all(b - a >= 2.0 for a, b in zip(times, times[1:], strict=False))  # paced
    assert actor.stats.numbers_checked == 6
    assert not await _paused(h)
    assert [kind for kind, _ in await _feed(h)].count("send.failed") == 6


async def test_only_failures_that_say_something_about_the_account_trip_the_breaker(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    """Errors of the page do not count; refusals do, and the pause reaches the feed."""
    h = harness
    h.config = OutboundSettings(poll_interval_s=1.0, max_retries=0, pacing=False)
    await h.limits(concurrency=1)
    h.page.broken = lambda chat: chat.startswith("996700654321")
    broken = [await h.queue(f"b{i}", to=OTHER) for i in range(4)]
    async with h.running():
        for item in broken:
            await until(lambda i=item: _status_is(h, i.id, "FAILED"))  # type: ignore[misc]
        assert not await _paused(h)
        h.page.fail = lambda chat: True
        for i in range(3):
            await h.queue(f"r{i}")
        await until(lambda: _paused(h))
    assert {(await h.item(i.id)).fail_reason for i in broken} == {"SEND_ERROR"}
    feed = await _feed(h)
    assert [kind for kind, _ in feed] == ["send.failed"] * 7 + ["sending.paused"]
    assert [d["reason"] for _, d in feed[:7]] == ["SEND_ERROR"] * 4 + ["REFUSED"] * 3
    assert feed[-1][1] == {"reason": "3 of the latest 3 sends failed (more than 2% of the "
                                     "last 100)"}


async def test_messages_expire_on_time_while_the_session_is_down(
        mock_clock: trio.testing.MockClock, harness: Harness) -> None:
    h = harness
    h.config = OutboundSettings(poll_interval_s=30.0, pacing=False)
    h.session.connected = trio.Event()
    t0 = trio.current_time()
    item = await h.queue("к 9:00:10", expires_at=h.clock.now() + timedelta(seconds=10))
    async with h.running():
        await until(lambda: _status_is(h, item.id, "EXPIRED"), step_s=0.01)
        expired_after = trio.current_time() - t0
        h.session.connected.set()
        await trio.sleep(60)
    assert 10 <= expired_after < 11
    assert h.page.server == []
    assert [kind for kind, _ in await _feed(h)] == ["send.expired"]
