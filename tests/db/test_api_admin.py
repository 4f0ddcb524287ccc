"""Organizations, kept session data (backups and the one purge), and the OpenAPI document."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from pathlib import Path

import trio

from tests.support import api as api_support
from tests.support.api import LiveApi
from wad.db.repo import sessions as sessions_repo

live_api = api_support.live_api


async def test_organizations_are_created_and_listed(live_api: LiveApi) -> None:
    with trio.fail_after(30):
        sock = live_api.socket_client()
        r = await sock.post("/api/organizations", json={"name": "  Issyk-Kul Tours  "})
        assert r.status_code == 201
        created = r.json()
        org_id = uuid.UUID(created["id"])
        assert created["name"] == "Issyk-Kul Tours"
        listed = (await sock.get("/api/organizations")).json()["organizations"]
        assert [(o["id"], o["name"]) for o in listed] == [(str(org_id), "Issyk-Kul Tours")]
        row = await live_api.ctx.db.fetchrow("SELECT name FROM organizations WHERE id = $1",
                                             org_id)
        assert row is not None
        assert row["name"] == "Issyk-Kul Tours"


def _make_folder(path: Path, size: int) -> None:
    path.mkdir(parents=True)
    (path / "Default").mkdir()
    (path / "Default" / "Cookies").write_bytes(b"c" * size)


async def test_backups_list_and_purge_deletes_only_that_organization(
        live_api: LiveApi, state_dir: Path) -> None:
    db = live_api.ctx.db
    with trio.fail_after(30):
        org = await live_api.create_org("Purged")
        keep = await live_api.create_org("Kept")
        for owner in (org, keep):
            for n in range(2):
                data = f"archive {n} of {owner}".encode()
                await sessions_repo.add_archive(db, organization_id=owner, archive=data,
                                                sha256=hashlib.sha256(data).digest(),
                                                size=len(data))
        sessions = state_dir / "sessions"
        _make_folder(sessions / f"org-{org}", 1000)
        _make_folder(sessions / "trash" / f"org-{org}-20260101T000000Z", 300)
        _make_folder(sessions / "trash" / f"org-{org}-20260102T000000Z", 200)
        _make_folder(sessions / f"org-{keep}", 10)
        _make_folder(sessions / "trash" / f"org-{keep}-20260101T000000Z", 10)

        sock = live_api.socket_client()
        listed = (await sock.get(f"/api/sessions/{org}/backups")).json()
        assert len(listed["archives"]) == 2
        assert listed["archives"][0]["id"] > listed["archives"][1]["id"]  # newest first
        assert listed["archives"][0]["sha256"] == hashlib.sha256(
            f"archive 1 of {org}".encode()).hexdigest()
        assert listed["profile"]["path"] == str(sessions / f"org-{org}")
        assert listed["profile"]["size"] == 1000
        assert [t["size"] for t in listed["trash"]] == [300, 200]

        # Refused while the session should run.
        await sessions_repo.set_state(db, organization_id=org, state="CONNECTED")
        await sessions_repo.set_should_run(db, organization_id=org, should_run=True)
        r = await sock.post(f"/api/sessions/{org}/purge", json={"confirm": True})
        assert r.status_code == 409
        assert "disconnect" in r.json()["error"]["message"]
        assert (sessions / f"org-{org}").is_dir()

        await sessions_repo.set_state(db, organization_id=org, state="LOGGED_OUT")
        await sessions_repo.set_should_run(db, organization_id=org, should_run=False)
        r = await sock.post(f"/api/sessions/{org}/purge", json={"confirm": True})
        assert r.status_code == 200, r.text
        assert r.json()["archivesDeleted"] == 2
        assert len(r.json()["foldersDeleted"]) == 3
        assert not (sessions / f"org-{org}").exists()
        assert list((sessions / "trash").glob(f"org-{org}-*")) == []
        after = (await sock.get(f"/api/sessions/{org}/backups")).json()
        assert after["archives"] == []
        assert after["profile"] is None
        assert after["trash"] == []

        # The other organization's login is untouched.
        other = (await sock.get(f"/api/sessions/{keep}/backups")).json()
        assert len(other["archives"]) == 2
        assert other["profile"] is not None
        assert len(other["trash"]) == 1


async def test_openapi_documents_the_bodies_and_docs_page(live_api: LiveApi) -> None:
    with trio.fail_after(30):
        client = live_api.client()  # the documentation needs no token
        doc = (await client.get("/openapi.json")).json()
        paths = doc["paths"]
        for path, method in [("/api/whatsapp/connect", "post"), ("/api/whatsapp/qr/{org}", "get"),
                             ("/api/whatsapp/pairing-code/{org}", "post"),
                             ("/api/whatsapp/status/{org}", "get"),
                             ("/api/whatsapp/disconnect/{org}", "post"),
                             ("/api/whatsapp/logout/{org}", "post"),
                             ("/api/organizations", "post"), ("/api/organizations", "get"),
                             ("/api/tokens", "post"), ("/api/tokens", "get"),
                             ("/api/tokens/{token_id}", "delete"), ("/api/tree", "get")]:
            assert method in paths[path], (path, method)
        schemas = doc["components"]["schemas"]
        token_body = schemas["CreateTokenRequest"]
        assert token_body["additionalProperties"] is False
        assert token_body["required"] == ["role"]
        assert schemas["PairingCodeRequest"]["properties"]["phoneNumber"]["maxLength"] == 40
        # Every body and parameter is named in camelCase (the event stream, which keeps its
        # own names, is not a body).
        snake = sorted(f"{name}.{field}" for name, schema in schemas.items()
                       for field in schema.get("properties", {}) if "_" in field)
        snake += sorted(f"{path} ?{p['name']}" for path, item in paths.items()
                        if "/events" not in path for operation in item.values()
                        for p in operation.get("parameters", [])
                        if p["in"] == "query" and "_" in p["name"])
        assert not snake, snake
        assert {"organizationId", "status", "lastConnectedAt", "lastDisconnectedAt",
                "errorMessage"} <= set(schemas["SessionStatus"]["properties"])
        # Every reference in the document resolves (nested bodies such as lists of tokens).
        refs = set(re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(doc)))
        assert refs
        assert refs <= set(schemas), refs - set(schemas)
        assert paths["/healthz"]["get"]["security"] == []
        post_tokens = paths["/api/tokens"]["post"]
        assert "201" in post_tokens["responses"]
        assert "403" in post_tokens["responses"]
        docs = await client.get("/docs")
        assert docs.status_code == 200
        assert "openapi.json" in docs.text
