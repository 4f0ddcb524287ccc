"""How many rows an organization has in the tables an import writes, for tests that compare
them before and after."""

from __future__ import annotations

import uuid

from wad.db.pool import Database

_COUNTS = {
    "clients": "SELECT count(*) FROM clients WHERE organization_id = $1",
    "convs": "SELECT count(*) FROM conversations WHERE organization_id = $1",
    "messages": "SELECT count(*) FROM messages WHERE organization_id = $1",
    "distinct_ids": "SELECT count(DISTINCT wa_message_id) FROM messages WHERE organization_id = $1",
    "runs": "SELECT count(*) FROM import_runs WHERE organization_id = $1",
    "history": "SELECT count(*) FROM client_status_history WHERE organization_id = $1",
}


async def org_row_counts(db: Database, org: uuid.UUID, *, history: bool = False
                         ) -> dict[str, int]:
    """The organization's clients, conversations ("convs"), messages, distinct WhatsApp message
    ids and import runs, read in one query; with `history`, its client status changes too."""
    wanted = [name for name in _COUNTS if history or name != "history"]
    row = await db.fetchrow("SELECT " + ", ".join(f"({_COUNTS[name]}) AS {name}"
                                                   for name in wanted), org)
    assert row is not None
    return dict(row)
