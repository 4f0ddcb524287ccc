"""The fast lane (`wad.api.lane`) against the real server on real sockets: it answers status
and send exactly as Hypercorn and Quart do (the same server with `fast_lane=False` is the
reference, case by case), hands a connection to Hypercorn at its first other request (pipelined
too, and over TLS), keeps the body timeout, and lets the server stop with idle connections
open."""

from __future__ import annotations

import functools
import json
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.support.api import issue_token, make_settings, serve_context
from tests.support.rawhttp import read_answer, request
from wad.api.app import create_app
from wad.api.context import AppContext, LaneCounts, Services, run_services
from wad.api.server import MAX_HEAD_BYTES, serve_api
from wad.bus import EventBus
from wad.config import ApiSettings, DaemonSettings, Settings
from wad.db.pool import Database
from wad.db.repo import organizations as orgs_repo
from wad.sim.tls import self_signed

BODY_TIMEOUT = 1.0


@dataclass
class Served:
    url: str
    socket_path: Path
    ctx: AppContext

    @property
    def lane(self) -> LaneCounts:
        assert self.ctx.lane is not None
        return self.ctx.lane

    async def connect(self) -> trio.SocketStream:
        host, port = self.url.removeprefix("http://").split(":")
        return await trio.open_tcp_stream(host, int(port))


async def _serve(db: Database, state_dir: Path, nursery: trio.Nursery, *, fast_lane: bool
                 ) -> tuple[Served, trio.Event]:
    ctx = AppContext(settings=make_settings(state_dir, max_body_bytes=4096), db=db,
                     services=Services(bus=EventBus()))
    socket_path = state_dir / f"wad-{'lane' if fast_lane else 'plain'}.sock"
    addresses, shutdown = await serve_context(nursery, ctx, socket_path=socket_path,
                                              fast_lane=fast_lane, body_timeout_s=BODY_TIMEOUT)
    url = next(a for a in addresses if a.startswith("http://127."))
    return Served(url=url, socket_path=socket_path, ctx=ctx), shutdown


@pytest.fixture
async def servers(db: Database, state_dir: Path, nursery: trio.Nursery
                  ) -> AsyncIterator[tuple[Served, Served]]:
    """The same app served twice on one database: with the lane, and without (the
    reference)."""
    lane, stop_lane = await _serve(db, state_dir, nursery, fast_lane=True)
    plain, stop_plain = await _serve(db, state_dir, nursery, fast_lane=False)
    assert plain.ctx.lane is None
    try:
        yield lane, plain
    finally:
        stop_lane.set()
        stop_plain.set()


async def _call(served: Served, method: str, path: str, *, via_socket: bool = False,
                **kwargs: Any) -> httpx.Response:
    if via_socket:
        transport = httpx.AsyncHTTPTransport(uds=str(served.socket_path))
        client = httpx.AsyncClient(transport=transport, base_url="http://wad", timeout=10)
    else:
        client = httpx.AsyncClient(base_url=served.url, timeout=10)
    async with client:
        return await client.request(method, path, **kwargs)


def _shape(r: httpx.Response) -> tuple[int, Any, dict[str, str]]:
    """What a caller sees of an answer: status, JSON body and the headers that carry meaning
    (ids and times of fresh rows aside)."""
    body = r.json()
    for volatile in ("id", "createdAt", "updatedAt", "notBefore"):
        body.pop(volatile, None)
    kept = {k: r.headers[k] for k in ("content-type", "www-authenticate", "retry-after",
                                      "connection") if k in r.headers}
    return r.status_code, body, kept


async def test_status_and_send_are_answered_as_hypercorn_and_quart_answer_them(
        servers: tuple[Served, Served], db: Database) -> None:
    lane, plain = servers
    org = (await orgs_repo.create(db, name="Lane Tours")).id
    other = (await orgs_repo.create(db, name="Other Tours")).id
    viewer = await issue_token(db, "VIEWER", org)
    agent = await issue_token(db, "AGENT", org)
    metrics = await issue_token(db, "METRICS")

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    send = "/api/whatsapp/send"
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/api/whatsapp/status/{org}", {"headers": bearer(viewer)}),
        ("GET", f"/api/whatsapp/status/{org}", {"via_socket": True}),
        ("GET", f"/api/whatsapp/status/{uuid.uuid4()}", {"via_socket": True}),  # 404
        ("GET", "/api/whatsapp/status/not-a-uuid", {"headers": bearer(viewer)}),  # 404
        ("GET", f"/api/whatsapp/status/{other}", {"headers": bearer(viewer)}),  # 403
        ("GET", f"/api/whatsapp/status/{org}", {}),  # 401, no token
        ("GET", f"/api/whatsapp/status/{org}", {"headers": {"Authorization": "Basic x"}}),
        ("GET", f"/api/whatsapp/status/{org}", {"headers": bearer("wad_" + "x" * 43)}),
        ("GET", f"/api/whatsapp/status/{org}", {"headers": bearer(metrics)}),  # 403
        ("POST", send, {"headers": bearer(viewer),  # 403: below AGENT
                        "json": {"to": "+996555123456", "content": "hi"}}),
        ("POST", send, {"headers": bearer(agent), "json": {"to": "+996555123456"}}),  # 400
        ("POST", send, {"headers": bearer(agent), "json": {"to": "12", "content": "hi"}}),
        ("POST", send, {"headers": bearer(agent),
                        "json": {"to": "+996555123456", "content": "hi", "extra": 1}}),
        ("POST", send, {"headers": bearer(agent),
                        "json": {"to": "+996555123456", "content": "a\u0000b"}}),
        ("POST", send, {"headers": {**bearer(agent), "Content-Type": "application/json"},
                        "content": b'{"to": '}),  # bad JSON
        ("POST", send, {"headers": {**bearer(agent), "Content-Type": "text/plain"},
                        "content": b'{"to": "+996555123456", "content": "hi"}'}),  # 415
        ("POST", send, {"headers": bearer(agent)}),  # empty body
        ("POST", send, {"via_socket": True,  # the super admin must name the organization
                        "json": {"to": "+996555123456", "content": "hi"}}),
        ("POST", send, {"via_socket": True, "json": {"organizationId": str(uuid.uuid4()),
                                                     "to": "+996555123456", "content": "hi"}}),
    ]
    statuses = set()
    for method, path, options in cases:
        before = lane.lane.answered
        got = await _call(lane, method, path, **options)
        assert lane.lane.answered == before + 1, (method, path, options)  # the lane answered
        expected = await _call(plain, method, path, **options)
        assert _shape(got) == _shape(expected), (method, path, options, got.text)
        statuses.add(got.status_code)
    assert statuses == {200, 400, 401, 403, 404, 415}

    # A queued message, and the same idempotency key again: 202, then 200 with the same id.
    message = {"to": "+996555123456", "content": "Your tour starts at 9",
               "idempotencyKey": "lane-1"}
    first = await _call(lane, "POST", send, headers=bearer(agent), json=message)
    assert first.status_code == 202, first.text
    again = await _call(lane, "POST", send, headers=bearer(agent), json=message)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    reference = await _call(plain, "POST", send, headers=bearer(agent),
                            json={**message, "idempotencyKey": "plain-1"})
    assert reference.status_code == 202
    assert _shape(first)[1].keys() == _shape(reference)[1].keys()
    assert {k: v for k, v in first.json().items() if k not in ("id", "createdAt", "updatedAt",
                                                                  "notBefore")} == \
        {k: v for k, v in reference.json().items() if k not in ("id", "createdAt", "updatedAt",
                                                                   "notBefore")}
    status = await _call(lane, "GET", f"/api/whatsapp/status/{org}", headers=bearer(viewer))
    assert status.json()["organizationId"] == str(org)


async def test_a_connection_goes_to_hypercorn_at_its_first_other_request(
        servers: tuple[Served, Served], db: Database) -> None:
    lane, _ = servers
    org = (await orgs_repo.create(db, name="Handoff Tours")).id
    token = await issue_token(db, "ADMIN", org)
    auth = {"Authorization": f"Bearer {token}"}
    status = request("GET", f"/api/whatsapp/status/{org}", headers=auth)
    other = request("GET", f"/api/whatsapp/qr/{org}", headers=auth)
    stream = await lane.connect()
    async with stream:
        await stream.send_all(status)
        answer = await read_answer(stream)
        assert answer is not None and answer.status == 200
        assert (lane.lane.answered, lane.lane.handed_off) == (1, 0)
        # Pipelined: the other request and a status behind it, in one write. Hypercorn
        # answers both, in order, on the same connection.
        await stream.send_all(other + status)
        first, second = await read_answer(stream), await read_answer(stream)
        assert first is not None and first.status == 200 and first.json()["qrCode"] is None
        assert second is not None and second.status == 200
        assert second.json()["organizationId"] == str(org)
        assert (lane.lane.answered, lane.lane.handed_off) == (1, 1)
        await stream.send_all(status)  # the connection stays with Hypercorn
        third = await read_answer(stream)
        assert third is not None and third.status == 200
        assert (lane.lane.answered, lane.lane.handed_off) == (1, 1)
    # A head over the limit is refused as Hypercorn refuses it, even for a route of the lane.
    big = request("GET", f"/api/whatsapp/status/{org}",
                  headers={**auth, "X-Padding": "p" * MAX_HEAD_BYTES})
    stream = await lane.connect()
    async with stream:
        await stream.send_all(big)
        answer = await read_answer(stream)
        assert answer is not None and answer.status == 431
        assert answer.json()["error"]["code"] == "headers_too_large"
    assert (lane.lane.answered, lane.lane.handed_off) == (1, 2)
    # The metrics say so too (the scrape's own connection is handed off as well).
    scrape = await _call(lane, "GET", "/metrics", via_socket=True)
    samples = {sample.name: sample.value for family in text_string_to_metric_families(scrape.text)
               for sample in family.samples}
    assert samples["wad_api_fast_lane_answered_total"] == 1
    assert samples["wad_api_fast_lane_handoffs_total"] == 3


async def test_keep_alive_close_and_a_late_body(servers: tuple[Served, Served],
                                                db: Database) -> None:
    lane, _ = servers
    org = (await orgs_repo.create(db, name="Slow Body Tours")).id
    token = await issue_token(db, "AGENT", org)
    auth = {"Authorization": f"Bearer {token}"}
    status = request("GET", f"/api/whatsapp/status/{org}", headers=auth)
    stream = await lane.connect()
    async with stream:
        for _ in range(3):  # keep-alive: three answers on one connection
            await stream.send_all(status)
            answer = await read_answer(stream)
            assert answer is not None and answer.status == 200
            assert "connection" not in answer.headers
        await stream.send_all(request("GET", f"/api/whatsapp/status/{org}",
                                      headers={**auth, "Connection": "close"}))
        answer = await read_answer(stream)
        assert answer is not None and answer.headers["connection"] == "close"
        assert await read_answer(stream) is None  # closed after it
    # A body split across writes is waited for; one that stops short gets 408 and a close.
    body = json.dumps({"to": "+996555123456", "content": "split"}).encode()
    send = request("POST", "/api/whatsapp/send",
                   headers={**auth, "Content-Type": "application/json"}, body=body)
    stream = await lane.connect()
    async with stream:
        await stream.send_all(send[:-10])
        await trio.sleep(0.2)
        await stream.send_all(send[-10:])
        answer = await read_answer(stream)
        assert answer is not None and answer.status == 202, answer
        await stream.send_all(send[:-10])
        answer = await read_answer(stream, timeout=BODY_TIMEOUT + 10)
        assert answer is not None and answer.status == 408
        assert answer.json()["error"]["code"] == "request_timeout"
        assert answer.headers["connection"] == "close"
        assert await read_answer(stream) is None


async def test_the_server_stops_with_lane_connections_open(
        db: Database, state_dir: Path, nursery: trio.Nursery) -> None:
    served, shutdown = await _serve(db, state_dir, nursery, fast_lane=True)
    org = (await orgs_repo.create(db, name="Stopping Tours")).id
    status = request("GET", f"/api/whatsapp/status/{org}",
                     headers={"Authorization": f"Bearer {await issue_token(db, 'VIEWER', org)}"})
    idle, silent = await served.connect(), await served.connect()
    async with idle, silent:
        await idle.send_all(status)
        answer = await read_answer(idle)
        assert answer is not None and answer.status == 200
        with trio.fail_after(5):
            shutdown.set()
            assert await read_answer(idle) is None  # closed between requests, at once
            assert await read_answer(silent) is None
        with pytest.raises(OSError):
            await served.connect()  # no longer accepting


async def test_over_tls_the_lane_answers_and_hands_off(db: Database, state_dir: Path,
                                                       nursery: trio.Nursery) -> None:
    cert, key = self_signed(state_dir / "tls")
    settings = Settings(daemon=DaemonSettings(state_dir=str(state_dir)),
                        api=ApiSettings(listen="127.0.0.1:0", tls_cert_file=str(cert),
                                        tls_key_file=str(key)))
    ctx = AppContext(settings=settings, db=db)
    app = create_app(ctx)
    await nursery.start(run_services, ctx)
    shutdown = trio.Event()
    addresses = await nursery.start(functools.partial(
        serve_api, app, listen="127.0.0.1:0", socket_path=None, max_body=4096,
        shutdown=shutdown, tls=settings.api.tls))
    try:
        url = next(a for a in addresses if a.startswith("https://127."))
        org = (await orgs_repo.create(db, name="Secure Tours")).id
        headers = {"Authorization": f"Bearer {await issue_token(db, 'VIEWER', org)}"}
        trusted = ssl.create_default_context(cafile=str(cert))
        with trio.fail_after(30):
            async with httpx.AsyncClient(base_url=url, verify=trusted, timeout=10,
                                         headers=headers) as https:
                r = await https.get(f"/api/whatsapp/status/{org}")
                assert r.status_code == 200 and r.json()["organizationId"] == str(org)
                assert ctx.lane is not None and ctx.lane.answered == 1
                r = await https.get("/healthz")  # handed to Hypercorn, still over TLS
                assert r.status_code == 200 and r.json()["status"] == "ok"
                r = await https.get(f"/api/whatsapp/status/{org}")
                assert r.status_code == 200
                assert ctx.lane.handed_off == 1
    finally:
        shutdown.set()
