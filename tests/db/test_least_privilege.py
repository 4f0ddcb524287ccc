"""Least privilege in the API, over real HTTP: a revoked token's open event stream ends within
5 s; a VIEWER sees messages' status but never their text; a METRICS token reads `/metrics` and
nothing else; `/docs` is served whole from the daemon's own files under the status page's
content security policy. (TLS on the TCP address: tests/db/test_api_tls.py; `/docs` drawn in a
real Chromium with the network cut off: tests/live/test_docs_live.py.)
"""

from __future__ import annotations

import re
import uuid
from html.parser import HTMLParser

import httpx
import pytest
import trio

from tests.support import api as api_support
from tests.support.api import LiveApi
from tests.support.events import Served, feed_message, open_stream
from wad.api.routes.status_page import PAGE_HEADERS
from wad.cli import main as cli
from wad.db.repo import changes
from wad.db.repo import sessions as sessions_repo

live_api = api_support.live_api


async def _made(root: httpx.AsyncClient, role: str, org: uuid.UUID | None) -> dict[str, str]:
    body = {"role": role, "name": f"test {role}"}
    if org is not None:
        body["organizationId"] = str(org)
    r = await root.post("/api/tokens", json=body)
    assert r.status_code == 201, r.text
    made: dict[str, str] = r.json()
    return made


# -- a revoked token's stream -------------------------------------------------------------------


async def test_a_revoked_tokens_open_stream_ends_within_5_seconds(served: Served) -> None:
    db = served.db
    org = await served.org("Issyk-Kul Tours")
    other = await served.org("Osh Travel")
    root = served.client(await served.token("SUPER_ADMIN"))
    revoked_token = await _made(root, "ADMIN", org)
    kept_token = await _made(root, "VIEWER", org)
    admin = served.client(revoked_token["token"])
    viewer = served.client(kept_token["token"])

    async def chatter() -> None:
        # Another organization keeps the daemon busy: its events wake every reader, and must
        # not keep the quiet organization's reader from checking its token.
        while True:
            await feed_message(db, other, "busy elsewhere")
            await trio.sleep(0.05)

    with trio.fail_after(30):
        response, reader = await open_stream(admin, f"/api/whatsapp/events/{org}")
        kept_response, kept_reader = await open_stream(viewer, f"/api/whatsapp/events/{org}")
        try:
            assert (await reader.next()).event == "stream.start"
            assert (await kept_reader.next()).event == "stream.start"
            await feed_message(db, org, "still open")
            assert (await reader.next()).data["data"]["body"] == "still open"
            assert (await kept_reader.next()).event == "message.stored"

            async with trio.open_nursery() as noise:
                noise.start_soon(chatter)
                r = await root.delete(f"/api/tokens/{revoked_token['id']}")
                assert r.status_code == 200, r.text
                started = trio.current_time()
                with trio.fail_after(5):
                    end = await reader.next(timeout=5)
                    assert (end.event, end.data) == ("stream.end", {"reason": "token_revoked"})
                    with pytest.raises(AssertionError, match="the stream ended"):
                        await reader.next(timeout=5)
                assert trio.current_time() - started < 5
                noise.cancel_scope.cancel()

            # The other token's stream goes on.
            await sessions_repo.set_state(db, organization_id=org, state="CONNECTING")
            assert (await kept_reader.next()).data["data"]["status"] == "CONNECTING"
        finally:
            await response.aclose()
            await kept_response.aclose()
        # And the revoked token opens no new stream.
        assert (await admin.get(f"/api/whatsapp/events/{org}")).status_code == 401


# -- a VIEWER sees status, not content ----------------------------------------------------------


async def test_a_viewer_follows_messages_status_but_never_their_text(served: Served) -> None:
    db = served.db
    org = await served.org("Issyk-Kul Tours")
    readers = {role: served.client(await served.token(role, org))  # type: ignore[arg-type]
               for role in ("VIEWER", "AGENT", "ADMIN")}
    secret_body = "Тур на Иссык-Куль: 500 долларов"
    secret_caption = "фото гостиницы"
    seen: dict[str, list[dict[str, object]]] = {}
    with trio.fail_after(30):
        for role, client in readers.items():
            response, reader = await open_stream(client, f"/api/whatsapp/events/{org}")
            try:
                await reader.next()  # stream.start
                await feed_message(db, org, secret_body, direction="OUT")
                await feed_message(db, org, None, caption=secret_caption, type="image")
                await changes.record(db, organization_id=org, kind="message.edited", data={
                    "messageId": str(uuid.uuid4()), "body": secret_body + "!", "caption": None,
                    "status": "READ"})
                await changes.record(db, organization_id=org, kind="message.status", data={
                    "messageId": str(uuid.uuid4()), "from": "SENT", "status": "READ"})
                await changes.record(db, organization_id=org, kind="client.updated", data={
                    "clientId": str(uuid.uuid4()), "name": "Aibek"})
                await sessions_repo.set_state(db, organization_id=org, state="CONNECTING")
                got = await reader.until(lambda s: s.event == "session.state"
                                         and not s.data.get("snapshot"))
                got = [g for g in got if not g.data.get("snapshot")]
            finally:
                await response.aclose()
            seen[role] = [{"event": g.event} | g.data for g in got]

    viewer = seen["VIEWER"]
    assert [v["event"] for v in viewer] == ["message.stored", "message.stored",
                                           "message.edited", "message.status", "session.state"]
    assert "body" not in viewer[0]["data"]  # type: ignore[operator]
    assert viewer[0]["data"]["status"] == "SENT"  # type: ignore[index]
    assert "caption" not in viewer[1]["data"]  # type: ignore[operator]
    assert viewer[1]["data"]["type"] == "image"  # type: ignore[index]
    assert (viewer[3]["data"]["from"], viewer[3]["data"]["status"]) == (  # type: ignore[index]
        "SENT", "READ")
    assert secret_body not in str(viewer) and secret_caption not in str(viewer)
    for role in ("AGENT", "ADMIN"):
        assert [v["event"] for v in seen[role]] == [
            "message.stored", "message.stored", "message.edited", "message.status",
            "client.updated", "session.state"]
        assert seen[role][0]["data"]["body"] == secret_body  # type: ignore[index]
        assert seen[role][1]["data"]["caption"] == secret_caption  # type: ignore[index]


async def test_a_viewer_reads_a_queued_messages_status_without_its_content(
        live_api: LiveApi) -> None:
    with trio.fail_after(30):
        org = await live_api.create_org()
        tokens = {role: (await live_api.create_token(role, org))["token"]
                  for role in ("VIEWER", "AGENT", "ADMIN")}
        text = "Ваш тур подтверждён, оплата 500 долларов"
        r = await live_api.client(tokens["AGENT"]).post("/api/whatsapp/send", json={
            "to": "+996555123456", "content": text})
        assert r.status_code == 202, r.text
        path = f"/api/whatsapp/messages/{r.json()['id']}"
        for role, content in (("VIEWER", None), ("AGENT", text), ("ADMIN", text)):
            answer = await live_api.client(tokens[role]).get(path)
            assert answer.status_code == 200, answer.text
            assert answer.json()["content"] == content, role
            assert answer.json()["status"] == "QUEUED"
        assert text not in (await live_api.client(tokens["VIEWER"]).get(path)).text
        assert (await live_api.socket_client().get(path)).json()["content"] == text


# -- a METRICS token ----------------------------------------------------------------------------


async def test_a_metrics_token_reads_metrics_and_nothing_else(
        live_api: LiveApi, capsys: pytest.CaptureFixture[str]) -> None:
    with trio.fail_after(60):
        org = await live_api.create_org()
        # Made with the CLI, over the control socket (the CLI is synchronous: a thread).
        capsys.readouterr()
        code = await trio.to_thread.run_sync(cli.main, [
            "token", "create", "--role", "METRICS", "--name", "prometheus",
            "--socket", str(live_api.socket_path)])
        out, err = capsys.readouterr()
        assert code == 0, err
        token = out.strip().splitlines()[-1]  # (the app, in this process, logs to stdout too)
        assert token.startswith("wad_")
        assert "METRICS token" in err and "/metrics only" in err
        listed = (await live_api.socket_client().get("/api/tokens")).json()["tokens"]
        assert [(t["role"], t["organizationId"]) for t in listed] == [("METRICS", None)]
        # It belongs to no organization.
        r = await live_api.socket_client().post("/api/tokens", json={
            "role": "METRICS", "organizationId": str(org)})
        assert r.status_code == 400 and r.json()["error"]["field"] == "organizationId"

        metrics = live_api.client(token)
        r = await metrics.get("/metrics")
        assert r.status_code == 200, r.text
        assert "wad_build_info" in r.text
        for method, path in [
                ("GET", "/api/overview"), ("GET", "/api/whatsapp/events"),
                ("GET", f"/api/whatsapp/events/{org}"), ("GET", f"/api/whatsapp/status/{org}"),
                ("GET", "/api/whatsapp/status"), ("GET", f"/api/whatsapp/messages/{uuid.uuid4()}"),
                ("GET", f"/api/whatsapp/settings/{org}"), ("GET", f"/api/whatsapp/queue/{org}"),
                ("GET", "/api/organizations"), ("GET", "/api/tokens"), ("GET", "/api/audit"),
                ("GET", f"/api/whatsapp/qr/{org}"), ("POST", "/api/whatsapp/connect"),
                ("POST", "/api/whatsapp/send"), ("POST", "/api/tokens"),
                ("GET", f"/api/whatsapp/import/{org}"), ("GET", "/api/tree")]:
            r = await metrics.request(method, path)
            assert r.status_code == 403, (method, path, r.text)
            assert r.json()["error"] == {"code": "forbidden", "field": None,
                                         "message": "a METRICS token may read /metrics only"}

        # Scraping needs METRICS or the super admin; an organization's token is refused.
        for role in ("ADMIN", "AGENT", "VIEWER"):
            r = await live_api.client((await live_api.create_token(role, org))["token"]).get(
                "/metrics")
            assert r.status_code == 403, role
        root = live_api.client((await live_api.create_token("SUPER_ADMIN"))["token"])
        assert (await root.get("/metrics")).status_code == 200
        assert (await live_api.client().get("/metrics")).status_code == 401


# -- /docs from the daemon's own files --------------------------------------------------------


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.refs.append(value)


async def test_docs_are_served_whole_by_the_daemon_under_the_pages_policy(
        live_api: LiveApi) -> None:
    http = live_api.client()  # no token: the documentation is public
    with trio.fail_after(30):
        page = await http.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        for name, value in PAGE_HEADERS.items():
            assert page.headers[name] == value, name
        assert not re.search(r"(https?:)?//", page.text), "the page names another host"
        assert 'data-url="/openapi.json"' in page.text
        parser = _Refs()
        parser.feed(page.text)
        assert sorted(parser.refs) == ["/assets/docs.js", "/docs/swagger/favicon-32x32.png",
                                       "/docs/swagger/swagger-ui-bundle.js",
                                       "/docs/swagger/swagger-ui.css"]
        kinds = {}
        for ref in parser.refs:
            r = await http.get(ref)
            assert r.status_code == 200, ref
            kinds[ref] = r.headers["content-type"].split(";")[0]
            if ref.endswith("swagger-ui-bundle.js"):
                assert "SwaggerUIBundle" in r.text and len(r.content) > 500_000
            if ref == "/assets/docs.js":
                assert "validatorUrl: null" in r.text
                assert not re.search(r"https?://", r.text)
        assert kinds["/docs/swagger/swagger-ui.css"] == "text/css"
        assert kinds["/docs/swagger/swagger-ui-bundle.js"] in ("text/javascript",
                                                                "application/javascript")
        # What the page draws is served too, and nothing outside Swagger UI's folder is.
        assert (await http.get("/openapi.json")).status_code == 200
        for bad in ("/docs/swagger/../../../../etc/passwd", "/docs/swagger/%2e%2e/__init__.py",
                    "/docs/swagger/nope.js"):
            assert (await http.get(bad)).status_code == 404, bad
