"""Which chats wad stores: one-to-one chats always; groups, the status broadcast and broadcast
lists, and channels only when configured (SPEC: "Groups, status broadcasts and newsletters are
ignored unless configured otherwise").

Every chat id ending in `@broadcast` is a broadcast, whether or not the page flagged the message
as one: `status@broadcast` (stories) and broadcast lists (`ID@broadcast`) alike, both governed by
`store_status`. The importer skips every kind but `chat`.
"""

from __future__ import annotations

from typing import Literal

from wad.whatsapp.ids import BROADCAST, GROUP, NEWSLETTER, STATUS_CHAT, server

ChatKind = Literal["chat", "group", "broadcast", "newsletter"]
"""`broadcast` covers the status broadcast and broadcast lists."""


def chat_kind(chat_id: str, *, is_group: bool = False, is_broadcast: bool = False,
              is_newsletter: bool = False) -> ChatKind:
    """The kind of a chat from its id, or from the page's flags when the id says less."""
    where = server(chat_id)
    if is_newsletter or where == NEWSLETTER:
        return "newsletter"
    if is_broadcast or where == BROADCAST or chat_id == STATUS_CHAT:
        return "broadcast"
    if is_group or where == GROUP:
        return "group"
    return "chat"


def is_stored(kind: ChatKind, *, groups: bool = False, status: bool = False,
              newsletters: bool = False) -> bool:
    """Whether messages of a chat of this kind are stored, given the `store_*` settings."""
    if kind == "newsletter":
        return newsletters
    if kind == "broadcast":
        return status
    if kind == "group":
        return groups
    return True
