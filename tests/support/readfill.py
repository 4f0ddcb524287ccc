"""Many rows fast, for the read API's plans and bench: one organization's clients, one
conversation each, their messages and change-feed entries, written with `COPY`; and the plans
of the queries the repositories actually run (`Explaining`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from trio_asyncio import aio_as_trio

from wad.db.models import CLIENT_STATUSES
from wad.db.pool import Connection, Database, Record

START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
NAMES = ("Aigerim", "Bakyt", "Cholpon", "Daniyar", "Elmira", "Farida", "Gulnara", "Kanat",
         "Meerim", "Nurlan", "Saltanat", "Talant")
LANGUAGES = ("ru", "ky", "en")
BATCH = 50_000

# Who writes in a conversation, message after message: questions (IN) and answers (OUT).
PATTERN = ("IN", "IN", "OUT", "IN", "OUT", "OUT", "IN", "OUT")


@dataclass
class Filled:
    org: uuid.UUID
    clients: list[uuid.UUID] = field(default_factory=list)
    conversations: list[uuid.UUID] = field(default_factory=list)
    messages: int = 0
    changes: int = 0


def phone_of(i: int) -> str:
    return f"+99670{i:07d}"


async def _copy(conn: Connection, table: str, columns: Sequence[str],
                rows: Iterator[tuple[Any, ...]]) -> int:
    batch: list[tuple[Any, ...]] = []
    total = 0
    for row in rows:
        batch.append(row)
        if len(batch) == BATCH:
            await conn.copy_records(table, batch, columns=columns)
            total += len(batch)
            batch = []
    if batch:
        await conn.copy_records(table, batch, columns=columns)
        total += len(batch)
    return total


async def _jsonb_codec(conn: Connection, *, binary: bool) -> None:
    if binary:
        await aio_as_trio(conn.raw.set_type_codec)(
            "jsonb", schema="pg_catalog", format="binary",
            encoder=lambda value: b"\x01" + json.dumps(value).encode(),
            decoder=lambda data: json.loads(data[1:]))
    else:  # as the pool sets it up (`wad.db.pool`)
        await aio_as_trio(conn.raw.set_type_codec)(
            "jsonb", schema="pg_catalog", encoder=json.dumps, decoder=json.loads)


async def fill(db: Database, org: uuid.UUID, *, clients: int, per_conversation: int,
               changes: int = 0, first: int = 0) -> Filled:
    """`clients` clients of `org` (numbered from `first`, created a minute apart, names,
    statuses and languages in turn, each with one status change), one active conversation each
    with `per_conversation` messages (a message a minute, in `PATTERN`), and `changes` entries
    of the change feed; then ANALYZE."""
    filled = Filled(org=org)
    filled.clients = [uuid.uuid4() for _ in range(clients)]
    filled.conversations = [uuid.uuid4() for _ in range(clients)]
    numbers = range(first, first + clients)
    async with db.transaction() as conn:
        await _copy(conn, "clients", (
            "id", "organization_id", "phone", "name", "push_name", "status",
            "preferred_language", "created_at", "updated_at"), (
            (cid, org, phone_of(i), f"{NAMES[i % len(NAMES)]} {i}", NAMES[i % len(NAMES)],
             CLIENT_STATUSES[i % len(CLIENT_STATUSES)], LANGUAGES[i % len(LANGUAGES)],
             START + timedelta(minutes=i), START + timedelta(minutes=i, seconds=30))
            for i, cid in zip(numbers, filled.clients, strict=True)))
        await _copy(conn, "client_status_history", (
            "client_id", "organization_id", "from_status", "to_status", "detector", "reason",
            "created_at"), (
            (cid, org, "NEW_LEAD", CLIENT_STATUSES[i % len(CLIENT_STATUSES)], "fill",
             "filled", START + timedelta(minutes=i, seconds=30))
            for i, cid in zip(numbers, filled.clients, strict=True)))
        await _copy(conn, "conversations", (
            "id", "organization_id", "client_id", "wa_chat_id", "last_message_at",
            "created_at"), (
            (conv, org, cid, f"{phone_of(i)[1:]}@c.us",
             START + timedelta(minutes=i + per_conversation), START + timedelta(minutes=i))
            for i, cid, conv in zip(numbers, filled.clients, filled.conversations,
                                    strict=True)))

        def messages() -> Iterator[tuple[Any, ...]]:
            for i, conv in zip(numbers, filled.conversations, strict=True):
                chat = f"{phone_of(i)[1:]}@c.us"
                for k in range(per_conversation):
                    direction = PATTERN[k % len(PATTERN)]
                    at = START + timedelta(minutes=i + k)
                    yield (uuid.uuid4(), org, conv, f"fill-{i}-{k}", chat, direction,
                           "CLIENT" if direction == "IN" else "HUMAN",
                           f"message {k} of conversation {i}", at,
                           "RECEIVED" if direction == "IN" else "READ", "DONE",
                           at + timedelta(seconds=1))

        filled.messages = await _copy(conn, "messages", (
            "id", "organization_id", "conversation_id", "wa_message_id", "wa_chat_id",
            "direction", "sender", "body", "sent_at", "status", "processing_state",
            "created_at"), messages())
        if changes:
            # COPY speaks binary: jsonb's binary form is a version byte and the text.
            await _jsonb_codec(conn, binary=True)
            filled.changes = await _copy(conn, "changes", (
                "organization_id", "seq", "kind", "at", "data"), (
                (org, seq, "message.stored", START + timedelta(seconds=seq),
                 {"messageId": str(uuid.uuid4()), "direction": "IN", "body": f"change {seq}"})
                for seq in range(1, changes + 1)))
            await _jsonb_codec(conn, binary=False)
            await conn.execute(
                """INSERT INTO change_cursors (organization_id, last) VALUES ($1, $2)
                   ON CONFLICT (organization_id) DO UPDATE SET last = EXCLUDED.last""",
                org, changes)
    for table in ("clients", "client_status_history", "conversations", "messages", "changes"):
        await db.execute(f"ANALYZE {table}")
    return filled


class Explaining:
    """An executor that runs the statements it is given on `db`, and keeps each one's
    plan (`EXPLAIN (FORMAT JSON)` with the same parameters)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.plans: list[tuple[str, dict[str, Any]]] = []

    async def _explain(self, sql: str, args: tuple[Any, ...]) -> None:
        found = await self.db.fetchval("EXPLAIN (FORMAT JSON) " + sql, *args)
        plan = json.loads(found) if isinstance(found, str) else found
        self.plans.append((sql, plan[0]["Plan"]))

    async def execute(self, sql: str, *args: Any) -> str:
        await self._explain(sql, args)
        return await self.db.execute(sql, *args)

    async def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> None:
        await self.db.executemany(sql, args)

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        await self._explain(sql, args)
        return await self.db.fetch(sql, *args)

    async def fetchrow(self, sql: str, *args: Any) -> Record | None:
        await self._explain(sql, args)
        return await self.db.fetchrow(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        await self._explain(sql, args)
        return await self.db.fetchval(sql, *args)


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a plan, the root first."""
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


def describe(plan: dict[str, Any], depth: int = 0) -> str:
    """The plan as indented lines: node type, relation and index."""
    parts = [plan["Node Type"]]
    if "Relation Name" in plan:
        parts.append(f"on {plan['Relation Name']}")
    if "Index Name" in plan:
        parts.append(f"using {plan['Index Name']}")
    lines = ["  " * depth + " ".join(parts)]
    lines += [describe(child, depth + 1) for child in plan.get("Plans", ())]
    return "\n".join(lines)


def scans(plan: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """(node type, relation, index) of every scan of a table in the plan."""
    return [(n["Node Type"], n["Relation Name"], n.get("Index Name"))
            for n in nodes(plan) if "Relation Name" in n]
