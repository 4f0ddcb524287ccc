"""The audit trail over real HTTP: organizations, settings, tokens, resumed sending and purges
are stored and logged with who did them (a token's id, or the control socket) and when;
`GET /api/audit` shows them to the super admin (all, or one organization's) and to an
organization's ADMIN (its own only), newest first, page by page. Connects, disconnects and
logouts of a real session: tests/live/test_ctl_live.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
import trio
from structlog.testing import capture_logs

from tests.support import api as api_support
from tests.support.api import LiveApi

live_api = api_support.live_api


async def _trail(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    r = await client.get("/api/audit", params=params)
    assert r.status_code == 200, r.text
    page: dict[str, Any] = r.json()
    return page


async def test_changes_are_stored_with_who_and_when_and_read_back_by_admins(
        live_api: LiveApi) -> None:
    sock = live_api.socket_client()
    started = datetime.now(UTC)
    with trio.fail_after(60), capture_logs() as logs:
        org = await live_api.create_org("Issyk-Kul Tours")
        other = await live_api.create_org("Osh Travel")
        root_made = await live_api.create_token("SUPER_ADMIN")
        admin_made = await live_api.create_token("ADMIN", org)
        root = live_api.client(root_made["token"])
        admin = live_api.client(admin_made["token"])

        # By tokens over TCP: a token made by the super admin's token, a settings change and a
        # resume by the organization's admin, a revocation.
        r = await root.post("/api/tokens", json={"role": "VIEWER", "organizationId": str(org),
                                                 "name": "wall screen"})
        assert r.status_code == 201, r.text
        viewer_made = r.json()
        r = await admin.put(f"/api/whatsapp/settings/{org}",
                            json={"rateLimiting": {"messagesPerMinute": 5}})
        assert r.status_code == 200, r.text
        assert (await admin.post(f"/api/whatsapp/send/resume/{org}")).status_code == 200
        assert (await root.delete(f"/api/tokens/{viewer_made['id']}")).status_code == 200
        # Refused or failed requests change nothing and are not in the trail.
        assert (await admin.put(f"/api/whatsapp/settings/{org}",
                                json={"rateLimiting": {"messagesPerMinute": 500}})
                ).status_code == 400
        assert (await admin.put(f"/api/whatsapp/settings/{other}", json={})).status_code == 403
        # On the control socket: a purge of the other organization's (empty) session data.
        r = await sock.post(f"/api/sessions/{other}/purge", json={"confirm": True})
        assert r.status_code == 200, r.text

        everything = await _trail(root)
    entries = everything["entries"]
    assert everything["nextBefore"] is None
    assert [(e["action"], e["organizationId"]) for e in entries] == [
        ("session.purged", str(other)),
        ("token.revoked", str(org)),
        ("sending.resumed", str(org)),
        ("settings.changed", str(org)),
        ("token.created", str(org)),
        ("token.created", str(org)),
        ("token.created", None),
        ("organization.created", str(other)),
        ("organization.created", str(org)),
    ]
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    by = {e["id"]: (e["actor"], e["tokenId"]) for e in entries}
    socket, as_root, as_admin = ("socket", None), ("token", root_made["id"]), \
        ("token", admin_made["id"])
    assert [by[i] for i in ids] == [socket, as_root, as_admin, as_admin, as_root, socket,
                                    socket, socket, socket]
    for entry in entries:
        at = datetime.fromisoformat(entry["at"])
        assert started - timedelta(seconds=5) <= at <= datetime.now(UTC) + timedelta(seconds=5)

    purged, revoked, resumed, changed, created = entries[:5]
    assert purged["detail"] == {"archivesDeleted": 0, "foldersDeleted": []}
    assert revoked["detail"] == {"tokenId": viewer_made["id"], "role": "VIEWER",
                                 "name": "wall screen"}
    assert resumed["detail"] == {"wasPaused": False, "previousReason": None}
    assert changed["detail"]["changes"] == {"rateLimiting": {"messagesPerMinute": 5}}
    assert changed["detail"]["before"]["rateLimiting"]["messagesPerMinute"] == 10
    assert changed["detail"]["after"]["rateLimiting"]["messagesPerMinute"] == 5
    assert created["detail"] == {"tokenId": viewer_made["id"], "role": "VIEWER",
                                 "name": "wall screen"}
    # No token is ever in the trail, nor its prefix (the trail names tokens by id).
    for made in (root_made, admin_made, viewer_made):
        assert made["token"] not in str(everything)
        assert made["prefix"] not in str(everything)

    # Every entry was logged too, with who did it.
    logged = [e for e in logs if e["event"] == "audit"]
    assert [e["action"] for e in logged] == [e["action"] for e in reversed(entries)]
    assert logged[-1]["by"] == "control socket"
    assert logged[-2]["by"] == f"token {root_made['id']}"
    for made in (root_made, admin_made, viewer_made):
        assert made["token"] not in str(logs)

    with trio.fail_after(30):
        # One organization's trail, for the super admin (token or socket).
        mine = await _trail(root, organizationId=str(org))
        assert [e["id"] for e in mine["entries"]] == [e["id"] for e in entries
                                                      if e["organizationId"] == str(org)]
        assert (await _trail(sock, organizationId=str(other)))["entries"] == [
            e for e in entries if e["organizationId"] == str(other)]
        # An organization's ADMIN: its own trail, asked for or not; another's is refused.
        assert (await _trail(admin))["entries"] == mine["entries"]
        assert (await _trail(admin, organizationId=str(org)))["entries"] == mine["entries"]
        r = await admin.get("/api/audit", params={"organizationId": str(other)})
        assert r.status_code == 403
        r = await admin.get("/api/audit", params={"organizationId": str(uuid.uuid4())})
        assert r.status_code == 403  # the same answer whether it exists or not
        for role in ("AGENT", "VIEWER"):
            low = live_api.client((await live_api.create_token(role, org))["token"])
            assert (await low.get("/api/audit")).status_code == 403, role
        assert (await live_api.client().get("/api/audit")).status_code == 401


async def test_the_trail_pages_with_a_cursor(live_api: LiveApi) -> None:
    sock = live_api.socket_client()
    with trio.fail_after(60):
        org = await live_api.create_org("Issyk-Kul Tours")
        for n in range(6):
            r = await sock.put(f"/api/whatsapp/settings/{org}",
                               json={"rateLimiting": {"messagesPerMinute": n + 1}})
            assert r.status_code == 200, r.text
        pages, before = [], None
        while True:
            params: dict[str, Any] = {"organizationId": str(org), "limit": 3}
            if before is not None:
                params["before"] = before
            page = await _trail(sock, **params)
            pages.append(page["entries"])
            before = page["nextBefore"]
            if before is None:
                break
        assert [len(p) for p in pages] == [3, 3, 1]
        flat = [e for p in pages for e in p]
        assert [e["action"] for e in flat] == ["settings.changed"] * 6 + ["organization.created"]
        assert [e["detail"]["after"]["rateLimiting"]["messagesPerMinute"]
                for e in flat[:6]] == [6, 5, 4, 3, 2, 1]
        assert len({e["id"] for e in flat}) == 7
        everything = await _trail(sock, limit=500)
        assert everything["entries"] == flat and everything["nextBefore"] is None


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"limit": ""}, "limit"), ({"before": "0"}, "before"), ({"before": "1.5"}, "before"),
    ({"before": str(2**63)}, "before"), ({"organizationId": "nope"}, "organizationId"),
    ({"limit": ["5", "6"]}, "limit"),
])
async def test_bad_query_parameters_are_400_naming_them(
        live_api: LiveApi, params: dict[str, str | list[str]], field: str) -> None:
    with trio.fail_after(30):
        r = await live_api.socket_client().get("/api/audit", params=params)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid" and error["field"] == field
    assert error["message"].startswith(f"`{field}`: ")


async def test_the_openapi_document_describes_the_trail(live_api: LiveApi) -> None:
    with trio.fail_after(30):
        document = (await live_api.client().get("/openapi.json")).json()
    operation = document["paths"]["/api/audit"]["get"]
    parameters = {p["name"]: p for p in operation["parameters"]}
    assert set(parameters) == {"organizationId", "limit", "before"}
    assert all(p["in"] == "query" and not p.get("required") for p in parameters.values())
    assert parameters["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 500,
                                             "default": 100}
    assert set(operation["responses"]) >= {"200", "400", "401", "403"}
    assert "AuditPage" in document["components"]["schemas"]


async def test_the_table_keeps_entries_well_formed(live_api: LiveApi) -> None:
    """An entry by a token names it, one by the socket names none; actions are `noun.verb`;
    details are objects; and an entry outlives nothing it speaks of (no foreign key)."""
    db = live_api.ctx.db
    insert = """INSERT INTO audit_log (organization_id, actor, token_id, action, detail)
                VALUES ($1, $2, $3, $4, $5)"""
    org, token = uuid.uuid4(), uuid.uuid4()
    with trio.fail_after(30):
        for args, constraint in [
                ((org, "token", None, "token.created", {}), "audit_log_token_actor"),
                ((org, "socket", token, "token.created", {}), "audit_log_token_actor"),
                ((org, "robot", None, "token.created", {}), "audit_log_actor_check"),
                ((org, "socket", None, "Token Created", {}), "audit_log_action_check"),
                ((org, "socket", None, "token.created", [1]), "audit_log_detail_check")]:
            with pytest.raises(asyncpg.CheckViolationError, match=constraint):
                await db.execute(insert, *args)
        await db.execute(insert, org, "token", token, "token.created", {"role": "VIEWER"})
        page = await _trail(live_api.socket_client(), organizationId=str(org))
    assert [(e["actor"], e["tokenId"], e["detail"]) for e in page["entries"]] == [
        ("token", str(token), {"role": "VIEWER"})]
