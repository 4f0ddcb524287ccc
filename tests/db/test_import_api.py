"""`/api/whatsapp/import/{org}` over real HTTP, without a browser: who may call it, what it
refuses (bad bodies, no manager, a session that is not running), and reports of runs that only
the database remembers. Imports that run are proven in test_import_daemon.py."""

from __future__ import annotations

import uuid

import trio

from tests.support import api as api_support
from tests.support.api import LiveApi
from wad.bus import EventBus
from wad.db.repo import imports as imports_repo
from wad.org.manager import OrgManager

live_api = api_support.live_api


async def test_only_this_organizations_admins_may_import(live_api: LiveApi) -> None:
    with trio.fail_after(30):
        org = await live_api.create_org("Silk Road Tours")
        other = await live_api.create_org("Osh Travel")
        viewer = (await live_api.create_token("VIEWER", org))["token"]
        agent = (await live_api.create_token("AGENT", org))["token"]
        stranger = (await live_api.create_token("ADMIN", other))["token"]
        admin = (await live_api.create_token("ADMIN", org))["token"]
        path = f"/api/whatsapp/import/{org}"
        for token in (viewer, agent, stranger):
            for method in ("POST", "GET", "DELETE"):
                r = await live_api.client(token).request(method, path)
                assert r.status_code == 403, (method, r.text)
        assert (await live_api.client().post(path)).status_code == 401
        # Allowed: the answers are the endpoint's own (no manager, nothing imported yet).
        r = await live_api.client(admin).post(path)
        assert r.status_code == 503
        assert r.json()["error"]["message"] == "this daemon runs no organization manager"
        r = await live_api.client(admin).get(path)
        assert r.status_code == 404
        assert "not been imported" in r.json()["error"]["message"]
        r = await live_api.client(admin).delete(path)
        assert r.status_code == 404
        assert (await live_api.socket_client().get(path)).status_code == 404  # super admin


async def test_bodies_are_validated_and_the_session_must_run_here(live_api: LiveApi) -> None:
    ctx = live_api.ctx
    ctx.services.orgs = OrgManager(settings=ctx.settings, db=ctx.db, driver=None,
                                      bus=EventBus())
    sock = live_api.socket_client()
    with trio.fail_after(30):
        org = await live_api.create_org("Silk Road Tours")
        path = f"/api/whatsapp/import/{org}"
        for body, field in [({"limit": 0}, "limit"), ({"paceS": -1}, "paceS"),
                            ({"dryRun": "yes"}, "dryRun"), ({"source": "export"}, "source"),
                            ({"pageSize": 5000}, "pageSize")]:
            r = await sock.post(path, json=body)
            assert r.status_code == 400, (body, r.text)
            assert r.json()["error"]["field"] == field
        r = await sock.post(path, json={"limit": 5, "dryRun": True})
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "not_running"
        assert "connect it first" in r.json()["error"]["message"]
        r = await sock.post(f"/api/whatsapp/import/{uuid.uuid4()}")
        assert r.status_code == 404


async def test_progress_of_a_run_only_the_database_remembers(live_api: LiveApi) -> None:
    db = live_api.ctx.db
    with trio.fail_after(30):
        org = await live_api.create_org("Silk Road Tours")
        run = await imports_repo.create(db, organization_id=org, source="whatsapp",
                                        options={"limit": 3})
        await imports_repo.set_total(db, run_id=run.id, chats_total=3)
        await imports_repo.record_chat(db, run_id=run.id, wa_chat_id="996555000001@c.us",
                                       messages_stored=12, duplicates=0)
        await imports_repo.record_chat(db, run_id=run.id, wa_chat_id="996555000002@c.us",
                                       messages_stored=0, duplicates=1)
        await imports_repo.record_chat(db, run_id=run.id, wa_chat_id="48501@c.us",
                                       messages_stored=0, duplicates=0,
                                       error="+48501 is not a valid phone number")
        await imports_repo.finish(db, run_id=run.id, status="INTERRUPTED")
        r = await live_api.socket_client().get(f"/api/whatsapp/import/{org}")
    assert r.status_code == 200
    body = r.json()
    assert body["runId"] == str(run.id)
    assert (body["state"], body["chatsTotal"], body["chatsDone"], body["chatsImported"],
            body["chatsDuplicate"], body["chatsFailed"], body["messagesStored"]) == (
        "INTERRUPTED", 3, 2, 1, 1, 1, 12)
    assert body["errors"] == [{"chat": "48501@c.us",
                               "error": "+48501 is not a valid phone number"}]


async def test_openapi_documents_the_import_endpoints(live_api: LiveApi) -> None:
    with trio.fail_after(30):
        doc = (await live_api.client().get("/openapi.json")).json()
    operations = doc["paths"]["/api/whatsapp/import/{org}"]
    assert set(operations) >= {"post", "get", "delete"}
    assert "202" in operations["post"]["responses"]
