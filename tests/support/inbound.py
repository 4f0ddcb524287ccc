"""Inbound helpers: actors without delays, a test agent plugin, and waiting for stored messages."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from tests.support.events import Served, serve_app
from tests.support.stack import Stack
from wad import hookimpl
from wad.api.context import Services
from wad.config import InboundSettings, PluginSettings
from wad.db.models import Message
from wad.db.pool import Database
from wad.db.repo import messages as messages_repo
from wad.org.context import ActorFactory, OrgContext
from wad.org.inbound.actor import InboundActor, inbound_actor, run_inbound
from wad.org.manager import INBOUND_BUFFER
from wad.org.outbound.actor import run_outbound
from wad.org.session import SessionActor
from wad.payloads import Message as MessagePayload
from wad.plugins import PluginManager, get_plugin_manager

NO_DELAYS = InboundSettings(processing_delay_min_s=0, processing_delay_max_s=0,
                            reply_delay_min_s=0, reply_delay_max_s=0,
                            enrichment_pause_min_s=0, enrichment_pause_max_s=0)


def plugins_with(*extra: tuple[Any, str]) -> PluginManager:
    """The built-in language detector, the heuristic status detector, and `extra` plugins."""
    pm = get_plugin_manager(PluginSettings(entry_points=False, enabled=["heuristic_status"]))
    for plugin, name in extra:
        pm.register(plugin, name)
    return pm


class Agent:
    """A test agent: answers every client message, remembering what it was shown."""

    def __init__(self, text: str = "Thank you! A manager will answer shortly.") -> None:
        self.text = text
        self.seen: list[tuple[str, Sequence[MessagePayload]]] = []

    @hookimpl
    async def wad_agent_reply(self, message: MessagePayload, client: Any,
                              conversation: Sequence[MessagePayload]) -> str:
        self.seen.append((message.text, conversation))
        return self.text


def inbound(settings: InboundSettings = NO_DELAYS) -> list[ActorFactory]:
    return [functools.partial(inbound_actor, settings=settings)]


async def link_inbound_org(stack: Stack, account: str, name: str) -> uuid.UUID:
    """A new organization of a daemon with the inbound actor (no delays), linked by QR to a
    new simulated account `account` called `name`."""
    await stack.phone.create_account(account, name)
    await stack.start_daemon(actors=inbound())
    org = await stack.new_org()
    await stack.link_by_qr(org, account)
    return org


async def scanned_and_connected(stack: Stack, org: uuid.UUID, account: str) -> None:
    """The organization's QR, once shown, scanned by the simulator's `account`; returns once
    the session is `CONNECTED`."""
    row = await stack.wait_state(org, "QR_CODE_PENDING")
    await stack.phone.scan_qr(account, row.qr_payload or "")
    await stack.wait_state(org, "CONNECTED")


async def serve_inbound_daemon(stack: Stack, nursery: trio.Nursery, state_dir: Path
                               ) -> tuple[Served, trio.Event]:
    """The stack's organization manager with the inbound actor (no delays), behind the real
    control API with its bus and manager; set the answered event to stop serving."""
    manager = await stack.start_daemon(actors=inbound())
    return await serve_app(nursery, stack.db, state_dir, Services(bus=stack.bus, orgs=manager))


def wa_id(delivered: dict[str, Any]) -> str:
    return str(delivered["id"]["_serialized"])


async def stored(stack: Stack, org: uuid.UUID, ids: list[str], *, timeout: float = 30,
                 done: bool = True) -> list[Message]:
    """The rows of these WhatsApp ids once all are stored (and processed, unless `done` is
    False), in the order of `ids`."""
    with trio.fail_after(timeout):
        while True:
            rows = [await messages_repo.get_by_wa_id(stack.db, organization_id=org,
                                                     wa_message_id=i) for i in ids]
            if all(r is not None and (not done or r.processing_state != "PENDING")
                   for r in rows):
                return [r for r in rows if r is not None]
            await trio.sleep(0.05)


@asynccontextmanager
async def org_actors(stack: Stack, org: uuid.UUID, settings: InboundSettings = NO_DELAYS, *,
                     outbound: bool = False) -> AsyncIterator[InboundActor]:
    """One organization's session and inbound actors (and its outbound actor, given
    `outbound`), wired as the organization manager wires them, but without the manager's
    database ownership checks (losing the lock connection stops every organization, which a
    database outage does)."""
    send, receive = trio.open_memory_channel[Any](INBOUND_BUFFER)
    session = SessionActor(org_id=org, settings=stack.settings, db=stack.db, driver=stack.driver,
                           bus=stack.bus, inbound=send)
    ctx = OrgContext(org_id=org, settings=stack.settings, db=stack.db, bus=stack.bus,
                     session=session, inbound_events=receive)
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        actor = await nursery.start(functools.partial(run_inbound, ctx, settings=settings))
        if outbound:
            await nursery.start(functools.partial(run_outbound, ctx))
        yield actor
        nursery.cancel_scope.cancel()


async def processed(db: Database, org: uuid.UUID, wa_id: str, timeout: float = 30
                    ) -> Message:
    """The stored message once processing has finished with it (processed or parked)."""
    with trio.fail_after(timeout):
        while True:
            row = await messages_repo.get_by_wa_id(db, organization_id=org, wa_message_id=wa_id)
            if row is not None and row.processing_state != "PENDING":
                return row
            await trio.sleep(0.02)
