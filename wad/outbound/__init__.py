"""The outbound limiter's shared parts (SPEC section 4): sending settings, rate-window arithmetic,
the door of the durable queue, and the agent API. The actor that drains the queue is
`wad.org.outbound`; the HTTP endpoints are `wad.api.outbound`."""

from wad.outbound.agent import AGENT_MAX_BATCH, send_bulk_messages_for_agent, send_message_for_agent
from wad.outbound.queue import (
    BatchTooLarge,
    BulkResult,
    ConfirmationRequired,
    InvalidMessage,
    MassSendingDisabled,
    Outgoing,
    QueueError,
    RateLimited,
    queue_bulk,
    queue_message,
)

__all__ = [
    "AGENT_MAX_BATCH",
    "BatchTooLarge",
    "BulkResult",
    "ConfirmationRequired",
    "InvalidMessage",
    "MassSendingDisabled",
    "Outgoing",
    "QueueError",
    "RateLimited",
    "queue_bulk",
    "queue_message",
    "send_bulk_messages_for_agent",
    "send_message_for_agent",
]
