"""The outbound limiter's shared parts (SPEC section 4): sending settings (`settings`),
rate-window arithmetic (`limits`), the door of the durable queue (`queue`) and the agent API
(`agent`). The actor that drains the queue is `wad.org.outbound`; the HTTP endpoints are
`wad.api.outbound`.

For plugins: `from wad.outbound import send_message_for_agent, send_bulk_messages_for_agent`.
The names below are loaded on first use, so that importing one module of the package (the
limits' arithmetic, say) does not pull in the rest.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AGENT_MAX_BATCH": "wad.outbound.agent",
    "send_bulk_messages_for_agent": "wad.outbound.agent",
    "send_message_for_agent": "wad.outbound.agent",
    "BatchTooLarge": "wad.outbound.queue",
    "BulkResult": "wad.outbound.queue",
    "ConfirmationRequired": "wad.outbound.queue",
    "InvalidMessage": "wad.outbound.queue",
    "MassSendingDisabled": "wad.outbound.queue",
    "Outgoing": "wad.outbound.queue",
    "QueueError": "wad.outbound.queue",
    "RateLimited": "wad.outbound.queue",
    "queue_bulk": "wad.outbound.queue",
    "queue_message": "wad.outbound.queue",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wad.outbound' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
