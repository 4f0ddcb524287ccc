"""The browser session actor: one organization's WhatsApp Web session, kept alive.

It restores the login from the database archive when the profile folder is missing, opens the
page through the browser driver, turns the bridge's events into the session state machine of
SPEC section 1 (persisted in `whatsapp_sessions` and published on the bus), checks the page's
health, and reconnects with exponential backoff when the browser or the page fails.

Outcomes, by what the page says:
- phone unlinked the device (logout): `LOGGED_OUT`, the profile moved to the trash folder;
- `CONFLICT` (opened on another computer): take over after a delay when configured, else `ERROR`;
- `TOS_BLOCK` (ban): `BANNED`, no retries; `DEPRECATED_VERSION`: `ERROR` with that reason;
- a page build that lacks what the bridge relies on (`PageIncompatible`): `ERROR` naming the
  build and what is missing, published as `session.incompatible`, no retries;
- a hung page or a page that never loads: the browser is restarted after 1 s, 2 s, 4 s ...
  (capped), and after the configured number of attempts the session is `ERROR`;
- a crashed browser or page: the actor exits with `BrowserCrashed` and its supervisor restarts
  it (with the supervisor's backoff and intensity limit).
The attempt count starts again once the session has been `CONNECTED`.

The database is never a reason to close the page: while it is unavailable, the actor's writes
wait and retry (`wad.db.pool.when_available`). State changes are published at once and written
later, in the order they happened and with the time they happened; login archives wait for it;
the page's message events go to the inbound actor's spool meanwhile.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import trio

from wad import log
from wad.browser import events as ev
from wad.browser import profile as archive
from wad.bus import EventBus, SessionChanged, SessionIncompatible, SessionStatus
from wad.config import Settings
from wad.db.models import SessionState
from wad.db.pool import Database, database_unavailable, when_available
from wad.db.repo import sessions as sessions_repo
from wad.errors import WadError
from wad.org import health
from wad.org.ownership import Lease
from wad.supervise import Backoff, describe, first_leaf

_log = log.get("session")

ARCHIVE_AFTER_CONNECT_S = 3.0
"""Delay between reaching CONNECTED and the first archive of the run (lets storage settle)."""

# Raw page states after which the session is over (not retried blindly).
_BANNED_STATES = {"TOS_BLOCK", "SMB_TOS_BLOCK"}


class BrowserFailure(WadError):
    """The browser or page failed in a way that a fresh browser may fix."""


class BrowserCrashed(WadError):
    """The browser process died or the page crashed: the actor exits abnormally so that its
    supervisor restarts it (counted and logged as an actor restart)."""


class SessionNotReady(WadError):
    """The session cannot do that now (not running, or in the wrong state)."""


@dataclass(frozen=True)
class _StateWrite:
    """A state change not yet in the database: what `sessions.set_state` is given, and when."""

    state: SessionState
    fields: dict[str, Any]
    at: datetime


@dataclass(frozen=True)
class Outcome:
    """How one browser run ended. `final`: do not reopen; `state`/`reason`: what to record."""

    final: bool
    state: SessionState
    reason: str | None = None
    connected: bool = False
    trash_profile: bool = False


def _leaf(group: BaseExceptionGroup[Exception]) -> Exception:
    leaf = first_leaf(group)
    assert isinstance(leaf, Exception)
    return leaf


def reconnect_delay(attempt: int, *, initial: float, maximum: float) -> float:
    """Seconds to wait before reconnect attempt `attempt` (1-based): initial, doubling, capped."""
    return Backoff(initial=initial, max=maximum).delay(attempt)


async def run_with_reconnect(
    attempt_once: Callable[[], Awaitable[Outcome]],
    *,
    initial: float,
    maximum: float,
    max_attempts: int,
    on_retry: Callable[[int, float, str], Awaitable[None]] | None = None,
) -> Outcome:
    """Call `attempt_once` until it ends finally. A non-final outcome (or `BrowserFailure`)
    is retried after `reconnect_delay`; more than `max_attempts` consecutive failures end with
    `ERROR`. A run that reached `CONNECTED` resets the count."""
    failures = 0
    while True:
        try:
            outcome = await attempt_once()
        except BrowserFailure as exc:
            outcome = Outcome(final=False, state="CONNECTING", reason=str(exc))
        if outcome.final:
            return outcome
        failures = 1 if outcome.connected else failures + 1
        if failures > max_attempts:
            return Outcome(final=True, state="ERROR",
                           reason=f"gave up after {max_attempts} reconnect attempts: "
                                  f"{outcome.reason}")
        delay = reconnect_delay(failures, initial=initial, maximum=maximum)
        if on_retry is not None:
            await on_retry(failures, delay, outcome.reason or "")
        await trio.sleep(delay)


class BrowserSessionLike(Protocol):
    """What the actor needs of a driver's session (see `wad.browser.driver`)."""

    events: Any
    last_activity: float

    async def ping(self, *, timeout: float | None = None) -> Any: ...
    async def refresh_qr(self) -> Any: ...
    async def takeover(self) -> Any: ...
    async def logout(self) -> Any: ...
    async def request_pairing_code(self, phone: str) -> str: ...


class SessionActor:
    """One organization's browser session. Start with `nursery.start(actor.run)`."""

    def __init__(self, *, org_id: uuid.UUID, settings: Settings, db: Database, driver: Any,
                 bus: EventBus, inbound: trio.MemorySendChannel[ev.Event] | None = None,
                 health_spacing: health.RestartSpacing | None = None,
                 lease: Lease | None = None) -> None:
        self.org_id = org_id
        self.settings = settings
        self.db = db
        self.driver = driver
        self.bus = bus
        self.inbound = inbound
        self.health_spacing = health_spacing or health.RestartSpacing(
            settings.whatsapp.health_restart_spacing_s)
        """Shared by the daemon's organizations (the manager passes its own)."""
        self.lease = lease or Lease()
        """Once lost, another daemon owns the organization: stop without writing anything."""
        self.state: SessionState = "DISCONNECTED"
        self._announced: SessionState = "DISCONNECTED"
        """The state last logged and published (`self.state` moves first: a change whose
        write is cancelled half-way is announced by the next call, not lost)."""
        self.session: BrowserSessionLike | None = None
        self.connected = trio.Event()
        self.page_open = trio.Event()
        self.finished = trio.Event()
        self.browser_starts = 0
        self._logout_requested = False
        self._restore_allowed = True
        self._skip_archive = False
        self._handled_raw: str | None = None  # the page state last acted on (de-duplicates)
        self._keys = archive.keyring(settings.state_path.absolute(), settings.secret_key,
                                     [settings.secret_key_old])
        self.restored_archive_id: int | None = None
        """The archive the last restore used (None: no restore in this actor's life)."""
        # The row as last written or as it will be once the waiting changes are written.
        self._view: dict[str, Any] = {"qr_payload": None, "pairing_code": None,
                                      "last_error": None, "phone_number": None}
        self._unwritten: deque[_StateWrite] = deque()
        self._unwritten_added = trio.Event()
        self._write_lock = trio.Lock()
        self.archive_waits = 0
        """Login archive saves that found the database unavailable and waited for it."""

    # -- paths ---------------------------------------------------------------------------------

    @property
    def sessions_dir(self) -> Path:
        return archive.sessions_dir(self.settings.state_path.absolute())

    @property
    def profile_dir(self) -> Path:
        return archive.profile_dir(self.settings.state_path.absolute(), self.org_id)

    # -- the actor -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[SessionActor] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Keep the session alive until it ends finally (logout, ban, error) or is cancelled."""
        row = await when_available(
            lambda: sessions_repo.ensure(self.db, organization_id=self.org_id),
            what="session row")
        self._view.update(qr_payload=row.qr_payload, pairing_code=row.pairing_code,
                          last_error=row.last_error, phone_number=row.phone_number)
        # After a logout the old login is void: do not bring it back from the archive.
        self._restore_allowed = row.state != "LOGGED_OUT"
        await when_available(lambda: sessions_repo.set_node(
            self.db, organization_id=self.org_id, node_id=self.settings.node),
            what="session node")
        task_status.started(self)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_states_in_background)
                outcome = await self._run_until_final()
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The writer never fails: raise what the run raised, as if no nursery were here
            # (the supervisor sees `BrowserCrashed`, a cancellation stays a cancellation).
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        _log.warning("session ended", state=outcome.state, reason=outcome.reason)
        self.finished.set()

    async def _run_until_final(self) -> Outcome:
        """Reconnect until the session ends finally; record how it ended."""
        wa = self.settings.whatsapp
        try:
            outcome = await run_with_reconnect(
                self._browser_run, initial=wa.reconnect_initial_s, maximum=wa.reconnect_max_s,
                max_attempts=wa.reconnect_max_attempts, on_retry=self._on_retry)
        except* trio.Cancelled:
            if not self.lease.lost:
                # Stopped (daemon shutdown or disconnect): the login stays, the session idles.
                with trio.move_on_after(5, shield=True):
                    await self._set_state("DISCONNECTED")
                    await self.write_states()
            raise
        if outcome.trash_profile:
            where = archive.move_to_trash(self.profile_dir, self.sessions_dir, self.org_id)
            _log.info("profile moved to the trash folder", trash=str(where))
        # Not to run again, in the same write: whoever sees the final state sees that too.
        await self._set_state(outcome.state, last_error=outcome.reason, should_run=False)
        await self.write_states()
        return outcome

    async def _on_retry(self, attempt: int, delay: float, reason: str) -> None:
        _log.warning("browser restarting", attempt=attempt, delay_s=delay, reason=reason)
        await self._set_state("CONNECTING", last_error=reason)

    async def _browser_run(self) -> Outcome:
        """Open the browser once and follow the page until the run ends."""
        await self._restore_if_missing()
        await self._set_state("CONNECTING")
        self.browser_starts += 1
        reached_connected = False
        failure: Exception | None = None
        try:
            async with self.driver.open_session(self.profile_dir,
                                                url=self.settings.whatsapp.url) as session:
                self.session = session
                self.page_open.set()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._health_check, session)
                    nursery.start_soon(self._archive_periodically)
                    outcome = await self._follow(session)
                    nursery.cancel_scope.cancel()
                reached_connected = outcome.connected
        # Any failure of the browser or the page; a crash wins over what failed with it.
        except* BrowserCrashed as group:
            failure = _leaf(group)
        except* BrowserFailure as group:
            failure = failure or _leaf(group)
        except* Exception as group:
            failure = failure or BrowserFailure(describe(group))
            failure.__cause__ = first_leaf(group)
        finally:
            self.session = None
            self.page_open = trio.Event()
            was_connected = self.connected.is_set()
            self.connected = trio.Event()
            if ((was_connected or reached_connected) and not self._skip_archive
                    and not self.lease.lost):
                # The browser is closed now, so the profile on disk is consistent.
                with trio.move_on_after(30, shield=True):
                    await self.save_archive(reason="disconnect")
        if failure is not None:
            if isinstance(failure, BrowserCrashed):
                # As the close event does (a no-op after it): the state says what happened
                # until the supervisor starts the actor again.
                await self._set_state("CONNECTING", last_error=str(failure))
            raise failure
        return outcome

    async def _follow(self, session: BrowserSessionLike) -> Outcome:
        """Apply the page's events to the state machine until the run ends."""
        was_connected = False
        self._handled_raw = None
        async for event in session.events:
            match event:
                case ev.BridgeReady(version=version):
                    await self._set_state(self.state if self.state != "DISCONNECTED"
                                          else "CONNECTING", wa_version=version)
                case ev.QrChanged(payload=payload):
                    if self.state != "PAIRING_CODE_PENDING":
                        await self._set_state("QR_CODE_PENDING", qr_payload=payload)
                case ev.PairingCode(code=code):
                    await self._set_state("PAIRING_CODE_PENDING", pairing_code=code)
                case ev.StateChanged(state=raw):
                    if raw == "CONNECTED" and was_connected and self.state != "CONNECTED":
                        # Back after a takeover or a network drop (already synced).
                        await self._set_state("CONNECTED")
                        self.connected.set()
                    outcome = await self._on_raw_state(session, raw, was_connected)
                    if outcome is not None:
                        return outcome
                case ev.Ready(phone=phone, push_name=push_name):
                    was_connected = True
                    connected = getattr(session, "login_connected", None)
                    if connected is not None:  # a shared browser's session saves its login
                        connected()
                    await self._set_state("CONNECTED", phone_number=f"+{phone}" if phone else None,
                                          push_name=push_name or None)
                    self.connected.set()
                case ev.Disconnected(reason=reason, state=raw):
                    outcome = await self._on_disconnected(session, reason, raw, was_connected)
                    if outcome is not None:
                        return outcome
                case ev.BrowserClosed(reason=reason):
                    why = f"browser {reason.replace('_', ' ')}"
                    await self._set_state("CONNECTING", last_error=why)
                    raise BrowserCrashed(why)
                case ev.PageIncompatible(version=version, missing=missing) as bad:
                    # A WhatsApp Web build the bridge does not know: final like a ban, so the
                    # session does not restart into the same failure.
                    self.bus.publish(SessionIncompatible(
                        org_id=self.org_id, version=version, missing=list(missing),
                        reason=bad.reason))
                    return Outcome(final=True, state="ERROR", reason=bad.reason)
                case ev.BridgeErrorEvent(where=where, message=message):
                    _log.warning("bridge error", where=where, error=message)
                case _:
                    await self._forward(event)
        return Outcome(final=False, state="CONNECTING", connected=was_connected,
                       reason="the page's event stream ended")

    async def _on_raw_state(self, session: BrowserSessionLike, raw: str,
                            was_connected: bool) -> Outcome | None:
        _log.info("page state", page_state=raw)
        self._handled_raw = raw
        if raw == "UNPAIRED_IDLE":
            await session.refresh_qr()
        elif raw in _BANNED_STATES:
            return Outcome(final=True, state="BANNED", reason=f"account banned ({raw})")
        elif raw == "DEPRECATED_VERSION":
            return Outcome(final=True, state="ERROR",
                           reason="WhatsApp Web reports this version as deprecated")
        elif raw == "CONFLICT":
            return await self._on_conflict(session)
        elif raw in {"UNPAIRED", "UNPAIRED_IDLE"} and (was_connected or self._logout_requested):
            return self._logged_out()
        return None

    async def _on_disconnected(self, session: BrowserSessionLike, reason: str, raw: str,
                               was_connected: bool) -> Outcome | None:
        if reason == "conflict" and self._handled_raw == "CONFLICT":
            return None  # already handled through the state change
        if reason in {"logout", "unpaired"}:
            if reason == "unpaired" and not (was_connected or self._logout_requested):
                return None
            return self._logged_out()
        if reason == "conflict":
            return await self._on_conflict(session)
        if reason == "banned":
            return Outcome(final=True, state="BANNED", reason=f"account banned ({raw or reason})")
        if reason == "deprecated_version":
            return Outcome(final=True, state="ERROR",
                           reason="WhatsApp Web reports this version as deprecated")
        return Outcome(final=False, state="CONNECTING", connected=was_connected,
                       reason=f"disconnected ({reason}, page state {raw})")

    def _logged_out(self) -> Outcome:
        self._skip_archive = True  # the previous archive version stays the latest
        why = ("logged out by request" if self._logout_requested
               else "logged out from the phone (device unlinked)")
        return Outcome(final=True, state="LOGGED_OUT", reason=why, trash_profile=True)

    async def _on_conflict(self, session: BrowserSessionLike) -> Outcome | None:
        wa = self.settings.whatsapp
        if not wa.takeover_on_conflict:
            return Outcome(final=True, state="ERROR",
                           reason="conflict: WhatsApp Web was opened on another computer")
        _log.warning("conflict: taking the session back", delay_s=wa.takeover_delay_s)
        await self._set_state("CONNECTING", last_error="conflict: opened on another computer")
        await trio.sleep(wa.takeover_delay_s)
        await session.takeover()
        return None

    async def _forward(self, event: ev.Event) -> None:
        """Message events go to the inbound channel (backpressure when it is full)."""
        if self.inbound is not None:
            await self.inbound.send(event)

    async def _health_check(self, session: BrowserSessionLike) -> None:
        """Fail the run only when the page makes no progress at all (`wad.org.health`)."""
        try:
            await health.watch(session, self.settings.whatsapp, self.health_spacing)
        except health.HealthFailure as exc:
            if not getattr(session, "alive", True):
                # The browser or its page is gone and the check found it before the close
                # event arrived: a crash, handled as that event is (the supervisor restarts
                # the actor), not a hung page.
                raise BrowserCrashed(f"browser gone, found by the health check ({exc})"
                                     ) from exc.__cause__
            raise BrowserFailure(str(exc)) from exc.__cause__

    async def _archive_periodically(self) -> None:
        # Soon after (re)connecting, so that another daemon can take over even if this one is
        # killed before its first disconnect; then every `archive_interval_s`.
        await self.connected.wait()
        await trio.sleep(ARCHIVE_AFTER_CONNECT_S)
        await self._save_storage()
        await self.save_archive(reason="connected")
        while True:
            await trio.sleep(self.settings.whatsapp.archive_interval_s)
            if self.connected.is_set():
                await self._save_storage()
                await self.save_archive(reason="hourly")

    async def _save_storage(self) -> None:
        """A session in a shared browser keeps its login in the profile's `storage.json`
        (`wad.browser.shared`): bring it up to date before an archive packs it. Sessions with
        a profile of their own (per-org mode) have nothing to write."""
        save = getattr(self.session, "save_storage", None)
        if save is not None:
            await save()

    # -- persistence ---------------------------------------------------------------------------

    async def _restore_if_missing(self) -> None:
        """Restore the profile from the newest archive that restores; older ones are tried when
        one fails (never leaving a partial profile: see `archive.restore`)."""
        if self.profile_dir.exists() or not self._restore_allowed:
            return
        versions = await when_available(
            lambda: sessions_repo.list_archives(self.db, organization_id=self.org_id),
            what="login archives")
        for info in versions:
            row = await when_available(
                partial(sessions_repo.get_archive, self.db, archive_id=info.id),
                what="login archive")
            if row is None:  # pruned meanwhile
                continue
            try:
                key_id = await trio.to_thread.run_sync(
                    archive.restore, row.archive, self._keys, self.org_id, row.sha256,
                    self.profile_dir)
            except archive.ArchiveError as exc:
                _log.warning("login archive cannot be restored; trying the next older one",
                             archive_id=info.id, error=str(exc))
                continue
            await when_available(
                partial(sessions_repo.mark_restored, self.db, archive_id=info.id),
                what="login archive restored")
            self.restored_archive_id = info.id
            _log.info("profile restored from the database archive", archive_id=info.id,
                      key_id=key_id, newest=info.id == versions[0].id)
            return
        if versions:
            _log.error("no login archive could be restored; a new link will be needed",
                       tried=len(versions))

    async def save_archive(self, *, reason: str) -> bool:
        """Store the profile's login parts, encrypted, as a new archive version (skipped when
        nothing changed since the latest one), then prune by the retention policy. Answers
        whether a version was stored."""
        if not self.profile_dir.exists():
            return False
        with archive.work_dir(self.sessions_dir, archive.work_prefixes(self.org_id)[0]) as work:
            try:
                packed = await trio.to_thread.run_sync(archive.pack_login, self.profile_dir,
                                                       work)
            except (archive.ArchiveError, OSError) as exc:
                # The live profile kept changing (or vanished): the next save tries again.
                _log.warning("login archive skipped", reason=reason, error=str(exc))
                return False
            latest = await self._archive_db(lambda: sessions_repo.latest_archive_info(
                self.db, organization_id=self.org_id))
            if latest is not None and latest.sha256 == packed.sha256:
                return False
            key = self._keys.current
            sealed = await trio.to_thread.run_sync(archive.seal_file, packed.path, key,
                                                   self.org_id)
        stored = await self._archive_db(lambda: sessions_repo.add_archive(
            self.db, organization_id=self.org_id, archive=sealed, sha256=packed.sha256,
            size=packed.size, key_id=key.key_id))
        _log.info("login archive stored", reason=reason, size=packed.size, archive_id=stored.id)
        await self._archive_db(self._prune)
        return True

    async def _archive_db(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        """A database call of an archive save, retried while the database is unavailable."""
        async def counted() -> Any:
            try:
                return await operation()
            except Exception as exc:
                if database_unavailable(exc):
                    self.archive_waits += 1
                raise
        return await when_available(counted, what="login archive")

    async def _prune(self) -> None:
        """Delete the archives the retention policy does not keep (logged and counted)."""
        versions = await sessions_repo.list_archives(self.db, organization_id=self.org_id)
        policy = self.settings.archives
        kept = archive.retained(versions, now=datetime.now(UTC), keep_latest=policy.keep_latest,
                                keep_daily_days=policy.keep_daily_days)
        doomed = [a.id for a in versions if a.id not in kept]
        if not doomed:
            return
        deleted = await sessions_repo.delete_archives(self.db, organization_id=self.org_id,
                                                      ids=doomed)
        _log.info("login archives pruned", deleted=deleted, archive_ids=doomed, kept=len(kept))
        for hook in archive.on_pruned:
            hook(self.org_id, deleted)

    async def _set_state(self, state: SessionState, **fields: Any) -> None:
        """Enter `state`: recorded in `whatsapp_sessions` and published on the bus. While the
        database is unavailable (or earlier changes still wait for it) the change is published
        at once and written later, after those before it (`write_states`)."""
        self.state = state
        change = _StateWrite(state=state, fields=fields, at=datetime.now(UTC))
        self._apply_to_view(change)
        # Known to be down: do not wait for a connection attempt to fail (the page's events
        # must keep flowing); the background writer finds out when it is back.
        if not self._unwritten and self.db.availability.unavailable_since is None:
            try:
                row = await sessions_repo.set_state(self.db, organization_id=self.org_id,
                                                    state=state, **fields)
            except Exception as exc:
                if not database_unavailable(exc):
                    raise
                self._queue_write(change)
            else:
                self._view.update(qr_payload=row.qr_payload, pairing_code=row.pairing_code,
                                  last_error=row.last_error, phone_number=row.phone_number)
        else:
            self._queue_write(change)
        # Compared with what was announced, now that the write is done: a call cancelled
        # during its write (the run failing around it) leaves its change to this one.
        previous = self._announced
        changed = state != previous
        if changed or "qr_payload" in fields or "pairing_code" in fields:
            self._announced = state
            view = self._view
            if changed:
                _log.info("session state", state=state, last_error=view["last_error"],
                          written=not self._unwritten)
            self.bus.publish(SessionStatus(
                org_id=self.org_id, state=state, previous=previous, qr=view["qr_payload"],
                pairing_code=view["pairing_code"], last_error=view["last_error"],
                phone_number=view["phone_number"]))
            if changed:
                self.bus.signal(SessionChanged(org_id=self.org_id, state=state))

    def _apply_to_view(self, change: _StateWrite) -> None:
        """What `sessions.set_state` does to the row's published fields, in memory."""
        view, fields, state = self._view, change.fields, change.state
        view["qr_payload"] = ((fields.get("qr_payload") or view["qr_payload"])
                              if state == "QR_CODE_PENDING" else None)
        view["pairing_code"] = ((fields.get("pairing_code") or view["pairing_code"])
                                if state == "PAIRING_CODE_PENDING" else None)
        view["last_error"] = (None if state == "CONNECTED"
                              else fields.get("last_error") or view["last_error"])
        view["phone_number"] = fields.get("phone_number") or view["phone_number"]

    def _queue_write(self, change: _StateWrite) -> None:
        if not self._unwritten:
            _log.warning("database unavailable; state changes wait to be written, in order")
        self._unwritten.append(change)
        self._unwritten_added.set()

    @property
    def unwritten_states(self) -> int:
        """State changes published but not yet in the database."""
        return len(self._unwritten)

    async def write_states(self) -> None:
        """Write the waiting state changes, oldest first, each with the time it happened;
        waits (retrying) while the database is unavailable."""
        async with self._write_lock:
            if not self._unwritten:
                return
            while self._unwritten:
                change = self._unwritten[0]
                try:
                    await when_available(partial(
                        sessions_repo.set_state, self.db, organization_id=self.org_id,
                        state=change.state, at=change.at, **change.fields),
                        what="session state")
                except Exception:
                    _log.exception("state change could not be written; skipped",
                                   state=change.state)
                self._unwritten.popleft()
            _log.info("waiting state changes written", state=self.state)

    async def _write_states_in_background(self) -> None:
        while True:
            await self._unwritten_added.wait()
            self._unwritten_added = trio.Event()
            if self._unwritten:
                await self.write_states()

    # -- commands from the API -----------------------------------------------------------------

    async def request_pairing_code(self, phone_e164: str) -> str:
        """An 8-character code to type on the phone whose number is given."""
        session = self.session
        if session is None:
            raise SessionNotReady("the browser session is starting; try again in a moment")
        if self.connected.is_set():
            raise SessionNotReady("the session is already linked")
        code = await session.request_pairing_code(phone_e164.lstrip("+"))
        await self._set_state("PAIRING_CODE_PENDING", pairing_code=code)
        return code

    async def logout(self, *, timeout: float = 30.0) -> None:
        """Unlink this device and wait until the session has ended as `LOGGED_OUT`."""
        session = self.session
        if session is None:
            raise SessionNotReady("the browser session is not open")
        self._logout_requested = True
        await session.logout()
        with trio.fail_after(timeout):
            await self.finished.wait()
