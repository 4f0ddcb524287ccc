"""The statement the inbound pipeline needs that the repositories do not offer (yet).

Plain SQL with `$n` parameters and keyword-only functions, like `wad.db.repo`. The importer
reaches `database_unavailable` (the adapter's) and `merge_client_metadata` (the clients
repository's) through here as well.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from wad.db.models import OutboxSender
from wad.db.pool import Executor, database_unavailable
from wad.db.repo.clients import merge_metadata as merge_client_metadata

__all__ = ["database_unavailable", "merge_client_metadata", "outbox_senders"]


async def outbox_senders(db: Executor, *, organization_id: uuid.UUID, wa_ids: Sequence[str]
                         ) -> dict[str, tuple[OutboxSender, str | None]]:
    """For own messages wad sent from its queue: WhatsApp id (as queued: serialized or bare) ->
    (sender, agent name). Messages absent from the queue were typed on the phone."""
    if not wa_ids:
        return {}
    rows = await db.fetch(
        """SELECT wa_message_id, sender, agent_name FROM outbox
           WHERE organization_id = $1 AND wa_message_id = ANY($2::text[])""",
        organization_id, list(wa_ids))
    return {r["wa_message_id"]: (r["sender"], r["agent_name"]) for r in rows}
