"""The inbound actor fed the session's events directly (no browser), on a real database: a
harness that runs it and records what it publishes, and the page's messages as the bridge
reports them."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from tests.support.inbound import NO_DELAYS
from wad.browser import events as ev
from wad.bus import Event, EventBus
from wad.config import DaemonSettings, InboundSettings, Settings
from wad.db.pool import Database
from wad.db.repo import organizations
from wad.org.context import OrgContext
from wad.org.inbound.actor import InboundActor, run_inbound
from wad.org.inbound.priority import StoreFirst
from wad.plugins import PluginManager

BASE_T = 1751360400  # 2025-07-01 09:00 UTC


class NoBrowser:
    """The session actor while no browser is open: not connected, no page."""

    def __init__(self) -> None:
        self.connected = trio.Event()
        self.session = None


@dataclass
class Harness:
    org: uuid.UUID
    db: Database
    events: trio.MemorySendChannel[Any]
    actor: InboundActor
    published: list[Event]

    def kinds(self, kind: str) -> list[Event]:
        return [e for e in self.published if e.kind == kind]


@asynccontextmanager
async def running(db: Database, state_dir: Path, *, plugins: PluginManager | None = None,
                  settings: InboundSettings = NO_DELAYS, org: uuid.UUID | None = None,
                  store_first: StoreFirst | None = None) -> AsyncIterator[Harness]:
    if org is None:
        org = (await organizations.create(db, name="Tours")).id
    send, receive = trio.open_memory_channel[Any](100)
    bus = EventBus()
    ctx = OrgContext(org_id=org, settings=Settings(daemon=DaemonSettings(state_dir=str(state_dir))),
                     db=db, bus=bus, session=NoBrowser(),  # type: ignore[arg-type]
                     inbound_events=receive, plugins=plugins,
                     store_first=store_first or StoreFirst())
    published: list[Event] = []

    async def record(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with bus.subscribe(org_id=org) as events:
            task_status.started()
            async for event in events:
                published.append(event)

    async with trio.open_nursery() as nursery:
        await nursery.start(record)
        actor = await nursery.start(functools.partial(run_inbound, ctx, settings=settings))
        yield Harness(org=org, db=db, events=send, actor=actor, published=published)
        nursery.cancel_scope.cancel()


def wa(n: int, body: str = "Hello", *, sender: str = "996555123456", push_name: str | None = "Aigerim",
       from_me: bool = False, t: int | None = None, **fields: Any) -> ev.Message:
    chat = fields.pop("chat_id", f"{sender}@c.us")
    wa_id = f"{'true' if from_me else 'false'}_{chat}_{n:020X}"
    return ev.Message(id=wa_id, from_me=from_me, chat_id=chat, type=fields.pop("type", "chat"),
                      body=body, timestamp=t if t is not None else BASE_T + n,
                      push_name=None if from_me else push_name, ack=1 if from_me else 0,
                      **fields)


async def refuse_client_writes(db: Database, *, times: int | None = None,
                               phone: str | None = None,
                               error: str = "clients table under maintenance") -> None:
    """Make writes to `clients` fail with a real error: the first `times` ones (all: None), of
    the client with `phone` only when given. `allow_client_writes` undoes it."""
    limit = "true" if times is None else f"nextval('clients_refusals') <= {times}"
    if phone is not None:
        limit = f"NEW.phone = '{phone}' AND {limit}"
    await db.execute("CREATE SEQUENCE IF NOT EXISTS clients_refusals")
    await db.execute(f"""
        CREATE OR REPLACE FUNCTION refuse_clients() RETURNS trigger AS $$
        BEGIN
            IF {limit} THEN
                RAISE EXCEPTION '{error}';
            END IF;
            RETURN NEW;
        END $$ LANGUAGE plpgsql""")
    await db.execute("CREATE TRIGGER refuse_clients BEFORE INSERT OR UPDATE ON clients "
                     "FOR EACH ROW EXECUTE FUNCTION refuse_clients()")


async def allow_client_writes(db: Database) -> None:
    """Undo `refuse_client_writes`."""
    await db.execute("DROP TRIGGER IF EXISTS refuse_clients ON clients")
