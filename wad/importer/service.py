"""Imports running inside the daemon, on an organization's own live session (no second linked
device, no QR): at most one per organization, started and watched through the control API."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import trio

from wad import log
from wad.config import Settings
from wad.db.pool import Database
from wad.errors import WadError
from wad.importer import local
from wad.importer.engine import ImportBusy, Importer
from wad.importer.options import ImportOptions
from wad.importer.report import ImportReport, Progress
from wad.importer.sources import BrowserSessionLike, SessionGetter, SourceGone
from wad.supervise import Launch

_log = log.get("import")

STOP_WAIT_S = 20.0


@dataclass(eq=False)
class ImportJob(Launch):
    """One import in this daemon: its importer, run in the launch's scope."""

    organization_id: uuid.UUID
    options: ImportOptions
    importer: Importer

    def report(self) -> ImportReport:
        return self.importer.progress.report()


def live_session(manager: Any, organization_id: uuid.UUID) -> SessionGetter:
    """The organization's session in this daemon, for each request of an import; `SourceGone`
    once it stopped or is not connected."""

    async def get() -> BrowserSessionLike:
        handle = manager.running(organization_id)
        if handle is None:
            raise SourceGone("the organization's session stopped on this daemon")
        actor = handle.session
        session = actor.session
        if session is None or not actor.connected.is_set():
            raise SourceGone(f"the WhatsApp session is not connected (it is {actor.state})")
        found: BrowserSessionLike = session
        return found

    return get


class ImportService:
    """This daemon's imports, one per organization at most, run while `run` runs (a child of
    the daemon's supervision tree); the last job of an organization stays readable after it
    ends."""

    def __init__(self, *, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.nursery: trio.Nursery | None = None
        """Where jobs run: set while `run` runs."""
        self._jobs: dict[uuid.UUID, ImportJob] = {}

    async def run(self, *, task_status: trio.TaskStatus[ImportService] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Run jobs until cancelled (a supervised child of the daemon); cancelling stops the
        running imports (they end `INTERRUPTED`)."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            task_status.started(self)
            try:
                await trio.sleep_forever()
            finally:
                self.nursery = None

    def job(self, organization_id: uuid.UUID) -> ImportJob | None:
        """The organization's running or last import in this daemon."""
        return self._jobs.get(organization_id)

    def start(self, organization_id: uuid.UUID, options: ImportOptions, *,
              session: SessionGetter, openrouter_key: str | None = None) -> ImportJob:
        """Start an import of the live session. Raises `ImportBusy` when one runs already, and
        `WadError` for options that cannot work (`use_llm` without a key)."""
        current = self._jobs.get(organization_id)
        if current is not None and current.running:
            raise ImportBusy(f"an import of organization {organization_id} is running already")
        if options.source != local.WHATSAPP_SOURCE:
            raise WadError("the daemon imports from the live WhatsApp session only; run other "
                           "sources with `wad import --source NAME` on this machine")
        pm = local.import_plugin_manager(self.settings, use_llm=options.use_llm,
                                         key=openrouter_key)
        imp = local.importer(settings=self.settings, db=self.db,
                             organization_id=organization_id,
                             source=local.whatsapp_source(session, options), options=options,
                             pm=pm)
        if self.nursery is None:
            raise WadError("the import service is not running")
        job = ImportJob(organization_id=organization_id, options=options, importer=imp)
        self._jobs[organization_id] = job
        self.nursery.start_soon(self._run, job)
        return job

    async def _run(self, job: ImportJob) -> None:
        try:
            with job.scope:
                await job.importer.run()
        except ImportBusy as exc:
            progress: Progress = job.importer.progress
            progress.state = "FAILED"
            progress.reason = str(exc)
            progress.finished_at = trio.current_time()
        except Exception:
            _log.exception("import job failed", org=str(job.organization_id))
        finally:
            job.done.set()

    async def stop(self, organization_id: uuid.UUID) -> ImportJob | None:
        """Stop the organization's running import (it ends `INTERRUPTED`; a new start resumes
        it) and wait for it to end. None when none runs."""
        job = self._jobs.get(organization_id)
        if job is None or not job.running:
            return None
        await job.stop(STOP_WAIT_S)
        return job
