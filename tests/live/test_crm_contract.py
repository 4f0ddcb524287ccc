"""The CRM's contract, played as the CRM's plan writes it (seed 001, step 4.1): every endpoint of
`/api/whatsapp` the plan lists, called over HTTP with an organization's tokens and the plan's
request bodies, against a `wad run` process whose session links through the WhatsApp Web
simulator. Each answer must carry the plan's fields, under the plan's names, with the plan's
JSON types (wad's own extra fields may follow); the snake_case names wad used before are refused
as unknown fields, and errors keep the one shape `{"error": {"code", "message", "field"}}`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
import trio

from tests.support.daemonproc import (
    DaemonProcess,
    daemon_on_sim,
)
from wad.db.models import SessionState
from wad.sim.client import SimClient

pytestmark = pytest.mark.browser

ACCOUNT = "996555100401"
CLIENT = "+996555100402"
OTHER_CLIENT = "+996555100403"
STATES = set(get_args(SessionState))


@dataclass
class Crm:
    """The CRM's side: its organization and an HTTP client per role (the plan's middleware)."""

    daemon: DaemonProcess
    phone: SimClient
    org: str
    http: dict[str, httpx.AsyncClient]


@pytest.fixture
async def crm(state_dir: Path, nursery: trio.Nursery) -> AsyncIterator[Crm]:
    clients: dict[str, httpx.AsyncClient] = {}
    async with daemon_on_sim(state_dir, nursery, seed=18, qr_rotate_s=5.0) as (sim, daemon):
        try:
            async with SimClient(sim.url) as phone, daemon.socket_client() as root:
                await phone.create_account(ACCOUNT, "Issyk-Kul Tours")
                created = await root.post("/api/organizations",
                                          json={"name": "Issyk-Kul Tours"})
                assert created.status_code == 201, created.text
                org = created.json()["id"]
                for role in ("VIEWER", "AGENT", "ADMIN"):
                    made = await root.post("/api/tokens", json={
                        "role": role, "organizationId": org, "name": f"crm {role}"})
                    assert made.status_code == 201, made.text
                    clients[role] = httpx.AsyncClient(
                        base_url=daemon.tcp_url, timeout=30,
                        headers={"Authorization": f"Bearer {made.json()['token']}"})
                yield Crm(daemon=daemon, phone=phone, org=org, http=clients)
        finally:
            for client in clients.values():
                await client.aclose()


def has(body: dict[str, Any], **fields: type | tuple[type, ...]) -> None:
    """Each field is present with that JSON type (`type(None)` for null)."""
    for name, kind in fields.items():
        assert name in body, (name, body)
        assert isinstance(body[name], kind), (name, body[name], kind)
        if kind in (int, (int, type(None))):
            assert not isinstance(body[name], bool), (name, body[name])


def when(value: str | None) -> None:
    """A time is ISO 8601 with its offset (or null)."""
    if value is not None:
        assert datetime.fromisoformat(value).tzinfo is not None, value


def refused(r: httpx.Response, field: str) -> None:
    """400 in the error shape, naming `field` as unknown."""
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) >= {"code", "message", "field"}, error
    assert (error["code"], error["field"]) == ("invalid", field), error
    assert "unknown field" in error["message"], error


async def status_of(crm: Crm, role: str = "VIEWER") -> dict[str, Any]:
    r = await crm.http[role].get(f"/api/whatsapp/status/{crm.org}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def wait_status(crm: Crm, state: str, timeout: float = 60) -> dict[str, Any]:
    with trio.fail_after(timeout):
        while (body := await status_of(crm))["status"] != state:
            await trio.sleep(0.2)
    return body


async def test_the_crm_plan_endpoints_answer_the_plan_fields(crm: Crm) -> None:
    viewer, agent, admin = crm.http["VIEWER"], crm.http["AGENT"], crm.http["ADMIN"]
    org = crm.org

    # GET /qr/:organizationId with no QR: `{qrCode: null}`, 200, for any user of the org.
    r = await viewer.get(f"/api/whatsapp/qr/{org}")
    assert r.status_code == 200, r.text
    has(r.json(), qrCode=type(None))

    # GET /status/:organizationId: the plan's five fields.
    status = await status_of(crm)
    has(status, organizationId=str, status=str, lastConnectedAt=(str, type(None)),
        lastDisconnectedAt=(str, type(None)), errorMessage=(str, type(None)))
    assert (status["organizationId"], status["status"]) == (org, "DISCONNECTED")

    # POST /connect: the organization comes from the token; `{success, organizationId,
    # status}`. Only an admin may.
    r = await viewer.post("/api/whatsapp/connect")
    assert r.status_code == 403 and set(r.json()["error"]) == {"code", "message", "field"}
    r = await admin.post("/api/whatsapp/connect")
    assert r.status_code in (200, 202), r.text
    has(r.json(), success=bool, organizationId=str, status=str)
    assert (r.json()["success"], r.json()["organizationId"]) == (True, org)
    assert r.json()["status"] in STATES

    # GET /qr/:organizationId with a QR: `{qrCode}`, a string, for a VIEWER too.
    await wait_status(crm, "QR_CODE_PENDING")
    with trio.fail_after(30):
        while (qr := (await viewer.get(f"/api/whatsapp/qr/{org}")).json())["qrCode"] is None:
            await trio.sleep(0.2)
    has(qr, qrCode=str)
    await crm.phone.scan_qr(ACCOUNT, qr["qrCode"])
    status = await wait_status(crm, "CONNECTED")
    has(status, lastConnectedAt=str, errorMessage=type(None))
    when(status["lastConnectedAt"])
    has((await viewer.get(f"/api/whatsapp/qr/{org}")).json(), qrCode=type(None))

    # GET /settings/:organizationId: the plan's WhatsAppSettings.
    r = await viewer.get(f"/api/whatsapp/settings/{org}")
    assert r.status_code == 200, r.text
    settings = r.json()
    has(settings, rateLimiting=dict, safety=dict)
    has(settings["rateLimiting"], messagesPerMinute=int, messagesPerHour=int,
        messagesPerDay=int, concurrency=int)
    has(settings["safety"], enableMassSending=bool, requireConfirmation=bool, maxBatchSize=int)

    # PUT /settings/:organizationId with a partial WhatsAppSettings: answers the updated ones.
    r = await admin.put(f"/api/whatsapp/settings/{org}", json={
        "rateLimiting": {"messagesPerMinute": 12},
        "safety": {"enableMassSending": True, "maxBatchSize": 2}})
    assert r.status_code == 200, r.text
    assert r.json()["rateLimiting"]["messagesPerMinute"] == 12
    assert r.json()["safety"] == {**settings["safety"], "enableMassSending": True,
                                  "maxBatchSize": 2}
    assert (await viewer.get(f"/api/whatsapp/settings/{org}")).json() == r.json()

    # POST /send {organizationId, to, content, conversationId?, priority?}:
    # `{success, message}` (and wad's id of the queued message).
    r = await agent.post("/api/whatsapp/send", json={
        "organizationId": org, "to": CLIENT, "content": "Salam! Your tour starts at 9.",
        "priority": 1})
    assert r.status_code == 202, r.text
    sent = r.json()
    has(sent, success=bool, message=str, id=str, conversationId=str)
    assert sent["success"] is True
    uuid.UUID(sent["id"])
    r = await agent.post("/api/whatsapp/send", json={
        "organizationId": org, "to": CLIENT, "content": "And the bus leaves from the hotel.",
        "conversationId": sent["conversationId"], "priority": 5})
    assert r.status_code == 202, r.text
    assert (r.json()["success"], r.json()["conversationId"]) == (True, sent["conversationId"])

    # POST /send/bulk {organizationId, messages: [{to, content, conversationId?}],
    # requireConfirmation?}: `{success, queued, failed, errors}`. Above maxBatchSize the plan's
    # `requireConfirmation: false` confirms the batch.
    batch = [{"to": CLIENT, "content": "Bulk one", "conversationId": sent["conversationId"]},
             {"to": OTHER_CLIENT, "content": "Bulk two"},
             {"to": "not a number", "content": "Bulk three"}]
    r = await admin.post("/api/whatsapp/send/bulk", json={"organizationId": org,
                                                          "messages": batch})
    assert r.status_code == 400 and r.json()["error"]["code"] == "confirmation_required", r.text
    r = await admin.post("/api/whatsapp/send/bulk", json={
        "organizationId": org, "messages": batch, "requireConfirmation": False})
    assert r.status_code == 202, r.text
    answer = r.json()
    has(answer, success=bool, queued=int, failed=int, errors=list)
    assert (answer["success"], answer["queued"], answer["failed"]) == (True, 2, 1)
    assert [e["index"] for e in answer["errors"]] == [2]

    # The names wad used before are unknown fields now.
    refused(await agent.post("/api/whatsapp/send", json={
        "organization_id": org, "to": CLIENT, "content": "hi"}), "organization_id")
    refused(await agent.post("/api/whatsapp/send", json={
        "organizationId": org, "to": CLIENT, "content": "hi",
        "conversation_id": sent["conversationId"]}), "conversation_id")
    refused(await agent.post("/api/whatsapp/send", json={
        "organizationId": org, "to": CLIENT, "content": "hi", "idempotency_key": "k"}),
        "idempotency_key")
    refused(await admin.post("/api/whatsapp/send/bulk", json={
        "organizationId": org, "messages": [{"to": CLIENT, "content": "hi",
                                             "conversation_id": sent["conversationId"]}]}),
        "messages[0].conversation_id")
    refused(await admin.post("/api/whatsapp/connect", json={"organization_id": org}),
            "organization_id")
    refused(await admin.put(f"/api/whatsapp/settings/{org}", json={
        "rate_limiting": {"messages_per_minute": 5}}), "rate_limiting")
    refused(await admin.put(f"/api/whatsapp/settings/{org}", json={
        "safety": {"enable_mass_sending": False}}), "safety.enable_mass_sending")
    refused(await admin.post(f"/api/whatsapp/pairing-code/{org}", json={
        "phone_number": "+996555100401"}), "phone_number")
    for body in (status, sent, answer):
        assert not [key for key in body if "_" in key], body

    # POST /disconnect/:organizationId: `{success, organizationId, status: DISCONNECTED}`.
    r = await viewer.post(f"/api/whatsapp/disconnect/{org}")
    assert r.status_code == 403, r.text
    r = await admin.post(f"/api/whatsapp/disconnect/{org}")
    assert r.status_code == 200, r.text
    has(r.json(), success=bool, organizationId=str, status=str)
    assert (r.json()["success"], r.json()["organizationId"], r.json()["status"]) == (
        True, org, "DISCONNECTED")
    status = await status_of(crm)
    has(status, status=str, lastDisconnectedAt=str)
    when(status["lastDisconnectedAt"])
    assert status["status"] == "DISCONNECTED"
