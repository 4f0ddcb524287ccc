"""The schema's invariants, checked against a real PostgreSQL: what the database itself refuses."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from wad.db import migrate
from wad.db.models import NewMessage
from wad.db.pool import Database
from wad.db.repo import clients as clients_repo
from wad.db.repo import conversations as conversations_repo
from wad.db.repo import deliveries as deliveries_repo
from wad.db.repo import imports as imports_repo
from wad.db.repo import messages as messages_repo
from wad.db.repo import organizations as orgs_repo
from wad.db.repo import outbox as outbox_repo
from wad.db.repo import sessions as sessions_repo
from wad.db.repo import tokens as tokens_repo

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

TABLES = [
    "organizations", "api_tokens", "whatsapp_sessions", "session_archives", "clients",
    "client_status_history", "conversations", "messages", "outbox", "outbox_events",
    "import_runs", "plugin_deliveries", "outbox_pending",
]


async def _seed(db: Database, name: str = "Tour Co") -> dict[str, uuid.UUID]:
    """One row in every table, for one organization."""
    org = await orgs_repo.create(db, name=name)
    await tokens_repo.create(db, token_hash=uuid.uuid4().bytes * 2, prefix="wad_abc",
                             role="ADMIN", organization_id=org.id)
    await sessions_repo.set_state(db, organization_id=org.id, state="CONNECTING")
    await sessions_repo.add_archive(db, organization_id=org.id, archive=b"x", sha256=b"h" * 32,
                                    size=1)
    client, _ = await clients_repo.upsert(db, organization_id=org.id, phone="+996555123456")
    await clients_repo.set_status(db, client_id=client.id, status="QUALIFIED", detector="test")
    conv, _ = await conversations_repo.get_or_create_active(db, organization_id=org.id,
                                                            client_id=client.id)
    msg, _ = await messages_repo.insert_if_absent(db, message=NewMessage(
        organization_id=org.id, wa_message_id="ABC", wa_chat_id="996555123456@c.us",
        direction="IN", sender="CLIENT", sent_at=T0, status="RECEIVED", body="hi",
        conversation_id=conv.id))
    item, _ = await outbox_repo.enqueue(db, organization_id=org.id, to_phone="+996555123456",
                                        content="hello", client_id=client.id,
                                        conversation_id=conv.id)
    run = await imports_repo.create(db, organization_id=org.id, source="whatsapp")
    delivery = await deliveries_repo.enqueue(db, plugin="webhook", event="message.received",
                                             payload={"a": 1}, organization_id=org.id)
    return {"org": org.id, "client": client.id, "conversation": conv.id, "message": msg.id,
            "outbox": item.id, "import": run.id, "delivery": delivery.id}  # type: ignore[dict-item]


async def test_migrations_applied_twice_change_nothing(empty_dsn: str) -> None:
    async with Database.open(empty_dsn, min_size=1, max_size=2) as db:
        every = sorted(p.name for p in (Path(migrate.__file__).parent / "migrations").glob(
            "[0-9][0-9][0-9][0-9]_*.sql"))
        assert every == ["0001_initial.sql", "0002_calls_and_message_keys.sql",
                         "0004_archive_keys.sql", "0005_leases_and_parked.sql",
                         "0006_metrics_tokens_and_audit.sql", "0007_link_started.sql",
                         "0008_changes.sql", "0009_read_api.sql", "0010_sends_to_the_end.sql",
                         "0011_webhook_cursors.sql", "0012_token_notify.sql",
                         "0013_send_door.sql", "0014_outbox_pending.sql",
                         "0015_processing_statements.sql"]
        assert await migrate.apply(db) == every
        schema = await db.fetch(
            """SELECT table_name, column_name, data_type FROM information_schema.columns
               WHERE table_schema = 'public' ORDER BY 1, 2""")
        assert await migrate.apply(db) == []
        assert await db.fetch(
            """SELECT table_name, column_name, data_type FROM information_schema.columns
               WHERE table_schema = 'public' ORDER BY 1, 2""") == schema
        names = {r["table_name"] for r in schema}
        assert set(TABLES) <= names


async def test_a_message_is_stored_once_per_organization(db: Database) -> None:
    ids = await _seed(db)
    with pytest.raises(asyncpg.UniqueViolationError, match="messages_org_wa_id"):
        await db.execute(
            """INSERT INTO messages (organization_id, wa_message_id, wa_chat_id, direction, sender,
                                     sent_at, status)
               VALUES ($1, 'ABC', 'x@c.us', 'IN', 'CLIENT', now(), 'RECEIVED')""", ids["org"])
    other = await orgs_repo.create(db, name="Other")
    assert await db.execute(
        """INSERT INTO messages (organization_id, wa_message_id, wa_chat_id, direction, sender,
                                 sent_at, status)
           VALUES ($1, 'ABC', 'x@c.us', 'IN', 'CLIENT', now(), 'RECEIVED')""",
        other.id) == "INSERT 0 1"  # the same id in another organization is another message


async def test_a_phone_is_one_client_per_organization(db: Database) -> None:
    ids = await _seed(db)
    insert = "INSERT INTO clients (organization_id, phone) VALUES ($1, '+996555123456')"
    with pytest.raises(asyncpg.UniqueViolationError, match="clients_org_phone"):
        await db.execute(insert, ids["org"])
    other = await orgs_repo.create(db, name="Other")
    await db.execute(insert, other.id)
    assert await db.fetchval("SELECT count(*) FROM clients WHERE phone = '+996555123456'") == 2


async def test_one_active_whatsapp_conversation_per_client(db: Database) -> None:
    ids = await _seed(db)
    insert = "INSERT INTO conversations (organization_id, client_id) VALUES ($1, $2)"
    with pytest.raises(asyncpg.UniqueViolationError, match="conversations_one_active_whatsapp"):
        await db.execute(insert, ids["org"], ids["client"])
    # A closed one does not count: after closing, a new active one is allowed.
    await db.execute("UPDATE conversations SET status = 'CLOSED' WHERE id = $1",
                     ids["conversation"])
    assert await db.execute(insert, ids["org"], ids["client"]) == "INSERT 0 1"


async def test_a_conversation_cannot_borrow_another_organizations_client(db: Database) -> None:
    ids = await _seed(db)
    other = await orgs_repo.create(db, name="Other")
    await conversations_repo.close(db, conversation_id=ids["conversation"])
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await db.execute("INSERT INTO conversations (organization_id, client_id) VALUES ($1, $2)",
                         other.id, ids["client"])


STATUS_COLUMNS = [
    ("api_tokens", "role", "id"),
    ("whatsapp_sessions", "state", "organization_id"),
    ("clients", "status", "id"),
    ("client_status_history", "from_status", "client_id"),
    ("client_status_history", "to_status", "client_id"),
    ("conversations", "status", "id"),
    ("messages", "direction", "id"),
    ("messages", "sender", "id"),
    ("messages", "type", "id"),
    ("messages", "status", "id"),
    ("messages", "processing_state", "id"),
    ("outbox", "sender", "id"),
    ("outbox", "status", "id"),
    ("outbox_events", "status", "outbox_id"),
    ("import_runs", "status", "id"),
    ("plugin_deliveries", "status", "id"),
]


async def test_unknown_values_are_refused_in_every_status_column(db: Database) -> None:
    await _seed(db)
    accepted = []
    for table, column, _key in STATUS_COLUMNS:
        # Each table holds exactly one row of the seed: try to set the column to nonsense.
        assert await db.fetchval(f"SELECT count(*) FROM {table}") == 1, table
        try:
            await db.execute(f"UPDATE {table} SET {column} = 'BOGUS'")
        except asyncpg.CheckViolationError:
            continue
        accepted.append(f"{table}.{column}")
    assert accepted == []


async def test_a_good_status_value_is_accepted(db: Database) -> None:
    # The counterpart of the test above: the checks are not simply refusing every update.
    ids = await _seed(db)
    assert await db.execute("UPDATE clients SET status = 'SOLD' WHERE id = $1",
                            ids["client"]) == "UPDATE 1"
    assert await db.execute("UPDATE outbox SET status = 'CANCELLED' WHERE id = $1",
                            ids["outbox"]) == "UPDATE 1"
    assert await db.execute("UPDATE messages SET type = 'vcard', status = 'REVOKED'") == "UPDATE 1"
    # And the values are there, as written.
    assert await db.fetchval("SELECT status FROM clients WHERE id = $1", ids["client"]) == "SOLD"
    assert await db.fetchval("SELECT status FROM outbox WHERE id = $1",
                             ids["outbox"]) == "CANCELLED"
    row = await db.fetchrow("SELECT type, status FROM messages")
    assert row is not None and (row["type"], row["status"]) == ("vcard", "REVOKED")


@pytest.mark.parametrize("phone", ["996555123456", "+0555123456", "+99655", "+9965551234567890",
                                   "+996 555 123 456", ""])
async def test_bad_phone_numbers_are_refused(db: Database, phone: str) -> None:
    org = await orgs_repo.create(db, name="Org")
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute("INSERT INTO clients (organization_id, phone) VALUES ($1, $2)",
                         org.id, phone)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            """INSERT INTO outbox (organization_id, to_phone, content, sender)
               VALUES ($1, $2, 'hi', 'HUMAN')""", org.id, phone)
    with pytest.raises(asyncpg.CheckViolationError):
        await db.execute(
            "INSERT INTO whatsapp_sessions (organization_id, phone_number) VALUES ($1, $2)",
            org.id, phone)


async def test_super_admin_tokens_have_no_organization_and_others_have_one(db: Database
                                                                          ) -> None:
    org = await orgs_repo.create(db, name="Org")
    insert = """INSERT INTO api_tokens (organization_id, role, token_hash, prefix)
                VALUES ($1, $2, $3, 'wad_x')"""
    with pytest.raises(asyncpg.CheckViolationError, match="api_tokens_super_admin_has_no_org"):
        await db.execute(insert, org.id, "SUPER_ADMIN", b"1" * 32)
    with pytest.raises(asyncpg.CheckViolationError, match="api_tokens_super_admin_has_no_org"):
        await db.execute(insert, None, "ADMIN", b"2" * 32)
    await db.execute(insert, None, "SUPER_ADMIN", b"3" * 32)
    await db.execute(insert, org.id, "VIEWER", b"4" * 32)
    # A METRICS token, like the super admin's, belongs to no organization.
    with pytest.raises(asyncpg.CheckViolationError, match="api_tokens_super_admin_has_no_org"):
        await db.execute(insert, org.id, "METRICS", b"5" * 32)
    await db.execute(insert, None, "METRICS", b"6" * 32)
    with pytest.raises(asyncpg.CheckViolationError, match="api_tokens_role_check"):
        await db.execute(insert, None, "OWNER", b"7" * 32)
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(insert, org.id, "AGENT", b"4" * 32)


async def test_outbox_content_length_and_priority_range(db: Database) -> None:
    org = await orgs_repo.create(db, name="Org")

    async def enqueue(content: str, priority: int) -> None:
        await db.execute(
            """INSERT INTO outbox (organization_id, to_phone, content, priority, sender)
               VALUES ($1, '+996555123456', $2, $3, 'HUMAN')""", org.id, content, priority)

    for content, priority in [("x" * 4097, 1), ("", 1), ("hi", 0), ("hi", 11)]:
        with pytest.raises(asyncpg.CheckViolationError):
            await enqueue(content, priority)
    # The bounds themselves are fine, and length counts characters, not bytes.
    await enqueue("ы" * 4096, 10)
    await enqueue("x", 1)
    assert await db.fetchval("SELECT count(*) FROM outbox") == 2


async def test_incoming_messages_come_from_the_client(db: Database) -> None:
    org = await orgs_repo.create(db, name="Org")
    insert = """INSERT INTO messages (organization_id, wa_message_id, wa_chat_id, direction,
                                      sender, sent_at, status)
                VALUES ($1, $2, 'x@c.us', $3, $4, now(), 'RECEIVED')"""
    with pytest.raises(asyncpg.CheckViolationError, match="messages_sender_matches_direction"):
        await db.execute(insert, org.id, "A", "IN", "AI")
    with pytest.raises(asyncpg.CheckViolationError, match="messages_sender_matches_direction"):
        await db.execute(insert, org.id, "B", "OUT", "CLIENT")


async def test_deleting_an_organization_removes_its_rows_only(db: Database) -> None:
    gone = await _seed(db, "Gone")
    kept = await _seed(db, "Kept")
    # A system-wide delivery (no organization) is not anyone's row.
    await deliveries_repo.enqueue(db, plugin="webhook", event="daemon.started", payload={})
    before = {t: await db.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}
    assert all(n >= 2 for n in before.values()), before

    await db.execute("DELETE FROM organizations WHERE id = $1", gone["org"])

    after = {t: await db.fetchval(f"SELECT count(*) FROM {t}") for t in TABLES}
    expected = {t: n // 2 for t, n in before.items()}
    expected["plugin_deliveries"] = 2
    assert after == expected
    assert await orgs_repo.get(db, organization_id=kept["org"]) is not None
    assert await db.fetchval("SELECT count(*) FROM clients WHERE organization_id = $1",
                             gone["org"]) == 0


async def test_deleting_a_conversation_keeps_its_messages(db: Database) -> None:
    ids = await _seed(db)
    await db.execute("DELETE FROM conversations WHERE id = $1", ids["conversation"])
    msg = await messages_repo.get(db, message_id=ids["message"])
    assert msg is not None
    assert msg.conversation_id is None
    item = await outbox_repo.get(db, outbox_id=ids["outbox"])
    assert item is not None
    assert item.conversation_id is None
    assert item.client_id == ids["client"]


async def test_updated_at_moves_on_every_update(db: Database) -> None:
    ids = await _seed(db)
    before = await db.fetchval("SELECT updated_at FROM clients WHERE id = $1", ids["client"])
    # now() is the transaction's start, so a later transaction gets a later stamp.
    await db.execute("UPDATE clients SET name = 'Aida' WHERE id = $1", ids["client"])
    after = await db.fetchval("SELECT updated_at FROM clients WHERE id = $1", ids["client"])
    assert after > before


async def test_the_next_message_query_uses_the_partial_queue_index(db: Database) -> None:
    a = await orgs_repo.create(db, name="A")
    b = await orgs_repo.create(db, name="B")
    # A realistic shape: a long sent history, a short queue per organization.
    await db.execute(
        """INSERT INTO outbox (organization_id, to_phone, content, sender, status,
                               wa_message_id, sent_at, created_at)
           SELECT CASE WHEN i % 2 = 0 THEN $1::uuid ELSE $2::uuid END, '+996555123456', 'old',
                  'HUMAN', 'DELIVERED', 'W' || i, now() - i * interval '1 minute',
                  now() - i * interval '1 minute'
           FROM generate_series(1, 20000) AS i""", a.id, b.id)
    await db.execute(
        """INSERT INTO outbox (organization_id, to_phone, content, sender, priority)
           SELECT CASE WHEN i % 2 = 0 THEN $1::uuid ELSE $2::uuid END, '+996555123456', 'new',
                  'HUMAN', 1 + (i / 2) % 10
           FROM generate_series(1, 40) AS i""", a.id, b.id)
    await db.execute("ANALYZE outbox")

    plan = await db.fetchval(f"EXPLAIN (FORMAT JSON) {outbox_repo._CLAIM}", a.id, "WID")
    plan = json.loads(plan) if isinstance(plan, str) else plan
    nodes = []

    def walk(node: dict) -> None:
        nodes.append(node)
        for child in node.get("Plans", []):
            walk(child)

    walk(plan[0]["Plan"])
    queue_scans = [n for n in nodes if n.get("Index Name") == "outbox_next"]
    assert queue_scans, [(n["Node Type"], n.get("Index Name")) for n in nodes]
    assert not [n for n in nodes if n["Node Type"] in ("Sort", "Incremental Sort")]
    assert not [n for n in nodes if n["Node Type"] == "Seq Scan"
                and n.get("Relation Name") == "outbox"]

    # And it picks what the plan promises: highest priority first, then oldest.
    claimed = await outbox_repo.claim_next(db, organization_id=a.id, wa_message_id="WID")
    assert claimed is not None
    assert claimed.priority == 10
    assert claimed.content == "new"
