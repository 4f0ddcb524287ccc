"""What the outbound actor added to `wad.db.repo.outbox`: its own clock for claims and sends,
fresh ids after a refused send, the send times of the rate windows, and the breaker's count."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from wad.db.models import OutboxItem
from wad.db.pool import Database
from wad.db.repo import organizations, outbox

PHONE = "+996555123456"
T0 = datetime(2025, 7, 1, 9, 0, tzinfo=UTC)


async def _queued(db: Database, org_id: uuid.UUID, content: str, **kw: Any) -> OutboxItem:
    item, created = await outbox.enqueue(db, organization_id=org_id, to_phone=PHONE,
                                         content=content, **kw)
    assert created
    return item


async def test_claims_and_sends_on_the_callers_clock(db: Database) -> None:
    org = await organizations.create(db, name="A")
    item = await _queued(db, org.id, "hello", not_before=T0 + timedelta(seconds=30))
    assert await outbox.claim_next(db, organization_id=org.id, wa_message_id="K1",
                                   now=T0 + timedelta(seconds=29)) is None  # not due yet
    claimed = await outbox.claim_next(db, organization_id=org.id, wa_message_id="K1",
                                      now=T0 + timedelta(seconds=30))
    assert claimed is not None
    assert claimed.id == item.id
    assert claimed.sending_started_at == T0 + timedelta(seconds=30)
    sent = await outbox.mark_sent(db, outbox_id=item.id, at=T0 + timedelta(seconds=31))
    assert sent is not None
    assert (sent.status, sent.sent_at) == ("SENT", T0 + timedelta(seconds=31))
    # Without a clock, the database's (the default for every other caller).
    other = await _queued(db, org.id, "now")
    assert await outbox.claim_next(db, organization_id=org.id, wa_message_id="K2") is not None
    stamped = await outbox.get(db, outbox_id=other.id)
    assert stamped is not None
    assert stamped.sending_started_at is not None
    assert stamped.sending_started_at > T0


async def test_a_retry_can_give_up_the_id_and_follows_a_failed_ack(db: Database) -> None:
    org = await organizations.create(db, name="A")
    item = await _queued(db, org.id, "hello")
    await outbox.claim_next(db, organization_id=org.id, wa_message_id="K1")
    # WhatsApp refused it: the ack got there first and marked it FAILED.
    assert await outbox.apply_ack(db, organization_id=org.id, wa_message_id="K1",
                                  status="FAILED") is not None
    retried = await outbox.retry(db, outbox_id=item.id, error="refused (ack -1)",
                                 not_before=T0, new_wa_message_id=True)
    assert retried is not None
    assert (retried.status, retried.wa_message_id, retried.last_error) == (
        "QUEUED", None, "refused (ack -1)")
    again = await outbox.claim_next(db, organization_id=org.id, wa_message_id="K2")
    assert again is not None
    assert (again.wa_message_id, again.attempts) == ("K2", 2)
    # A plain retry keeps the id (the send may have got through: it is looked for first).
    kept = await outbox.retry(db, outbox_id=item.id, error="timeout", not_before=T0)
    assert kept is not None
    assert kept.wa_message_id == "K2"
    await outbox.claim_next(db, organization_id=org.id, wa_message_id="K3")
    await outbox.apply_ack(db, organization_id=org.id, wa_message_id="K2", status="FAILED")
    failed = await outbox.mark_failed(db, outbox_id=item.id, error="gave up after 3 attempts")
    assert failed is not None
    assert (failed.status, failed.last_error) == ("FAILED", "gave up after 3 attempts")
    got = await outbox.get_with_events(db, outbox_id=item.id)
    assert got is not None
    assert [e.status for e in got[1]] == ["QUEUED", "SENDING", "FAILED", "QUEUED", "SENDING",
                                          "QUEUED", "SENDING", "FAILED"]


async def test_send_times_and_recent_results(db: Database) -> None:
    org, other = (await organizations.create(db, name="A"),
                  await organizations.create(db, name="B"))
    for i, (minutes, ok) in enumerate([(90, True), (30, False), (20, True), (5, True)]):
        item = await _queued(db, org.id, f"m{i}", not_before=T0 - timedelta(days=1))
        assert await outbox.claim_next(db, organization_id=org.id, wa_message_id=f"W{i}",
                                       now=T0 - timedelta(minutes=minutes)) is not None
        if ok:
            await outbox.mark_sent(db, outbox_id=item.id, at=T0 - timedelta(minutes=minutes))
        else:
            await outbox.mark_failed(db, outbox_id=item.id, error="refused")
    await _queued(db, org.id, "queued")
    elsewhere = await _queued(db, other.id, "other organization", not_before=T0)
    assert await outbox.claim_next(db, organization_id=other.id, wa_message_id="X",
                                   now=T0) is not None
    await outbox.mark_sent(db, outbox_id=elsewhere.id, at=T0)

    assert await outbox.sent_times_since(db, organization_id=org.id,
                                         since=T0 - timedelta(hours=1)) == [
        T0 - timedelta(minutes=20), T0 - timedelta(minutes=5)]
    assert await outbox.recent_results(db, organization_id=org.id) == (1, 4)
    # Latest first: the failure was recorded now (the database's clock), after the 2025 sends.
    assert await outbox.recent_results(db, organization_id=org.id, limit=1) == (1, 1)
    assert await outbox.recent_results(db, organization_id=org.id,
                                       since=T0 - timedelta(minutes=25)) == (1, 3)
    assert await outbox.recent_results(db, organization_id=other.id) == (0, 1)
    # The failure happened now (by the database's clock): nothing finished after tomorrow.
    assert await outbox.recent_results(db, organization_id=org.id,
                                       since=datetime.now(UTC) + timedelta(days=1)) == (0, 0)
