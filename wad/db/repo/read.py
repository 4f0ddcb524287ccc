"""The read API's pages: clients, a client's conversations and status history, a conversation's
messages, import runs.

Every list is a keyset page: rows in a total order (each order ends in the row's id), after a
position given as the key of the previous page's last row, at most `limit` of them. A page is
one index range scan (migration 0009), however deep the caller pages, and rows written while a
caller pages never make it skip or repeat a row that was there when it started: a new row lands
before or after the position and is read or not; a row's key never changes (clients are ordered
by creation, not by their last change).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Literal, TypeVar

from wad.db.models import Client, ClientStatus, ClientStatusChange, Conversation, ImportRun, Message
from wad.db.pool import Executor, Record
from wad.db.repo import columns, many, one

Order = Literal["newest", "oldest"]
T = TypeVar("T")

ClientKey = tuple[datetime, uuid.UUID]
"""A client's place in its list: (created_at, id)."""
MessageKey = tuple[datetime, datetime, uuid.UUID]
"""A message's place in its conversation: (sent_at, created_at, id)."""
RunKey = tuple[datetime, uuid.UUID]
"""An import run's place: (started_at, id)."""

CONVERSATIONS_SHOWN = 100
"""A client's conversations listed with it, the newest first."""


@dataclass(frozen=True)
class Page(Generic[T]):
    """Rows of one page, and whether more follow."""

    rows: list[T]
    more: bool


def _after(key: tuple[str, ...], start: int, order: Order) -> tuple[str, str]:
    """The keyset condition on `key`'s columns (parameters from `$start`) and the ORDER BY."""
    cols = ", ".join(key)
    params = ", ".join(f"${start + i}" for i in range(len(key)))
    op, direction = ("<", "DESC") if order == "newest" else (">", "ASC")
    return f"({cols}) {op} ({params})", ", ".join(f"{c} {direction}" for c in key)


def _page(model: type[T], rows: list[Record], limit: int) -> Page[T]:
    return Page(rows=many(model, rows[:limit]), more=len(rows) > limit)  # type: ignore[type-var]


def like_pattern(text: str) -> str:
    """`text` as an ILIKE pattern matching any value that contains it."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


_CLIENT_COLS = columns(Client)


async def clients(db: Executor, *, organization_id: uuid.UUID, order: Order, limit: int,
                  after: ClientKey | None = None, phone: str | None = None,
                  name: str | None = None, status: ClientStatus | None = None,
                  language: str | None = None, updated_since: datetime | None = None
                  ) -> Page[Client]:
    """The organization's clients by creation (newest or oldest first) that match every filter
    given: `phone` (E.164, exact), `name` (contained in the name, push name or saved name,
    ignoring case), `status`, `language` (the preferred language), `updated_since` (changed at
    or after that time)."""
    where = ["organization_id = $1"]
    args: list[object] = [organization_id]

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    if phone is not None:
        where.append(f"phone = {arg(phone)}")
    if name is not None:
        pattern = arg(like_pattern(name))
        where.append(f"(name ILIKE {pattern} OR push_name ILIKE {pattern} "
                     f"OR saved_name ILIKE {pattern})")
    if status is not None:
        where.append(f"status = {arg(status)}")
    if language is not None:
        where.append(f"preferred_language = {arg(language)}")
    if updated_since is not None:
        where.append(f"updated_at >= {arg(updated_since)}")
    keyset, order_by = _after(("created_at", "id"), len(args) + 1, order)
    if after is not None:
        where.append(keyset)
        args.extend(after)
    rows = await db.fetch(
        f"""SELECT {_CLIENT_COLS} FROM clients WHERE {" AND ".join(where)}
            ORDER BY {order_by} LIMIT {arg(limit + 1)}""", *args)
    return _page(Client, rows, limit)


async def client(db: Executor, *, organization_id: uuid.UUID, client_id: uuid.UUID
                 ) -> Client | None:
    """One client of the organization (None for another organization's)."""
    return one(Client, await db.fetchrow(
        f"SELECT {_CLIENT_COLS} FROM clients WHERE id = $1 AND organization_id = $2",
        client_id, organization_id))


_CONVERSATION_COLS = columns(Conversation)


async def conversations_of(db: Executor, *, client_id: uuid.UUID,
                           limit: int = CONVERSATIONS_SHOWN) -> Page[Conversation]:
    """The client's conversations, the newest first."""
    rows = await db.fetch(
        f"""SELECT {_CONVERSATION_COLS} FROM conversations WHERE client_id = $1
            ORDER BY created_at DESC, id DESC LIMIT $2""", client_id, limit + 1)
    return _page(Conversation, rows, limit)


async def conversation(db: Executor, *, organization_id: uuid.UUID,
                       conversation_id: uuid.UUID) -> Conversation | None:
    """One conversation of the organization (None for another organization's)."""
    return one(Conversation, await db.fetchrow(
        f"SELECT {_CONVERSATION_COLS} FROM conversations WHERE id = $1 AND organization_id = $2",
        conversation_id, organization_id))


_MESSAGE_COLS = columns(Message)


async def messages(db: Executor, *, organization_id: uuid.UUID, conversation_id: uuid.UUID,
                   order: Order, limit: int, after: MessageKey | None = None) -> Page[Message]:
    """The messages of the organization's conversation by WhatsApp's time (then arrival),
    newest or oldest first (none for another organization's). A message joins its
    conversation when it has been processed."""
    keyset, order_by = _after(("sent_at", "created_at", "id"), 4, order)
    condition = f"AND {keyset}" if after is not None else ""
    rows = await db.fetch(
        f"""SELECT {_MESSAGE_COLS} FROM messages
            WHERE conversation_id = $1 AND organization_id = $3 {condition}
            ORDER BY {order_by} LIMIT $2""",
        conversation_id, limit + 1, organization_id, *(after or ()))
    return _page(Message, rows, limit)


_HISTORY_COLS = columns(ClientStatusChange)


async def status_history(db: Executor, *, organization_id: uuid.UUID, client_id: uuid.UUID,
                         order: Order, limit: int, after: int | None = None
                         ) -> Page[ClientStatusChange]:
    """The status changes of the organization's client in the order they were made, newest or
    oldest first (none for another organization's)."""
    keyset, order_by = _after(("id",), 4, order)
    condition = f"AND {keyset}" if after is not None else ""
    rows = await db.fetch(
        f"""SELECT {_HISTORY_COLS} FROM client_status_history
            WHERE client_id = $1 AND organization_id = $3 {condition}
            ORDER BY {order_by} LIMIT $2""",
        client_id, limit + 1, organization_id, *(() if after is None else (after,)))
    return _page(ClientStatusChange, rows, limit)


_RUN_COLS = columns(ImportRun)


async def import_runs(db: Executor, *, organization_id: uuid.UUID, order: Order, limit: int,
                      after: RunKey | None = None) -> Page[ImportRun]:
    """The organization's import runs by start, newest or oldest first."""
    keyset, order_by = _after(("started_at", "id"), 3, order)
    condition = f"AND {keyset}" if after is not None else ""
    rows = await db.fetch(
        f"""SELECT {_RUN_COLS} FROM import_runs WHERE organization_id = $1 {condition}
            ORDER BY {order_by} LIMIT $2""",
        organization_id, limit + 1, *(after or ()))
    return _page(ImportRun, rows, limit)
