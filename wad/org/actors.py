"""The actors that run beside each organization's browser session, in start order.

Each entry makes a `ChildSpec` from the organization's `OrgContext`; the organization's
supervisor starts them after the session actor and stops them in reverse order.
"""

from __future__ import annotations

from wad.org.context import ActorFactory
from wad.org.inbound.actor import inbound_actor
from wad.org.outbound.actor import outbound_actor

ACTORS: list[ActorFactory] = [inbound_actor, outbound_actor]
