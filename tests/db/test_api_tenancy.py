"""The tenancy matrix over real HTTP: every endpoint x every kind of caller.

Callers: no token, an unknown token, a revoked token, another organization's ADMIN token, this
organization's VIEWER, AGENT and ADMIN tokens, a SUPER_ADMIN token, and the unix control socket.
An allowed call must get past authentication and authorization; what it then answers is the
endpoint's own business. This app runs without an organization manager, so the session actions
answer 503 ("this daemon runs no organization manager") once allowed; their real effects are
proven against the real manager and the simulator in tests/live/test_ctl_live.py.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

import trio

from tests.support import api as api_support
from tests.support.api import LiveApi

live_api = api_support.live_api

RANK = {"VIEWER": 1, "AGENT": 2, "ADMIN": 3, "SUPER_ADMIN": 4}


@dataclass
class Endpoint:
    method: str
    path: str  # `{org}` is this organization, `{token}` a token id
    min_role: str
    allowed: int  # the status an allowed caller gets here
    json: dict[str, Any] | None = None
    allowed_code: str | None = None  # the error code an allowed caller gets, when it is one
    own_view: bool = False  # not organization-scoped: every caller sees only its own data


def endpoints() -> list[Endpoint]:
    return [
        Endpoint("POST", "/api/whatsapp/connect", "ADMIN", 503, {"organizationId": "{org}"}),
        Endpoint("GET", "/api/whatsapp/qr/{org}", "VIEWER", 200),  # `qrCode` null: none yet
        Endpoint("GET", "/api/whatsapp/qr/{org}?format=png", "VIEWER", 409),
        Endpoint("POST", "/api/whatsapp/pairing-code/{org}", "ADMIN", 503,
                 {"phoneNumber": "+996555123456"}),
        Endpoint("GET", "/api/whatsapp/status/{org}", "VIEWER", 200),
        Endpoint("POST", "/api/whatsapp/disconnect/{org}", "ADMIN", 503),
        Endpoint("POST", "/api/whatsapp/logout/{org}", "ADMIN", 503),
        Endpoint("GET", "/api/whatsapp/status", "SUPER_ADMIN", 200),
        Endpoint("POST", "/api/organizations", "SUPER_ADMIN", 201, {"name": "Another"}),
        Endpoint("GET", "/api/organizations", "SUPER_ADMIN", 200),
        Endpoint("POST", "/api/tokens", "SUPER_ADMIN", 201,
                 {"role": "VIEWER", "organizationId": "{org}"}),
        Endpoint("GET", "/api/tokens", "SUPER_ADMIN", 200),
        Endpoint("DELETE", "/api/tokens/{token}", "SUPER_ADMIN", 200),
        Endpoint("GET", "/api/sessions/{org}/backups", "SUPER_ADMIN", 200),
        Endpoint("POST", "/api/sessions/{org}/purge", "SUPER_ADMIN", 200, {"confirm": True}),
        Endpoint("GET", "/api/tree", "SUPER_ADMIN", 503),  # no manager in this app
        Endpoint("POST", "/api/secret/rotate", "SUPER_ADMIN", 200, {}),
        # Sending (the outbound queue).
        Endpoint("POST", "/api/whatsapp/send", "AGENT", 202,
                 {"organizationId": "{org}", "to": "+996555123456", "content": "Salam!"}),
        Endpoint("POST", "/api/whatsapp/send/bulk", "ADMIN", 403,  # mass sending is off
                 {"organizationId": "{org}",
                  "messages": [{"to": "+996555123456", "content": "Salam!"}]},
                 allowed_code="mass_sending_disabled"),
        Endpoint("GET", "/api/whatsapp/settings/{org}", "VIEWER", 200),
        Endpoint("PUT", "/api/whatsapp/settings/{org}", "ADMIN", 200,
                 {"rateLimiting": {"messagesPerMinute": 12}}),
        Endpoint("GET", "/api/whatsapp/queue/{org}", "VIEWER", 200),
        Endpoint("POST", "/api/whatsapp/send/resume/{org}", "ADMIN", 200),
        # Import.
        Endpoint("GET", "/api/whatsapp/import/{org}", "ADMIN", 404),  # allowed; no import yet
        # Operating views.
        Endpoint("GET", "/api/overview", "VIEWER", 200, own_view=True),
        Endpoint("GET", "/metrics", "SUPER_ADMIN", 200),
    ]


def _fill(value: Any, org: uuid.UUID, token_id: str) -> Any:
    if isinstance(value, str):
        return value.replace("{org}", str(org)).replace("{token}", token_id)
    if isinstance(value, dict):
        return {k: _fill(v, org, token_id) for k, v in value.items()}
    return value


async def test_every_endpoint_against_every_caller(live_api: LiveApi) -> None:
    with trio.fail_after(60):
        org = await live_api.create_org("Issyk-Kul Tours")
        other = await live_api.create_org("Other Org")
        tokens = {role: (await live_api.create_token(role, org))["token"]
                  for role in ("VIEWER", "AGENT", "ADMIN")}
        tokens["SUPER_ADMIN"] = (await live_api.create_token("SUPER_ADMIN"))["token"]
        other_admin = (await live_api.create_token("ADMIN", other))["token"]
        revoked = await live_api.create_token("ADMIN", org)
        gone = await live_api.socket_client().delete(f"/api/tokens/{revoked['id']}")
        assert gone.status_code == 200

        failures: list[str] = []

        async def call(ep: Endpoint, client_kind: str, token: str | None) -> tuple[int, Any]:
            # A fresh victim token for each DELETE, so that it always has something to revoke.
            victim = (await live_api.create_token("AGENT", org))["id"] if "{token}" in ep.path \
                else ""
            path = _fill(ep.path, org, victim)
            body = _fill(ep.json, org, victim) if ep.json is not None else None
            client = (live_api.socket_client() if client_kind == "socket"
                      else live_api.client(token))
            r = await client.request(ep.method, path, json=body)
            try:
                payload = r.json()
            except ValueError:
                payload = r.content
            return r.status_code, payload

        callers: list[tuple[str, str, str | None, int]] = [
            # (label, transport, token, rank; 0 = never allowed)
            ("no token", "tcp", None, 0),
            ("unknown token", "tcp", "wad_" + "x" * 43, 0),
            ("revoked token", "tcp", revoked["token"], 0),
            ("other org ADMIN", "tcp", other_admin, 0),
            ("VIEWER", "tcp", tokens["VIEWER"], RANK["VIEWER"]),
            ("AGENT", "tcp", tokens["AGENT"], RANK["AGENT"]),
            ("ADMIN", "tcp", tokens["ADMIN"], RANK["ADMIN"]),
            ("SUPER_ADMIN", "tcp", tokens["SUPER_ADMIN"], RANK["SUPER_ADMIN"]),
            ("control socket", "socket", None, RANK["SUPER_ADMIN"]),
        ]
        for ep in endpoints():
            for label, kind, token, rank in callers:
                status, payload = await call(ep, kind, token)
                allowed = label not in ("no token", "unknown token", "revoked token") and (
                    rank >= RANK[ep.min_role] or (ep.own_view and label == "other org ADMIN"))
                if label in ("no token", "unknown token", "revoked token"):
                    expected = 401
                elif allowed:
                    expected = ep.allowed
                else:
                    expected = 403
                if status != expected:
                    failures.append(f"{ep.method} {ep.path} as {label}: {status} {payload!r}, "
                                    f"expected {expected}")
                    continue
                if ep.own_view and label == "other org ADMIN":
                    assert str(org) not in str(payload), payload  # nothing of ours is shown
                if status >= 400 and allowed and ep.allowed_code:
                    assert payload["error"]["code"] == ep.allowed_code, payload
                elif status == 403:
                    assert payload["error"]["code"] == "forbidden", payload
                if status >= 400:
                    assert isinstance(payload, dict), payload
                    assert set(payload) == {"error"}, payload
                    assert set(payload["error"]) == {"code", "message", "field"}, payload
                    assert payload["error"]["message"]
        assert not failures, "\n".join(failures)


async def test_a_403_says_nothing_about_the_other_organization(live_api: LiveApi) -> None:
    with trio.fail_after(30):
        mine = await live_api.create_org("Mine")
        theirs = await live_api.create_org("Theirs")
        admin = live_api.client((await live_api.create_token("ADMIN", mine))["token"])
        for path in ("/api/whatsapp/status/{}", "/api/whatsapp/qr/{}"):
            existing = await admin.get(path.format(theirs))
            missing = await admin.get(path.format(uuid.uuid4()))
            assert existing.status_code == missing.status_code == 403
            assert existing.json() == missing.json()
            assert str(theirs) not in existing.text
        for path in ("/api/whatsapp/disconnect/{}", "/api/whatsapp/logout/{}"):
            existing = await admin.post(path.format(theirs))
            missing = await admin.post(path.format(uuid.uuid4()))
            assert existing.status_code == missing.status_code == 403
            assert existing.json() == missing.json()
        # Naming another organization in the connect body is refused the same way.
        existing = await admin.post("/api/whatsapp/connect", json={"organizationId": str(theirs)})
        missing = await admin.post("/api/whatsapp/connect",
                                   json={"organizationId": str(uuid.uuid4())})
        assert existing.status_code == missing.status_code == 403
        assert existing.json() == missing.json()


async def test_malformed_and_unknown_ids_are_not_found(live_api: LiveApi) -> None:
    with trio.fail_after(30):
        org = await live_api.create_org()
        sock = live_api.socket_client()
        for path in ("/api/whatsapp/status/not-a-uuid", "/api/whatsapp/qr/123",
                     f"/api/whatsapp/status/{uuid.uuid4()}", "/api/sessions/zzz/backups"):
            r = await sock.get(path)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["error"]["code"] == "not_found"
        r = await sock.delete("/api/tokens/nope")
        assert r.status_code == 404
        r = await sock.delete(f"/api/tokens/{uuid.uuid4()}")
        assert r.status_code == 404
        # An organization token gets the same 404 for a malformed id (it cannot be anyone's).
        viewer = live_api.client((await live_api.create_token("VIEWER", org))["token"])
        r = await viewer.get("/api/whatsapp/status/not-a-uuid")
        assert r.status_code == 404
        # But no token at all is 401 first, whatever the path.
        r = await live_api.client().get("/api/whatsapp/status/not-a-uuid")
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        r = await live_api.client().get("/api/no-such-endpoint")
        assert r.status_code == 401  # not even whether a path exists


async def test_tokens_are_stored_only_as_hashes_and_work_until_revoked(
        live_api: LiveApi) -> None:
    with trio.fail_after(30):
        org = await live_api.create_org()
        created = await live_api.create_token("VIEWER", org)
        token = created["token"]
        assert token.startswith("wad_")
        assert len(token) >= 40
        assert created["prefix"] == token[:12]

        rows = await live_api.ctx.db.fetch("SELECT * FROM api_tokens")
        dumped = " ".join(str(dict(r)) for r in rows)
        assert token not in dumped
        assert token[12:] not in dumped  # not even the secret part
        stored = await live_api.ctx.db.fetchval(
            "SELECT token_hash FROM api_tokens WHERE id = $1", uuid.UUID(created["id"]))
        assert bytes(stored) == hashlib.sha256(token.encode()).digest()

        client = live_api.client(token)
        assert (await client.get(f"/api/whatsapp/status/{org}")).status_code == 200
        used = await live_api.ctx.db.fetchval(
            "SELECT last_used_at FROM api_tokens WHERE id = $1", uuid.UUID(created["id"]))
        assert used is not None

        listed = (await live_api.socket_client().get(
            "/api/tokens", params={"organizationId": str(org)})).json()["tokens"]
        assert [t["id"] for t in listed] == [created["id"]]
        assert "token" not in listed[0]
        assert token not in str(listed)

        revoked = await live_api.socket_client().delete(f"/api/tokens/{created['id']}")
        assert revoked.status_code == 200
        assert revoked.json()["revokedAt"] is not None
        after = await client.get(f"/api/whatsapp/status/{org}")
        assert after.status_code == 401
        assert after.json()["error"]["code"] == "unauthenticated"
        again = await live_api.socket_client().delete(f"/api/tokens/{created['id']}")
        assert again.status_code == 404


async def test_bearer_header_forms(live_api: LiveApi) -> None:
    with trio.fail_after(30):
        org = await live_api.create_org()
        token = (await live_api.create_token("VIEWER", org))["token"]

        async def status_with(header: str) -> int:
            r = await live_api.client().get(f"/api/whatsapp/status/{org}",
                                            headers={"Authorization": header})
            return r.status_code

        assert await status_with(f"Bearer {token}") == 200
        assert await status_with(f"bearer {token}") == 200
        assert await status_with(f"Basic {token}") == 401
        assert await status_with("Bearer") == 401
        assert await status_with(f"Bearer {token}x") == 401
        assert await status_with(f"Bearer {token[:-1]}") == 401
