"""No secret in any log line: a real `wad run` at `log_level = "debug"` with every secret set
(`WAD_SECRET_KEY`, `OPENROUTER_API_KEY`, the webhook's `WAD_WEBHOOK_SECRET`) goes through every
feature against the simulator in Chromium: organizations and tokens, connect, QR, link, pairing
code, a message sent and one received (status detection and an agent reply through a local
stand-in for OpenRouter, webhook deliveries to a local receiver), status, the tree, the event
stream, metrics, disconnect (the login archive), logout, revoking a token. Then every line the
daemon wrote (its JSON log and anything else on stdout or stderr) is searched for the tokens,
the keys, the webhook secret, the pairing code, the QR payloads, the archive bytes, and, above
debug level, the message texts.

Also here: the control socket is 0660 or stricter, a revoked token stops working on the very
next request (on a connection it already used), and `STATE_DIR/secret.key` is created 0600.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import stat
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from quart import request
from quart_trio import QuartTrio

from tests.support.daemonproc import DaemonProcess, start_daemon
from wad.api.server import serve_api
from wad.browser import profile as archive
from wad.browser.shared import STORAGE_FILE
from wad.db.pool import Database
from wad.sim.client import SimClient
from wad.sim.model import SimConfig
from wad.sim.server import SimServer, serve

pytestmark = pytest.mark.browser

QR_ACCOUNT = "996555300401"
PAIR_ACCOUNT = "996555300402"
CLIENT = "996700300403"

# Distinctive values, so that a search cannot miss them or find them by chance.
SECRET_KEY = "wad-secret-key-" + uuid.uuid4().hex
OPENROUTER_KEY = "sk-or-v1-" + uuid.uuid4().hex + uuid.uuid4().hex
WEBHOOK_SECRET = "whsec-" + uuid.uuid4().hex
TEXT_IN = "Inbound body \u043f\u0440\u0438\u0432\u0435\u0442 \U0001f468\u200d\U0001f469 " \
    "<b>&amp;</b> '; -- " + uuid.uuid4().hex
TEXT_OUT = "Outbound body \u0441\u0430\u043b\u0430\u043c \U0001f642 " + uuid.uuid4().hex
AGENT_REPLY = "Agent reply " + uuid.uuid4().hex
IMPORT_KEY = "sk-or-v1-import-" + uuid.uuid4().hex


@dataclass
class Upstream:
    """A local stand-in for OpenRouter and the webhook receiver; it records what it got."""

    url: str
    requests: list[dict[str, Any]] = field(default_factory=list)

    def to(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["path"] == path]


def upstream_app(upstream: Upstream) -> QuartTrio:
    app = QuartTrio("upstream")
    calls = {"n": 0}

    @app.post("/hook")
    async def hook() -> tuple[str, int]:
        upstream.requests.append({"path": "/hook", "headers": dict(request.headers),
                                  "body": await request.get_data()})
        return "", 204

    @app.post("/openrouter/chat/completions")
    async def completions() -> Any:
        body = await request.get_json()
        upstream.requests.append({"path": "/openrouter", "headers": dict(request.headers),
                                  "body": body})
        calls["n"] += 1
        if calls["n"] == 1:  # the first call fails, so that the retry and warning paths run
            return {"error": {"message": "upstream overloaded"}}, 503
        answer: dict[str, Any]
        if body["model"] == "agent-model":
            answer = {"reply": AGENT_REPLY}
        else:
            answer = {"status": "QUALIFIED", "confidence": 0.9, "reason": "asked for a price"}
        return {"choices": [{"message": {"content": json.dumps(answer)}}]}

    return app


@dataclass
class Run:
    daemon: DaemonProcess
    sim: SimServer
    phone: SimClient
    upstream: Upstream
    db: Database

    def tcp(self, token: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.daemon.tcp_url, timeout=30,
                                 headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
async def run(dsn: str, db: Database, state_dir: Path, nursery: trio.Nursery
              ) -> AsyncIterator[Run]:
    sim: SimServer = await nursery.start(functools.partial(serve, seed=23, config=SimConfig(
        qr_rotate_s=3.0, qr_max_rotations=20, sync_delay_s=0.3, ack_delays_s=(0.2, 0.4, 0.6))))
    upstream = Upstream(url="")
    stop_upstream = trio.Event()
    addresses = await nursery.start(functools.partial(
        serve_api, upstream_app(upstream), listen="127.0.0.1:0", socket_path=None,
        max_body=1 << 20, shutdown=stop_upstream))
    upstream.url = addresses[0]
    extra = (
        f'[whatsapp]\nurl = "{sim.url}"\nhealth_check_interval_s = 2.0\n'
        "reconnect_initial_s = 0.2\nreconnect_max_s = 1.0\nready_timeout_s = 20.0\n"
        "[inbound]\nprocessing_delay_min_s = 0.1\nprocessing_delay_max_s = 0.2\n"
        "reply_delay_min_s = 0.1\nreply_delay_max_s = 0.2\n"
        "enrichment_pause_min_s = 0.0\nenrichment_pause_max_s = 0.1\n"
        "[plugins]\ndisabled = [\"heuristic_status\"]\n"
        "[plugins.config.webhook]\n"
        f'url = "{upstream.url}/hook"\npoll_interval_s = 0.5\nbackoff_initial_s = 0.2\n'
        "[plugins.config.openrouter]\n"
        f'base_url = "{upstream.url}/openrouter"\nstatus_model = "status-model"\n'
        'agent_model = "agent-model"\nagent = true\nretries = 2\nretry_backoff_s = 0.1\n')
    env = {"WAD_SECRET_KEY": SECRET_KEY, "OPENROUTER_API_KEY": OPENROUTER_KEY,
           "WAD_WEBHOOK_SECRET": WEBHOOK_SECRET, "WAD_DATABASE_URL": dsn}
    daemon = await trio.to_thread.run_sync(functools.partial(
        start_daemon, state_dir, env=env, extra_config=extra))
    try:
        async with SimClient(sim.url) as phone:
            await phone.create_account(QR_ACCOUNT, "Naryn Tours")
            await phone.generate_history(QR_ACCOUNT, chats=2, messages=6, seed=5, groups=0,
                                         media_ratio=0.0)  # for the import to bring in
            await phone.create_account(PAIR_ACCOUNT, "Talas Travel")
            yield Run(daemon=daemon, sim=sim, phone=phone, upstream=upstream, db=db)
    finally:
        if daemon.proc.poll() is None:
            await trio.to_thread.run_sync(daemon.stop)
        stop_upstream.set()


def _encodings(raw: bytes) -> list[str]:
    """The ways bytes could show up in a log line."""
    return [raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
            repr(raw)[2:-1]]


async def test_a_full_run_logs_no_secret(run: Run) -> None:
    secrets: dict[str, str] = {"WAD_SECRET_KEY": SECRET_KEY, "OPENROUTER_API_KEY": OPENROUTER_KEY,
                               "webhook secret": WEBHOOK_SECRET}
    with trio.fail_after(240):
        async with run.daemon.socket_client() as sock:
            # Organizations and tokens -----------------------------------------------------
            orgs = {}
            for name in ("Naryn Tours", "Talas Travel"):
                r = await sock.post("/api/organizations", json={"name": name})
                assert r.status_code == 201, r.text
                orgs[name] = r.json()["id"]
            qr_org, pair_org = orgs["Naryn Tours"], orgs["Talas Travel"]
            tokens: dict[str, dict[str, Any]] = {}
            for label, role, org in (("super", "SUPER_ADMIN", None), ("admin", "ADMIN", qr_org),
                                     ("agent", "AGENT", qr_org), ("viewer", "VIEWER", pair_org),
                                     ("pair admin", "ADMIN", pair_org)):
                body = {"role": role, "name": label}
                if org:
                    body["organizationId"] = org
                r = await sock.post("/api/tokens", json=body)
                assert r.status_code == 201, r.text
                tokens[label] = r.json()
                secrets[f"{label} token"] = r.json()["token"]

            # Connect, QR, link --------------------------------------------------------------
            async with run.tcp(tokens["admin"]["token"]) as admin:
                r = await admin.post("/api/whatsapp/connect")
                assert r.status_code == 202, r.text
                await run.daemon.wait_state(qr_org, "QR_CODE_PENDING")
                r = await admin.get(f"/api/whatsapp/qr/{qr_org}")
                assert r.status_code == 200, r.text
                payload = r.json()["qrCode"]
                secrets["QR payload"] = payload
                png = await admin.get(f"/api/whatsapp/qr/{qr_org}", params={"format": "png"})
                assert png.status_code == 200
                # The event stream, briefly (its session snapshot says a QR was issued).
                async with admin.stream("GET", f"/api/whatsapp/events/{qr_org}") as events:
                    assert events.status_code == 200
                    async for line in events.aiter_lines():
                        if line.startswith("data:"):
                            break
                await run.phone.scan_qr(QR_ACCOUNT, payload)
                await run.daemon.wait_state(qr_org, "CONNECTED")

            # Pairing code ---------------------------------------------------------------------
            async with run.tcp(tokens["pair admin"]["token"]) as pair_admin:
                r = await pair_admin.post("/api/whatsapp/connect")
                assert r.status_code == 202, r.text
                await run.daemon.wait_state(pair_org, "QR_CODE_PENDING")
                r = await pair_admin.post(f"/api/whatsapp/pairing-code/{pair_org}",
                                          json={"phoneNumber": "+" + PAIR_ACCOUNT})
                assert r.status_code == 200, r.text
                secrets["pairing code"] = r.json()["code"]
                await run.daemon.wait_state(pair_org, "PAIRING_CODE_PENDING")
                await run.phone.enter_pairing_code(PAIR_ACCOUNT, r.json()["code"])
                await run.daemon.wait_state(pair_org, "CONNECTED")

            # A message received (status detection, an agent reply, webhooks), one sent --
            await run.phone.deliver(QR_ACCOUNT, CLIENT, TEXT_IN, push_name="Aibek")
            with trio.fail_after(60):
                while True:
                    row = await run.db.fetchrow(
                        "SELECT body, processing_state FROM messages WHERE direction = 'IN' "
                        "AND organization_id = $1", uuid.UUID(qr_org))
                    if row is not None and row["processing_state"] != "PENDING":
                        break
                    await trio.sleep(0.2)
            assert row["body"] == TEXT_IN  # through Chromium and back, exactly
            with trio.fail_after(30):
                while not (run.upstream.to("/hook") and any(
                        c["body"]["model"] == "agent-model"
                        for c in run.upstream.to("/openrouter"))):
                    await trio.sleep(0.2)
            async with run.tcp(tokens["agent"]["token"]) as agent:
                r = await agent.post("/api/whatsapp/send",
                                     json={"to": "+" + CLIENT, "content": TEXT_OUT})
                assert r.status_code == 202, r.text
                out_id = r.json()["id"]
                r = await agent.get(f"/api/whatsapp/messages/{out_id}")
                assert r.json()["content"] == TEXT_OUT
            # The sent message reaches the client's chat on the phone, exactly.
            with trio.fail_after(60):
                while True:
                    status = await run.db.fetchval("SELECT status FROM outbox WHERE id = $1",
                                                   uuid.UUID(out_id))
                    if status in ("SENT", "DELIVERED", "READ"):
                        break
                    assert status in ("QUEUED", "SENDING"), status
                    await trio.sleep(0.3)
            chat = [m.get("body") for m in await run.phone.chat_messages(QR_ACCOUNT, CLIENT)]
            assert TEXT_OUT in chat, chat

            # An import of the existing chats, with a key of its own for the model ------------
            async with run.tcp(tokens["admin"]["token"]) as admin:
                r = await admin.post(f"/api/whatsapp/import/{qr_org}", json={
                    "useLlm": True, "openrouterKey": IMPORT_KEY, "paceS": 0})
                assert r.status_code == 202, r.text
                secrets["import key"] = IMPORT_KEY
                with trio.fail_after(60):
                    while (report := (await admin.get(
                            f"/api/whatsapp/import/{qr_org}")).json())["state"] in (
                            "STARTING", "LISTING", "RUNNING"):
                        await trio.sleep(0.3)
                assert report["state"] == "COMPLETED", report
                assert report["messagesStored"] > 0, report

            # Reading: status, tree, overview, metrics ------------------------------------------
            async with run.tcp(tokens["super"]["token"]) as super_admin:
                for path in ("/api/whatsapp/status", f"/api/whatsapp/status/{qr_org}",
                             "/api/tree", "/api/overview", "/metrics", "/api/tokens",
                             f"/api/sessions/{qr_org}/backups", "/healthz"):
                    r = await super_admin.get(path)
                    assert r.status_code == 200, (path, r.text)
            async with run.tcp(tokens["viewer"]["token"]) as viewer:
                assert (await viewer.get(f"/api/whatsapp/status/{pair_org}")).status_code == 200

            # Revoking a token: it stops working at once, even on a connection it used -------
            async with run.tcp(tokens["agent"]["token"]) as agent:
                assert (await agent.get(f"/api/whatsapp/status/{qr_org}")).status_code == 200
                r = await sock.delete(f"/api/tokens/{tokens['agent']['id']}")
                assert r.status_code == 200, r.text
                assert r.json()["revokedAt"] is not None
                r = await agent.get(f"/api/whatsapp/status/{qr_org}")
                assert r.status_code == 401, r.text
                assert r.json()["error"]["code"] == "unauthenticated"
                r = await agent.post("/api/whatsapp/send", json={"to": "+" + CLIENT,
                                                                 "content": "after revoke"})
                assert r.status_code == 401
            async with run.tcp(tokens["admin"]["token"]) as admin:  # others still work
                assert (await admin.get(f"/api/whatsapp/status/{qr_org}")).status_code == 200

            # Disconnect (the login archive is written), logout ---------------------------------
            r = await sock.post(f"/api/whatsapp/disconnect/{qr_org}")
            assert r.status_code == 200, r.text
            r = await sock.post(f"/api/whatsapp/logout/{pair_org}")
            assert r.status_code == 200, r.text

        # The control socket's mode, while it exists.
        mode = stat.S_IMODE(run.daemon.socket_path.stat().st_mode)
        assert mode & ~0o660 == 0, oct(mode)
        assert not (run.daemon.state_dir / "secret.key").exists()  # the key came from the env

        code = await trio.to_thread.run_sync(run.daemon.stop)
        assert code == 0

    # What was exercised really used the secrets (else finding none would prove nothing).
    router_calls = run.upstream.to("/openrouter")
    assert all(c["headers"]["Authorization"] in (f"Bearer {OPENROUTER_KEY}",
                                                 f"Bearer {IMPORT_KEY}") for c in router_calls)
    assert any(c["body"]["model"] == "agent-model" for c in router_calls)
    hooks = run.upstream.to("/hook")
    assert all(hmac.compare_digest(
        c["headers"]["X-Wad-Signature"],
        "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), c["body"], hashlib.sha256).hexdigest())
        for c in hooks)
    archives = [bytes(r["archive"]) for r in await run.db.fetch(
        "SELECT archive FROM session_archives")]
    assert archives, "no login archive was written"

    # Every secret, in every form it could take in a line.
    needles: dict[str, list[str]] = {name: [value] for name, value in secrets.items()}
    for name in [n for n in secrets if n.endswith(" token")]:
        needles[name].append(secrets[name].removeprefix("wad_"))
    needles["archive key"] = _encodings(hashlib.sha256(SECRET_KEY.encode()).digest())
    for i, sealed in enumerate(archives):
        # Any 24-byte window of the archive, in any encoding, would be a leak; sample several.
        for start in range(0, max(1, len(sealed) - 24), max(1, len(sealed) // 8)):
            needles[f"archive {i} @{start}"] = _encodings(sealed[start:start + 24])
    text = run.daemon.log_path.read_text(errors="replace")
    found = {name: value for name, values in needles.items() for value in values
             if value and value in text}
    assert not found, f"secrets in the daemon's output: {sorted(found)}"

    # Nor in the database (tokens are kept as hashes; keys and secrets not at all).
    tables = [r["table_name"] for r in await run.db.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'")]
    assert "api_tokens" in tables and "import_runs" in tables, tables
    for table in tables:
        rows = "\n".join(r["t"] for r in await run.db.fetch(
            f'SELECT t::text AS t FROM "{table}" t'))
        stored = [name for name, value in secrets.items()
                  if name not in ("pairing code", "QR payload") and value in rows]
        assert not stored, f"{table} stores {stored}"

    # Message texts: at most at debug level.
    lines = text.splitlines()
    assert len(lines) > 50, "the daemon hardly logged anything: is the capture working?"
    for raw in lines:
        try:
            level = json.loads(raw).get("level", "?")
        except ValueError:
            level = "not json"
        if level != "debug":
            for text in (TEXT_IN, TEXT_OUT, AGENT_REPLY):
                marker = text.rsplit(" ", 1)[1]
                assert marker not in raw, f"a message text logged at {level}: {raw[:300]}"


def test_the_key_file_is_created_0600_whatever_the_umask(tmp_path: Path) -> None:
    """Without `WAD_SECRET_KEY` the archive key lives in `STATE_DIR/secret.key`: created 0600
    even under a permissive umask, and tightened back to 0600 if someone loosened it."""
    old = os.umask(0)
    try:
        key = archive.load_key(tmp_path)
    finally:
        os.umask(old)
    path = tmp_path / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == key and len(key) == 32
    os.chmod(path, 0o644)
    assert archive.load_key(tmp_path) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_without_a_secret_key_the_daemon_keeps_its_key_and_profiles_private(
        dsn: str, state_dir: Path, nursery: trio.Nursery) -> None:
    """A real `wad run` without `WAD_SECRET_KEY`: connecting an organization creates
    `STATE_DIR/secret.key` 0600 and a browser profile whose login parts nobody else can read;
    the state directory cannot be listed by others."""
    sim: SimServer = await nursery.start(functools.partial(serve, seed=29, config=SimConfig(
        qr_rotate_s=5.0, sync_delay_s=0.3)))
    extra = f'[whatsapp]\nurl = "{sim.url}"\nready_timeout_s = 20.0\n'
    daemon = await trio.to_thread.run_sync(functools.partial(
        start_daemon, state_dir, env={"WAD_DATABASE_URL": dsn}, extra_config=extra))
    try:
        async with daemon.socket_client() as sock:
            org = (await sock.post("/api/organizations", json={"name": "Keys"})).json()["id"]
            assert (await sock.post("/api/whatsapp/connect",
                                    json={"organizationId": org})).status_code == 202
            await daemon.wait_state(org, "QR_CODE_PENDING")
        key = state_dir / "secret.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert len(key.read_bytes()) == 32
        profile = state_dir / "sessions" / f"org-{org}"
        assert profile.is_dir()
        # The login lives in these parts of the profile (see `wad.browser.profile`; this daemon
        # runs a browser per organization, so no shared-mode `storage.json`): nothing in them
        # may be open to the group or to others.
        for part in (p for p in archive.LOGIN_PARTS if p != STORAGE_FILE):
            top = profile / part
            found = [top, *top.rglob("*")] if top.exists() else []
            assert found, f"{part} is missing from the profile"
            loose = [str(p) for p in found if stat.S_IMODE(p.stat().st_mode) & 0o077]
            assert not loose, loose
        assert stat.S_IMODE(daemon.socket_path.stat().st_mode) & ~0o660 == 0
        state_mode = stat.S_IMODE(os.stat(state_dir).st_mode)
        assert state_mode & 0o004 == 0, oct(state_mode)  # others cannot list it
    finally:
        assert await trio.to_thread.run_sync(daemon.stop) == 0
    assert key.read_bytes().hex() not in daemon.log_path.read_text()
