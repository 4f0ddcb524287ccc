"""`wad run`: the daemon's root. Opens the trio-asyncio loop and the database (embedded or DSN),
applies migrations, serves the control API on TCP and the unix socket, speaks the systemd notify
protocol, and handles SIGINT/SIGTERM (graceful stop, exit 0) and SIGHUP (reload configuration).
"""

from __future__ import annotations

import os
import signal
from functools import partial
from pathlib import Path

import structlog
import trio

import wad
from wad import config as config_mod
from wad import log, plugins
from wad.api.app import AppContext, create_app
from wad.api.server import serve_api
from wad.browser.driver import BrowserDriver
from wad.bus import EventBus
from wad.config import Settings
from wad.db.connect import asyncio_loop, open_database
from wad.db.pool import Database
from wad.errors import ConfigError
from wad.notifications import forward_session_status
from wad.notify import Notifier
from wad.org.manager import OrgManager
from wad.supervise import ChildSpec, Restart, Supervisor

_log = log.get("daemon")


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
            BrowserDriver.open(self.settings.whatsapp) as driver,
        ):
            bus = EventBus()
            pm = plugins.get_plugin_manager(self.settings.plugins)
            pm.bind(settings=self.settings, db=db)

            def plugin_failed(plugin: str, hook: str) -> None:
                bus.publish("plugin.error", None, {"plugin": plugin, "hook": hook})

            pm.on_error.append(plugin_failed)
            _log.info("plugins loaded", plugins=plugins.registered_names(pm))
            manager = OrgManager(settings=self.settings, db=db, driver=driver, bus=bus,
                                 plugins=pm)
            root = Supervisor("wad", [
                # Plugins' background tasks (e.g. webhook deliveries); none at all is a normal exit.
                ChildSpec("plugins", partial(plugins.run_background_tasks, pm),
                          restart=Restart.TRANSIENT),
                ChildSpec("notifications", partial(forward_session_status, bus, pm)),
                ChildSpec("orgs", manager.run, shutdown=self.settings.daemon.shutdown_grace_s),
            ], intensity=3, period=60.0)
            ctx = AppContext(settings=self.settings, db=db,
                             services={"orgs": manager, "bus": bus, "supervisor": root,
                                       "plugins": pm})
            app = create_app(ctx)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._signals, nursery.cancel_scope)
                await nursery.start(root.run)
                addresses = await nursery.start(self._serve, app)
                _log.info("wad is ready", version=wad.__version__, addresses=addresses,
                          state_dir=str(self.settings.state_path.absolute()))
                self.notifier.ready(status=f"serving on {', '.join(addresses)}")
                ctx.services["addresses"] = addresses
                task_status.started(ctx)
                if self.notifier.watchdog_interval:
                    nursery.start_soon(self._watchdog, db)
                await self.shutdown.wait()
                self.notifier.stopping()
                _log.info("stopping: closing sessions (archives saved, browsers closed)")
                # Cancelling the tree stops every organization in reverse order, each within
                # its shutdown grace; the API stops accepting requests at the same time.
                nursery.cancel_scope.cancel()
        _log.info("stopped", exit_code=self.exit_code)
        self.stopped.set()
        return self.exit_code

    async def _serve(self, app: object,
                     task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        api = self.settings.api
        await serve_api(app, listen=api.listen, socket_path=self.settings.control_socket.absolute(),
                        max_body=api.max_body_bytes, shutdown=self.shutdown,
                        header_timeout_s=api.header_timeout_s,
                        body_timeout_s=api.body_timeout_s, send_timeout_s=api.send_timeout_s,
                        task_status=task_status)

    async def _signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for signum in signals:
                if signum == signal.SIGHUP:
                    self._reload()
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

    async def _watchdog(self, db: Database) -> None:
        """Feed systemd's watchdog only while our own loop and the database are healthy."""
        interval = self.notifier.watchdog_interval or 10.0
        while True:
            if await db.ping():
                self.notifier.watchdog()
            else:
                _log.warning("database not answering; withholding the watchdog ping")
            await trio.sleep(interval)


def run(settings: Settings) -> int:
    """Blocking entry point of `wad run`."""
    return trio.run(Daemon(settings).run)
