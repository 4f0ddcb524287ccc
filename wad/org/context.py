"""What an organization's actors share, and the shape of an actor's factory.

Its own module so that the actors (`wad.org.inbound.actor`, `wad.org.outbound.actor`) and the manager that
starts them (`wad.org.manager`) both depend on it rather than on each other.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from wad.bus import EventBus
from wad.config import Settings
from wad.db.pool import Database
from wad.org.inbound.priority import StoreFirst
from wad.org.ownership import Lease
from wad.org.session import SessionActor
from wad.supervise import ChildSpec


@dataclass(eq=False)
class OrgContext:
    """What an organization's actors share: its id, the daemon's parts, its session actor, and
    the bounded channel of message events the session forwards to the inbound actor."""

    org_id: uuid.UUID
    settings: Settings
    db: Database
    bus: EventBus
    session: SessionActor
    inbound_events: trio.MemoryReceiveChannel[Any]
    plugins: Any = None
    lease: Lease = field(default_factory=Lease)
    """This daemon's lease on the organization: nothing is sent while it is not valid."""
    store_first: StoreFirst = field(default_factory=StoreFirst)
    """Storing before processing while a flood comes: one for all the daemon's organizations."""


ActorFactory = Callable[[OrgContext], ChildSpec]
"""Makes one actor's child spec for an organization (the inbound and outbound actors)."""
