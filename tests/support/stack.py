"""An in-process wad stack for tests: the simulator, a real Chromium through the driver, a real
database, and organization managers that can be stopped and started like the daemon."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from wad.browser.driver import BrowserDriver
from wad.browser.shared import open_sessions
from wad.bus import EventBus, SessionStatus
from wad.config import DaemonSettings, Settings, WhatsAppSettings
from wad.db.models import WhatsAppSession
from wad.db.pool import Database
from wad.db.repo import organizations
from wad.db.repo import sessions as sessions_repo
from wad.org.context import ActorFactory
from wad.org.manager import OrgManager
from wad.sim.client import SimClient, SimClientError
from wad.sim.model import SimConfig
from wad.sim.server import SimServer, serve


@dataclass
class Stack:
    sim: SimServer
    phone: SimClient
    db: Database
    settings: Settings
    driver: Any
    """The driver, or in `browser_mode="shared"` the pool of shared browsers."""
    bus: EventBus
    nursery: trio.Nursery
    manager: OrgManager | None = None
    _manager_scope: trio.CancelScope | None = None
    _manager_done: trio.Event | None = None
    states: dict[uuid.UUID, list[str]] = field(default_factory=dict)

    async def start_daemon(self, *, plugins: Any = None,
                           actors: list[ActorFactory] | None = None) -> OrgManager:
        """Start an organization manager, as a daemon start does (with the plugin manager and
        the organization actors given; by default none and those of `wad.org.actors`)."""
        assert self.manager is None
        manager = OrgManager(settings=self.settings, db=self.db, driver=self.driver, bus=self.bus,
                             plugins=plugins, actors=actors)
        scope = trio.CancelScope()
        done = trio.Event()

        async def run(task_status: trio.TaskStatus[OrgManager] = trio.TASK_STATUS_IGNORED
                      ) -> None:
            try:
                with scope:
                    await manager.run(task_status=task_status)
            finally:
                done.set()

        await self.nursery.start(run)
        self.manager, self._manager_scope, self._manager_done = manager, scope, done
        return manager

    async def stop_daemon(self) -> None:
        """Stop the manager gracefully, as SIGTERM does (archives saved, browsers closed)."""
        assert self._manager_scope is not None and self._manager_done is not None
        self._manager_scope.cancel()
        with trio.fail_after(60):
            await self._manager_done.wait()
        self.manager = None

    async def new_org(self, name: str = "Tours") -> uuid.UUID:
        return (await organizations.create(self.db, name=name)).id

    async def session(self, org_id: uuid.UUID) -> WhatsAppSession:
        row = await sessions_repo.get(self.db, organization_id=org_id)
        assert row is not None
        return row

    async def wait_state(self, org_id: uuid.UUID, *states: str, timeout: float = 30.0
                         ) -> WhatsAppSession:
        with trio.fail_after(timeout):
            while True:
                row = await sessions_repo.get(self.db, organization_id=org_id)
                if row is not None and row.state in states:
                    return row
                await trio.sleep(0.05)

    async def link_by_qr(self, org_id: uuid.UUID, account: str) -> WhatsAppSession:
        """Connect the organization and let the account's phone scan the stored QR."""
        assert self.manager is not None
        await self.manager.connect(org_id)
        row = await self.wait_state(org_id, "QR_CODE_PENDING")
        assert row.qr_payload
        with trio.fail_after(30):
            while True:
                try:
                    await self.phone.scan_qr(account, row.qr_payload)
                    break
                except SimClientError as exc:
                    # The page rotated its QR before this one was scanned (a loaded machine):
                    # scan the next one, as a person would.
                    if "stale" not in exc.message:
                        raise
                stale = row.qr_payload
                while row.qr_payload == stale:
                    await trio.sleep(0.05)
                    row = await self.session(org_id)
        return await self.wait_state(org_id, "CONNECTED")

    async def wait_published(self, org_id: uuid.UUID, state: str, timeout: float = 30.0) -> None:
        """Wait until `state` was published for the organization since `states` was cleared."""
        with trio.fail_after(timeout):
            while state not in self.states.get(org_id, []):
                await trio.sleep(0.05)

    async def forget_states(self, *connected: uuid.UUID) -> None:
        """Clear `states` once each organization's CONNECTED was published and recorded.

        The database row changes before the event is published and the recorder reads
        events asynchronously, so a CONNECTED seen in the row may still be on its way.
        """
        for org_id in connected:
            await self.wait_published(org_id, "CONNECTED")
        self.states.clear()

    def record_states(self) -> None:
        """Remember every published session state per organization (in `states`)."""
        self.nursery.start_soon(self._recorder)

    async def _recorder(self) -> None:
        with self.bus.subscribe(kinds={SessionStatus}) as events:
            async for event in events:
                if isinstance(event, SessionStatus) and event.org_id is not None:
                    self.states.setdefault(event.org_id, []).append(event.state)


def fast_settings(state_dir: Path, url: str, **whatsapp: Any) -> Settings:
    wa: dict[str, Any] = dict(url=url, health_check_interval_s=2.0, health_check_timeout_s=3.0,
              reconnect_initial_s=0.2, reconnect_max_s=1.0, ready_timeout_s=20.0)
    wa.update(whatsapp)
    return Settings(daemon=DaemonSettings(state_dir=str(state_dir)),
                    whatsapp=WhatsAppSettings(**wa))


@asynccontextmanager
async def open_stack(state_dir: Path, dsn: str, *, sim_config: SimConfig | None = None,
                     **whatsapp: Any) -> AsyncIterator[Stack]:
    config = sim_config or SimConfig(qr_rotate_s=2.0, sync_delay_s=0.3, ack_delays_s=(0.2, 0.4, 0.6))
    async with trio.open_nursery() as nursery:
        sim: SimServer = await nursery.start(lambda task_status: serve(
            seed=7, config=config, task_status=task_status))
        settings = fast_settings(state_dir, sim.url, **whatsapp)
        async with (
            Database.open(dsn, min_size=1, max_size=10) as db,
            BrowserDriver.open(settings.whatsapp) as browser_driver,
            open_sessions(browser_driver, mode=settings.whatsapp.browser_mode,
                          orgs_per_browser=settings.whatsapp.orgs_per_browser,
                          save_interval_s=settings.whatsapp.storage_save_interval_s) as driver,
            SimClient(sim.url) as phone,
        ):
            stack = Stack(sim=sim, phone=phone, db=db, settings=settings, driver=driver,
                          bus=EventBus(), nursery=nursery)
            try:
                yield stack
            finally:
                if stack.manager is not None:
                    await stack.stop_daemon()
                nursery.cancel_scope.cancel()
