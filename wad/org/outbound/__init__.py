"""The outbound limiter's shared parts (SPEC section 4): sending settings (`settings`),
rate-window arithmetic (`limits`), the door of the durable queue (`queue`) and the agent API
(`agent`). The actor that drains the queue is `wad.org.outbound.actor`; the HTTP endpoints are
`wad.api.routes.outbound`.

For plugins: `from wad.org.outbound import send_message_for_agent, send_bulk_messages_for_agent`.
The names below are loaded on first use, so that importing one module of the package (the
limits' arithmetic, say) does not pull in the rest.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AGENT_MAX_BATCH": "wad.org.outbound.agent",
    "send_bulk_messages_for_agent": "wad.org.outbound.agent",
    "send_message_for_agent": "wad.org.outbound.agent",
    "BatchTooLarge": "wad.org.outbound.queue",
    "BulkResult": "wad.org.outbound.queue",
    "ConfirmationRequired": "wad.org.outbound.queue",
    "InvalidMessage": "wad.org.outbound.queue",
    "MassSendingDisabled": "wad.org.outbound.queue",
    "Outgoing": "wad.org.outbound.queue",
    "QueueError": "wad.org.outbound.queue",
    "RateLimited": "wad.org.outbound.queue",
    "SendingStopped": "wad.org.outbound.queue",
    "queue_bulk": "wad.org.outbound.queue",
    "queue_message": "wad.org.outbound.queue",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wad.org.outbound' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
