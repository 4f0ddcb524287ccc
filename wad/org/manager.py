"""The organization manager: one supervisor per organization whose session should run.

It starts an organization's supervisor when the organization is connected (and, at daemon start,
for every organization whose session should run), stops it when it is disconnected, and passes
commands (pairing code, logout) to the organization's session actor. A failure in one
organization never touches another: each runs under its own supervisor, and a supervisor that
gives up marks only its own organization `ERROR`.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import structlog
import trio

from wad import log
from wad.bus import EventBus, SessionStatus
from wad.config import Settings
from wad.db.pool import WAIT_BACKOFF, Database, database_unavailable
from wad.db.repo import sessions as sessions_repo
from wad.errors import WadError
from wad.org import health
from wad.org.actors import ACTORS
from wad.org.context import ActorFactory, OrgContext
from wad.org.inbound.priority import StoreFirst
from wad.org.ownership import Lease, Ownership, lock_connection, lock_key
from wad.org.session import SessionActor, SessionNotReady
from wad.supervise import (
    Backoff,
    ChildSpec,
    Launch,
    Restart,
    Strategy,
    Supervisor,
    SupervisorGaveUp,
    describe,
)

_log = log.get("orgs")


class OrgNotRunning(WadError):
    """The organization's session is not running on this daemon (connect it first)."""


class OrgManagerAPI:
    """What the control API calls. Every method is safe to call concurrently."""

    async def connect(self, org_id: uuid.UUID) -> None:
        """Mark the session as wanted (`should_run`) and start its supervisor if not running.
        Returns once the supervisor has started; the state then moves by itself
        (`CONNECTING` -> `QR_CODE_PENDING` or `CONNECTED`)."""
        raise NotImplementedError

    async def disconnect(self, org_id: uuid.UUID) -> None:
        """Mark the session as not wanted, stop its supervisor (the login is kept: archive
        refreshed, browser closed), state `DISCONNECTED`."""
        raise NotImplementedError

    async def logout(self, org_id: uuid.UUID) -> None:
        """Log the linked device out of WhatsApp: state `LOGGED_OUT`, profile moved to the trash
        folder (never deleted). Raises `OrgNotRunning` when the session is not running."""
        raise NotImplementedError

    async def request_pairing_code(self, org_id: uuid.UUID, phone_e164: str) -> str:
        """Ask the page for an 8-character pairing code for that phone; state
        `PAIRING_CODE_PENDING`. Raises `OrgNotRunning`, or `WadError` when already linked."""
        raise NotImplementedError

    def tree(self) -> dict[str, Any]:
        """The live supervision tree of every organization (for `wad status --tree`)."""
        raise NotImplementedError

    def is_running(self, org_id: uuid.UUID) -> bool:
        """Whether the organization's supervisor runs on this daemon."""
        raise NotImplementedError


LOCK_BACKOFF = Backoff(initial=1.0, max=30.0)
"""Waits between attempts to open the lock connection: 1 s, 2 s, 4 s ... 30 s."""

INBOUND_BUFFER = 1000
"""Message events the session may hand to the inbound actor before it waits (backpressure)."""


@dataclass(eq=False)
class OrgHandle(Launch):
    """A running organization: its supervisor and session actor, run in the launch's scope
    (the manager stops it as its dynamic supervisor's child)."""

    org_id: uuid.UUID
    session: SessionActor
    supervisor: Supervisor


def default_actors() -> list[ActorFactory]:
    """The actors that join each organization's session: see `wad/org/actors.py`."""
    return list(ACTORS)


class OrgManager(OrgManagerAPI):
    """Runs one supervisor per organization inside the daemon's tree."""

    def __init__(self, *, settings: Settings, db: Database, driver: Any, bus: EventBus,
                 plugins: Any = None, actors: list[ActorFactory] | None = None,
                 session_factory: Callable[..., Any] = SessionActor) -> None:
        self.settings = settings
        self.db = db
        self.driver = driver
        self.bus = bus
        self.plugins = plugins
        self.actors = list(actors) if actors is not None else default_actors()
        self.session_factory = session_factory  # tests pass a stand-in for Chromium
        self._orgs: dict[uuid.UUID, OrgHandle] = {}
        self._nursery: trio.Nursery | None = None
        self.supervisor: Supervisor | None = None  # the dynamic supervisor of the organizations
        self._owner: Ownership | None = None
        self._stopping = False
        self._leases: dict[uuid.UUID, Lease] = {}
        """This daemon's lease on each organization it claimed (see `wad.org.ownership`)."""
        self._lock = trio.Lock()
        self.health_spacing = health.RestartSpacing(settings.whatsapp.health_restart_spacing_s)
        """One health-check restart at a time across every organization (`wad.org.health`)."""
        self.store_first = StoreFirst()
        """Storing before processing while a flood comes, across every organization
        (`wad.org.inbound.priority`)."""

    async def run(self, *, task_status: trio.TaskStatus[OrgManager] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Claim and run the organizations whose session should run, and keep reconciling
        (claim unowned ones, stop those disconnected elsewhere) until cancelled, which stops
        every organization (browsers closed, archives saved) and only then gives up the lock
        connection, so no other daemon claims an organization whose browser still runs here.

        The organizations run under one dynamic supervisor for the manager's whole life; the
        lock connection that says they are this daemon's is kept by `_own`, which replaces it
        when it is lost."""
        async with trio.open_nursery() as nursery:
            own_scope = trio.CancelScope(shield=True)
            try:
                async with trio.open_nursery() as orgs:
                    self._nursery = orgs
                    self.supervisor = await orgs.start(Supervisor(
                        "orgs", [], strategy=Strategy.SIMPLE_ONE_FOR_ONE).run)
                    ready = trio.Event()
                    nursery.start_soon(self._own, own_scope, ready)
                    await ready.wait()
                    task_status.started(self)
                    try:
                        await trio.sleep_forever()
                    finally:
                        self._stopping = True  # no new claims while the organizations stop
            finally:
                self._nursery = None
                own_scope.cancel()

    async def _own(self, scope: trio.CancelScope, ready: trio.Event) -> None:
        """Keep this daemon's lock connection (until `scope` is cancelled; `ready` is set after
        the first claims or the first failure): claim and renew on it; when it is lost, every
        lease lapses at once (nothing is sent), and then:

        - the database is up and has not restarted (another daemon ended the connection, taking
          over from a frozen owner; or this daemon's own host went silent): every organization
          stops at once, sending nothing more (fencing), and the manager claims again;
        - the database is unavailable (or restarted meanwhile): the organizations keep running,
          fenced, while the manager reconnects every `lease_renew_interval_s` at most; back, it
          takes again every organization whose lease no other daemon claimed meanwhile (see
          `Ownership.retake`) and stops the others at once.

        docs/operations.md ("Several daemons") has the timings and why two daemons never drive
        one organization for long."""
        daemon = self.settings.daemon
        with scope:
            failures = 0
            lost: Ownership | None = None  # lost with organizations running; None once settled
            outage = False  # the database was found unavailable since `lost` was lost
            while True:
                owner: Ownership | None = None
                error: BaseException | None = None
                try:
                    async with lock_connection(self.db, self.settings) as owner:
                        failures = 0
                        if lost is not None:
                            if outage or owner.server_started != lost.server_started:
                                await self._take_back(owner, lost)
                            else:
                                await self._fence_all()
                            lost, outage = None, False
                        await self._hold(owner, ready)
                except* Exception as group:
                    error = group
                if owner is not None and lost is None and self._leases:
                    lost = owner  # reconnect at once: is the database there?
                    for lease in self._leases.values():
                        lease.lapse()
                    _log.warning("lost the lock connection: sending stops until it is back",
                                 organizations=len(self._orgs))
                    continue
                if lost is not None and error is not None and not outage:
                    if database_unavailable(error):
                        outage = True
                        _log.warning("the database is unavailable: organizations keep running "
                                     "(sending nothing) until the lock connection is back",
                                     organizations=len(self._orgs), error=describe(error))
                    else:
                        await self._fence_all()
                        lost = None
                if error is not None and lost is None:
                    _log.error("organization manager cannot reach the database; retrying",
                               error=describe(error), retry_in_s=LOCK_BACKOFF.delay(failures + 1))
                ready.set()
                failures += 1
                if lost is not None:
                    await trio.sleep(min(WAIT_BACKOFF.delay(failures),
                                         daemon.lease_renew_interval_s))
                else:
                    await trio.sleep(LOCK_BACKOFF.delay(failures))

    async def _hold(self, owner: Ownership, claimed: trio.Event) -> None:
        """Claim, reconcile and renew leases on `owner` until it is lost (then return);
        `claimed` is set after the first claims."""
        self._owner = owner
        try:
            async with trio.open_nursery() as nursery:
                await self._reconcile()
                claimed.set()
                nursery.start_soon(self._reconcile_loop)
                nursery.start_soon(self._lease_loop, owner)
                await self._watch_lock_connection(owner)
                nursery.cancel_scope.cancel()
        finally:
            self._owner = None

    async def _take_back(self, owner: Ownership, lost: Ownership) -> None:
        """After an outage: take every organization still running here back on `owner`; one
        that another daemon claimed meanwhile is stopped at once."""
        daemon = self.settings.daemon
        await owner.end_previous(lost)
        kept, taken = 0, []
        for org_id, lease in list(self._leases.items()):
            asked = trio.current_time()
            if await owner.retake(org_id, lost, lease_s=daemon.lease_s):
                lease.extend(asked + daemon.lease_s - daemon.lease_renew_interval_s)
                kept += 1
            else:
                lease.lose()
                taken.append(org_id)
        _log.info("lock connection back after the outage: organizations taken back",
                  kept=kept, stopped=len(taken))
        if taken:
            _log.error("lease lost: another daemon took the organization over; stopping it here",
                       organizations=[str(o) for o in taken])
            await self._stop_all_of(taken)

    async def _fence_all(self) -> None:
        """The lock connection was ended while the database is up: another daemon may own every
        organization now. They stop without a trace (no state written, no archive, nothing
        sent)."""
        _log.error("lost the lock connection: stopping every organization now",
                   organizations=len(self._orgs))
        for lease in self._leases.values():
            lease.lose()
        await self._stop_all_of(list(self._orgs))

    async def _watch_lock_connection(self, owner: Ownership) -> None:
        """Return as soon as a query on the lock connection fails, or once a ping has had no
        answer for as long as this daemon's leases stay valid without a renewal
        (`lease_s - lease_renew_interval_s`): slowness under load is not a loss."""
        daemon = self.settings.daemon
        silence = max(daemon.lease_s - daemon.lease_renew_interval_s, 1.0)
        while True:
            if not await owner.alive(timeout=silence):
                return
            await trio.sleep(daemon.lock_check_interval_s)

    async def _lease_loop(self, owner: Ownership) -> None:
        """Renew this daemon's leases every `lease_renew_interval_s`; an organization whose
        lease is gone (another daemon took it over) is stopped at once, sending nothing more."""
        daemon = self.settings.daemon
        while True:
            await trio.sleep(daemon.lease_renew_interval_s)
            owned = list(self._leases)
            asked = trio.current_time()
            try:
                with trio.fail_after(daemon.lease_s):
                    kept = await owner.renew(lease_s=daemon.lease_s)
            except Exception as exc:  # trio.TooSlowError included
                # The lock connection's watch decides whether this daemon goes on; meanwhile
                # the leases run out by themselves and sending waits.
                _log.warning("could not renew the leases", error=f"{type(exc).__name__}: {exc}")
                continue
            until = asked + daemon.lease_s - daemon.lease_renew_interval_s
            for org_id in owned:
                lease = self._leases.get(org_id)
                if lease is None:
                    continue
                if org_id in kept:
                    lease.extend(until)
                else:
                    self._fence(org_id, lease)

    def _fence(self, org_id: uuid.UUID, lease: Lease) -> None:
        """Another daemon owns the organization now: stop it here without sending anything."""
        if lease.lost:
            return
        lease.lose()
        _log.error("lease lost: another daemon took the organization over; stopping it here",
                   org=str(org_id))
        if self._nursery is not None:
            self._nursery.start_soon(self._stop, org_id)

    async def _claim(self, owner: Ownership, org_id: uuid.UUID) -> bool:
        """Take the organization's lock and lease; True when this daemon owns it now."""
        daemon = self.settings.daemon
        asked = trio.current_time()
        if not await owner.try_claim(org_id, lease_s=daemon.lease_s):
            return False
        self._leases[org_id] = Lease(asked + daemon.lease_s - daemon.lease_renew_interval_s)
        return True

    async def _end_expired_owners(self, owner: Ownership, held_orgs: list[uuid.UUID]
                                  ) -> set[int]:
        """End the lock connections of frozen owners (lease expired) of those organizations;
        answers the lock keys still held afterwards (waiting a moment for the ended sessions to
        exit)."""
        freed = await owner.end_expired_owners(held_orgs)
        if freed:
            _log.warning("taking over organizations whose owner's lease expired",
                         organizations=[str(o) for o in freed])
        keys = {lock_key(o) for o in freed}
        held = await owner.held_keys()
        with trio.move_on_after(5):
            while keys & held:
                await trio.sleep(0.1)
                held = await owner.held_keys()
        return held

    async def _reconcile_loop(self) -> None:
        while True:
            await trio.sleep(self.settings.daemon.claim_interval_s)
            try:
                await self._reconcile()
            except Exception as exc:
                # Whether organizations keep running is the lock connection's call alone.
                _log.warning("could not reconcile organizations; trying again",
                             error=f"{type(exc).__name__}: {exc}")

    async def _reconcile(self) -> None:
        """Stop what should no longer run here; claim a fair share of the unowned rest."""
        owner = self._owner
        if owner is None or self._stopping:
            return
        async with self._lock:
            wanted = set(await sessions_repo.list_should_run(self.db))
            for org_id in list(self._orgs):
                if org_id not in wanted:
                    _log.info("organization disconnected elsewhere; stopping it", org=str(org_id))
                    if self._nursery is not None:
                        self._nursery.start_soon(self._stop, org_id)
            candidates = [o for o in wanted if o not in self._orgs]
            capacity = self.settings.daemon.max_organizations - len(self._orgs)
            if not candidates or capacity <= 0:
                return
            held = await owner.held_keys()
            taken = [o for o in candidates if lock_key(o) in held]
            if taken:
                held = await self._end_expired_owners(owner, taken)
            unowned = [o for o in candidates if lock_key(o) not in held]
            if not unowned:
                return
            live = await owner.live_daemons()
            share = min(capacity, -(-len(unowned) // live))
            random.shuffle(unowned)
            claimed = 0
            for org_id in unowned:
                if claimed >= share:
                    break
                if await self._claim(owner, org_id):
                    claimed += 1
                    await self._start(org_id)
            if claimed:
                _log.info("organizations claimed", claimed=claimed, unowned=len(unowned),
                          daemons=live)

    def running(self, org_id: uuid.UUID) -> OrgHandle | None:
        return self._orgs.get(org_id)

    def is_running(self, org_id: uuid.UUID) -> bool:
        return org_id in self._orgs

    async def _start(self, org_id: uuid.UUID) -> OrgHandle:
        """Start the organization's supervisor as a child of the manager's dynamic supervisor."""
        supervisor = self.supervisor
        if self._nursery is None or supervisor is None:
            raise WadError("the organization manager is not running")
        existing = self._orgs.get(org_id)
        if existing is not None:
            return existing
        key = str(org_id)
        if supervisor.has_child(key):  # an earlier run that has ended: forget it
            await supervisor.remove_child(key)
        handle = await supervisor.start_child(ChildSpec(
            key, partial(self._run_org, org_id), restart=Restart.TEMPORARY,
            shutdown=self.settings.graces.organization_s))
        assert isinstance(handle, OrgHandle)
        return handle

    async def _stop(self, org_id: uuid.UUID) -> None:
        """Stop the organization's supervisor (within its grace) and forget it."""
        supervisor = self.supervisor
        if supervisor is not None and supervisor.has_child(str(org_id)):
            await supervisor.remove_child(str(org_id))

    async def _stop_all_of(self, org_ids: list[uuid.UUID]) -> None:
        """Stop those organizations' supervisors all at once (each within its grace)."""
        if self.supervisor is not None:
            await self.supervisor.remove_children([str(o) for o in org_ids])

    def org_supervisor(self, ctx: OrgContext) -> Supervisor:
        """One organization's supervisor: its session actor, then the actors that join it."""
        graces = self.settings.graces
        return Supervisor(
            f"org-{ctx.org_id}",
            [ChildSpec("session", ctx.session.run, restart=Restart.TRANSIENT,
                       shutdown=graces.session_s),
             *(factory(ctx) for factory in self.actors)],
            intensity=self.settings.daemon.org_max_restarts,
            period=self.settings.daemon.org_restart_period_s,
        )

    async def _run_org(self, org_id: uuid.UUID, *,
                       task_status: trio.TaskStatus[OrgHandle] = trio.TASK_STATUS_IGNORED) -> None:
        """One organization's supervisor, until its session ends finally or it is stopped. A
        supervisor that gives up marks this organization `ERROR`, and nothing else."""
        with structlog.contextvars.bound_contextvars(org=str(org_id)):
            send, receive = trio.open_memory_channel[Any](INBOUND_BUFFER)
            lease = self._leases.get(org_id) or Lease()
            actor = self.session_factory(org_id=org_id, settings=self.settings, db=self.db,
                                         driver=self.driver, bus=self.bus, inbound=send,
                                         health_spacing=self.health_spacing, lease=lease)
            ctx = OrgContext(org_id=org_id, settings=self.settings, db=self.db, bus=self.bus,
                             session=actor, inbound_events=receive, plugins=self.plugins,
                             lease=lease, store_first=self.store_first)
            supervisor = self.org_supervisor(ctx)
            handle = OrgHandle(org_id=org_id, session=actor, supervisor=supervisor)
            self._orgs[org_id] = handle
            try:
                try:
                    with handle.scope:
                        async with trio.open_nursery() as nursery:
                            await nursery.start(supervisor.run)
                            task_status.started(handle)
                            await actor.finished.wait()
                            nursery.cancel_scope.cancel()
                except* SupervisorGaveUp as group:
                    gave_up = group.exceptions[0]
                    reason = f"session actor kept failing: {describe(gave_up.__cause__ or gave_up)}"
                    _log.error("organization supervisor gave up", reason=reason)
                    with trio.move_on_after(10, shield=True):
                        await sessions_repo.set_state(self.db, organization_id=org_id,
                                                      state="ERROR", last_error=reason)
                        await sessions_repo.set_should_run(self.db, organization_id=org_id,
                                                           should_run=False)
                    self.bus.publish(SessionStatus(org_id=org_id, state="ERROR",
                                                   last_error=reason))
            finally:
                if self._orgs.get(org_id) is handle:
                    del self._orgs[org_id]
                if self._leases.get(org_id) is lease:
                    del self._leases[org_id]
                if not lease.lost:  # else it is another daemon's now: leave its rows alone
                    with trio.move_on_after(5, shield=True):
                        await self._release(org_id)
                handle.done.set()

    async def _release(self, org_id: uuid.UUID) -> None:
        """Give up the organization's lock (and say no one runs it), if the connection lives."""
        owner = self._owner
        try:
            await sessions_repo.set_node(self.db, organization_id=org_id, node_id=None)
        except Exception as exc:
            _log.warning("could not record that no one runs the organization", org=str(org_id),
                         error=str(exc))
        try:
            if owner is not None:
                await owner.release(org_id)
        except Exception as exc:
            _log.warning("could not release the organization", org=str(org_id), error=str(exc))

    # -- OrgManagerAPI -------------------------------------------------------------------------

    async def connect(self, org_id: uuid.UUID) -> None:
        """Wanted from now on; started here when this daemon can claim it (else the daemon that
        owns it, or the next to claim it, runs it)."""
        async with self._lock:
            await sessions_repo.set_should_run(self.db, organization_id=org_id, should_run=True)
            if org_id in self._orgs:
                return
            owner = self._owner
            if owner is None:
                raise WadError("this daemon has no database lock connection right now")
            if len(self._orgs) >= self.settings.daemon.max_organizations:
                _log.warning("at the organization limit; leaving it to another daemon",
                             org=str(org_id))
                return
            if await self._claim(owner, org_id):
                await self._start(org_id)

    async def disconnect(self, org_id: uuid.UUID) -> None:
        async with self._lock:
            await sessions_repo.set_should_run(self.db, organization_id=org_id, should_run=False)
            await self._stop(org_id)
            await sessions_repo.set_state(self.db, organization_id=org_id, state="DISCONNECTED")
            self.bus.publish(SessionStatus(org_id=org_id, state="DISCONNECTED"))
            _log.info("organization disconnected", org=str(org_id))

    async def _actor(self, org_id: uuid.UUID, *, wait_for_page: float = 30.0) -> SessionActor:
        handle = self._orgs.get(org_id)
        if handle is None:
            row = await sessions_repo.get(self.db, organization_id=org_id)
            if row is not None and row.node_id and row.node_id != self.settings.node:
                raise OrgNotRunning(f"the session runs on the daemon {row.node_id}; send the "
                                    "request there")
            raise OrgNotRunning("the session is not running; connect the organization first")
        with trio.move_on_after(wait_for_page):
            await handle.session.page_open.wait()
        return handle.session

    async def logout(self, org_id: uuid.UUID) -> None:
        actor = await self._actor(org_id)
        try:
            await actor.logout()
        except SessionNotReady as exc:
            raise OrgNotRunning(str(exc)) from None
        handle = self._orgs.get(org_id)
        if handle is not None:
            await handle.ended(60)

    async def request_pairing_code(self, org_id: uuid.UUID, phone_e164: str) -> str:
        actor = await self._actor(org_id)
        return await actor.request_pairing_code(phone_e164)

    def tree(self) -> dict[str, Any]:
        return {
            "name": "orgs",
            "supervisor": self.supervisor.tree() if self.supervisor is not None else None,
            "organizations": {
                str(org_id): {
                    "state": handle.session.state,
                    "browserStarts": handle.session.browser_starts,
                    "supervisor": handle.supervisor.tree(),
                }
                for org_id, handle in sorted(self._orgs.items(), key=lambda kv: str(kv[0]))
            },
        }
