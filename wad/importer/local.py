"""An import run by the `wad import` process itself: its database, its plugins, its source.

Used when no daemon serves the organization (or for a plugin source, which reads local files).
The database is the configured one, or the daemon's private cluster under `STATE_DIR/pg`: reused
when it is up (a daemon, or an earlier run, started it) and otherwise started for the import and
stopped after it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec

from wad import environment, log
from wad.config import Settings, inbound_settings
from wad.db.connect import open_database
from wad.db.pool import Database
from wad.db.repo import organizations as orgs_repo
from wad.db.repo import sessions as sessions_repo
from wad.errors import ConfigError, NotFound, WadError
from wad.importer.engine import Importer, ProgressCallback
from wad.importer.options import WHATSAPP_SOURCE, ImportOptions
from wad.importer.pacing import Pacer
from wad.importer.sources import ChatSource, PluginSource, WhatsAppSource
from wad.plugins import PluginManager, get_plugin_manager, import_sources

_log = log.get("import")

LLM_PLUGIN = "openrouter"


def openrouter_key(settings: Settings, given: str | None = None) -> str:
    """The OpenRouter key an import would use: given, else the environment's
    (`OPENROUTER_API_KEY`), else the plugin's configuration; empty when there is none."""
    configured = settings.plugins.config.get(LLM_PLUGIN, {}).get("api_key", "")
    return (given or settings.openrouter_api_key or environment.secret("OPENROUTER_API_KEY")
            or (configured if isinstance(configured, str) else ""))


def check_llm(settings: Settings, *, use_llm: bool, key: str | None) -> None:
    """Refuse `--use-llm` that cannot work, before anything starts."""
    if not use_llm:
        return
    if LLM_PLUGIN in settings.plugins.disabled:
        raise ConfigError("--use-llm needs the openrouter plugin, but plugins.disabled lists it")
    if not openrouter_key(settings, key):
        raise WadError("--use-llm needs an OpenRouter key: give --openrouter-key KEY or set "
                       "OPENROUTER_API_KEY (or plugins.config.openrouter.api_key)")


def import_plugin_manager(settings: Settings, *, use_llm: bool, key: str | None = None
                          ) -> PluginManager:
    """A plugin manager for one import: the configured plugins, with the OpenRouter status
    detector only when `use_llm` (then with `key` when given), so that without `--use-llm`
    statuses are decided by the heuristic detector even when a key is configured."""
    check_llm(settings, use_llm=use_llm, key=key)
    disabled = list(settings.plugins.disabled)
    config = dict(settings.plugins.config)
    if not use_llm:
        if LLM_PLUGIN not in disabled:
            disabled.append(LLM_PLUGIN)
        config.pop(LLM_PLUGIN, None)
    elif key:
        # A key given for this import wins over the configured one.
        config[LLM_PLUGIN] = {**config.get(LLM_PLUGIN, {}), "api_key": key}
    app = msgspec.structs.replace(
        settings, plugins=msgspec.structs.replace(settings.plugins, disabled=disabled,
                                                  config=config),
        openrouter_api_key=openrouter_key(settings, key) if use_llm else "")
    pm = get_plugin_manager(app)
    if use_llm and not pm.has_plugin(LLM_PLUGIN):
        raise WadError("--use-llm needs the openrouter plugin, which is not installed or not "
                       "enabled (plugins.enabled)")
    return pm


async def account_options(db: Database, organization_id: uuid.UUID) -> dict[str, str]:
    """The organization's linked account as a plugin source's options (`account_name`,
    `account_phone`, from its session record), so that an export tells the owner's messages
    from the contact's without `--me`."""
    session = await sessions_repo.get(db, organization_id=organization_id)
    found: dict[str, str] = {}
    if session is not None and session.push_name:
        found["account_name"] = session.push_name
    if session is not None and session.phone_number:
        found["account_phone"] = session.phone_number
    return found


def plugin_source(pm: PluginManager, options: ImportOptions, organization_id: uuid.UUID,
                  account: dict[str, str] | None = None) -> PluginSource:
    """The importer plugin's source named by `options.source`, over `options.paths`, told the
    linked account (`account_options`)."""
    sources = import_sources(pm)
    found = sources.get(options.source)
    if found is None:
        known = ", ".join([WHATSAPP_SOURCE, *sorted(sources)])
        raise WadError(f"no import source named {options.source!r} (known: {known})")
    return PluginSource(found, organization_id=organization_id, paths=options.paths,
                        options={**(account or {}), **options.source_options()})


def whatsapp_source(session: Any, options: ImportOptions) -> WhatsAppSource:
    """The live session as a source, paced as the options say."""
    return WhatsAppSource(session, pacer=Pacer(options.pace_s), page_size=options.page_size)


def importer(*, settings: Settings, db: Database, organization_id: uuid.UUID,
             source: ChatSource, options: ImportOptions, pm: PluginManager | None,
             on_progress: ProgressCallback | None = None) -> Importer:
    """An `Importer` with the daemon's detection settings (languages, conversation window)."""
    inbound = inbound_settings(settings)
    return Importer(db=db, organization_id=organization_id, source=source, options=options,
                    pm=pm, languages=inbound.languages, window=inbound.conversation_window,
                    on_progress=on_progress)


@asynccontextmanager
async def import_database(settings: Settings) -> AsyncIterator[Database]:
    """The configured database, or the private cluster (reused when up, else started for the
    import and stopped after it); migrated."""
    async with open_database(settings, owner=False, pool_max=4) as db:
        yield db


async def require_org(db: Database, organization_id: uuid.UUID) -> None:
    if await orgs_repo.get(db, organization_id=organization_id) is None:
        raise NotFound(f"no organization with id {organization_id} (create one with "
                       "`wad org create NAME`)")

