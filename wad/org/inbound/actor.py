"""The inbound channel actor: turns one organization's browser events into stored messages,
clients, conversations, statuses and agent replies (SPEC section 3).

Order of work for a message event:

1. **Store first.** The `messages` row is inserted (once per WhatsApp id) before anything else;
   own messages typed on the phone are stored as outgoing, sender HUMAN (AI or HUMAN when wad's
   own queue sent them). Groups, status broadcasts and channels are left alone unless configured.
   Acks, edits and revokes update the stored row.
2. **Then process**, after a random delay (and, while any organization floods, once the
   flood is stored: `wad.org.inbound.priority`), each chat's messages in order: client by phone
   (E.164), the active conversation and its `last_message_at`, the client's name and the country
   of the number, the message's language and the client's preferred language (from the
   conversation), status detection through the plugins (history written for each change), the
   agent hook (a reply goes into the outbound queue with priority 5, sender AI and a random
   delay), notifications. `processing_state` records the outcome; a restart resumes every message
   still `PENDING`. A processing attempt that fails (or takes longer than `processing_timeout_s`)
   is tried again with backoff (`wad.supervise.Backoff`: `processing_retry_initial_s`, doubling
   up to `processing_retry_max_s`); the attempt that reaches `processing_max_attempts` parks
   the message: `FAILED` with its error, published as `message.processing_failed` (metrics,
   `wad status`). While the database is unreachable nothing is counted: the message stays
   `PENDING` and is resumed when it answers. No message stays `PENDING` for good.
3. **Enrichment** (contact card, profile picture) runs beside it, paced per organization.

Nothing is lost: on every (re)connect the actor catches up on each chat with activity since the
last stored message; while the database is unreachable, events wait in a bounded spool backed by
a file (`wad.org.inbound.spool`) and are written, in order and once, when it is back.
"""

from __future__ import annotations

import functools
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import msgspec
import trio

from wad import language, log, payloads
from wad import plugins as plugin_calls
from wad.browser import events as ev
from wad.browser.events import ChatInfo
from wad.bus import (
    Ack,
    AgentReplyQueued,
    ClientStatusChanged,
    MessageEdited,
    MessageReceived,
    MessageSent,
    MessageStatusChanged,
    MessageStored,
    ProcessingFailed,
    Queued,
    SessionChanged,
)
from wad.config import InboundSettings, inbound_settings
from wad.db.coalesce import Coalesced
from wad.db.models import Client, Message, MessageStatus, NewMessage
from wad.db.pool import database_unavailable
from wad.db.repo import changes
from wad.db.repo import clients as clients_repo
from wad.db.repo import conversations as conversations_repo
from wad.db.repo import messages as messages_repo
from wad.db.repo import outbox as outbox_repo
from wad.db.repo import sessions as sessions_repo
from wad.org.context import OrgContext
from wad.org.inbound.enrich import Enricher, EnrichJob, Profile
from wad.org.inbound.pacing import RequestPacer
from wad.org.inbound.spool import Spool, SpooledEvent, SpoolRecord, spool_path
from wad.supervise import Backoff, ChildSpec, Restart
from wad.whatsapp import chats, ids, names
from wad.whatsapp import messages as parse

_log = log.get("inbound")

LANE_IDLE_S = 30.0
"""A chat's processing lane ends after this long without work (a new message starts it again)."""
LANE_BUFFER = 10_000
RESUME_BATCH = 1000
STORE_BATCH = 500
"""Events stored together at most (those that queued up while the previous batch was stored)."""
PHONES_KEPT = 20_000
"""Chats whose phone number is remembered (forgotten all at once beyond this)."""
GUESSES_KEPT = 20_000
"""Language guesses kept for texts of pending messages (forgotten all at once beyond this)."""
NOTICE_BUFFER = 1000
"""Plugin notifications from the storing path waiting for the notifier task."""

def inbound_actor(ctx: OrgContext, *, settings: InboundSettings | None = None,
                  rng: random.Random | None = None) -> ChildSpec:
    """The organization's inbound actor as a supervised child (a fresh actor on every start).
    `settings` default to the daemon's `inbound` settings; tests pass their own (with
    `functools.partial`)."""
    return ChildSpec("inbound", functools.partial(run_inbound, ctx, settings=settings, rng=rng),
                     restart=Restart.PERMANENT, shutdown=ctx.settings.graces.inbound_s)


async def run_inbound(ctx: OrgContext, *, settings: InboundSettings | None = None,
                      rng: random.Random | None = None,
                      task_status: trio.TaskStatus[InboundActor] = trio.TASK_STATUS_IGNORED
                      ) -> None:
    """Run a new `InboundActor` for the organization until cancelled."""
    await InboundActor(ctx, settings=settings, rng=rng).run(task_status=task_status)


@dataclass(frozen=True)
class _Work:
    message_id: uuid.UUID
    due: float
    push_name: str | None = None


InboundCount = Literal[
    "stored", "duplicates", "ignored", "spooled", "replayed", "processed",
    "failed",  # failed processing attempts (each one retried, or parked)
    "parked", "caught_up", "catch_ups", "replies",
    "store_batches",  # batches of events stored together (one statement a run of messages)
    "finish_batches",  # transactions that finished the processing of messages together
]
"""What an inbound actor counts over its life (for logs, benchmarks and tests): every one a
plain count, so `InboundActor.stats` is a `Counter` of these names (0 for one not seen yet)."""


class InboundActor:
    """One organization's inbound channel. Start with `nursery.start(actor.run)`."""

    def __init__(self, ctx: OrgContext, *, settings: InboundSettings | None = None,
                 rng: random.Random | None = None) -> None:
        self.ctx = ctx
        self.org_id = ctx.org_id
        self.db = ctx.db
        self.bus = ctx.bus
        self.pm = ctx.plugins
        self.cfg = settings or inbound_settings(ctx.settings)
        self.rng = rng or random.Random()
        self.stats: Counter[InboundCount] = Counter()
        self.spool = Spool(spool_path(ctx.settings.state_path.absolute(), ctx.org_id),
                           max_events=self.cfg.spool_max_events)
        self.enricher = Enricher(
            pacer=RequestPacer(per_window=self.cfg.enrichment_per_minute, window_s=60.0,
                               pause_min_s=self.cfg.enrichment_pause_min_s,
                               pause_max_s=self.cfg.enrichment_pause_max_s, rng=self.rng),
            session=self._live_session, save=self._save_profile)
        self._nursery: trio.Nursery | None = None
        self._lanes: dict[str, trio.MemorySendChannel[_Work]] = {}
        self._queued: set[uuid.UUID] = set()
        self._retrying: set[uuid.UUID] = set()
        """Messages waiting out their backoff before the next processing attempt."""
        self._retry_backoff = Backoff(initial=self.cfg.processing_retry_initial_s,
                                      max=self.cfg.processing_retry_max_s)
        self._chats = trio.CapacityLimiter(self.cfg.max_concurrent_chats)
        self._spool_wakeup = trio.Event()
        self._resume_wanted = trio.Event()
        self._backlog_low = trio.Event()
        self._db_down_since: float | None = None
        self._notices, self._notices_out = trio.open_memory_channel[tuple[str, dict[str, Any]]](
            NOTICE_BUFFER)
        self._get_step = Coalesced(self._get_many)
        self._client_step = Coalesced(self._clients_many)
        self._conversation_step = Coalesced(self._conversations_many)
        self._window_step = Coalesced(self._windows_many)
        self._finish_step = Coalesced(self._finish_many)
        self._detect_step = Coalesced(self._detect_many)
        self._phones: dict[str, str | None] = {}
        self._guessed: dict[tuple[uuid.UUID, str], payloads.LanguageGuess] = {}
        """Language guesses of pending messages' texts (see `_guesses`)."""

    # -- the actor -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[InboundActor] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Store and process the session's events until cancelled."""
        self.spool.load()  # a small file, read once at start
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for step in (self._get_step, self._client_step, self._conversation_step,
                         self._window_step, self._finish_step, self._detect_step):
                nursery.start_soon(step.run)
            nursery.start_soon(self._drain_spool)
            nursery.start_soon(self._resume_loop)
            await nursery.start(self.enricher.run)
            nursery.start_soon(self._catch_up_loop)
            nursery.start_soon(self._notify_loop)
            nursery.start_soon(self._store_loop)
            task_status.started(self)

    # -- 1. storing ----------------------------------------------------------------------------

    async def _store_loop(self) -> None:
        """Store the session's events as they come: whatever queued up meanwhile is taken
        together (at most `STORE_BATCH`), its messages inserted in one statement."""
        receive = self.ctx.inbound_events
        async for first in receive:
            batch = [first]
            while len(batch) < STORE_BATCH:
                try:
                    batch.append(receive.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            self.ctx.store_first.taken(self.org_id, len(batch))
            await self._store_batch(batch)

    async def _store_batch(self, batch: Sequence[Any]) -> None:
        """Store a batch of the session's events, or spool it while the database is away."""
        now = time.time()
        records = [SpoolRecord(at=now, event=event) for event in batch
                   if isinstance(event, SpooledEvent)]
        if not records:
            return
        if self.spool:
            # Events already wait for the database: these go behind them, in order.
            await self._to_spool(records)
            return
        self.stats["store_batches"] += 1
        if not await self._stored(records):
            # The whole batch waits (storing is idempotent: what was written before the
            # failure is not stored twice when the spool writes it again).
            await self._to_spool(records)

    async def _stored(self, records: Sequence[SpoolRecord]) -> bool:
        """Store RECORDS (`_apply_all`); False, with the outage noted, when the database is
        unreachable (any other error is raised)."""
        try:
            await self._apply_all(records)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            self._note_db_down(exc)
            return False
        return True

    async def _apply_all(self, records: Sequence[SpoolRecord]) -> None:
        """Store events in order, each run of messages in one statement. An event that fails
        for another reason than the database being unreachable is logged and skipped (the
        batch is applied again one event at a time to find it); an unreachable database
        raises."""
        try:
            await self._apply_batch(records)
            return
        except Exception as exc:
            if database_unavailable(exc):
                raise
            if len(records) == 1:
                _log.exception("event could not be stored; skipped",
                               kind=type(records[0].event).__name__)
                return
        for record in records:
            try:
                await self._apply(record)
            except Exception as exc:
                if database_unavailable(exc):
                    raise
                _log.exception("event could not be stored; skipped",
                               kind=type(record.event).__name__)

    async def _apply_batch(self, records: Sequence[SpoolRecord]) -> None:
        """Apply events in order; consecutive messages are stored together."""
        run: list[ev.Message] = []
        for record in records:
            match record.event:
                case ev.MessageReceived(message=m) | ev.OwnMessage(message=m):
                    run.append(m)
                    continue
            if run:
                await self._store_messages(run)
                run = []
            await self._apply(record)
        if run:
            await self._store_messages(run)

    async def _notify_later(self, hook: str, **kwargs: Any) -> None:
        """Queue a plugin notification (waits only when the queue is full: backpressure)."""
        if self.pm is not None:
            await self._notices.send((hook, kwargs))

    async def _notify_loop(self) -> None:
        async for hook, kwargs in self._notices_out:
            if self.pm is not None:
                await plugin_calls.notify(self.pm, hook, **kwargs)

    async def _to_spool(self, records: Sequence[SpoolRecord]) -> None:
        await self.spool.append_many(records)
        self.stats["spooled"] += len(records)
        self._spool_wakeup.set()

    def _note_db_down(self, exc: BaseException) -> None:
        if self._db_down_since is None:
            self._db_down_since = trio.current_time()
            _log.warning("database unreachable; events wait in the spool", error=str(exc),
                         spool=str(self.spool.path))

    async def _drain_spool(self) -> None:
        """Write spooled events to the database, oldest first (in batches of at most
        `STORE_BATCH`), as soon as it answers."""
        while True:
            records = self.spool.peek_many(STORE_BATCH)
            if not records:
                await self._spool_wakeup.wait()
                self._spool_wakeup = trio.Event()
                continue
            if not await self._stored(records):
                await trio.sleep(self.cfg.db_retry_s)
                continue
            await self.spool.pop_many(len(records))
            self.stats["replayed"] += len(records)
            if not self.spool:
                down = (trio.current_time() - self._db_down_since
                        if self._db_down_since is not None else 0.0)
                _log.info("spool written to the database", events=self.stats["replayed"],
                          down_s=round(down, 1))
                self._db_down_since = None
                self._resume_wanted.set()

    async def _apply(self, record: SpoolRecord) -> None:
        """Store one event (idempotent: applying it twice changes nothing more)."""
        match record.event:
            case ev.MessageReceived(message=m) | ev.OwnMessage(message=m):
                await self._store_messages([m])
            case ev.AckChanged() as ack:
                await self._apply_ack(ack)
            case ev.MessageEdited() as edit:
                await self._apply_edit(edit, datetime.fromtimestamp(record.at, UTC))
            case ev.MessageRevoked() as revoke:
                await self._apply_revoke(revoke)

    def _keep(self, m: ev.Message) -> bool:
        cfg = self.cfg
        return not parse.is_ignored(m, groups=cfg.store_groups, status=cfg.store_status,
                                    newsletters=cfg.store_newsletters)

    async def _store_messages(self, batch: Sequence[ev.Message]) -> int:
        """Store what is not stored yet and schedule its processing; answers how many were new."""
        kept = [m for m in batch if self._keep(m)]
        self.stats["ignored"] += len(batch) - len(kept)
        if not kept:
            return 0
        own = [wa for m in kept if m.from_me for wa in (m.id, ids.bare_id(m.id))]
        senders = await outbox_repo.senders(self.db, organization_id=self.org_id, wa_ids=own)
        rows: list[NewMessage] = []
        push_names: dict[str, str | None] = {}
        for m in kept:
            queued = senders.get(m.id) or senders.get(ids.bare_id(m.id))
            row = parse.new_message(self.org_id, m, sender=queued[0] if queued else None)
            if self._phone_of_chat(m.chat_id) is None and not ids.is_lid(m.chat_id):
                # A group (or broadcast, or channel) stored on request: there is no client.
                row = msgspec.structs.replace(row, processing_state="SKIPPED")
            rows.append(row)
            push_names[m.id] = None if m.from_me else m.push_name
        if len(rows) == 1:
            stored, created = await messages_repo.insert_if_absent(self.db, message=rows[0])
            new = [stored] if created else []
        else:
            new = sorted(await messages_repo.insert_many(self.db, messages=rows),
                         key=lambda r: (r.sent_at, r.created_at))
        self.stats["stored"] += len(new)
        self.stats["duplicates"] += len(rows) - len(new)
        for stored_row in new:
            self.bus.publish(MessageStored(
                org_id=self.org_id, id=str(stored_row.id),
                wa_message_id=stored_row.wa_message_id, wa_chat_id=stored_row.wa_chat_id,
                direction=stored_row.direction, sender=stored_row.sender, type=stored_row.type))
            if stored_row.processing_state == "PENDING":
                self._schedule(stored_row, delay=self._processing_delay(),
                               push_name=push_names.get(stored_row.wa_message_id))
        return len(new)

    def _phone_of_chat(self, chat_id: str) -> str | None:
        """`ids.phone_from_chat_id`, remembered (parsing a number is the costliest part of
        storing a message; a chat's messages come many at a time)."""
        if chat_id not in self._phones:
            if len(self._phones) >= PHONES_KEPT:
                self._phones.clear()
            self._phones[chat_id] = ids.phone_from_chat_id(chat_id)
        return self._phones[chat_id]

    async def _apply_ack(self, ack: ev.AckChanged) -> None:
        status = parse.ack_status(ack.ack)
        if status is None or not ack.from_me:
            return  # incoming messages' acks are our own read receipts
        # The message's status, the queue's row and the feed's entry change together.
        send_id: uuid.UUID | None = None
        async with self.db.transaction() as tx:
            before = await messages_repo.status_of(tx, organization_id=self.org_id,
                                                   wa_message_id=ack.id)
            row = await messages_repo.update_status(tx, organization_id=self.org_id,
                                                    wa_message_id=ack.id, status=status)
            queued = _OUTBOX_STATUS.get(status)
            if queued is not None:
                # wad's own sends: the queue's row follows the same acks. The outbound actor
                # records the bare key id; the serialized form is tried too.
                for wa_id in dict.fromkeys((ids.bare_id(ack.id), ack.id)):
                    if item := await outbox_repo.apply_ack(tx, organization_id=self.org_id,
                                                           wa_message_id=wa_id, status=queued):
                        send_id = item.id
                        break
            if row is not None:
                if send_id is None:
                    send_id = await changes.send_of(tx, organization_id=self.org_id,
                                                    wa_ids=[ids.bare_id(ack.id), ack.id])
                await changes.record(tx, organization_id=self.org_id, kind="message.status",
                                     data=changes.message_status_data(row, before=before,
                                                                      send_id=send_id))
        self.bus.signal(Ack(org_id=self.org_id, wa_message_id=ack.id, wa_chat_id=ack.chat_id,
                            ack=ack.ack, status=status, changed=row is not None))
        if row is not None:
            await self._status_changed(row, before, send_id=send_id)

    async def _apply_edit(self, edit: ev.MessageEdited, at: datetime) -> None:
        async with self.db.transaction() as tx:
            if edit.body:
                row = await messages_repo.edit(tx, organization_id=self.org_id,
                                               wa_message_id=edit.id, body=edit.body,
                                               edited_at=at)
            else:
                row = await messages_repo.edit_caption(tx, organization_id=self.org_id,
                                                       wa_message_id=edit.id,
                                                       caption=edit.caption, edited_at=at)
            if row is not None:
                await changes.record(tx, organization_id=self.org_id, kind="message.edited",
                                     data=changes.message_data(row))
        if row is not None:
            self.bus.publish(MessageEdited(org_id=self.org_id, id=str(row.id),
                                           wa_message_id=row.wa_message_id))

    async def _apply_revoke(self, revoke: ev.MessageRevoked) -> None:
        async with self.db.transaction() as tx:
            before = await messages_repo.status_of(tx, organization_id=self.org_id,
                                                   wa_message_id=revoke.id)
            row = await messages_repo.revoke(tx, organization_id=self.org_id,
                                             wa_message_id=revoke.id)
            if row is not None:
                await changes.record(tx, organization_id=self.org_id, kind="message.revoked",
                                     data=changes.message_status_data(row, before=before))
        if row is not None:
            await self._status_changed(row, before)

    async def _status_changed(self, row: Message, before: MessageStatus | None, *,
                              send_id: uuid.UUID | None = None) -> None:
        change = payloads.MessageStatusChange(
            organization_id=self.org_id, message=message_payload(row, send_id=send_id),
            from_status=before,
            to_status=row.status, at=datetime.now(UTC))
        self.bus.publish(MessageStatusChanged(org_id=self.org_id, change=change))
        # Told from a task of its own: a slow plugin must not hold up storing.
        await self._notify_later("wad_message_status_changed", change=change)

    # -- 2. processing -------------------------------------------------------------------------

    def _processing_delay(self) -> float:
        return self.rng.uniform(self.cfg.processing_delay_min_s, self.cfg.processing_delay_max_s)

    def _schedule(self, row: Message, *, delay: float, push_name: str | None = None) -> None:
        """Queue a stored message for processing in its chat's lane (chats run in parallel,
        a chat's messages one after another)."""
        if row.id in self._queued or self._nursery is None:
            return
        work = _Work(message_id=row.id, due=trio.current_time() + delay, push_name=push_name)
        lane = self._lanes.get(row.wa_chat_id)
        if lane is None:
            lane, receive = trio.open_memory_channel[_Work](LANE_BUFFER)
            self._lanes[row.wa_chat_id] = lane
            self._nursery.start_soon(self._lane, row.wa_chat_id, lane, receive)
        try:
            lane.send_nowait(work)
        except trio.WouldBlock:
            self._resume_wanted.set()  # picked up again from the database later
            return
        self._queued.add(row.id)

    async def _lane(self, chat: str, send: trio.MemorySendChannel[_Work],
                    receive: trio.MemoryReceiveChannel[_Work]) -> None:
        while True:
            work: _Work | None = None
            with trio.move_on_after(LANE_IDLE_S):
                work = await receive.receive()
            if work is None:
                # Idle: close the lane. Nothing can have been sent since the timeout fired
                # (no checkpoint in between), so no work is left behind.
                if self._lanes.get(chat) is send:
                    del self._lanes[chat]
                return
            try:
                await trio.sleep_until(work.due)
                await self.ctx.store_first.turn()  # a flood is stored before it is processed
                async with self._chats:
                    await self._process_safely(work)
            finally:
                self._queued.discard(work.message_id)
                if len(self._queued) <= RESUME_BATCH // 2:
                    self._backlog_low.set()

    async def _process_safely(self, work: _Work) -> None:
        try:
            with trio.fail_after(self.cfg.processing_timeout_s):
                await self._process(work)
        except Exception as exc:
            if database_unavailable(exc):
                # Still PENDING in the database: resumed once the database answers again.
                self._note_db_down(exc)
                self._resume_wanted.set()
                return
            if isinstance(exc, trio.TooSlowError):
                error = f"processing took longer than {self.cfg.processing_timeout_s:g} s"
            else:
                error = f"{type(exc).__name__}: {exc}"
            try:
                await self._failed_attempt(work, error[:1000], exc)
            except Exception as again:
                if database_unavailable(again):
                    self._resume_wanted.set()
                else:
                    _log.exception("processing failure could not be recorded",
                                   message=str(work.message_id))

    async def _failed_attempt(self, work: _Work, error: str, exc: Exception) -> None:
        """Count the failed attempt; retry after the backoff, or park the message."""
        self.stats["failed"] += 1
        row = await messages_repo.record_processing_failure(
            self.db, message_id=work.message_id, error=error,
            max_attempts=self.cfg.processing_max_attempts)
        if row is None:
            return  # no longer pending (processed meanwhile by an earlier run)
        parked = row.processing_state == "FAILED"
        delay = None if parked else self._retry_backoff.delay(row.processing_attempts)
        if parked:
            self.stats["parked"] += 1
            _log.error("message processing failed repeatedly; parked", message=str(row.id),
                       attempts=row.processing_attempts, error=error,
                       exc_info=(type(exc), exc, exc.__traceback__))
        else:
            _log.warning("message processing failed; will retry", message=str(row.id),
                         attempts=row.processing_attempts, retry_in_s=delay, error=error)
            self._retry_later(row, delay or 0.0, work.push_name)
        self.bus.publish(ProcessingFailed(
            org_id=self.org_id, id=str(row.id), wa_message_id=row.wa_message_id,
            attempts=row.processing_attempts, error=error, parked=parked, retry_in_s=delay))

    def _retry_later(self, row: Message, delay: float, push_name: str | None) -> None:
        """Process the message again after `delay` (the chat's other messages go on)."""
        if self._nursery is None or row.id in self._retrying:
            return
        self._retrying.add(row.id)

        async def retry() -> None:
            try:
                await trio.sleep(delay)
            finally:
                self._retrying.discard(row.id)
            self._schedule(row, delay=0.0, push_name=push_name)

        self._nursery.start_soon(retry)

    async def _resume_loop(self) -> None:
        """Process what earlier runs stored but did not finish; again whenever the database was
        unreachable in between."""
        while True:
            try:
                count = await self._resume_once()
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                self._note_db_down(exc)
                await trio.sleep(self.cfg.db_retry_s)
                continue
            if not self.spool:
                self._db_down_since = None  # answering again (the spool says so itself)
            if count >= RESUME_BATCH:
                # More may be waiting behind this batch: read again once it is under way.
                if len(self._queued) > RESUME_BATCH // 2:
                    self._backlog_low = trio.Event()
                    await self._backlog_low.wait()
                continue
            await self._resume_wanted.wait()
            self._resume_wanted = trio.Event()
            await trio.sleep(self.cfg.db_retry_s)

    async def _resume_once(self) -> int:
        rows = await messages_repo.list_unprocessed(self.db, organization_id=self.org_id,
                                                    limit=RESUME_BATCH)
        fresh = [row for row in rows if row.id not in self._queued
                 and row.id not in self._retrying]
        for row in fresh:
            if row.processing_attempts:
                # Failed before (in an earlier run too): the backoff holds across restarts.
                self._retry_later(row, self._retry_backoff.delay(row.processing_attempts), None)
            else:
                self._schedule(row, delay=0.0)
        if fresh:
            _log.info("resuming unprocessed messages", count=len(fresh))
        return len(rows) if fresh else 0  # only retries waiting: nothing more to read now

    async def _process(self, work: _Work) -> None:
        message = await self._get_step(work.message_id)
        if message is None or message.processing_state != "PENDING":
            return
        phone = self._phone_of_chat(message.wa_chat_id)
        if phone is None and ids.is_lid(message.wa_chat_id):
            phone = await self._phone_of_lid(message.wa_chat_id)
        if phone is None:
            await messages_repo.set_processing_state(
                self.db, message_id=message.id, state="SKIPPED",
                error=f"no phone number for chat {message.wa_chat_id}")
            return
        incoming = message.direction == "IN"
        # Each step below is shared with the other chats' messages processed meanwhile (one
        # statement for all of them: `wad.db.coalesce`).
        client, created = await self._client_step(
            (phone, work.push_name if incoming else None))
        conversation_id = await self._conversation_step((client.id, message.wa_chat_id))
        # The message joins the conversation (in the database when it is done, below).
        message = msgspec.structs.replace(message, conversation_id=conversation_id,
                                          processing_error=None)
        if created:
            _log.info("new client", client=str(client.id), country=phone[:4])
        window = [m for m in await self._window_step(conversation_id) if m.id != message.id]
        window = sorted([*window, message], key=lambda m: m.sent_at)[
            -self.cfg.conversation_window:]
        if all(m.id != message.id for m in window):
            window.append(message)  # older than the window (a retry): still decided on

        # Language: the message's, and the client's from their side of the conversation.
        message_language, preferred = await self._languages(message, window)
        if message_language is not None:
            message = msgspec.structs.replace(message, language=message_language)
            window = [message if m.id == message.id else m for m in window]
        client = await self._update_client(client, message, phone=phone, preferred=preferred)
        if "enriched_at" not in client.metadata:
            self.enricher.submit(EnrichJob(client_id=client.id, wid=message.wa_chat_id))

        from_queue = False
        if not incoming:
            queued = await outbox_repo.senders(
                self.db, organization_id=self.org_id,
                wa_ids=[message.wa_message_id, ids.bare_id(message.wa_message_id)])
            from_queue = bool(queued)

        client = await self._detect_status(client, window)
        if incoming:
            await self._ask_agent(message, client, window)

        message_out = message_payload(message, client_id=client.id)
        client_out = client_payload(client)
        if incoming:
            self.bus.publish(MessageReceived(org_id=self.org_id, message=message_out))
            if self.pm is not None:
                await plugin_calls.notify(self.pm, "wad_message_received", message=message_out,
                                          client=client_out)
        elif not from_queue:
            # Typed on the phone; sends from wad's own queue are announced by the outbound actor.
            self.bus.publish(MessageSent(org_id=self.org_id, message=message_out))
            if self.pm is not None:
                await plugin_calls.notify(self.pm, "wad_message_sent", message=message_out,
                                          client=client_out)
        # Processed, and in the feed (`message.stored`), at once: a crash before this point
        # processes the message again, and the feed has it exactly once.
        await self._finish_step((message, conversation_id, message_language, client.id))
        self.stats["processed"] += 1

    # The batched forms of the processing steps (each answers one result per argument).

    async def _get_many(self, message_ids: Sequence[uuid.UUID]) -> list[Message | None]:
        found = await messages_repo.get_many(self.db, message_ids=message_ids)
        return [found.get(i) for i in message_ids]

    async def _clients_many(self, entries: Sequence[tuple[str, str | None]]
                            ) -> list[tuple[Client, bool]]:
        found = await clients_repo.upsert_many(self.db, organization_id=self.org_id,
                                               entries=entries)
        # A phone asked for twice in one batch was created once: the first asker made it.
        first: set[str] = set()
        answers = []
        for phone, _ in entries:
            client, created = found[phone]
            answers.append((client, created and phone not in first))
            first.add(phone)
        return answers

    async def _conversations_many(self, chats: Sequence[tuple[uuid.UUID, str]]
                                  ) -> list[uuid.UUID]:
        found = await conversations_repo.active_for_many(
            self.db, organization_id=self.org_id, chats=list(chats))
        return [found[client_id] for client_id, _ in chats]

    async def _windows_many(self, conversation_ids: Sequence[uuid.UUID]
                            ) -> list[list[Message]]:
        found = await messages_repo.windows(self.db, conversation_ids=conversation_ids,
                                            limit=self.cfg.conversation_window)
        return [found[c] for c in conversation_ids]

    async def _finish_many(self, done: Sequence[tuple[Message, uuid.UUID, str | None,
                                                      uuid.UUID]]) -> list[None]:
        """Processed (`DONE`, in its conversation, whose `last_message_at` follows) and in the
        feed as `message.stored`, in one call."""
        self.stats["finish_batches"] += 1
        await messages_repo.finish_processing(
            self.db, organization_id=self.org_id,
            done=[(m.id, conversation_id, lang, client_id)
                  for m, conversation_id, lang, client_id in done])
        return [None] * len(done)

    async def _phone_of_lid(self, wid: str) -> str | None:
        """A `@lid` chat hides the number; the contact card may still have it."""
        session = self.ctx.session.session
        if session is None:
            return None
        try:
            await self.enricher.pacer.wait()  # an extra request like enrichment's: same budget
            contact = await session.get_contact(wid)  # type: ignore[attr-defined]
        except Exception as exc:
            _log.warning("contact of a hidden-number chat not found", chat=wid, error=str(exc))
            return None
        number = getattr(contact, "number", None)
        return ids.phone_from_chat_id(ids.user_chat(number)) if number else None

    async def _languages(self, message: Message, window: Sequence[Message]
                         ) -> tuple[str | None, str | None]:
        """(the message's language, the client's preferred language), either None when the
        texts are too short to tell. Messages processed before keep the language they were
        given; only the others are detected (in one batch, off the event loop)."""
        def text(m: Message) -> str:
            return m.body or m.caption or ""

        theirs = [m for m in window if m.direction == "IN" and text(m)]
        fresh = [m for m in theirs if m.id == message.id or m.processing_state == "PENDING"]
        if message.direction == "OUT" and text(message):
            fresh.append(message)
        guesses = await self._guesses([(m.id, text(m)) for m in fresh]) if fresh else {}
        mine = guesses[message.id].language if message.id in guesses else None
        known = [guesses.get(m.id) or payloads.LanguageGuess(language=m.language,
                                                             probability=1.0 if m.language
                                                             else 0.0)
                 for m in theirs]
        preferred = language.conversation_language([text(m) for m in theirs], known).language \
            if theirs else None
        return mine, preferred

    async def _guesses(self, texts: list[tuple[uuid.UUID, str]]
                       ) -> dict[uuid.UUID, payloads.LanguageGuess]:
        """Message id -> the language of its text. A text is detected once while its message is
        pending (a burst puts the same pending messages in many windows), and the texts that
        processing asks for meanwhile are detected together."""
        known = {key: self._guessed[key] for key in texts if key in self._guessed}
        unknown = [key for key in dict.fromkeys(texts) if key not in known]
        if unknown:
            found = dict(zip(unknown, await self._detect_step(tuple(t for _, t in unknown)),
                             strict=True))
            if len(self._guessed) + len(found) > GUESSES_KEPT:
                self._guessed.clear()
            self._guessed.update(found)
            known.update(found)
        return {i: known[(i, t)] for i, t in texts}

    async def _detect_many(self, batches: Sequence[tuple[str, ...]]
                           ) -> list[list[payloads.LanguageGuess]]:
        """One detection for the texts of many processing steps."""
        texts = list(dict.fromkeys(t for batch in batches for t in batch))
        found = dict(zip(texts, await self._detect(texts), strict=True))
        return [[found[t] for t in batch] for batch in batches]

    async def _detect(self, texts: list[str]) -> list[payloads.LanguageGuess]:
        if self.pm is not None:
            return await plugin_calls.detect_languages(self.pm, texts,
                                                       languages=self.cfg.languages)
        return await language.detect_async(texts, self.cfg.languages)

    async def _update_client(self, client: Client, message: Message, *, phone: str,
                             preferred: str | None) -> Client:
        """Name (saved, else push, else given in a message), country and region of the number,
        preferred language."""
        metadata: dict[str, Any] = {}
        if "country" not in client.metadata:
            metadata.update(parse.number_context(phone))
        given = names.given_name(message.body or "") if message.direction == "IN" else None
        if given and client.metadata.get("given_name") != given:
            metadata["given_name"] = given
        best = client.saved_name or client.push_name or client.metadata.get("given_name")
        if (not metadata and (not best or best == client.name)
                and (not preferred or preferred == client.preferred_language)):
            return client  # nothing to change: no call
        return await clients_repo.update_derived(
            self.db, client_id=client.id, metadata=metadata,
            preferred_language=preferred) or client

    async def _detect_status(self, client: Client, window: Sequence[Message]) -> Client:
        if self.pm is None:
            return client
        decision = await plugin_calls.detect_status(
            self.pm, client=client_payload(client),
            messages=[message_payload(m, client_id=client.id) for m in window],
            current_status=client.status)
        if decision is None or decision.status == client.status:
            return client
        change = await clients_repo.set_status(
            self.db, client_id=client.id, status=decision.status, detector=decision.detector,
            reason=decision.reason or None)
        if change is None:
            return client
        client = await clients_repo.get(self.db, client_id=client.id) or client
        _log.info("client status changed", client=str(client.id), status=change.to_status,
                  previous=change.from_status, detector=change.detector)
        out = payloads.ClientStatusChange(
            organization_id=self.org_id, client=client_payload(client),
            from_status=change.from_status, to_status=change.to_status,
            detector=change.detector, reason=change.reason, at=change.created_at)
        self.bus.publish(ClientStatusChanged(org_id=self.org_id, change=out))
        await plugin_calls.notify(self.pm, "wad_client_status_changed", change=out)
        return client

    async def _ask_agent(self, message: Message, client: Client,
                         window: Sequence[Message]) -> None:
        if self.pm is None or not plugin_calls.has_agents(self.pm):
            return  # no agent to ask: not even whether the client wrote again
        if await messages_repo.has_later(self.db, message=message):
            return  # the client wrote again (or someone answered): reply to the latest only
        reply = await plugin_calls.agent_reply(
            self.pm, message=message_payload(message, client_id=client.id),
            client=client_payload(client),
            conversation=[message_payload(m, client_id=client.id) for m in window])
        if reply is None:
            return
        delay = self.rng.uniform(self.cfg.reply_delay_min_s, self.cfg.reply_delay_max_s)
        item, created = await outbox_repo.enqueue(
            self.db, organization_id=self.org_id, to_phone=client.phone, content=reply.text,
            priority=5, sender="AI", agent_name=reply.agent,
            # Processing again after a crash must not queue a second reply.
            idempotency_key=f"agent-reply:{message.id}", client_id=client.id,
            conversation_id=message.conversation_id,
            not_before=datetime.now(UTC) + timedelta(seconds=delay))
        if created:
            self.stats["replies"] += 1
            _log.info("agent reply queued", agent=reply.agent, outbox=str(item.id),
                      delay_s=round(delay, 2))
            self.bus.publish(AgentReplyQueued(
                org_id=self.org_id, outbox_id=str(item.id), message_id=str(message.id),
                agent=reply.agent, not_before=item.not_before.isoformat()))
            self.bus.signal(Queued(org_id=self.org_id, count=1))  # wakes the sender

    # -- 3. enrichment -------------------------------------------------------------------------

    async def _live_session(self) -> Any:
        """The browser session once it is connected (waits across browser restarts)."""
        while True:
            connected = self.ctx.session.connected
            await connected.wait()
            session = self.ctx.session.session
            if session is not None and self.ctx.session.connected is connected:
                return session
            await trio.sleep(0.1)

    async def _save_profile(self, job: EnrichJob, profile: Profile) -> None:
        # Without the contact card the client is looked up again (`Enricher`): not enriched yet.
        final = profile.contact_ok or job.last
        metadata: dict[str, Any] = {"enriched_at": datetime.now(UTC).isoformat()} if final else {}
        if profile.is_business is not None:
            metadata["is_business"] = profile.is_business
        if profile.verified_name:
            metadata["verified_name"] = profile.verified_name
        # One transaction: nobody sees `enriched_at` without the names it came with.
        async with self.db.transaction() as tx:
            client = await clients_repo.merge_metadata(tx, client_id=job.client_id,
                                                       metadata=metadata)
            if client is None:
                return
            saved = profile.saved_name or client.saved_name
            push = profile.push_name or client.push_name
            best = saved or push or client.metadata.get("given_name") or client.name
            await clients_repo.update_profile(
                tx, client_id=client.id, saved_name=profile.saved_name,
                push_name=profile.push_name, profile_picture_url=profile.picture_url,
                name=best if best != client.name else None)

    # -- 4. catch-up ---------------------------------------------------------------------------

    async def _catch_up_loop(self) -> None:
        """Catch up when the session is connected now, and again on every (re)connect."""
        with self.bus.listen(org_id=self.org_id, kinds={SessionChanged}, buffer=64) as changes:
            if self.ctx.session.connected.is_set():
                await self._catch_up_safely()
            async for change in changes:
                if isinstance(change, SessionChanged) and change.state == "CONNECTED":
                    await self._catch_up_safely()

    async def _catch_up_safely(self) -> None:
        """Catch up, waiting out a database outage as long as the session stays connected."""
        connected = self.ctx.session.connected
        while True:
            try:
                await self.catch_up()
                return
            except Exception as exc:
                if not database_unavailable(exc):
                    _log.warning("catch-up failed", error=f"{type(exc).__name__}: {exc}")
                    return
                self._note_db_down(exc)
            await trio.sleep(self.cfg.db_retry_s)
            if self.ctx.session.connected is not connected or not connected.is_set():
                return  # the next connect catches up again

    async def catch_up(self) -> int:
        """Store what arrived in each chat since the last stored message (while wad was away or
        its events were lost). Answers how many messages were new."""
        session: Any = self.ctx.session.session
        if session is None:
            return 0
        latest = await messages_repo.latest_per_chat(self.db, organization_id=self.org_id)
        if latest:
            watermark = max(chat.sent_at for chat in latest.values())
        else:
            # Nothing stored yet: what arrived since the login was linked is this
            # organization's traffic (the daemon may have died before storing it); the earlier
            # history is `wad import`'s work.
            row = await sessions_repo.get(self.db, organization_id=self.org_id)
            if row is None or row.link_started_at is None:
                return 0
            watermark = row.link_started_at
        chats: list[ChatInfo] = await session.list_chats()
        started = trio.current_time()
        new = scanned = 0
        for chat in chats:
            if not self._chat_wanted(chat):
                continue
            stored = latest.get(chat.id)
            since = int((stored.sent_at if stored else watermark).timestamp())
            if chat.t and chat.t < since:
                continue  # no activity since the last message we have
            scanned += 1
            missing = await self._fetch_since(session, chat.id, since,
                                              stored.wa_message_id if stored else None)
            if missing:
                new += await self._store_messages(missing)
        self.stats["catch_ups"] += 1
        self.stats["caught_up"] += new
        _log.info("catch-up done", chats=len(chats), scanned=scanned, new=new,
                  seconds=round(trio.current_time() - started, 2))
        return new

    def _chat_wanted(self, chat: ChatInfo) -> bool:
        return chats.is_stored(chats.chat_kind(chat.id, is_group=chat.is_group),
                               groups=self.cfg.store_groups, status=self.cfg.store_status,
                               newsletters=self.cfg.store_newsletters)

    async def _fetch_since(self, session: Any, chat_id: str, since: int,
                           stored_id: str | None) -> list[ev.Message]:
        """The chat's messages newer than the stored one (or than `since`), oldest first."""
        found: list[ev.Message] = []
        before: str | None = None
        for _page in range(self.cfg.catch_up_max_pages):
            page = await session.fetch_messages(chat_id, before=before,
                                                limit=self.cfg.catch_up_page_size)
            reached = False
            for m in reversed(page.messages):
                if m.id == stored_id or (m.timestamp and m.timestamp < since):
                    reached = True
                    break
                found.append(m)
            if reached or not page.messages or page.next_cursor is None:
                break
            before = page.next_cursor
        found.reverse()
        return found


_OUTBOX_STATUS: dict[MessageStatus, Any] = {
    "SENT": "SENT", "DELIVERED": "DELIVERED", "READ": "READ", "PLAYED": "READ",
    "FAILED": "FAILED",
}


def message_payload(row: Message, *, client_id: uuid.UUID | None = None,
                    send_id: uuid.UUID | None = None) -> payloads.Message:
    """A stored message as plugins see it (`send_id`: the queue item it was sent from)."""
    return payloads.Message(
        id=row.id, organization_id=row.organization_id, wa_message_id=row.wa_message_id,
        wa_chat_id=row.wa_chat_id, direction=row.direction, sender=row.sender,
        sent_at=row.sent_at, status=row.status, type=row.type, body=row.body,
        caption=row.caption, conversation_id=row.conversation_id, client_id=client_id,
        language=row.language, send_id=send_id)


def client_payload(row: Client) -> payloads.Client:
    """A stored client as plugins see it."""
    return payloads.Client(
        id=row.id, organization_id=row.organization_id, phone=row.phone, name=row.name,
        push_name=row.push_name, saved_name=row.saved_name,
        preferred_language=row.preferred_language, status=row.status,
        metadata=dict(row.metadata))
