"""Which of a chat's imported messages are stored already: decided per message, never per chat,
so that a client who wrote today still gets their whole earlier history.

A message is already stored when its WhatsApp id is (a live import, or the same export file
again: exports get stable derived ids, `wad.importer.sources.derived_message_id`). Otherwise
its content key (`wad.db.repo.messages.content_key`: minute, direction, normalised content)
decides, when one side has no WhatsApp id of its own: an exported message matches any stored
message of its chat with that key (the same chat seen live, or exported before), a live one
only a message stored from an export. Keys are counted, so two "ok"s in one minute stay two
messages when only one of them is stored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from wad.db.models import NewMessage
from wad.db.repo.messages import content_key

DERIVED_PREFIX = "IMPORT-"
"""How the ids of messages from a source without WhatsApp ids begin."""


def is_derived(wa_message_id: str) -> bool:
    return wa_message_id.startswith(DERIVED_PREFIX)


def split_new(rows: Sequence[NewMessage], stored: Iterable[tuple[str, str | None]]
              ) -> tuple[list[NewMessage], int]:
    """(the rows not stored yet, in order; how many are stored already). `stored` is the chat's
    (WhatsApp id, content key) pairs as `repo.messages.stored_in_chat` answers them."""
    stored = list(stored)
    ids = {wa_id for wa_id, _ in stored}
    # Stored messages no incoming one has claimed yet, by key: all of them, and those stored
    # from an export (the only ones a live message may match by key); the second is always
    # within the first.
    claimed = {r.wa_message_id for r in rows if r.wa_message_id in ids}
    free_any: Counter[str] = Counter()
    free_derived: Counter[str] = Counter()
    for wa_id, key in stored:
        if key is not None and wa_id not in claimed:
            free_any[key] += 1
            if is_derived(wa_id):
                free_derived[key] += 1
    new: list[NewMessage] = []
    duplicates = 0
    for row in rows:
        if row.wa_message_id in ids:
            duplicates += 1
            continue
        key = content_key(row)
        if is_derived(row.wa_message_id) and free_any[key] > 0:
            free_any[key] -= 1  # a live one first: exported ones stay for live messages
            free_derived[key] = min(free_derived[key], free_any[key])
            duplicates += 1
        elif not is_derived(row.wa_message_id) and free_derived[key] > 0:
            free_derived[key] -= 1
            free_any[key] -= 1
            duplicates += 1
        else:
            new.append(row)
    return new, duplicates
