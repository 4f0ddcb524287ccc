"""The import engine: chats from a source become clients, conversations, messages and status
history, each chat all or nothing, with the progress kept in `import_runs`.

For each one-to-one chat (groups and broadcasts are skipped and counted; `limit` keeps the most
recent chats):

1. Duplicates are decided per message (`wad.importer.duplicates`): by WhatsApp id, and for
   messages read from exports by their content key, so the same chat imported live and from
   an export is stored once. A client already in the CRM (one who wrote today, say) still gets
   every earlier message it lacks. With `skip_duplicates` (the default) a chat with nothing
   new leaves its client as it is; without it the client is updated all the same.
2. Each message's language is detected (the `wad_detect_language` plugins, one batch per chat),
   and the client's preferred language from their side of the conversation as a whole
   (`wad.language.conversation_language`), as the inbound channel does.
3. The client's name: the saved name, else the push name, else a name they gave in a message
   (`wad.whatsapp.names`). The status: the `wad_detect_status` plugins over the latest messages.
4. Together (the chats fetched at one time, up to a few hundred messages, share one
   transaction, each chat under a savepoint): the client, the country of the number, the
   active conversation, the messages (one bulk insert that skips those already stored; they
   are stored as processed, so the inbound channel never answers old messages), the status
   change with its history row, and the chat recorded as done in the run. An interrupted
   import therefore never leaves half a chat, and a rerun resumes exactly after the last chat
   written. Chats are fetched ahead (paced as before) while earlier ones are processed,
   languages are detected for all the chats at hand in one batch, in a worker thread, and a
   batch is written while the next one is detected (a number in both waits for the write).

A failure in one chat is recorded with its reason and the import goes on. Cancellation (Ctrl-C,
`DELETE /api/whatsapp/import/{org}`) ends the run as `INTERRUPTED`; running again resumes it.
Only one import of an organization runs at a time (a PostgreSQL advisory lock). A dry run does
all the reading and detecting and writes nothing at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import trio

from wad import language, log, payloads
from wad import plugins as plugin_calls
from wad.config import DEFAULT_LANGUAGES
from wad.db.models import Client, ImportRun, NewMessage
from wad.db.pool import Connection, Database, Executor, database_unavailable
from wad.db.repo import clients as clients_repo
from wad.db.repo import conversations as conversations_repo
from wad.db.repo import imports as imports_repo
from wad.db.repo import locks
from wad.db.repo import messages as messages_repo
from wad.db.repo import organizations as orgs_repo
from wad.db.repo import outbox as outbox_repo
from wad.errors import WadError
from wad.importer.duplicates import split_new
from wad.importer.options import ImportOptions
from wad.importer.report import UNKNOWN_LANGUAGE, ChatError, ImportReport, Progress
from wad.importer.sources import ChatFailed, ChatRef, ChatSource, LoadedChat, SourceGone
from wad.supervise import describe, first_leaf
from wad.whatsapp import ids, names
from wad.whatsapp import messages as parse

_log = log.get("import")

INSERT_BATCH = 1000
"""Messages per bulk insert (a long chat is written in several, in one transaction)."""
PREFETCH_CHATS = 4
"""Chats fetched ahead of the one being written."""
BATCH_MESSAGES = 400
"""Messages whose languages are detected in one call (the chats fetched already, up to this)."""
STATUS_WINDOW = 30
"""The latest messages of a chat that status detection reads (as the inbound channel does)."""
IMPORT_LOCK_CLASS = 0x57414449
"""First key of the per-organization import lock ("WADI"); the second is from the org id."""
_PAYLOAD_IDS = uuid.UUID("0c8e3a51-6f0b-4f4e-9b1e-2a6d8c1f5e77")


@dataclass
class _Fetched:
    """A chat as the fetching task hands it over: loaded, or the error that stopped it."""

    ref: ChatRef
    chat: LoadedChat | None
    error: Exception | None = None


@dataclass
class _Prepared:
    """A chat with something to write: its client (if known), rows, and which are new."""

    chat: LoadedChat
    existing: Client | None
    known: bool
    rows: list[NewMessage]
    fresh: set[str]


@dataclass
class _Ready:
    """A chat detected and decided, ready to be written."""

    ref: ChatRef
    prepared: _Prepared
    rows: list[NewMessage]
    """The whole conversation read, with languages."""
    preferred: str | None
    name: str | None
    given: str | None
    decision: payloads.StatusDecision | None
    final: str

    @property
    def new_rows(self) -> list[NewMessage]:
        return [r for r in self.rows if r.wa_message_id in self.prepared.fresh]


@dataclass
class _Outcome:
    """What writing one chat did, counted once its transaction is committed."""

    known: bool
    new: int
    raced: int
    status: str
    language: str | None


class ImportBusy(WadError):
    """Another import of this organization is running."""


def import_lock_key(organization_id: uuid.UUID) -> int:
    """The second key of the organization's import lock (a signed 32-bit int)."""
    return int.from_bytes(organization_id.bytes[:4], "big", signed=True)


ProgressCallback = Callable[[ImportReport], None]


class Importer:
    """One import of one organization from one source. `await run()` answers the final report;
    `progress.report()` is the live one (also after a cancellation)."""

    def __init__(self, *, db: Database, organization_id: uuid.UUID, source: ChatSource,
                 options: ImportOptions, pm: plugin_calls.PluginManager | None,
                 languages: Sequence[str] = DEFAULT_LANGUAGES, window: int = STATUS_WINDOW,
                 on_progress: ProgressCallback | None = None) -> None:
        self.db = db
        self.organization_id = organization_id
        self.source = source
        self.options = options
        self.pm = pm
        self.languages = list(languages)
        self.window = window
        self.on_progress = on_progress
        self.progress = Progress(organization_id=organization_id, source=source.name,
                                 dry_run=options.dry_run)
        self.run_row: ImportRun | None = None
        # A dry run writes nothing, so it remembers what it would have written: a later chat
        # of the same number is then a duplicate, as it would be in a real run.
        self._dry_clients: set[str] = set()
        self._dry_rows: dict[str, list[tuple[str, str | None]]] = {}

    # -- the run -------------------------------------------------------------------------------

    async def run(self) -> ImportReport:
        """Import every chat; answers the final report. A chat's failure is reported and the
        import goes on; a lost source (the session closed) ends it `INTERRUPTED`, an error of
        the database or a bug `FAILED`; cancellation ends it `INTERRUPTED` and re-raises."""
        if self.options.dry_run:
            return await self._guarded()
        async with self.db.dedicated() as lock:
            held = await locks.try_lock_pair(lock, class_id=IMPORT_LOCK_CLASS,
                                             key=import_lock_key(self.organization_id))
            if not held:
                raise ImportBusy(f"an import of organization {self.organization_id} is running "
                                 "already; wait for it or stop it first")
            return await self._guarded()

    async def _guarded(self) -> ImportReport:
        ending: tuple[Any, str | None] = ("COMPLETED", None)
        try:
            await self._run()
        except* trio.Cancelled:
            await self._end("INTERRUPTED", "stopped before the end (run again to resume)")
            raise
        except* SourceGone as gone:
            ending = ("INTERRUPTED", str(first_leaf(gone)))
        except* Exception as failed:  # after SourceGone: a failure beside it wins
            _log.exception("import failed", source=self.source.name)
            ending = ("FAILED", describe(failed))
        await self._end(*ending)
        return self.progress.report()

    async def _end(self, state: Any, reason: str | None) -> None:
        progress = self.progress
        progress.state = state
        progress.reason = reason
        progress.current_chat = None
        progress.requests = self.source.requests
        progress.finished_at = trio.current_time()
        progress.finished_wall = datetime.now(UTC)
        if self.run_row is not None:
            with trio.move_on_after(10, shield=True):
                try:
                    await imports_repo.finish(self.db, run_id=self.run_row.id, status=state)
                except Exception as exc:
                    _log.warning("could not record the end of the import", error=str(exc))
        report = progress.report()
        _log.info("import ended", state=state, reason=reason, chats=report.chats_total,
                  imported=report.chats_imported, duplicates=report.chats_duplicate,
                  failed=report.chats_failed, messages=report.messages_stored,
                  seconds=report.seconds, requests=report.requests)
        self._notify()

    def _notify(self) -> None:
        self.progress.requests = self.source.requests
        if self.on_progress is not None:
            self.on_progress(self.progress.report())

    async def _begin(self) -> set[str]:
        """Create the run, or resume the latest unfinished one of this source; answers the
        chats it has done already."""
        if self.options.dry_run:
            return set()
        latest = await imports_repo.latest(self.db, organization_id=self.organization_id,
                                           source=self.source.name)
        if latest is not None and latest.status != "COMPLETED":
            # Interrupted, failed, or left RUNNING by a process that died (we hold the lock,
            # so nobody runs it): carry on where it stopped.
            self.run_row = await imports_repo.resume(self.db, run_id=latest.id) or latest
            self.progress.resumed = True
            self.progress.messages_stored = latest.messages_stored
            _log.info("resuming import", run=str(latest.id), done=latest.chats_done)
        else:
            self.run_row = await imports_repo.create(
                self.db, organization_id=self.organization_id, source=self.source.name,
                options=self.options.stored())
        self.progress.run_id = self.run_row.id
        return set(self.run_row.done_chats)

    async def _run(self) -> None:
        progress = self.progress
        org = await orgs_repo.get(self.db, organization_id=self.organization_id)
        progress.organization_name = org.name if org is not None else None
        done_before = await self._begin()
        progress.state = "LISTING"
        self._notify()
        refs = await self.source.list_chats()
        progress.chats_found = len(refs)
        progress.groups_skipped = sum(r.kind == "group" for r in refs)
        progress.broadcasts_skipped = sum(r.kind == "broadcast" for r in refs)
        chats = [r for r in refs if r.kind == "chat"]
        if self.options.limit is not None:
            chats = chats[: self.options.limit]
        progress.chats_total = len(chats)
        if self.run_row is not None:
            await imports_repo.set_total(self.db, run_id=self.run_row.id,
                                         chats_total=len(chats))
        progress.state = "RUNNING"
        self._notify()
        todo = [ref for ref in chats if ref.key not in done_before]
        progress.chats_resumed = len(chats) - len(todo)
        # Chats are fetched one after the other (the pacer spaces the requests) while the ones
        # fetched already are detected and written: with pacing off, the two overlap.
        # A batch is detected (languages, status: worker threads) while the one before it is
        # written (the database's own process), so those overlap too.
        send, receive = trio.open_memory_channel[_Fetched](PREFETCH_CHATS)
        to_write, writing = trio.open_memory_channel[tuple[list[_Ready], trio.Event]](0)
        # The numbers of the last batch handed to the writer (only it can be unwritten yet,
        # as the writer takes a batch when it has written the one before), and its end.
        last: tuple[set[str], trio.Event] | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._fetch_all, todo, send)
            nursery.start_soon(self._write_all, writing)
            async with receive, to_write:
                async for first in receive:
                    batch = [first]
                    while sum(len(f.chat.rows) for f in batch if f.chat) < BATCH_MESSAGES:
                        try:
                            batch.append(receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    phones = {f.chat.phone for f in batch if f.chat is not None}
                    if last is not None and phones & last[0]:
                        # A number of this batch may be being written: its stored messages and
                        # its client are read after that write.
                        await last[1].wait()
                    work = await self._detect(batch)
                    if work:
                        last = ({item.prepared.chat.phone for item in work}, trio.Event())
                        await to_write.send((work, last[1]))

    async def _write_all(self, writing: trio.MemoryReceiveChannel[tuple[list[_Ready],
                                                                        trio.Event]]) -> None:
        """Write each detected batch, in order (see `_write_work`), and tell when it is."""
        async with writing:
            async for work, written in writing:
                await self._write_work(work)
                written.set()

    async def _fetch_all(self, refs: Sequence[ChatRef],
                         send: trio.MemorySendChannel[_Fetched]) -> None:
        """Load each chat from the source, in order, into `send`; a failure goes along with its
        chat (the consumer reports it in order), and a lost source ends the fetching."""
        async with send:
            for ref in refs:
                began = trio.current_time()
                try:
                    fetched = _Fetched(ref, await self.source.load(ref, self.organization_id))
                except Exception as exc:
                    fetched = _Fetched(ref, None, exc)
                self.progress.timings["fetching"] += trio.current_time() - began
                await send.send(fetched)
                if isinstance(fetched.error, SourceGone):
                    return

    async def _detect(self, batch: list[_Fetched]) -> list[_Ready]:
        """A few chats fetched already: duplicates checked per chat, languages detected for all
        of them in one batch (in a worker thread), then each chat's status; answers the chats
        to write (failures and duplicates are counted here)."""
        ready: list[tuple[ChatRef, _Prepared]] = []
        for fetched in batch:
            if fetched.error is not None:
                await self._fail(fetched.ref, fetched.error)
                self.progress.done_now += 1
                continue
            assert fetched.chat is not None
            try:
                prepared = await self._prepare(fetched.chat)
            except Exception as exc:
                await self._fail(fetched.ref, exc)
                prepared = None
            if prepared is None:
                self.progress.done_now += 1
                self._notify()
            else:
                ready.append((fetched.ref, prepared))
        began = trio.current_time()
        detected = await self._languages([p.rows for _, p in ready])
        self.progress.timings["languages"] += trio.current_time() - began
        began = trio.current_time()
        work = [await self._decide(ref, prepared, rows, preferred)
                for (ref, prepared), (rows, preferred) in zip(ready, detected, strict=True)]
        self.progress.timings["status"] += trio.current_time() - began
        return work

    async def _write_work(self, work: list[_Ready]) -> None:
        """Write a detected batch: in one transaction, or chat by chat if that fails; in a dry
        run, only count what would be written."""
        if self.options.dry_run:
            for item in work:
                self.progress.current_chat = item.ref.key
                self._done(await self._import_chat(None, item))
            return
        # The batch's chats in one transaction (one commit for a few hundred messages): first
        # all of them at once (a few statements, the messages by COPY); if that fails, again
        # chat by chat, each under a savepoint, so that one chat's failure loses only that
        # chat. The counters move once it is committed.
        done: list[_Outcome] = []
        failed: list[tuple[ChatRef, Exception]] = []
        began = trio.current_time()
        async with self.db.transaction() as tx:
            if work:
                self.progress.current_chat = work[-1].ref.key
                self._notify()
                await tx.execute("SAVEPOINT import_batch")
                try:
                    done = await self._write_batch(tx, work)
                except Exception as exc:
                    if database_unavailable(exc):
                        raise
                    await tx.execute("ROLLBACK TO SAVEPOINT import_batch")
                    _log.info("batch write failed; writing chat by chat", error=str(exc))
                    done = []
                    await self._write_each(tx, work, done, failed)
                else:
                    await tx.execute("RELEASE SAVEPOINT import_batch")
        self.progress.timings["writing"] += trio.current_time() - began
        for outcome in done:
            self._done(outcome)
        for ref, error in failed:
            await self._fail(ref, error)
            self.progress.done_now += 1
            self._notify()

    async def _write_each(self, tx: Executor, work: list[_Ready], done: list[_Outcome],
                          failed: list[tuple[ChatRef, Exception]]) -> None:
        """Write the chats one at a time, each under a savepoint."""
        for item in work:
            self.progress.current_chat = item.ref.key
            self._notify()
            await tx.execute("SAVEPOINT import_chat")
            try:
                done.append(await self._import_chat(tx, item))
            except Exception as exc:
                if database_unavailable(exc):
                    raise
                await tx.execute("ROLLBACK TO SAVEPOINT import_chat")
                failed.append((item.ref, exc))
            else:
                await tx.execute("RELEASE SAVEPOINT import_chat")

    def _done(self, outcome: _Outcome) -> None:
        """Count a chat written (or, in a dry run, that would be)."""
        progress = self.progress
        progress.chats_imported += 1
        if not outcome.known:
            progress.clients_created += 1
        else:
            progress.clients_updated += 1
        progress.messages_stored += outcome.new
        progress.messages_now += outcome.new
        progress.messages_duplicate += outcome.raced  # stored meanwhile (live)
        progress.statuses[outcome.status] += 1
        progress.languages[outcome.language or UNKNOWN_LANGUAGE] += 1
        progress.done_now += 1
        self._notify()

    async def _fail(self, ref: ChatRef, exc: BaseException) -> None:
        """Report a chat that could not be imported; re-raise what ends the whole import."""
        if isinstance(exc, SourceGone) or not isinstance(exc, Exception) \
                or database_unavailable(exc):
            raise exc  # the session is gone, or nothing can be written: stop (a rerun resumes)
        reason = str(exc) if isinstance(exc, ChatFailed) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, ChatFailed):
            _log.error("chat could not be imported", chat=ref.key, error=reason,
                       exc_info=exc)
        else:
            _log.warning("chat could not be imported", chat=ref.key, reason=reason)
        self.progress.chats_failed += 1
        self.progress.errors.append(ChatError(chat=ref.key, error=reason[:1000]))
        if self.run_row is not None:
            await imports_repo.record_chat(self.db, run_id=self.run_row.id,
                                           wa_chat_id=ref.key, messages_stored=0,
                                           duplicates=0, error=reason[:1000])

    # -- one chat ------------------------------------------------------------------------------

    async def _prepare(self, chat: LoadedChat) -> _Prepared | None:
        """The chat's messages split into new and stored ones (`wad.importer.duplicates`); None
        when it has nothing new and its client is left as it is (recorded as a duplicate)."""
        progress = self.progress
        progress.warnings.extend(chat.problems)
        existing = await clients_repo.get_by_phone(
            self.db, organization_id=self.organization_id, phone=chat.phone)
        known = existing is not None or chat.phone in self._dry_clients
        rows = _unique(chat.rows)
        stored = await messages_repo.stored_in_chat(
            self.db, organization_id=self.organization_id, wa_chat_id=chat.wa_chat_id)
        if self.options.dry_run:
            stored += self._dry_rows.get(chat.wa_chat_id, [])
        new_rows, duplicates = split_new(rows, stored)
        progress.messages_duplicate += duplicates
        if not new_rows and known and self.options.skip_duplicates:
            progress.chats_duplicate += 1
            if self.run_row is not None:
                await imports_repo.record_chat(self.db, run_id=self.run_row.id,
                                               wa_chat_id=chat.key, messages_stored=0,
                                               duplicates=1)
            return None
        return _Prepared(chat=chat, existing=existing, known=known, rows=rows,
                         fresh={r.wa_message_id for r in new_rows})

    async def _decide(self, ref: ChatRef, prepared: _Prepared, rows: list[NewMessage],
                      preferred: str | None) -> _Ready:
        """The client's name and status for a chat whose rows carry their languages (the whole
        conversation, stored part included: status and language read all of it)."""
        chat, existing = prepared.chat, prepared.existing
        given = None
        for row in rows:
            if row.direction == "IN" and row.body:
                given = names.given_name(row.body) or given
        name = chat.saved_name or chat.push_name or given
        decision = await self._status(existing, chat, rows, name=name, preferred=preferred)
        current = existing.status if existing is not None else "NEW_LEAD"
        final = decision.status if decision is not None else current
        return _Ready(ref=ref, prepared=prepared, rows=rows, preferred=preferred, name=name,
                      given=given, decision=decision, final=final)

    async def _import_chat(self, tx: Executor | None, item: _Ready) -> _Outcome:
        """The write of one chat (in `tx`; None in a dry run)."""
        chat, new_rows = item.prepared.chat, item.new_rows
        if tx is None:
            new = len(new_rows)
            self._dry_clients.add(chat.phone)
            self._dry_rows.setdefault(chat.wa_chat_id, []).extend(
                (r.wa_message_id, messages_repo.content_key(r)) for r in new_rows)
        else:
            assert self.run_row is not None
            new = await self._write(tx, chat, new_rows, name=item.name, given=item.given,
                                    preferred=item.preferred, decision=item.decision)
            await imports_repo.record_chat(tx, run_id=self.run_row.id, wa_chat_id=chat.key,
                                           messages_stored=new, duplicates=0)
        return _Outcome(known=item.prepared.known, new=new, raced=len(new_rows) - new,
                        status=item.final, language=item.preferred)

    async def _write_batch(self, tx: Connection, work: list[_Ready]) -> list[_Outcome]:
        """Everything of several chats in a few statements, inside the caller's transaction
        (the same rows `_write` writes chat by chat); answers each chat's outcome. Raises
        ValueError when two chats are of one number (then they are written one by one)."""
        assert self.run_row is not None
        org = self.organization_id
        profiles = []
        for item in work:
            chat, existing = item.prepared.chat, item.prepared.existing
            profiles.append(clients_repo.ImportedProfile(
                phone=chat.phone, name=item.name, push_name=chat.push_name,
                saved_name=chat.saved_name, preferred_language=item.preferred,
                country=parse.number_context(chat.phone)
                if existing is None or "country" not in existing.metadata else {},
                given_name=item.given))
        clients = await clients_repo.upsert_imported(tx, organization_id=org,
                                                     profiles=profiles)
        chats = [(clients[item.prepared.chat.phone][0].id, item.prepared.chat.wa_chat_id)
                 for item in work]
        conversations = await conversations_repo.active_for_many(tx, organization_id=org,
                                                                 chats=chats)
        own = [wa for item in work for r in item.new_rows if r.direction == "OUT"
               for wa in (r.wa_message_id, ids.bare_id(r.wa_message_id))]
        senders = await outbox_repo.senders(tx, organization_id=org, wa_ids=own)
        ready: list[NewMessage] = []
        latest: list[tuple[uuid.UUID, datetime]] = []
        for item, (client_id, _) in zip(work, chats, strict=True):
            conversation = conversations[client_id]
            rows = [_ready_row(row, conversation, senders) for row in item.new_rows]
            ready += rows
            if rows:
                latest.append((conversation, max(r.sent_at for r in rows)))
        new = await messages_repo.copy_new(tx, messages=ready)
        await conversations_repo.touch_many(tx, latest=latest)
        await clients_repo.set_statuses(tx, changes=[
            (clients[item.prepared.chat.phone][0].id, item.decision.status,
             item.decision.detector or "import", item.decision.reason or None)
            for item in work if item.decision is not None
            and item.decision.status != clients[item.prepared.chat.phone][0].status])
        outcomes = []
        done = []
        for item in work:
            stored = sum(r.wa_message_id in new for r in item.new_rows)
            done.append((item.prepared.chat.key, stored))
            outcomes.append(_Outcome(known=item.prepared.known, new=stored,
                                     raced=len(item.new_rows) - stored, status=item.final,
                                     language=item.preferred))
        await imports_repo.record_chats(tx, run_id=self.run_row.id, done=done)
        return outcomes

    async def _languages(self, chats: Sequence[list[NewMessage]]
                         ) -> list[tuple[list[NewMessage], str | None]]:
        """For each chat: its rows with their language, and the client's preferred language
        (from their own messages), each None when the texts are too short to tell. One
        detection call for all the chats' texts (the plugins run it in a worker thread)."""
        texts = [[r.body or r.caption or "" for r in rows] for rows in chats]
        wanted = [(c, i) for c, chat_texts in enumerate(texts)
                  for i, text in enumerate(chat_texts) if text.strip()]
        batch = [texts[c][i] for c, i in wanted]
        if not batch:
            guesses = []
        elif self.pm is not None:
            guesses = await plugin_calls.detect_languages(self.pm, batch,
                                                          languages=self.languages)
        else:
            guesses = await language.detect_async(batch, self.languages)
        by_row = dict(zip(wanted, guesses, strict=True))
        out = []
        for c, rows in enumerate(chats):
            with_lang = [msgspec.structs.replace(r, language=by_row[c, i].language)
                         if (c, i) in by_row else r for i, r in enumerate(rows)]
            theirs = [i for i, r in enumerate(rows) if (c, i) in by_row and r.direction == "IN"]
            preferred = language.conversation_language(
                [texts[c][i] for i in theirs], [by_row[c, i] for i in theirs]).language \
                if theirs else None
            out.append((with_lang, preferred))
        return out

    async def _status(self, existing: Client | None, chat: LoadedChat, rows: list[NewMessage],
                      *, name: str | None, preferred: str | None
                      ) -> payloads.StatusDecision | None:
        if self.pm is None or not rows:
            return None
        client = payloads.Client(
            id=existing.id if existing else uuid.uuid5(_PAYLOAD_IDS, chat.phone),
            organization_id=self.organization_id, phone=chat.phone, name=name,
            push_name=chat.push_name, saved_name=chat.saved_name,
            preferred_language=preferred or (existing.preferred_language if existing else None),
            status=existing.status if existing else "NEW_LEAD",
            metadata=dict(existing.metadata) if existing else {})
        window = [_payload(r, client.id) for r in rows[-self.window:]]
        return await plugin_calls.detect_status(self.pm, client=client, messages=window,
                                                current_status=client.status)

    async def _write(self, tx: Executor, chat: LoadedChat, rows: list[NewMessage], *,
                     name: str | None, given: str | None, preferred: str | None,
                     decision: payloads.StatusDecision | None) -> int:
        """Everything of one chat, inside the caller's transaction; answers the new messages."""
        org = self.organization_id
        client, _created = await clients_repo.upsert(tx, organization_id=org, phone=chat.phone,
                                                     name=name, push_name=chat.push_name)
        if chat.saved_name or (preferred and preferred != client.preferred_language):
            client = await clients_repo.update_profile(
                tx, client_id=client.id, saved_name=chat.saved_name,
                preferred_language=preferred) or client
        metadata: dict[str, Any] = {}
        if "country" not in client.metadata:
            metadata.update(parse.number_context(chat.phone))
        if given and client.metadata.get("given_name") != given:
            metadata["given_name"] = given
        if metadata:
            client = await clients_repo.merge_metadata(
                tx, client_id=client.id, metadata=metadata) or client
        conversation, _ = await conversations_repo.get_or_create_active(
            tx, organization_id=org, client_id=client.id, wa_chat_id=chat.wa_chat_id)
        own = [wa for r in rows if r.direction == "OUT"
               for wa in (r.wa_message_id, ids.bare_id(r.wa_message_id))]
        senders = await outbox_repo.senders(tx, organization_id=org, wa_ids=own)
        ready = [_ready_row(row, conversation.id, senders) for row in rows]
        new = 0
        for start in range(0, len(ready), INSERT_BATCH):
            new += len(await messages_repo.insert_many(
                tx, messages=ready[start:start + INSERT_BATCH]))
        if ready:
            await conversations_repo.touch(tx, conversation_id=conversation.id,
                                           at=max(r.sent_at for r in ready))
        if decision is not None and decision.status != client.status:
            await clients_repo.set_status(tx, client_id=client.id, status=decision.status,
                                          detector=decision.detector or "import",
                                          reason=decision.reason or None)
        return new


def _unique(rows: Sequence[NewMessage]) -> list[NewMessage]:
    """Rows without repeated WhatsApp ids (the first kept), in order."""
    seen: set[str] = set()
    out = []
    for row in rows:
        if row.wa_message_id not in seen:
            seen.add(row.wa_message_id)
            out.append(row)
    return out


def _ready_row(row: NewMessage, conversation_id: uuid.UUID,
               senders: dict[str, tuple[Any, str | None]]) -> NewMessage:
    """A new message as stored by an import: in its conversation, processed already, and ours
    with the sender that queued it (an agent, a human through the API) when wad sent it."""
    queued = senders.get(row.wa_message_id) or senders.get(ids.bare_id(row.wa_message_id))
    return msgspec.structs.replace(
        row, conversation_id=conversation_id, processing_state="DONE",
        sender=queued[0] if queued and row.direction == "OUT" else row.sender)


def _payload(row: NewMessage, client_id: uuid.UUID) -> payloads.Message:
    """A row not stored yet, as status detectors see messages."""
    return payloads.Message(
        id=uuid.uuid5(_PAYLOAD_IDS, f"{row.organization_id}:{row.wa_message_id}"),
        organization_id=row.organization_id, wa_message_id=row.wa_message_id,
        wa_chat_id=row.wa_chat_id, direction=row.direction, sender=row.sender,
        sent_at=row.sent_at, status=row.status, type=row.type, body=row.body,
        caption=row.caption, client_id=client_id, language=row.language)
