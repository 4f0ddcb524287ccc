"""`/api/whatsapp/import/{org}`: the historical import, run inside the daemon on the
organization's own live session (no second linked device, no QR).

`POST` starts it (202 with the progress), `GET` reports the progress (or the final report, or
the latest run recorded in the database), `DELETE` stops it (it ends `INTERRUPTED`; the next
start resumes it). All need `ADMIN`.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from flask.sansio.blueprints import BlueprintSetupState
from msgspec import Meta
from quart import Blueprint, Response
from quart_schema import tag

from wad.api.auth import org_route
from wad.api.context import AppContext, current
from wad.api.errors import ApiError
from wad.api.routes import whatsapp
from wad.api.schemas import Request
from wad.api.validation import body, reply, responds
from wad.db.models import ImportRun
from wad.db.repo import imports as imports_repo
from wad.errors import WadError
from wad.importer.engine import ImportBusy
from wad.importer.options import DEFAULT_PACE_S, DEFAULT_PAGE_SIZE, WHATSAPP_SOURCE, ImportOptions
from wad.importer.report import ChatError, ImportReport
from wad.importer.service import ImportService, live_session

bp = Blueprint("imports", __name__, url_prefix="/api/whatsapp")


class ImportStart(Request, forbid_unknown_fields=True, kw_only=True):
    """Body of `POST /api/whatsapp/import/{org}` (optional: every field has a default)."""

    limit: Annotated[int, Meta(ge=1, le=100_000)] | None = None
    """At most this many one-to-one chats, the most recent first."""
    dry_run: bool = False
    use_llm: bool = False
    openrouter_key: Annotated[str, Meta(min_length=1, max_length=500)] | None = None
    """For `useLlm`, when the daemon has no key of its own. Never stored or logged."""
    skip_duplicates: bool = True
    pace_s: Annotated[float, Meta(ge=0, le=60)] = DEFAULT_PACE_S
    """Seconds between two WhatsApp requests (0: no pacing)."""
    page_size: Annotated[int, Meta(ge=1, le=1000)] = DEFAULT_PAGE_SIZE


@bp.record_once
def _make_service(state: BlueprintSetupState) -> None:
    # The daemon hands in its own (run in its supervision tree); else made here, and run by
    # whoever serves the app (`wad.api.app.run_services`).
    ctx: AppContext = state.app.config["wad"]
    if ctx.imports is None:
        ctx.imports = ImportService(settings=ctx.settings, db=ctx.db)


def service() -> ImportService:
    """This daemon's import service; 503 when it is not running."""
    found = current().imports
    if found is None or found.nursery is None:
        raise ApiError(503, "unavailable", "this server cannot run background imports")
    return found


def run_report(run: ImportRun) -> ImportReport:
    """What the database remembers of a run, as a report (when this daemon did not run it)."""
    seconds = ((run.finished_at or run.updated_at) - run.started_at).total_seconds()
    errors = [ChatError(chat=str(e.get("chat", "")), error=str(e.get("error", "")))
              for e in run.errors]
    return ImportReport(
        organization_id=run.organization_id, source=run.source, state=run.status,
        dry_run=False, run_id=run.id, chats_total=run.chats_total or 0,
        chats_done=run.chats_done, chats_imported=run.chats_done - run.duplicates,
        chats_duplicate=run.duplicates, chats_failed=len(errors),
        messages_stored=run.messages_stored, errors=errors, seconds=round(seconds, 3))


@bp.post("/import/<org>")
@tag(["import"])
@responds(ImportReport, 202, errors=(400, 401, 403, 404, 409, 503))
@org_route("ADMIN")
@body(ImportStart, optional=True)
async def start(org_id: uuid.UUID, data: ImportStart) -> Response:
    """Start importing the organization's existing chats on its live session. Needs ADMIN and
    a connected session on this daemon (409 otherwise, and while an import runs)."""
    await whatsapp.require_org(org_id)
    manager: Any = whatsapp.manager()
    handle = manager.running(org_id)
    if handle is None:
        raise ApiError(409, "not_running", "the organization's session is not running on this "
                       "daemon: connect it first, or run `wad import` where no daemon serves it")
    if not handle.session.connected.is_set():
        raise ApiError(409, "not_connected", f"the WhatsApp session is {handle.session.state}; "
                       "link it first (`wad qr`)")
    options = ImportOptions(source=WHATSAPP_SOURCE, limit=data.limit, dry_run=data.dry_run,
                            use_llm=data.use_llm, skip_duplicates=data.skip_duplicates,
                            pace_s=data.pace_s, page_size=data.page_size)
    try:
        job = service().start(org_id, options, session=live_session(manager, org_id),
                              openrouter_key=data.openrouter_key)
    except ImportBusy as exc:
        raise ApiError(409, "import_running", str(exc)) from None
    except WadError as exc:
        raise ApiError(400, "invalid", str(exc)) from None
    return reply(job.report(), 202)


@bp.get("/import/<org>")
@tag(["import"])
@responds(ImportReport, errors=(401, 403, 404))
@org_route("ADMIN")
async def progress(org_id: uuid.UUID) -> Response:
    """The running import's progress, else the last one's report; from the database when this
    daemon ran none. 404 when the organization was never imported."""
    await whatsapp.require_org(org_id)
    imports = current().imports
    job = imports.job(org_id) if imports is not None else None
    if job is not None:
        return reply(job.report())
    run = await imports_repo.latest(whatsapp._db(), organization_id=org_id)
    if run is None:
        raise ApiError(404, "not_found", "this organization has not been imported yet")
    return reply(run_report(run))


@bp.delete("/import/<org>")
@tag(["import"])
@responds(ImportReport, errors=(401, 403, 404))
@org_route("ADMIN")
async def stop(org_id: uuid.UUID) -> Response:
    """Stop the running import; it ends `INTERRUPTED` and the next start resumes it."""
    await whatsapp.require_org(org_id)
    imports = current().imports
    job = await imports.stop(org_id) if imports is not None else None
    if job is None:
        raise ApiError(404, "not_found", "no import of this organization is running here")
    return reply(job.report())
