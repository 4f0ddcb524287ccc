"""Helpers for the plugin tests: a real HTTP server on 127.0.0.1 port 0 (a Quart-Trio app under
Hypercorn, in the test's own Trio run), and payload factories."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from wad.config import PluginSettings
from wad.payloads import Client, Message
from wad.plugins import PluginManager, get_plugin_manager


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve `app` for the block; yields its base URL (`http://127.0.0.1:PORT`)."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 0.2
    shutdown = trio.Event()

    async def run(task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
        await serve(app, config, shutdown_trigger=shutdown.wait, task_status=task_status)

    async with trio.open_nursery() as nursery:
        bound = await nursery.start(run)
        try:
            yield bound[0]
        finally:
            shutdown.set()


ORG = uuid.UUID("00000000-0000-4000-8000-000000000001")
_clock = itertools.count()


def client(**fields: Any) -> Client:
    """A client payload with sensible defaults."""
    values: dict[str, Any] = {"id": uuid.uuid4(), "organization_id": ORG,
                              "phone": "+996555123456", "name": "Aigerim"}
    values.update(fields)
    return Client(**values)


def message(text: str, *, direction: str = "IN", **fields: Any) -> Message:
    """A stored text message payload; each one a second after the previous."""
    values: dict[str, Any] = {
        "id": uuid.uuid4(), "organization_id": ORG, "wa_message_id": f"wamid.{uuid.uuid4().hex}",
        "wa_chat_id": "996555123456@c.us", "direction": direction,
        "sender": "CLIENT" if direction == "IN" else "HUMAN",
        "sent_at": datetime(2025, 7, 1, 9, 0, tzinfo=UTC) + timedelta(seconds=next(_clock)),
        "status": "RECEIVED" if direction == "IN" else "SENT", "body": text,
    }
    values.update(fields)
    return Message(**values)


def empty_pm(**settings: Any) -> PluginManager:
    """A manager with no plugins at all, for registering plugins inline."""
    return get_plugin_manager(PluginSettings(entry_points=False, **settings),
                              builtins=False, bundled=False)
