"""`wad run`: the daemon's root. Opens the trio-asyncio loop and the database (embedded or DSN),
applies migrations, serves the control API on TCP and the unix socket, speaks the systemd notify
protocol, and handles SIGINT/SIGTERM (graceful stop, exit 0) and SIGHUP (reload configuration).

The systemd watchdog is fed as long as the event loop runs, whatever the database does: during
an outage the daemon is doing what it should (waiting for it), so systemd must not kill it; a
stuck loop stops the pings. For tests only, `WAD_DEBUG_BLOCK_LOOP_S=N` makes SIGUSR2 block the
event loop for N seconds (unset, SIGUSR2 keeps its default action).
"""

from __future__ import annotations

import gc
import os
import signal
import time
import uuid
from functools import partial
from pathlib import Path
from typing import Any, cast

import structlog
import trio

import wad
from wad import config as config_mod
from wad import log, plugins
from wad.api.app import create_app
from wad.api.context import AppContext, Services, service_specs
from wad.api.server import serve_api
from wad.browser.driver import BrowserDriver
from wad.browser.shared import open_sessions
from wad.bus import EventBus, PluginFailed
from wad.config import Settings
from wad.db.connect import asyncio_loop, open_database
from wad.db.pool import Database
from wad.errors import ConfigError
from wad.importer.service import ImportService
from wad.notifications import forward_session_status
from wad.notify import Notifier
from wad.org.manager import OrgContext, OrgManager
from wad.supervise import ChildSpec, Restart, Strategy, Supervisor
from wad.whatsapp import places

_log = log.get("daemon")


def freeze_heap() -> int:
    """Collect, then move every object alive now (the modules, the app, the plugins: what the
    start made and keeps) out of the way of the cyclic garbage collector (`gc.freeze`); answers
    how many objects are frozen. The collector's full passes over them were among the event
    loop's longest pauses under load (docs/operations.md, "The paced run measured again").
    Reference counting still frees a frozen object that is let go; only cycles among them
    would stay."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def prepare_state_dir(settings: Settings) -> Path:
    """Create the state directory and answer it, absolute. Mode 0751: others may pass through
    (the embedded cluster's `postgres` user must reach `pg/`) but not list it."""
    path = settings.state_path.absolute()
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o751)
    return path


class Daemon:
    """One running daemon: its settings, database, notifier and shutdown switch."""

    def __init__(self, settings: Settings, notifier: Notifier | None = None) -> None:
        self.settings = settings
        self.notifier = notifier or Notifier()
        self.shutdown = trio.Event()
        self.stopped = trio.Event()
        self.exit_code = 0
        self.block_loop_s = _debug_block_loop_s()

    async def run(self, *, task_status: trio.TaskStatus[AppContext] = trio.TASK_STATUS_IGNORED
                  ) -> int:
        """Run until a stop signal (or `shutdown` is set); answer the exit code. Reports ready
        with the live `AppContext` (for in-process users such as `wad demo` and tests)."""
        prepare_state_dir(self.settings)
        structlog.contextvars.bind_contextvars(node=self.settings.node)
        if self.settings.database.dsn and not self.settings.secret_key:
            _log.warning("WAD_SECRET_KEY is not set: session archives are sealed with this "
                         "machine's key file, so another daemon on the same database cannot "
                         "restore them; set the same WAD_SECRET_KEY on every daemon")
        async with (
            asyncio_loop(),
            open_database(self.settings) as db,
            BrowserDriver.open(self.settings.whatsapp) as browser_driver,
            open_sessions(browser_driver, mode=self.settings.whatsapp.browser_mode,
                          orgs_per_browser=self.settings.whatsapp.orgs_per_browser,
                          save_interval_s=self.settings.whatsapp.storage_save_interval_s
                          ) as driver,
        ):
            bus = EventBus()
            pm = plugins.get_plugin_manager(self.settings.plugins)
            pm.bind(settings=self.settings, db=db)

            def plugin_failed(plugin: str, hook: str) -> None:
                bus.publish(PluginFailed(org_id=None, plugin=plugin, hook=hook))

            pm.on_error.append(plugin_failed)
            _log.info("plugins loaded", plugins=plugins.registered_names(pm))
            manager = OrgManager(settings=self.settings, db=db, driver=driver, bus=bus,
                                 plugins=pm)
            ctx = AppContext(settings=self.settings, db=db,
                             services=Services(orgs=manager, bus=bus),
                             imports=ImportService(settings=self.settings, db=db))
            app = create_app(ctx)  # also makes the metrics, subscribed before anything runs
            root = self.tree(ctx, manager, pm, bus, db)
            ctx.services.supervisor = root
            for problem in grace_problems(self.settings, root, manager):
                _log.error("shutdown graces do not nest; a stop may be cut short",
                           problem=problem)
            for problem in restart_problems(self.settings, manager):
                _log.error("a restart intensity can never be reached", problem=problem)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._signals, nursery.cancel_scope)
                # The index of phone place names, built once per phonenumbers version, so the
                # first inbound client does not wait for it (`wad.whatsapp.places`).
                nursery.start_soon(partial(
                    trio.to_thread.run_sync, places.prepare, abandon_on_cancel=True))
                await nursery.start(root.run)
                addresses = await nursery.start(self._serve, app)
                frozen = freeze_heap()  # what the start made stays: out of the collector's way
                _log.info("wad is ready", version=wad.__version__, addresses=addresses,
                          state_dir=str(self.settings.state_path.absolute()),
                          heap_frozen=frozen)
                self.notifier.ready(status=f"serving on {', '.join(addresses)}")
                ctx.services.addresses = addresses
                task_status.started(ctx)
                await self.shutdown.wait()
                self.notifier.stopping()
                _log.info("stopping: closing sessions (archives saved, browsers closed)")
                # Cancelling the tree stops every organization in reverse order, each within
                # its shutdown grace; the API stops accepting requests at the same time.
                nursery.cancel_scope.cancel()
        _log.info("stopped", exit_code=self.exit_code)
        self.stopped.set()
        return self.exit_code

    def tree(self, ctx: AppContext, manager: OrgManager, pm: plugins.PluginManager,
             bus: EventBus, db: Database) -> Supervisor:
        """The daemon's supervision tree: every long-lived task but the API server and the
        signal handler (the root's own). Started in this order, stopped in reverse: the
        organizations stop first, while the services that observe them still run."""
        grace = self.settings.graces.service_s
        api = {spec.id: spec for spec in service_specs(ctx, grace=grace)}
        children = [
            api["change-feed"], api["token-cache"], api["status-lookups"], api["metrics"],
            # Plugins' background tasks (e.g. webhook deliveries), each its own child.
            ChildSpec("plugins", plugins.task_supervisor(pm, grace=grace).run,
                      restart=Restart.TRANSIENT, shutdown=grace),
            ChildSpec("notifications", partial(forward_session_status, bus, pm), shutdown=grace),
            api["imports"],
        ]
        if self.notifier.enabled:
            children.append(ChildSpec("watchdog", partial(self._watchdog, db), shutdown=grace))
        children.append(ChildSpec("orgs", manager.run,
                                  shutdown=self.settings.graces.organizations_s))
        return Supervisor("wad", children, intensity=3, period=60.0)

    async def _serve(self, app: object,
                     task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        api = self.settings.api
        await serve_api(app, listen=api.listen, socket_path=self.settings.control_socket.absolute(),
                        max_body=api.max_body_bytes, shutdown=self.shutdown,
                        header_timeout_s=api.header_timeout_s,
                        body_timeout_s=api.body_timeout_s, send_timeout_s=api.send_timeout_s,
                        tls=api.tls, fast_lane=api.fast_lane, task_status=task_status)

    async def _signals(self, scope: trio.CancelScope) -> None:
        kinds = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
        if self.block_loop_s:
            kinds.append(signal.SIGUSR2)
        with trio.open_signal_receiver(*kinds) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self._reload()
                    continue
                if signum == signal.SIGUSR2:
                    _log.warning("blocking the event loop (WAD_DEBUG_BLOCK_LOOP_S)",
                                 seconds=self.block_loop_s)
                    time.sleep(self.block_loop_s)  # noqa: ASYNC251 - the point: a stuck loop
                    continue
                if self.shutdown.is_set():
                    _log.warning("second stop signal: stopping now")
                    scope.cancel()
                    return
                _log.info("stop signal received", signal=signal.Signals(signum).name)
                self.shutdown.set()

    def _reload(self) -> None:
        """SIGHUP: re-read the configuration; apply what can change while running."""
        self.notifier.reloading()
        try:
            fresh = config_mod.load(None if self.settings.source == "<defaults>"
                                    else self.settings.source)
        except ConfigError as exc:
            _log.error("reload refused: configuration invalid; keeping the current one",
                       error=str(exc))
        else:
            log.configure(fmt=fresh.daemon.log_format, level=fresh.daemon.log_level)
            changed = [name for name in ("daemon", "api", "database", "whatsapp", "inbound", "outbound",
                                         "plugins")
                       if getattr(fresh, name) != getattr(self.settings, name)]
            self.settings.whatsapp = fresh.whatsapp
            self.settings.inbound = fresh.inbound
            self.settings.outbound = fresh.outbound
            self.settings.daemon.log_level = fresh.daemon.log_level
            self.settings.daemon.log_format = fresh.daemon.log_format
            _log.info("configuration reloaded", sections_changed=changed,
                      note="whatsapp, inbound and outbound apply as they are next read; "
                           "api, database and plugins changes at the next restart")
        self.notifier.ready(status="reloaded")

    async def _watchdog(self, db: Database,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Feed systemd's watchdog (at half its `WATCHDOG_USEC`) for as long as this task runs,
        which is as long as the event loop is not stuck: a database outage does not stop the
        pings (the daemon is waiting for the database, as it should). Also tells systemd's
        `STATUS=` when the database becomes unavailable and when it is back."""
        interval = self.notifier.watchdog_interval
        told: str | None = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_check_database, db)  # never in the way of the pings
            task_status.started()
            while True:
                if interval:
                    self.notifier.watchdog()
                outage = db.availability.describe()
                if outage != told:
                    self.notifier.status(outage or "database available again")
                    told = outage
                await trio.sleep(interval or 1.0)


DATABASE_CHECK_S = 5.0
"""How often the watchdog's companion asks the database whether it answers."""


async def _check_database(db: Database) -> None:
    """Keep `db.availability` current even while nothing else uses the database."""
    while True:
        await db.ping(timeout=DATABASE_CHECK_S)
        await trio.sleep(DATABASE_CHECK_S)


def _debug_block_loop_s() -> float:
    """`WAD_DEBUG_BLOCK_LOOP_S` as seconds (0: unset or not a positive number)."""
    raw = os.environ.get("WAD_DEBUG_BLOCK_LOOP_S", "")
    try:
        value = float(raw) if raw else 0.0
    except ValueError:
        _log.warning("WAD_DEBUG_BLOCK_LOOP_S is not a number; ignored", value=raw)
        return 0.0
    return value if 0 < value < 3600 else 0.0


class _Shape:
    """Stands in for a session actor where only the tree's shape is read, not run."""

    async def run(self) -> None:
        raise NotImplementedError


def example_org_supervisor(settings: Settings, manager: OrgManager) -> Supervisor:
    """An organization's supervisor as the manager builds it, for reading its shape."""
    send, receive = trio.open_memory_channel[object](0)
    send.close()
    example = OrgContext(org_id=uuid.UUID(int=0), settings=settings, db=manager.db,
                         bus=manager.bus, session=cast(Any, _Shape()), inbound_events=receive)
    return manager.org_supervisor(example)


def grace_problems(settings: Settings, root: Supervisor, manager: OrgManager) -> list[str]:
    """Where the shutdown graces do not nest: at each level, the children's graces together
    (for the organizations, which stop at once, the largest) must fit in the parent's."""
    orgs = Supervisor("orgs", [ChildSpec("org", _Shape().run,
                                         shutdown=settings.graces.organization_s)],
                      strategy=Strategy.SIMPLE_ONE_FOR_ONE)
    levels = [("daemon.shutdown_grace_s", settings.daemon.shutdown_grace_s, root),
              ("graces.organizations_s", settings.graces.organizations_s, orgs),
              ("graces.organization_s", settings.graces.organization_s,
               example_org_supervisor(settings, manager))]
    return [f"{name} = {grace:g} s is less than its children's {sup.stop_budget:g} s "
            f"({', '.join(f'{s.id} {s.shutdown:g}' for s in sup.specs())})"
            for name, grace, sup in levels if sup.stop_budget > grace]


def restart_problems(settings: Settings, manager: OrgManager) -> list[str]:
    """Restart intensities that can never give up: when the backoff before `intensity`
    restarts adds up to the period or more, a crash loop is restarted for ever (each failure
    falls out of the window before the count is reached)."""
    task = plugins.task_policy("task", [], settings.plugins)
    levels = [("daemon.org_max_restarts", "daemon.org_restart_period_s",
               example_org_supervisor(settings, manager)),
              ("plugins.task_max_restarts", "plugins.task_restart_period_s", task)]
    return [f"{intensity} = {sup.intensity}: those restarts wait {sup.quickest_give_up:g} s in "
            f"backoff, not less than {period} = {sup.period:g} s, so a crash loop is never "
            "given up" for intensity, period, sup in levels if sup.quickest_give_up >= sup.period]


def run(settings: Settings) -> int:
    """Blocking entry point of `wad run`."""
    return trio.run(Daemon(settings).run)
