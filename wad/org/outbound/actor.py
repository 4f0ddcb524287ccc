"""The outbound actor: drains one organization's durable send queue within its limits, and sends
each message at most once (SPEC section 4).

The loop, while the session is `CONNECTED` and sending is not paused:

1. read the organization's limits (`wad.org.outbound.settings`) and the times of its sends of the
   last day (`outbox.sent_at`, so the windows hold across restarts);
2. wait until one more send fits every window (`wad.org.outbound.limits.next_send_at`), the
   pacing gap since the previous send has passed (`wad.org.outbound.limits.Pacing`; urgent
   messages skip the gap, not the windows) and fewer than `concurrency` sends wait for
   WhatsApp's confirmation;
3. claim the next due message (highest priority, then oldest; a message's `not_before` holds it
   back, which is how agent replies get their typing delay) with a freshly chosen WhatsApp id,
   recorded before anything is sent;
4. send it (after "typing..." for a while, when `[outbound] typing` is on), and hold its
   concurrency slot until WhatsApp confirms it (ack 1 or more: `SENT`) or refuses it (ack -1).
   Sends run side by side, but those to one number reach the page in the order they were
   claimed (each waits until the one before it was asked of the page). Acks reach this actor
   as `Ack` bus signals, which the inbound actor publishes after applying them to the stored
   rows; later acks (`DELIVERED`, `READ`) are the inbound actor's business.

**At most once.** A message's WhatsApp id is chosen before its first send and kept across
retries; the bridge refuses to send an id the page already holds. Whenever an attempt may have
reached WhatsApp without wad knowing (the daemon died, the browser restarted, no confirmation
came), the next attempt first looks for that id in the chat (`message_exists`, then the chat's
latest pages); found means `SENT`, never a second send. Rows left `SENDING` by a crash are
checked that way on every (re)connect before anything else is sent. Only a send WhatsApp refused
(ack -1) is tried again under a new id.

**Numbers checked first.** Before the first send to a number the organization has no message
with, the actor asks WhatsApp whether the number exists (`number_exists`, the bridge's
`queryWidExists`), at most one question per `number_check_interval_s`, and keeps the answer
(`number_checks`, trusted for `number_check_ttl_s`). A number without WhatsApp fails at once
(`NOT_ON_WHATSAPP`): nothing is sent, nothing retried.

**Failures** are retried `max_retries` (3) times, after 2 s, 4 s and 8 s, then the message is
`FAILED` with its error and a reason code (`FailReason`). An attempt cut short because the
browser went away (or hung) is not a failure of the message: it is queued again at once and not
counted. **Expiry**: a queued message whose `expires_at` passed is `EXPIRED` and never sent.

**Circuit breaker**: when the account is banned or restricted (the session ends `BANNED`), or
when more than 2% of the latest 100 finished sends failed for a reason that says something about
the account (`BREAKER_REASONS`: WhatsApp refused the message, or never confirmed it), sending
stops for the organization (`whatsapp_sessions.sending_paused` with the reason, a
`outbound.paused` bus event, a `sending.paused` feed entry); the queue is kept until an
administrator resumes it. Numbers without WhatsApp and errors of the page do not count.

Every final state of a send is written to the change feed (`wad.org.outbound.feed`) in the
transaction that makes it, and published as `outbox.status` (and `message.sent`) with the send's
id.
"""

from __future__ import annotations

import enum
import functools
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import trio

from wad import log, payloads
from wad import plugins as plugin_calls
from wad.browser.driver import BridgeError, BridgeTimeout, SessionClosed, new_message_id
from wad.bus import (
    Ack,
    EventBus,
    MessageSent,
    Queued,
    SendingPaused,
    SendingResumed,
    SessionChanged,
    SettingsChanged,
    Signal,
)
from wad.config import OutboundSettings, outbound_settings
from wad.db.models import NewMessage, OutboxItem
from wad.db.pool import WAIT_BACKOFF, Database, database_unavailable
from wad.db.repo import clients as clients_repo
from wad.db.repo import conversations as conversations_repo
from wad.db.repo import messages as messages_repo
from wad.db.repo import numbers as numbers_repo
from wad.db.repo import outbox as outbox_repo
from wad.db.repo import sessions as sessions_repo
from wad.errors import NotFound
from wad.org.context import OrgContext
from wad.org.outbound import feed
from wad.org.outbound import settings as settings_mod
from wad.org.outbound.feed import outbox_status
from wad.org.outbound.limits import (
    DAY,
    Clock,
    Pacing,
    WallClock,
    Window,
    next_send_at,
    retry_delay,
)
from wad.org.outbound.queue import PRIORITY_URGENT
from wad.org.ownership import Lease
from wad.supervise import ChildSpec, Restart
from wad.whatsapp import ids

_log = log.get("outbound")

HISTORY_PAGES = 3
"""How many pages of a chat's latest messages the at-most-once check reads beyond the loaded
ones (each page 50 messages)."""
HISTORY_MARGIN = timedelta(minutes=10)
"""The check stops reading once messages are this much older than the attempt that may have
sent the message."""


class FailReason(enum.StrEnum):
    """Why a send failed for good (`outbox.fail_reason`, `reason` of `send.failed`)."""

    NOT_ON_WHATSAPP = "NOT_ON_WHATSAPP"
    """The number does not use WhatsApp (asked before the first send): nothing was sent."""
    REFUSED = "REFUSED"
    """WhatsApp refused the message (ack -1) on every attempt."""
    NOT_CONFIRMED = "NOT_CONFIRMED"
    """WhatsApp never confirmed it, and the chat does not hold it."""
    SEND_ERROR = "SEND_ERROR"
    """The page failed to send it (an error of WhatsApp Web or the bridge)."""


BREAKER_REASONS = frozenset({FailReason.REFUSED, FailReason.NOT_CONFIRMED})
"""The failures that say something about the account: only these count towards the circuit
breaker."""


def _not_on_whatsapp(item: OutboxItem) -> _Outcome:
    return _Outcome(sent=False, error=f"{item.to_phone} is not on WhatsApp",
                    reason=FailReason.NOT_ON_WHATSAPP, final=True)


class PageLike(Protocol):
    """What the actor calls on the browser session (`wad.browser.driver.BrowserSession`)."""

    async def send_text(self, chat_or_phone: str, text: str, *, message_id: str | None = None
                        ) -> Any: ...
    async def message_exists(self, serialized_id: str) -> bool: ...
    async def fetch_messages(self, chat: str, *, before: str | None = None, limit: int = 50
                             ) -> Any: ...
    async def typing(self, chat: str, on: bool) -> None: ...
    async def number_exists(self, phone: str) -> str | None: ...


def pacing_rule(config: OutboundSettings) -> Pacing | None:
    """The `[outbound]` pacing of sends, or None when it is off."""
    if not config.pacing:
        return None
    return Pacing(jitter=config.pacing_jitter, burst_limit=config.burst_limit,
                  burst_window=timedelta(seconds=config.burst_window_s))


def typing_s(config: OutboundSettings, text: str) -> float:
    """How long "typing..." shows before `text` is sent (0 when typing is off)."""
    if not config.typing:
        return 0.0
    return min(config.typing_max_s, len(text) / config.typing_chars_per_s)


class SessionLike(Protocol):
    """What the actor reads of the session actor (`wad.org.session.SessionActor`)."""

    @property
    def state(self) -> str: ...
    @property
    def session(self) -> Any: ...
    @property
    def connected(self) -> trio.Event: ...


def outbound_actor(ctx: OrgContext) -> ChildSpec:
    """The organization's outbound actor as a supervised child (a fresh actor on every start)."""
    return ChildSpec("outbound", functools.partial(run_outbound, ctx), restart=Restart.PERMANENT,
                     shutdown=ctx.settings.graces.outbound_s)


async def run_outbound(ctx: OrgContext, *,
                       task_status: trio.TaskStatus[OutboundActor] = trio.TASK_STATUS_IGNORED
                       ) -> None:
    """Run a new `OutboundActor` for the organization until cancelled."""
    actor = OutboundActor(org_id=ctx.org_id, db=ctx.db, bus=ctx.bus, session=ctx.session,
                          config=outbound_settings(ctx.settings), plugins=ctx.plugins,
                          lease=ctx.lease)
    await actor.run(task_status=task_status)


@dataclass
class OutboundStats:
    """Counters of one actor's life (for logs, the benchmark and tests)."""

    sent: int = 0
    failed: int = 0
    retried: int = 0
    found_in_chat: int = 0
    """Sends found already in the chat by the at-most-once check (not sent again)."""
    requeued: int = 0
    """Sends left in flight by an interruption and not found in the chat: queued again."""
    max_in_flight: int = 0
    typing_shown: int = 0
    """Sends preceded by "typing..." in the client's chat."""
    empty_looks: int = 0
    """Turns that found nothing due in the queue (the actor then naps until poked)."""
    numbers_checked: int = 0
    """Numbers asked of WhatsApp before a first send."""
    expired: int = 0


@dataclass(eq=False)
class _Flight:
    """One send waiting for WhatsApp's confirmation."""

    item: OutboxItem
    key: str
    done: trio.Event = field(default_factory=trio.Event)
    ack: int | None = None
    after: _Flight | None = None
    """The send to the same number claimed just before this one, if still under way: this one
    reaches the page only after it, so a client reads messages in the order they were queued."""
    handed: trio.Event = field(default_factory=trio.Event)
    """Set once this send is asked of the page (or ended without that)."""


@dataclass(frozen=True)
class _Outcome:
    sent: bool
    error: str = ""
    new_id: bool = False
    """The id is spent (WhatsApp refused it): retry under a new one."""
    found: bool = False
    """The message was already in the chat: this attempt sent nothing."""
    interrupted: bool = False
    """The session went away under the attempt: queued again at once, not counted."""
    reason: FailReason = FailReason.SEND_ERROR
    final: bool = False
    """Not worth another attempt (the number does not use WhatsApp)."""


class OutboundActor:
    """One organization's sender. Start with `nursery.start(actor.run)`."""

    def __init__(self, *, org_id: uuid.UUID, db: Database, bus: EventBus, session: SessionLike,
                 config: OutboundSettings | None = None, clock: Clock | None = None,
                 plugins: Any = None, rng: random.Random | None = None,
                 lease: Lease | None = None) -> None:
        self.org_id = org_id
        self.lease = lease or Lease()
        """Nothing is claimed or sent while this daemon's lease is not valid (fencing)."""
        self.db = db
        self.bus = bus
        self.session = session
        self.config = config or OutboundSettings()
        self.clock = clock or WallClock()
        self.pm = plugins
        self.stats = OutboundStats()
        self.waiting_until: datetime | None = None
        """When the next send fits the rate windows, while the actor waits for that."""
        self._in_flight: dict[uuid.UUID, _Flight] = {}
        self._by_key: dict[str, _Flight] = {}
        self._last_to: dict[str, _Flight] = {}
        """Per number, the latest send claimed and not yet handed to the page."""
        self._wake = trio.Event()
        self._checked_under: trio.Event | None = None
        self._breaker_since: datetime | None = None
        self._nursery: trio.Nursery | None = None
        self.pacing = pacing_rule(self.config)
        self._rng = rng or random.Random()
        self._next_gap_at: datetime | None = None
        """When the pacing gap after the latest send started here has passed."""
        self._check_lock = trio.Lock()
        self._next_check_at = float("-inf")
        """When (Trio's clock) the next number may be asked of WhatsApp."""

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    # -- the actor -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[OutboundActor] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Send the organization's queue until cancelled."""
        kinds: set[type[Signal]] = {Ack, SessionChanged, Queued, SendingResumed, SettingsChanged}
        # Acks finish sends: a generous buffer, so that a burst is not dropped by the bus.
        with self.bus.listen(org_id=self.org_id, kinds=kinds, buffer=10_000) as signals:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._listen, signals)
                    task_status.started(self)
                    await self._drain()
            finally:
                self._nursery = None
                # The session ends (and this actor is stopped) right after a ban: record it.
                with trio.move_on_after(5, shield=True):
                    await self._pause_if_banned()

    async def _pause_if_banned(self) -> None:
        if self.session.state != "BANNED":
            return
        try:
            # The session recorded why (e.g. "account banned (TOS_BLOCK)") before telling us.
            row = await sessions_repo.get(self.db, organization_id=self.org_id)
            why = (row.last_error if row is not None else None) or "account banned"
            await self._trip(f"WhatsApp banned or restricted the account: {why}")
        except Exception:
            _log.exception("could not record that sending is paused after a ban")

    def _poke(self) -> None:
        self._wake.set()

    async def _nap(self, seconds: float) -> None:
        """Sleep up to `seconds`, or until poked (a send finished, a message was queued, ...)."""
        wake = self._wake
        if not wake.is_set():
            with trio.move_on_after(max(0.0, seconds)):
                await wake.wait()
        self._wake = trio.Event()

    async def _listen(self, signals: trio.MemoryReceiveChannel[Signal]) -> None:
        async for signal in signals:
            match signal:
                case Ack():
                    self._on_ack(signal)
                case SessionChanged(state=state):
                    if state == "BANNED":
                        await self._pause_if_banned()
                    self._poke()
                case SendingResumed():
                    self._breaker_since = self.clock.now()
                    _log.info("sending resumed by an administrator")
                    self._poke()
                case _:  # queued, settings changed
                    self._poke()

    def _on_ack(self, signal: Ack) -> None:
        ack = signal.ack
        flight = self._by_key.get(ids.bare_id(signal.wa_message_id))
        if flight is None or flight.done.is_set():
            return
        if ack >= 1 or ack < 0:
            flight.ack = ack
            flight.done.set()

    async def _drain(self) -> None:
        failures = 0  # consecutive turns that found the database unavailable
        while True:
            try:
                await self._step()
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                failures += 1
                if failures == 1:
                    _log.warning("database unreachable; sending waits", error=str(exc))
                await self._nap(WAIT_BACKOFF.delay(failures))
            else:
                failures = 0

    async def _step(self) -> None:
        """One turn of the loop: at most one message claimed."""
        self.waiting_until = None
        # Every wait of this turn ends by the next expiry, so that it is kept on time.
        poll = await self._expire(self.config.poll_interval_s)
        row = await sessions_repo.get(self.db, organization_id=self.org_id)
        if row is not None and row.sending_paused:
            await self._nap(poll)
            return
        connected = self.session.connected
        page: PageLike | None = self.session.session
        if not connected.is_set() or page is None:
            with trio.move_on_after(poll):
                await connected.wait()
            return
        if self._checked_under is not connected:
            # A fresh connection (or this actor's start): settle sends left in flight first.
            if not await self._settle_interrupted(page):
                await self._nap(poll)  # the page could not answer yet: check again
                return
            self._checked_under = connected
        try:
            settings = await settings_mod.load(self.db, self.org_id)
        except NotFound:
            await self._nap(poll)  # the organization is being deleted
            return
        if len(self._in_flight) >= settings.rate_limiting.concurrency:
            await self._nap(poll)
            return
        now = self.clock.now()
        # Counted before the read: a send that finishes while the read is under way is then
        # counted in flight (and maybe among the sent too), never in neither.
        in_flight = len(self._in_flight)
        sent = await outbox_repo.sent_times_since(self.db, organization_id=self.org_id,
                                                  since=now - DAY)
        limits: tuple[Window, ...] = settings.windows()
        if self.pacing is not None:
            limits += (self.pacing.window(),)
        at = next_send_at(sent, now, in_flight=in_flight, limits=limits)
        if at is None:
            await self._nap(poll)  # sends in flight fill a window: one of them must finish
            return
        if self.pacing is not None:
            gap_at = self._gap_end(sent, settings.rate_limiting.messages_per_minute)
            if gap_at > at and not await self._urgent_due(now):
                at = gap_at
        if at > now:
            self.waiting_until = at
            await self._nap((at - now).total_seconds())
            return
        await self.lease.wait_valid()
        fresh = new_message_id()
        item = await outbox_repo.claim_next(self.db, organization_id=self.org_id,
                                            wa_message_id=fresh, now=now)
        if item is None:
            self.stats.empty_looks += 1
            due = await outbox_repo.next_due_at(self.db, organization_id=self.org_id)
            wait = poll if due is None else min(poll, (due - now).total_seconds())
            # Due but not claimable: another process holds it for the moment.
            await self._nap(wait if wait > 0 else min(poll, 0.1))
            return
        self._publish(item, "SENDING")
        if self.pacing is not None:
            gap = self.pacing.gap(settings.rate_limiting.messages_per_minute, self._rng.random())
            self._next_gap_at = now + gap
        flight = _Flight(item=item, key=item.wa_message_id or fresh,
                         after=self._last_to.get(item.to_phone))
        self._last_to[item.to_phone] = flight
        self._in_flight[item.id] = flight
        self._by_key[flight.key] = flight
        self.stats.max_in_flight = max(self.stats.max_in_flight, len(self._in_flight))
        assert self._nursery is not None
        self._nursery.start_soon(self._send, flight, item.wa_message_id == fresh)

    def _gap_end(self, sent: list[datetime], per_minute: int) -> datetime:
        """When the pacing gap after the previous send ends. After a restart the previous send
        is the latest confirmed one, followed by the shortest gap the pacing allows."""
        assert self.pacing is not None
        if self._next_gap_at is not None:
            return self._next_gap_at
        if not sent:
            return datetime.min.replace(tzinfo=UTC)
        return sent[-1] + self.pacing.gap(per_minute, 1.0)

    async def _urgent_due(self, now: datetime) -> bool:
        """Whether the message to go next is urgent (it skips the pacing gap)."""
        priority = await outbox_repo.next_due_priority(self.db, organization_id=self.org_id,
                                                       now=now)
        return priority is not None and priority >= PRIORITY_URGENT

    # -- one send ------------------------------------------------------------------------------

    async def _send(self, flight: _Flight, fresh: bool) -> None:
        item = flight.item
        try:
            if flight.after is not None:
                # Sends run side by side, but the same number's reach the page in queue order.
                await flight.after.handed.wait()
                flight.after = None
            try:
                outcome = await self._check_number(item) or await self._attempt(flight, fresh)
            except (SessionClosed, BridgeTimeout) as exc:
                # The browser died or hung: the session restarts it; the message is not at fault.
                outcome = _Outcome(sent=False, error=str(exc), interrupted=True)
            except Exception as exc:  # the page failed; the id was not refused
                if database_unavailable(exc):
                    raise
                error = str(exc) if isinstance(exc, BridgeError) else f"{type(exc).__name__}: {exc}"
                outcome = _Outcome(sent=False, error=error)
            if outcome.sent:
                await self._sent(item, flight.key, found=outcome.found)
            else:
                await self._failed(item, outcome)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            # The row stays SENDING; it is settled like an interrupted send once the database
            # answers (never sent twice: its id is looked for in the chat first).
            _log.warning("send outcome not recorded; will be checked", outbox=str(item.id),
                         error=str(exc))
            self._checked_under = None
        finally:
            self._handed(flight)
            self._in_flight.pop(item.id, None)
            if self._by_key.get(flight.key) is flight:
                del self._by_key[flight.key]
            self._poke()

    def _handed(self, flight: _Flight) -> None:
        """`flight` is asked of the page (or ended): the next send to its number may go."""
        flight.handed.set()
        if self._last_to.get(flight.item.to_phone) is flight:
            del self._last_to[flight.item.to_phone]

    async def _attempt(self, flight: _Flight, fresh: bool) -> _Outcome:
        item = flight.item
        page: PageLike | None = self.session.session
        if page is None or not self.session.connected.is_set():
            return _Outcome(sent=False, error="the WhatsApp session is not connected",
                            interrupted=True)
        if not fresh and await self._in_chat(page, item, flight.key):
            # An earlier attempt with this id got through after all.
            return _Outcome(sent=True, found=True)
        if fresh:
            await self._show_typing(page, item)
        timeout = self.config.confirm_timeout_s
        await self.lease.wait_valid()  # fencing: a daemon that lost its lease sends nothing
        with trio.move_on_after(timeout) as scope:
            # Asked of the page now: the next send to this number may follow (the page adds a
            # chat's messages in the order it is asked; the answer can take until the server
            # accepts).
            self._handed(flight)
            info = await page.send_text(ids.user_chat(item.to_phone), item.content,
                                        message_id=flight.key)
            if getattr(info, "already_existed", False):
                return _Outcome(sent=True, found=True)
            await flight.done.wait()
        if scope.cancelled_caught:
            # No confirmation in time. If the page holds the message, WhatsApp Web delivers it
            # by itself; if not, nothing was sent and the attempt failed.
            if await self._in_chat(page, item, flight.key):
                return _Outcome(sent=True)
            return _Outcome(sent=False, error=f"WhatsApp did not confirm the send within "
                                              f"{timeout:g} s", reason=FailReason.NOT_CONFIRMED)
        if flight.ack is not None and flight.ack < 0:
            return _Outcome(sent=False, error="WhatsApp refused the message (ack -1)",
                            new_id=True, reason=FailReason.REFUSED)
        return _Outcome(sent=True)

    async def _check_number(self, item: OutboxItem) -> _Outcome | None:
        """Before the first send to a number the organization has no message with: ask WhatsApp
        whether it exists (paced, the answer kept). An outcome when it does not (or the session
        went away meanwhile); None to go on sending."""
        if not self.config.number_check:
            return None
        if await numbers_repo.known_chat(self.db, organization_id=self.org_id,
                                         wa_chat_id=ids.user_chat(item.to_phone)):
            return None
        known = await self._known_number(item.to_phone)
        if known is None:
            async with self._check_lock:
                # Another send to the same number may have asked while this one waited.
                known = await self._known_number(item.to_phone)
                if known is None:
                    await trio.sleep_until(self._next_check_at)
                    page: PageLike | None = self.session.session
                    if page is None or not self.session.connected.is_set():
                        return _Outcome(sent=False, error="the WhatsApp session is not connected",
                                        interrupted=True)
                    self._next_check_at = (trio.current_time()
                                           + self.config.number_check_interval_s)
                    try:
                        wa_id = await page.number_exists(item.to_phone)
                    except (SessionClosed, BridgeTimeout):
                        raise
                    except Exception as exc:
                        if database_unavailable(exc):
                            raise
                        # Not answered: the send itself will tell.
                        _log.warning("could not ask whether the number uses WhatsApp",
                                     outbox=str(item.id), error=str(exc))
                        return None
                    self.stats.numbers_checked += 1
                    await numbers_repo.store(self.db, organization_id=self.org_id,
                                             phone=item.to_phone, wa_id=wa_id,
                                             at=self.clock.now())
                    if wa_id is None:
                        _log.info("number not on WhatsApp", outbox=str(item.id))
                    return None if wa_id is not None else _not_on_whatsapp(item)
        return None if known.on_whatsapp else _not_on_whatsapp(item)

    async def _known_number(self, phone: str) -> numbers_repo.NumberCheck | None:
        """The kept answer about `phone`, unless it is older than `number_check_ttl_s`."""
        known = await numbers_repo.get(self.db, organization_id=self.org_id, phone=phone)
        ttl = timedelta(seconds=self.config.number_check_ttl_s)
        if known is None or known.checked_at < self.clock.now() - ttl:
            return None
        return known

    async def _show_typing(self, page: PageLike, item: OutboxItem) -> None:
        """"typing..." in the client's chat for a while before the text goes (cosmetic: a page
        that cannot show it does not hold the send back)."""
        seconds = typing_s(self.config, item.content)
        if seconds <= 0:
            return
        try:
            await page.typing(ids.user_chat(item.to_phone), True)
        except (SessionClosed, BridgeTimeout):
            raise
        except Exception as exc:
            _log.debug("typing indicator not shown", error=str(exc))
            return
        self.stats.typing_shown += 1
        await trio.sleep(seconds)

    async def _in_chat(self, page: PageLike, item: OutboxItem, key: str) -> bool:
        """Whether the chat holds the message with key id `key` (sent by an earlier attempt)."""
        if await page.message_exists(ids.serialized_id(ids.user_chat(item.to_phone), key)):
            return True
        # Not among the loaded messages: read the chat's latest pages back to the attempt.
        since = (item.sending_started_at or self.clock.now()) - HISTORY_MARGIN
        chat = ids.user_chat(item.to_phone)
        before: str | None = None
        for _ in range(HISTORY_PAGES):
            try:
                batch = await page.fetch_messages(chat, before=before, limit=50)
            except BridgeError as exc:
                if "no chat" in str(exc):
                    return False  # no chat with that number: nothing was ever sent there
                raise
            if any(m.from_me and ids.bare_id(m.id) == key for m in batch.messages):
                return True
            oldest = min((m.timestamp for m in batch.messages if m.timestamp), default=None)
            if (not batch.messages or batch.next_cursor is None
                    or (oldest is not None and oldest < since.timestamp())):
                return False
            before = batch.next_cursor
        return False

    async def _settle_interrupted(self, page: PageLike) -> bool:
        """Rows left SENDING by an earlier run (or a send whose outcome was not recorded): SENT
        if the chat holds them, else queued again with the same id, to be sent now. False when
        some could not be checked (the page did not answer): nothing may be sent before."""
        settled = True
        for item in await outbox_repo.list_in_flight(self.db, organization_id=self.org_id):
            if item.id in self._in_flight or item.wa_message_id is None:
                continue
            try:
                found = await self._in_chat(page, item, item.wa_message_id)
            except Exception as exc:
                if database_unavailable(exc):
                    raise
                _log.warning("interrupted send not checked yet", outbox=str(item.id),
                             error=str(exc))
                settled = False
                continue
            if found:
                _log.info("interrupted send found in the chat; not sent again",
                          outbox=str(item.id), wa_message_id=item.wa_message_id)
                await self._sent(item, item.wa_message_id, found=True)
                continue
            requeued = await outbox_repo.retry(
                self.db, outbox_id=item.id, not_before=self.clock.now(), count_attempt=False,
                error="interrupted before WhatsApp confirmed it, and not in the chat: "
                      "sending it again")
            if requeued is not None:
                self.stats.requeued += 1
                _log.info("interrupted send not in the chat; queued again", outbox=str(item.id))
                self._publish(requeued, requeued.status)
        return settled

    # -- outcomes ------------------------------------------------------------------------------

    async def _sent(self, item: OutboxItem, key: str, *, found: bool = False) -> None:
        now = self.clock.now()
        chat = ids.user_chat(item.to_phone)
        async with self.db.transaction() as tx:
            # Stored in its conversation unless the inbound actor stored the page's own copy
            # first.
            stored, _ = await messages_repo.insert_if_absent(tx, message=NewMessage(
                organization_id=self.org_id, wa_message_id=ids.serialized_id(chat, key),
                wa_chat_id=chat, direction="OUT", sender=item.sender, sent_at=now,
                status="SENT", body=item.content, conversation_id=item.conversation_id,
                processing_state="DONE"))
            updated = await outbox_repo.mark_sent(tx, outbox_id=item.id, message_id=stored.id,
                                                  at=now)
            if item.conversation_id is not None:
                await conversations_repo.touch(tx, conversation_id=item.conversation_id, at=now)
            if updated is not None:
                await feed.sent(tx, updated, wa_message_id=stored.wa_message_id)
        if found:
            self.stats.found_in_chat += 1
        self.stats.sent += 1
        _log.info("message sent", outbox=str(item.id), attempt=item.attempts,
                  sender=item.sender, agent=item.agent_name, found_in_chat=found)
        if updated is not None:
            self._publish(updated, updated.status)
        self._background(self._announce, item, stored)

    async def _failed(self, item: OutboxItem, outcome: _Outcome) -> None:
        attempt = item.attempts
        if outcome.interrupted:
            # Sent again once the session is back, after looking for it in the chat.
            requeued = await outbox_repo.retry(
                self.db, outbox_id=item.id, error=f"interrupted: {outcome.error}",
                not_before=self.clock.now(), count_attempt=False)
            self.stats.requeued += 1
            _log.warning("send interrupted; queued again", outbox=str(item.id),
                         error=outcome.error)
            if requeued is not None:
                self._publish(requeued, requeued.status)
            return
        if attempt <= self.config.max_retries and not outcome.final:
            delay = retry_delay(attempt, initial_s=self.config.retry_initial_s)
            retried = await outbox_repo.retry(
                self.db, outbox_id=item.id, error=outcome.error,
                not_before=self.clock.now() + timedelta(seconds=delay),
                new_wa_message_id=outcome.new_id)
            self.stats.retried += 1
            _log.warning("send failed; retrying", outbox=str(item.id), attempt=attempt,
                         retry_in_s=delay, error=outcome.error)
            if retried is not None:
                self._publish(retried, retried.status)
            return
        error = outcome.error if outcome.final else \
            f"{outcome.error} (gave up after {attempt} attempts)"
        async with self.db.transaction() as tx:
            failed = await outbox_repo.mark_failed(tx, outbox_id=item.id, error=error,
                                                   reason=outcome.reason)
            if failed is not None:
                await feed.failed(tx, failed, reason=outcome.reason)
        self.stats.failed += 1
        _log.error("send failed for good", outbox=str(item.id), attempts=attempt,
                   reason=outcome.reason, error=outcome.error)
        if failed is not None:
            self._publish(failed, failed.status)
        if outcome.reason in BREAKER_REASONS:
            await self._check_breaker()

    # -- the circuit breaker -------------------------------------------------------------------

    async def _check_breaker(self) -> None:
        ignored = [reason for reason in FailReason if reason not in BREAKER_REASONS]
        failed, total = await outbox_repo.recent_results(
            self.db, organization_id=self.org_id, limit=self.config.breaker_window,
            since=self._breaker_since, ignored=ignored)
        # "More than 2% of the last 100": a share of the window, not of however many sends
        # there are yet, so that one failure among an organization's first sends is no alarm.
        allowed = self.config.breaker_max_failed_ratio * self.config.breaker_window
        if failed > allowed:
            await self._trip(f"{failed} of the latest {total} sends failed (more than "
                             f"{self.config.breaker_max_failed_ratio:.0%} of the last "
                             f"{self.config.breaker_window})")

    async def _trip(self, reason: str) -> None:
        async with self.db.transaction() as tx:
            row = await sessions_repo.get(tx, organization_id=self.org_id, for_update=True)
            if row is not None and row.sending_paused:
                return
            await sessions_repo.set_sending_paused(tx, organization_id=self.org_id, paused=True,
                                                   reason=reason)
            await feed.paused(tx, self.org_id, reason=reason)
        _log.error("sending paused; the queue is kept until an administrator resumes it",
                   reason=reason)
        self.bus.publish(SendingPaused(org_id=self.org_id, reason=reason))

    async def _expire(self, poll: float) -> float:
        """Queued messages whose expiry passed become `EXPIRED` (never sent after). Answers how
        long the actor may wait before looking again: `poll`, or less when a message expires
        sooner."""
        now = self.clock.now()
        async with self.db.transaction() as tx:
            gone = await outbox_repo.expire_due(tx, organization_id=self.org_id, now=now)
            for item in gone:
                await feed.expired(tx, item)
            soonest = await outbox_repo.next_expiry(tx, organization_id=self.org_id)
        for item in gone:
            self.stats.expired += 1
            _log.info("message expired before it was sent", outbox=str(item.id),
                      expires_at=item.expires_at.isoformat() if item.expires_at else None)
            self._publish(item, item.status)
        if soonest is None:
            return poll
        return max(0.05, min(poll, (soonest - now).total_seconds()))

    # -- telling others --------------------------------------------------------------------------

    def _publish(self, item: OutboxItem, status: str) -> None:
        self.bus.publish(outbox_status(item, status))

    def _background(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    async def _announce(self, item: OutboxItem, stored: Any) -> None:
        """`message.sent` on the bus and `wad_message_sent` to plugins (the inbound actor
        leaves wad's own sends to this actor)."""
        try:
            client = (await clients_repo.get(self.db, client_id=item.client_id)
                      if item.client_id is not None else None)
            message = payloads.Message(
                id=stored.id, organization_id=self.org_id, wa_message_id=stored.wa_message_id,
                wa_chat_id=stored.wa_chat_id, direction="OUT", sender=stored.sender,
                sent_at=stored.sent_at, status=stored.status, type=stored.type,
                body=stored.body, caption=stored.caption,
                conversation_id=stored.conversation_id, client_id=item.client_id,
                language=stored.language, send_id=item.id)
            self.bus.publish(MessageSent(org_id=self.org_id, message=message))
            if self.pm is None:
                return
            client_out = None if client is None else payloads.Client(
                id=client.id, organization_id=client.organization_id, phone=client.phone,
                name=client.name, push_name=client.push_name, saved_name=client.saved_name,
                preferred_language=client.preferred_language, status=client.status,
                metadata=dict(client.metadata))
            await plugin_calls.notify(self.pm, "wad_message_sent", message=message,
                                      client=client_out)
        except Exception:
            _log.exception("announcing a sent message failed", outbox=str(item.id))

