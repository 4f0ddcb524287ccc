"""Imports through the daemon and through `wad import` itself, against the simulator.

- In a daemon whose organization is connected, the import runs on that very session: the
  simulated phone never sees a second linked device. `DELETE` stops it (it ends interrupted)
  and the next `POST` resumes it; a second `POST` while it runs is refused.
- `wad import` talks to a running `wad run` process over its control socket.
- With no daemon, `wad import` links a session of its own (its QR code in the terminal),
  Ctrl-C stops it cleanly, and running it again resumes without a new QR.
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.support.api import issue_token, serve_context
from tests.support.daemonproc import start_daemon
from tests.support.stack import Stack, open_stack
from wad.api.context import AppContext, Services
from wad.db.pool import Database
from wad.db.repo import organizations
from wad.importer import local
from wad.importer.options import ImportOptions
from wad.sim.client import SimClient, SimClientError
from wad.sim.model import SimConfig
from wad.sim.server import SimServer, serve

pytestmark = pytest.mark.browser

ACCOUNT = "996555100500"
CLIENT_TEXTS = ["Здравствуйте! Сколько стоит тур на Иссык-Куль?", "Hello, is there a tour in July?"]


def chats(count: int, messages: int = 6) -> list[dict[str, Any]]:
    """One-to-one chats with valid Kyrgyz numbers, alternating client and agency."""
    out = []
    for i in range(count):
        t0 = 1_700_000_000 + i * 3600
        out.append({"id": f"99670010{i:04d}", "messages": [
            {"from_me": j % 2 == 1, "body": CLIENT_TEXTS[i % 2] if j % 2 == 0
             else "Good afternoon! 450 USD per person.", "t": t0 + j * 60}
            for j in range(messages)]})
    return out


async def message_count(db: Database, org: uuid.UUID) -> tuple[int, int]:
    row = await db.fetchrow("SELECT count(*) AS n, count(DISTINCT wa_message_id) AS d "
                            "FROM messages WHERE organization_id = $1", org)
    assert row is not None
    return row["n"], row["d"]


@pytest.fixture
async def daemon_api(state_dir: Path, dsn: str) -> AsyncIterator[tuple[Stack, str, httpx.AsyncClient]]:
    """The stack's organization manager behind the real control API (TCP and socket)."""
    async with open_stack(state_dir, dsn) as stack:
        await stack.start_daemon()
        assert stack.manager is not None
        ctx = AppContext(settings=stack.settings, db=stack.db,
                         services=Services(orgs=stack.manager))
        addresses, shutdown = await serve_context(stack.nursery, ctx,
                                                  socket_path=state_dir / "wad.sock",
                                                  max_body=65536)
        tcp = next(a for a in addresses if a.startswith("http://127."))
        async with httpx.AsyncClient(base_url=tcp, timeout=30) as http:
            try:
                yield stack, tcp, http
            finally:
                shutdown.set()


async def test_import_runs_on_the_daemons_session_and_resumes_after_a_stop(
        daemon_api: tuple[Stack, str, httpx.AsyncClient]) -> None:
    stack, _tcp, http = daemon_api
    await stack.phone.create_account(ACCOUNT, "Silk Road Tours", chats=chats(8))
    org = await stack.new_org("Silk Road Tours")
    auth = {"Authorization": f"Bearer {await issue_token(stack.db, 'ADMIN', org, name='crm')}"}
    path = f"/api/whatsapp/import/{org}"
    with trio.fail_after(120):
        r = await http.post(path, headers=auth)
        assert r.status_code == 409 and r.json()["error"]["code"] == "not_running"
        await stack.link_by_qr(org, ACCOUNT)
        assert len(await stack.phone.devices(ACCOUNT)) == 1

        r = await http.post(path, headers=auth, json={"paceS": 0.4})
        assert r.status_code == 202, r.text
        assert r.json()["state"] in ("STARTING", "LISTING", "RUNNING")
        again = await http.post(path, headers=auth)
        assert again.status_code == 409 and again.json()["error"]["code"] == "import_running"
        while (await http.get(path, headers=auth)).json()["chatsDone"] < 2:
            await trio.sleep(0.1)
        stopped = await http.delete(path, headers=auth)
        assert stopped.status_code == 200
        first = stopped.json()
        assert first["state"] == "INTERRUPTED"
        assert 2 <= first["chatsImported"] < 8

        r = await http.post(path, headers=auth, json={"paceS": 0})
        assert r.status_code == 202
        while (report := (await http.get(path, headers=auth)).json())["state"] not in (
                "COMPLETED", "FAILED", "INTERRUPTED"):
            await trio.sleep(0.1)
    assert report["state"] == "COMPLETED", report
    assert report["resumed"] is True and report["runId"] == first["runId"]
    assert report["chatsResumed"] == first["chatsImported"]
    assert report["chatsImported"] == 8 - first["chatsImported"]
    assert report["messagesStored"] == 48
    assert report["requests"] >= 1 + report["chatsImported"]
    assert await message_count(stack.db, org) == (48, 48)
    # The import used the organization's own session: still one linked device.
    devices = await stack.phone.devices(ACCOUNT)
    assert len(devices) == 1
    assert not (stack.settings.state_path / "sessions" / f"import-{org}").exists()


# `wad run` and `wad import` as processes ----------------------------------------------------


async def wad(config: Path, *argv: str, env: dict[str, str] | None = None,
              timeout: float = 120) -> tuple[int, str, str]:
    full = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
    full.update(env or {})
    with trio.fail_after(timeout):
        done = await trio.run_process(
            [sys.executable, "-m", "wad.cli.main", "--config", str(config), *argv],
            capture_stdout=True, capture_stderr=True, check=False, env=full)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.fixture
async def simulator(nursery: trio.Nursery) -> AsyncIterator[tuple[SimServer, SimClient]]:
    config = SimConfig(qr_rotate_s=3.0, qr_max_rotations=20, sync_delay_s=0.3,
                       ack_delays_s=(0.2, 0.4, 0.6))
    sim: SimServer = await nursery.start(functools.partial(serve, seed=3, config=config))
    async with SimClient(sim.url) as phone:
        yield sim, phone


def whatsapp_config(url: str) -> str:
    return (f'[whatsapp]\nurl = "{url}"\nhealth_check_interval_s = 2.0\n'
            "reconnect_initial_s = 0.2\nreconnect_max_s = 1.0\nready_timeout_s = 20.0\n")


async def test_wad_import_goes_through_the_running_daemon(
        state_dir: Path, simulator: tuple[SimServer, SimClient]) -> None:
    sim, phone = simulator
    await phone.create_account(ACCOUNT, "Silk Road Tours", chats=chats(5))
    daemon = await trio.to_thread.run_sync(functools.partial(
        start_daemon, state_dir, extra_config=whatsapp_config(sim.url)))
    config = state_dir / "wad.toml"
    try:
        code, out, err = await wad(config, "org", "create", "Silk Road Tours")
        assert code == 0, err
        org = out.strip()
        await wad(config, "connect", org)
        async with httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=str(daemon.socket_path)),
                base_url="http://wad", timeout=30) as sock:
            with trio.fail_after(60):
                while True:
                    r = await sock.get(f"/api/whatsapp/qr/{org}")
                    if r.status_code == 200 and r.json()["qrCode"]:
                        try:
                            await phone.scan_qr(ACCOUNT, r.json()["qrCode"])
                            break
                        except SimClientError:
                            pass
                    await trio.sleep(0.2)
                while (await sock.get(f"/api/whatsapp/status/{org}")).json()["status"] \
                        != "CONNECTED":
                    await trio.sleep(0.2)
        code, out, err = await wad(config, "import", "--organization-id", org, "--json",
                                   "--pace", "0")
        assert code == 0, (out, err)
        report = json.loads(out)
        assert (report["state"], report["chatsImported"], report["messagesStored"]) == (
            "COMPLETED", 5, 30)
        assert report["languages"] == {"ru": 3, "en": 2}
        assert "importing through a session of this command's own" not in err
        assert len(await phone.devices(ACCOUNT)) == 1  # no second linked device

        code, out, err = await wad(config, "import", "--organization-id", org, "--pace", "0")
        assert code == 0, err
        assert "Import finished" in out
        assert re.search(r"skipped as duplicates +5 ", out)
        assert re.search(r"messages stored +0\n", out)
    finally:
        assert await trio.to_thread.run_sync(daemon.stop) == 0


async def test_wad_import_links_its_own_session_and_resumes_after_ctrl_c(
        state_dir: Path, dsn: str, db: Database,
        simulator: tuple[SimServer, SimClient]) -> None:
    sim, phone = simulator
    await phone.create_account(ACCOUNT, "Silk Road Tours", chats=chats(8))
    org = (await organizations.create(db, name="Silk Road Tours")).id
    config = state_dir / "wad.toml"
    config.write_text(f'[daemon]\nstate_dir = "{state_dir}"\n' + whatsapp_config(sim.url))
    env = {k: v for k, v in os.environ.items() if k != "OPENROUTER_API_KEY"}
    env["WAD_DATABASE_URL"] = dsn
    argv = [sys.executable, "-m", "wad.cli.main", "--config", str(config), "import",
            "--organization-id", str(org), "--json", "--pace", "0.5"]
    with trio.fail_after(120):
        proc = await trio.lowlevel.open_process(argv, env=env, stdout=-1, stderr=-1)
        output: dict[str, bytes] = {}

        so_far: dict[str, list[bytes]] = {"out": [], "err": []}

        async def drain(name: str, stream: Any) -> None:
            async for chunk in stream:
                so_far[name].append(chunk)
            output[name] = b"".join(so_far[name])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain, "out", proc.stdout)
            nursery.start_soon(drain, "err", proc.stderr)
            # The command shows a QR code; once it is drawn, the phone scans what the page shows.
            while b"Scan with WhatsApp on the phone" not in b"".join(so_far["err"]):
                await trio.sleep(0.1)
            while True:
                try:
                    await phone.scan_qr(ACCOUNT, await phone.current_qr())
                    break
                except SimClientError:
                    await trio.sleep(0.2)
            while (await db.fetchval("SELECT coalesce(max(chats_done), 0) FROM import_runs "
                                     "WHERE organization_id = $1", org)) < 2:
                await trio.sleep(0.1)
            proc.send_signal(signal.SIGINT)
            code = await proc.wait()
    assert code == 130, output
    first = json.loads(output["out"])
    assert first["state"] == "INTERRUPTED"
    assert 2 <= first["chatsImported"] < 8
    err = output["err"].decode()
    assert "Scan with WhatsApp on the phone" in err  # the QR was drawn in the terminal
    assert "stopping the import" in err
    assert (state_dir / "sessions" / f"import-{org}").is_dir()

    code, out, err = await wad(config, "import", "--organization-id", str(org), "--json",
                               "--pace", "0", env={"WAD_DATABASE_URL": dsn})
    assert code == 0, (out, err)
    second = json.loads(out)
    assert second["resumed"] and second["runId"] == first["runId"]
    assert second["chatsResumed"] == first["chatsImported"]
    assert second["chatsDone"] == 8 and second["messagesStored"] == 48
    assert "Scan with WhatsApp" not in err  # the login was kept
    assert await message_count(db, org) == (48, 48)


async def test_clients_who_wrote_today_get_their_whole_history_once(
        daemon_api: tuple[Stack, str, httpx.AsyncClient], tmp_path: Path) -> None:
    """Clients already in the CRM (they wrote after the link, so the inbound channel created
    them) still get every earlier message from the import, each stored once; an export of one
    of those chats afterwards adds nothing."""
    stack, _tcp, http = daemon_api
    await stack.phone.create_account(ACCOUNT, "Silk Road Tours", chats=chats(4))
    org = await stack.new_org("Silk Road Tours")
    auth = {"Authorization": f"Bearer {await issue_token(stack.db, 'ADMIN', org, name='crm')}"}
    path = f"/api/whatsapp/import/{org}"
    writers = [f"99670010{i:04d}" for i in range(3)]
    with trio.fail_after(120):
        await stack.link_by_qr(org, ACCOUNT)
        for number in writers:
            await stack.phone.deliver(ACCOUNT, number, "Hello again, any news about my booking?")
        while await stack.db.fetchval(
                "SELECT count(*) FROM clients WHERE organization_id = $1", org) < len(writers):
            await trio.sleep(0.1)
        assert await stack.db.fetchval(
            "SELECT count(*) FROM messages WHERE organization_id = $1", org) < 24

        r = await http.post(path, headers=auth, json={"paceS": 0})
        assert r.status_code == 202, r.text
        while (report := (await http.get(path, headers=auth)).json())["state"] not in (
                "COMPLETED", "FAILED", "INTERRUPTED"):
            await trio.sleep(0.1)
    assert report["state"] == "COMPLETED", report
    assert (report["chatsImported"], report["chatsDuplicate"]) == (4, 0)
    assert report["clientsUpdated"] == len(writers)
    assert report["messagesStored"] + report["messagesDuplicate"] == 24 + len(writers)
    assert report["messagesDuplicate"] >= len(writers)
    assert await message_count(stack.db, org) == (27, 27)
    per_chat = dict(await stack.db.fetch(
        "SELECT wa_chat_id, count(*) FROM messages WHERE organization_id = $1 GROUP BY 1", org))
    assert per_chat == {f"{n}@c.us": 7 for n in writers} | {"996700100003@c.us": 6}

    # The same chat exported from the phone (its times in UTC): nothing new.
    chat_id = f"{writers[0]}@c.us"
    lines = []
    for m in await stack.phone.chat_messages(ACCOUNT, chat_id):
        when = datetime.fromtimestamp(m["t"], UTC).strftime("%d/%m/%Y, %H:%M")
        author = "Silk Road Tours" if m["id"]["fromMe"] else "+996 700 100 000"
        lines.append(f"{when} - {author}: {m['body']}\n")
    export = tmp_path / "WhatsApp Chat with +996 700 100 000.txt"
    export.write_text("".join(lines), encoding="utf-8")
    options = ImportOptions(source="export", paths=[str(export)], timezone="UTC")
    pm = local.import_plugin_manager(stack.settings, use_llm=False)
    imp = local.importer(settings=stack.settings, db=stack.db, organization_id=org,
                         source=local.plugin_source(pm, options, org), options=options, pm=pm)
    with trio.fail_after(60):
        again = await imp.run()
    assert (again.state, again.messages_stored, again.messages_duplicate,
            again.chats_duplicate) == ("COMPLETED", 0, 7, 1)
    assert await message_count(stack.db, org) == (27, 27)
