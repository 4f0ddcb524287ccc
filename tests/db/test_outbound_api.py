"""The outbound endpoints over real HTTP (the app on Hypercorn, a real database): sending with
its answers (202, 200 for a repeated key, 400 naming the field, 429 with `Retry-After` and the
limit), message status, bulk rules, settings, the queue's state, resume, and who may do what."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.support import api as api_support
from tests.support.api import LiveApi
from wad.api.context import Services
from wad.bus import EventBus, OutboundResumed, OutboxStatus, SendingResumed, SettingsChanged
from wad.db.pool import Database
from wad.db.repo import audit as audit_repo
from wad.db.repo import changes
from wad.db.repo import outbox as outbox_repo
from wad.db.repo import sessions as sessions_repo

live_api = api_support.live_api

CLIENT = "+996555123456"
NOW = datetime(2025, 7, 1, 9, 0, tzinfo=UTC)


@pytest.fixture
def bus(live_api: LiveApi) -> EventBus:
    """A new event bus that the served app publishes on, for the test to subscribe to."""
    bus = EventBus()
    live_api.ctx.services.bus = bus
    return bus


@dataclass
class FixedClock:
    at: datetime

    def now(self) -> datetime:
        return self.at


@dataclass
class Org:
    id: uuid.UUID
    tokens: dict[str, str]


async def org_with_tokens(api: LiveApi, name: str = "Issyk-Kul Tours") -> Org:
    org = await api.create_org(name)
    tokens = {role: (await api.create_token(role, org))["token"]
              for role in ("VIEWER", "AGENT", "ADMIN")}
    return Org(id=org, tokens=tokens)


def as_role(api: LiveApi, org: Org, role: str) -> httpx.AsyncClient:
    return api.client(org.tokens[role])


async def set_limits(api: LiveApi, org: Org, **document: Any) -> dict[str, Any]:
    r = await as_role(api, org, "ADMIN").put(f"/api/whatsapp/settings/{org.id}", json=document)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def set_rates(api: LiveApi, org: Org, *, per_minute: int, per_hour: int,
                    per_day: int) -> None:
    """The organization's send limits: at most so many messages a minute, an hour, a day."""
    await set_limits(api, org, rateLimiting={"messagesPerMinute": per_minute,
                                             "messagesPerHour": per_hour,
                                             "messagesPerDay": per_day})


async def test_send_queues_and_answers_the_id_then_the_status(live_api: LiveApi) -> None:
    with trio.fail_after(30):
        org = await org_with_tokens(live_api)
        agent = as_role(live_api, org, "AGENT")
        r = await agent.post("/api/whatsapp/send", json={
            "to": "+996 555 12-34-56", "content": "Ваш тур на Иссык-Куль подтверждён!",
            "priority": 10, "idempotencyKey": "crm-booking-42"})
        assert r.status_code == 202, r.text
        queued = r.json()
        assert queued["to"] == CLIENT
        assert (queued["status"], queued["priority"], queued["sender"], queued["created"]) == (
            "QUEUED", 10, "HUMAN", True)
        assert queued["conversationId"] is not None

        again = await agent.post("/api/whatsapp/send", json={
            "to": CLIENT, "content": "another text", "idempotencyKey": "crm-booking-42"})
        assert again.status_code == 200
        assert again.json()["id"] == queued["id"]
        assert again.json()["created"] is False

        state = await agent.get(f"/api/whatsapp/messages/{queued['id']}")
        assert state.status_code == 200
        body = state.json()
        assert (body["status"], body["content"], body["attempts"]) == (
            "QUEUED", "Ваш тур на Иссык-Куль подтверждён!", 0)
        assert [e["status"] for e in body["events"]] == ["QUEUED"]
        # A viewer follows the message's status, not its text.
        viewer = as_role(live_api, org, "VIEWER")
        state = await viewer.get(f"/api/whatsapp/messages/{queued['id']}")
        assert state.status_code == 200
        seen = state.json()
        assert (seen["status"], seen["content"], seen["attempts"]) == ("QUEUED", None, 0)
        assert [e["status"] for e in seen["events"]] == ["QUEUED"]
        assert "Иссык-Куль" not in state.text

        # Another organization's token does not even learn that the message exists.
        other = await org_with_tokens(live_api, "Other")
        hidden = await as_role(live_api, other, "ADMIN").get(
            f"/api/whatsapp/messages/{queued['id']}")
        assert hidden.status_code == 404
        assert (await viewer.get(f"/api/whatsapp/messages/{uuid.uuid4()}")).status_code == 404
        assert (await viewer.get("/api/whatsapp/messages/not-an-id")).status_code == 404


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"to": "555123456", "content": "hi"}, "to", "has no country code"),
    ({"to": "+996 55", "content": "hi"}, "to", "wrong number of digits"),
    ({"to": CLIENT, "content": ""}, "content", "length >= 1"),
    ({"to": CLIENT, "content": "hi", "priority": 11}, "priority", "<= 10"),
    ({"to": CLIENT, "content": "hi", "priority": "5"}, "priority", "Expected `int`, got `str`"),
    ({"to": CLIENT, "text": "hi"}, "text", "unknown field"),
    ({"to": CLIENT}, "content", "required field is missing"),
    ({"to": CLIENT, "content": "hi", "conversationId": str(uuid.uuid4())},
     "conversationId", "no such conversation"),
])
async def test_invalid_sends_are_400_naming_the_field(live_api: LiveApi, body: dict[str, Any],
                                                      field: str, words: str) -> None:
    with trio.fail_after(30):
        org = await org_with_tokens(live_api)
        r = await as_role(live_api, org, "AGENT").post("/api/whatsapp/send", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["field"] == field
    assert words in error["message"]


async def test_who_may_send(live_api: LiveApi) -> None:
    with trio.fail_after(30):
        org = await org_with_tokens(live_api)
        other = await org_with_tokens(live_api, "Other")
        body = {"organizationId": str(org.id), "to": CLIENT, "content": "hi"}
        assert (await live_api.client().post("/api/whatsapp/send", json=body)).status_code == 401
        viewer = await as_role(live_api, org, "VIEWER").post("/api/whatsapp/send", json=body)
        assert viewer.status_code == 403
        foreign = await as_role(live_api, other, "ADMIN").post("/api/whatsapp/send", json=body)
        assert foreign.status_code == 403
        assert (await as_role(live_api, org, "AGENT").post(
            "/api/whatsapp/send", json=body)).status_code == 202
        # The control socket is the super admin: it must name the organization.
        sock = live_api.socket_client()
        unnamed = await sock.post("/api/whatsapp/send", json={"to": CLIENT, "content": "hi"})
        assert unnamed.status_code == 400
        assert unnamed.json()["error"]["field"] == "organizationId"
        assert (await sock.post("/api/whatsapp/send", json=body)).status_code == 202
        bulk = {"organizationId": str(org.id), "messages": [{"to": CLIENT, "content": "hi"}]}
        agent_bulk = await as_role(live_api, org, "AGENT").post("/api/whatsapp/send/bulk",
                                                                json=bulk)
        assert agent_bulk.status_code == 403  # bulk needs ADMIN
        for method, path in [("PUT", f"/api/whatsapp/settings/{org.id}"),
                             ("POST", f"/api/whatsapp/send/resume/{org.id}")]:
            r = await as_role(live_api, org, "AGENT").request(method, path, json={})
            assert r.status_code == 403, (method, path)
        for path in [f"/api/whatsapp/settings/{org.id}", f"/api/whatsapp/queue/{org.id}"]:
            assert (await as_role(live_api, org, "VIEWER").get(path)).status_code == 200
            assert (await as_role(live_api, other, "ADMIN").get(path)).status_code == 403


async def test_a_full_hour_is_429_with_retry_after_and_the_limit(live_api: LiveApi) -> None:
    db: Database = live_api.ctx.db
    live_api.ctx.services.outbound_clock = FixedClock(NOW)
    with trio.fail_after(30):
        org = await org_with_tokens(live_api)
        await set_rates(live_api, org, per_minute=3, per_hour=3, per_day=10)
        agent = as_role(live_api, org, "AGENT")
        # Two sent 30 and 20 minutes ago, one still queued.
        for minutes in (30, 20):
            live_api.ctx.services.outbound_clock = FixedClock(NOW - timedelta(minutes=minutes))
            r = await agent.post("/api/whatsapp/send", json={"to": CLIENT, "content": "sent"})
            assert r.status_code == 202
            at = NOW - timedelta(minutes=minutes)
            item = await outbox_repo.claim_next(db, organization_id=org.id,
                                                wa_message_id=f"K{minutes}", now=at)
            assert item is not None
            await outbox_repo.mark_sent(db, outbox_id=item.id, at=at)
        live_api.ctx.services.outbound_clock = FixedClock(NOW)
        assert (await agent.post("/api/whatsapp/send",
                                 json={"to": CLIENT, "content": "queued"})).status_code == 202
        refused = await agent.post("/api/whatsapp/send", json={"to": CLIENT, "content": "4th"})
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1800"  # the send of 30 minutes ago leaves then
    error = refused.json()["error"]
    assert error["code"] == "rate_limited"
    assert error["limit"] == {"window": "hour", "limit": 3, "remaining": 0,
                              "resetAt": "2025-07-01T09:30:00+00:00"}
    assert error["message"] == (
        "hour limit reached: at most 3 messages an hour; 0 remaining; room again at "
        "2025-07-01T09:30:00+00:00 (in 1800 s)")


def refused_total(metrics_text: str, org: uuid.UUID, limit: str) -> float:
    """`wad_sends_refused_total` of one organization and limit in a scrape (0 when absent)."""
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            if (sample.name == "wad_sends_refused_total"
                    and sample.labels == {"organization": str(org), "limit": limit}):
                return float(sample.value)
    return 0.0


async def test_a_refused_send_counts_in_the_metrics(db: Database, state_dir: Path,
                                                   nursery: trio.Nursery) -> None:
    # The daemon's shape: the app's metrics follow the same bus the send path publishes on.
    async with api_support.serving(db, state_dir, nursery, max_body_bytes=4096,
                                        services=Services(bus=EventBus())) as api:
        api.ctx.services.outbound_clock = FixedClock(NOW)
        root = api.socket_client()
        with trio.fail_after(30):
            org = await org_with_tokens(api)
            await set_rates(api, org, per_minute=1, per_hour=1, per_day=3)
            agent = as_role(api, org, "AGENT")
            before = refused_total((await root.get("/metrics")).text, org.id, "hour")
            assert (await agent.post("/api/whatsapp/send",
                                     json={"to": CLIENT, "content": "first"})).status_code == 202
            assert refused_total((await root.get("/metrics")).text, org.id, "hour") == before
            for n in (1, 2):
                r = await agent.post("/api/whatsapp/send", json={"to": CLIENT, "content": "more"})
                assert r.status_code == 429
                while refused_total((await root.get("/metrics")).text, org.id, "hour") < n:
                    await trio.sleep(0.02)  # the metrics task counts the event it was sent
            # A batch refused by the day limit counts each message it would have queued.
            await set_limits(api, org, safety={"enableMassSending": True})
            r = await as_role(api, org, "ADMIN").post("/api/whatsapp/send/bulk", json={
                "messages": [{"to": CLIENT, "content": f"tour {i}"} for i in range(3)]})
            assert r.status_code == 429, r.text
            while refused_total((await root.get("/metrics")).text, org.id, "day") < 3:
                await trio.sleep(0.02)
        scrape = (await root.get("/metrics")).text
        assert refused_total(scrape, org.id, "hour") == before + 2
        assert refused_total(scrape, org.id, "day") == 3


async def test_bulk_rules_over_http(live_api: LiveApi) -> None:
    with trio.fail_after(60):
        org = await org_with_tokens(live_api)
        admin = as_role(live_api, org, "ADMIN")
        # Short texts: this app takes bodies of at most 4 KiB.
        messages = [{"to": f"+9965551{i:05d}", "content": f"Sale {i}"} for i in range(60)]
        off = await admin.post("/api/whatsapp/send/bulk", json={"messages": messages[:3]})
        assert off.status_code == 403
        assert off.json()["error"]["code"] == "mass_sending_disabled"

        await set_limits(live_api, org, safety={"enableMassSending": True})
        big = await admin.post("/api/whatsapp/send/bulk", json={"messages": messages})
        assert big.status_code == 400
        assert big.json()["error"]["code"] == "confirmation_required"
        assert big.json()["error"]["field"] == "confirm"

        mixed = [*messages[:2], {"to": "12345", "content": "hi"}, messages[2]]
        r = await admin.post("/api/whatsapp/send/bulk", json={"messages": mixed})
        assert r.status_code == 202, r.text
        answer = r.json()
        assert (answer["queued"], answer["failed"]) == (3, 1)
        assert [m["index"] for m in answer["messages"]] == [0, 1, 3]
        assert answer["errors"][0]["index"] == 2
        assert answer["errors"][0]["to"] == "12345"
        assert "has no country code" in answer["errors"][0]["error"]

        confirmed = await admin.post("/api/whatsapp/send/bulk",
                                     json={"messages": messages, "confirm": True})
        assert confirmed.status_code == 202
        assert confirmed.json()["queued"] == 60

        await set_limits(live_api, org, rateLimiting={"messagesPerHour": 100,
                                                      "messagesPerDay": 100})
        over = await admin.post("/api/whatsapp/send/bulk", json={"messages": messages[:50]})
        assert over.status_code == 429  # 63 queued + 50 > 100 a day: none of it queued
        assert over.json()["error"]["limit"]["window"] == "day"
        assert over.json()["error"]["limit"]["remaining"] == 37
        state = (await admin.get(f"/api/whatsapp/queue/{org.id}")).json()
        assert state["queued"] == 63


async def test_settings_read_merge_and_refuse_naming_the_field(live_api: LiveApi,
                                                                bus: EventBus) -> None:
    with trio.fail_after(30), bus.listen(kinds={SettingsChanged}) as changes:
        org = await org_with_tokens(live_api)
        viewer = as_role(live_api, org, "VIEWER")
        defaults = (await viewer.get(f"/api/whatsapp/settings/{org.id}")).json()
        assert defaults == {
            "organizationId": str(org.id),
            "rateLimiting": {"messagesPerMinute": 10, "messagesPerHour": 100,
                             "messagesPerDay": 500, "concurrency": 3},
            "safety": {"enableMassSending": False, "requireConfirmation": True,
                       "maxBatchSize": 50}}
        merged = await set_limits(live_api, org, rateLimiting={"messagesPerMinute": 15})
        assert merged["rateLimiting"]["messagesPerMinute"] == 15
        assert merged["rateLimiting"]["messagesPerHour"] == 100
        assert changes.receive_nowait().org_id == org.id  # the actor is told at once
        admin = as_role(live_api, org, "ADMIN")
        for document, field in [
            ({"rateLimiting": {"messagesPerMinute": 25}}, "rateLimiting.messagesPerMinute"),
            ({"rateLimiting": {"messagesPerHour": 10}}, "rateLimiting.messagesPerHour"),
            ({"rateLimiting": {"messagesPerDay": 50}}, "rateLimiting.messagesPerDay"),
            ({"rateLimiting": {"concurrency": 0}}, "rateLimiting.concurrency"),
            ({"safety": {"maxBatchSize": 500}}, "safety.maxBatchSize"),
            ({"safety": {"enableMassSending": "yes"}}, "safety.enableMassSending"),
            ({"limits": {}}, "limits"),
        ]:
            r = await admin.put(f"/api/whatsapp/settings/{org.id}", json=document)
            assert r.status_code == 400, (document, r.text)
            assert r.json()["error"]["field"] == field, r.json()
        after = (await viewer.get(f"/api/whatsapp/settings/{org.id}")).json()
        assert after["rateLimiting"]["messagesPerMinute"] == 15  # nothing stored by the refusals
        org_row = await live_api.socket_client().get("/api/organizations")
        stored = next(o for o in org_row.json()["organizations"] if o["id"] == str(org.id))
        assert stored["settings"]["rateLimiting"]["messagesPerMinute"] == 15


async def test_resume_closes_the_breaker_and_tells_the_actor(live_api: LiveApi,
                                                              bus: EventBus) -> None:
    with trio.fail_after(30), bus.listen(kinds={SendingResumed}) as resumed:
        org = await org_with_tokens(live_api)
        await sessions_repo.set_sending_paused(
            live_api.ctx.db, organization_id=org.id, paused=True,
            reason="WhatsApp banned or restricted the account: account banned (TOS_BLOCK)")
        admin = as_role(live_api, org, "ADMIN")
        status = (await admin.get(f"/api/whatsapp/status/{org.id}")).json()
        assert status["sendingPaused"] is True
        state = (await admin.get(f"/api/whatsapp/queue/{org.id}")).json()
        assert state["sendingPausedReason"].startswith("WhatsApp banned")
        r = await admin.post(f"/api/whatsapp/send/resume/{org.id}")
        assert r.status_code == 200
        assert r.json()["wasPaused"] is True
        assert r.json()["previousReason"].endswith("(TOS_BLOCK)")
        assert resumed.receive_nowait().org_id == org.id
        status = (await admin.get(f"/api/whatsapp/status/{org.id}")).json()
        assert (status["sendingPaused"], status["sendingPausedReason"]) == (False, None)


async def test_the_queue_state(live_api: LiveApi) -> None:
    live_api.ctx.services.outbound_clock = FixedClock(NOW)
    with trio.fail_after(30):
        org = await org_with_tokens(live_api)
        agent = as_role(live_api, org, "AGENT")
        for i in range(3):
            r = await agent.post("/api/whatsapp/send", json={"to": CLIENT, "content": f"m{i}"})
            assert r.status_code == 202
        db: Database = live_api.ctx.db
        item = await outbox_repo.claim_next(db, organization_id=org.id, wa_message_id="K",
                                            now=NOW)
        assert item is not None
        await outbox_repo.mark_sent(db, outbox_id=item.id, at=NOW - timedelta(minutes=5))
        await outbox_repo.claim_next(db, organization_id=org.id, wa_message_id="L", now=NOW)
        state = (await agent.get(f"/api/whatsapp/queue/{org.id}")).json()
    assert (state["queued"], state["sending"], state["concurrency"]) == (1, 1, 3)
    assert state["windows"] == [{"window": "minute", "limit": 10, "sent": 0},
                                {"window": "hour", "limit": 100, "sent": 1},
                                {"window": "day", "limit": 500, "sent": 1}]
    assert state["sendingPaused"] is False


async def test_openapi_documents_the_outbound_endpoints(live_api: LiveApi) -> None:
    with trio.fail_after(30):
        doc = (await live_api.client().get("/openapi.json")).json()
    paths = doc["paths"]
    for path, method in [("/api/whatsapp/send", "post"), ("/api/whatsapp/send/bulk", "post"),
                         ("/api/whatsapp/messages/{message_id}", "get"),
                         ("/api/whatsapp/settings/{org}", "get"),
                         ("/api/whatsapp/settings/{org}", "put"),
                         ("/api/whatsapp/queue/{org}", "get"),
                         ("/api/whatsapp/send/resume/{org}", "post")]:
        assert method in paths[path], (path, method)
    assert "429" in paths["/api/whatsapp/send"]["post"]["responses"]
    schemas = doc["components"]["schemas"]
    assert schemas["SendRequest"]["required"] == ["to", "content"]
    refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc)))
    assert refs <= set(schemas), refs - set(schemas)


# -- sends to the end: cancel, expiry, stopped sending --------------------------------------------


async def feed_of(db: Database, org: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
    """The feed entries of the outbound path (queueing also announces the new client)."""
    return [(c.kind, c.data) for c in await changes.page(db, organization_id=org, after=0,
                                                         limit=1000)
            if c.kind.startswith(("message.sent", "send.", "sending."))]


async def test_a_queued_message_is_cancelled_once_and_only_while_queued(
        live_api: LiveApi, bus: EventBus, db: Database) -> None:
    with trio.fail_after(30), bus.subscribe(kinds={OutboxStatus}) as statuses:
        org = await org_with_tokens(live_api)
        agent = as_role(live_api, org, "AGENT")
        queued = (await agent.post("/api/whatsapp/send", json={
            "to": CLIENT, "content": "Тур отменён?"})).json()
        path = f"/api/whatsapp/messages/{queued['id']}"

        viewer = await as_role(live_api, org, "VIEWER").delete(path)
        assert viewer.status_code == 403
        other = await org_with_tokens(live_api, "Other")
        hidden = await as_role(live_api, other, "ADMIN").delete(path)
        assert hidden.status_code == 404
        assert (await agent.delete(f"/api/whatsapp/messages/{uuid.uuid4()}")).status_code == 404
        assert (await agent.delete("/api/whatsapp/messages/nope")).status_code == 404

        r = await agent.delete(path)
        assert r.status_code == 200, r.text
        cancelled = r.json()
        assert (cancelled["id"], cancelled["status"]) == (queued["id"], "CANCELLED")
        assert [e["status"] for e in cancelled["events"]] == ["QUEUED", "CANCELLED"]
        again = await agent.delete(path)
        assert again.status_code == 409
        assert again.json()["error"]["code"] == "not_cancellable"
        assert "CANCELLED" in again.json()["error"]["message"]

        # Once it is being sent, it is too late.
        sending = (await agent.post("/api/whatsapp/send", json={
            "to": CLIENT, "content": "уже в пути"})).json()
        claimed = await outbox_repo.claim_next(db, organization_id=org.id, wa_message_id="AB12CD34")
        assert claimed is not None
        assert str(claimed.id) == sending["id"]
        late = await agent.delete(f"/api/whatsapp/messages/{sending['id']}")
        assert late.status_code == 409
        assert "SENDING" in late.json()["error"]["message"]
        assert (await outbox_repo.get(db, outbox_id=claimed.id)).status == "SENDING"  # type: ignore[union-attr]

        feed = await feed_of(db, org.id)
        published = statuses.receive_nowait()
        assert isinstance(published, OutboxStatus)
        trail = await audit_repo.page(db, organization_id=org.id, before=None, limit=50)

    assert [kind for kind, _ in feed] == ["send.cancelled"]
    assert feed[0][1] == {"sendId": queued["id"], "to": CLIENT}
    assert (published.id, published.status) == (queued["id"], "CANCELLED")
    cancels = [e for e in trail if e.action == "send.cancelled"]
    assert len(cancels) == 1
    assert cancels[0].detail["sendId"] == queued["id"]


async def test_expires_at_is_checked_kept_and_answered(live_api: LiveApi) -> None:
    with trio.fail_after(30):
        org = await org_with_tokens(live_api)
        admin = as_role(live_api, org, "ADMIN")
        now = datetime.now(UTC)
        for when, words in [((now - timedelta(minutes=1)).isoformat(), "in the future"),
                            ((now + timedelta(days=31)).isoformat(), "at most 30 days"),
                            ("2030-01-01T09:00:00", "timezone"),
                            ("tomorrow", "datetime")]:
            r = await admin.post("/api/whatsapp/send", json={
                "to": CLIENT, "content": "hi", "expiresAt": when})
            assert r.status_code == 400, (when, r.text)
            assert r.json()["error"]["field"] == "expiresAt", r.text
            assert words in r.json()["error"]["message"], r.text

        expires = now + timedelta(hours=2)
        r = await admin.post("/api/whatsapp/send", json={
            "to": CLIENT, "content": "Скидка до вечера", "expiresAt": expires.isoformat()})
        assert r.status_code == 202, r.text
        assert datetime.fromisoformat(r.json()["expiresAt"]) == expires
        state = (await admin.get(f"/api/whatsapp/messages/{r.json()['id']}")).json()
        assert datetime.fromisoformat(state["expiresAt"]) == expires

        await set_limits(live_api, org, safety={"enableMassSending": True})
        own = now + timedelta(hours=1)
        r = await admin.post("/api/whatsapp/send/bulk", json={
            "expiresAt": expires.isoformat(),
            "messages": [{"to": "+996555000001", "content": "a"},
                         {"to": "+996555000002", "content": "b", "expiresAt": own.isoformat()},
                         {"to": "+996555000003", "content": "c",
                          "expiresAt": (now - timedelta(seconds=1)).isoformat()}]})
        assert r.status_code == 202, r.text
        answer = r.json()
    assert [datetime.fromisoformat(m["expiresAt"]) for m in answer["messages"]] == [expires, own]
    assert [e["index"] for e in answer["errors"]] == [2]
    assert "messages[2].expiresAt" in answer["errors"][0]["error"]


async def test_a_send_while_sending_is_stopped_is_409_saying_why_and_how_to_resume(
        live_api: LiveApi, bus: EventBus, db: Database) -> None:
    with trio.fail_after(30), bus.subscribe(kinds={OutboundResumed}) as resumed:
        org = await org_with_tokens(live_api)
        admin = as_role(live_api, org, "ADMIN")
        await set_limits(live_api, org, safety={"enableMassSending": True})
        reason = "3 of the latest 3 sends failed (more than 2% of the last 100)"
        await sessions_repo.set_sending_paused(db, organization_id=org.id, paused=True,
                                               reason=reason)
        one = await admin.post("/api/whatsapp/send", json={"to": CLIENT, "content": "hi"})
        bulk = await admin.post("/api/whatsapp/send/bulk", json={
            "messages": [{"to": CLIENT, "content": "hi"}]})
        assert await outbox_repo.count_pending(db, organization_id=org.id) == 0

        r = await admin.post(f"/api/whatsapp/send/resume/{org.id}")
        assert r.status_code == 200
        after = await admin.post("/api/whatsapp/send", json={"to": CLIENT, "content": "hi"})
        assert after.status_code == 202, after.text
        event = resumed.receive_nowait()
        assert isinstance(event, OutboundResumed)

        await db.execute("UPDATE whatsapp_sessions SET state = 'BANNED', "
                         "last_error = 'account banned (TOS_BLOCK)' WHERE organization_id = $1",
                         org.id)
        banned = await admin.post("/api/whatsapp/send", json={"to": CLIENT, "content": "hi"})
        feed = await feed_of(db, org.id)

    for answer in (one, bulk):
        assert answer.status_code == 409, answer.text
        error = answer.json()["error"]
        assert error["code"] == "sending_paused"
        assert error["reason"] == reason
        assert error["resume"] == f"POST /api/whatsapp/send/resume/{org.id}"
        assert reason in error["message"]
    assert banned.status_code == 409
    assert banned.json()["error"]["code"] == "account_banned"
    assert banned.json()["error"]["reason"] == "account banned (TOS_BLOCK)"
    assert event.previous_reason == reason
    assert feed == [("sending.resumed", {"previousReason": reason})]
