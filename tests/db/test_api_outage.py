"""The control API during a database outage: requests that need the database answer 503
`database_unavailable` with `Retry-After` (not 500 `internal`), `/healthz` says since when, what
needs no database still answers, and everything answers again once it is back."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import trio

from tests.support.api import serving
from tests.support.outage import own_database
from wad.api.app import RETRY_AFTER_S
from wad.db import migrate
from wad.db.pool import Database


async def test_requests_answer_503_with_retry_after_while_the_database_is_down(
        state_dir: Path, aio_loop: None, nursery: trio.Nursery) -> None:
    async with own_database(state_dir, migrated=False) as own:
        async with Database.open(own.dsn, min_size=1, max_size=3) as db, \
                serving(db, state_dir, nursery, max_body_bytes=4096) as api:
            await migrate.apply(db)
            org = await api.create_org()
            admin = (await api.create_token("ADMIN", org))["token"]
            tcp, sock = api.client(admin), api.socket_client()
            assert (await tcp.get(f"/api/whatsapp/status/{org}")).status_code == 200
            assert (await tcp.get("/healthz")).json()["database"] is True

            await own.stop()
            # With a token (checking it needs the database) and on the socket (no token).
            for client, method, path, body in (
                    (tcp, "GET", f"/api/whatsapp/status/{org}", None),
                    (tcp, "POST", "/api/whatsapp/send", {"to": "+996555000001",
                                                         "content": "hello"}),
                    (sock, "GET", "/api/organizations", None),
                    (sock, "POST", "/api/organizations", {"name": "During the outage"})):
                r = await client.request(method, path, json=body)
                assert r.status_code == 503, (path, r.text)
                assert r.headers["Retry-After"] == str(RETRY_AFTER_S)
                error = r.json()["error"]
                assert error["code"] == "database_unavailable", error
                assert error["message"].startswith("database unavailable since "), error
            health = await tcp.get("/healthz")
            assert health.status_code == 503
            assert health.json()["database"] is False
            since = health.json()["databaseUnavailableSince"]
            assert datetime.fromisoformat(since).tzinfo is not None
            assert health.json()["message"] == f"database unavailable since {since}"
            # What needs no database is still served.
            document = await tcp.get("/openapi.json")
            assert document.status_code == 200
            answer = document.json()["paths"]["/api/whatsapp/status/{org}"]["get"]["responses"]
            assert "Retry-After" in answer["503"]["headers"]
            assert "database_unavailable" in answer["503"]["description"]

            await own.start()
            with trio.fail_after(30):
                while (await tcp.get(f"/api/whatsapp/status/{org}")).status_code != 200:
                    await trio.sleep(0.2)
            health = await tcp.get("/healthz")
            assert health.status_code == 200
            assert health.json()["databaseUnavailableSince"] is None
