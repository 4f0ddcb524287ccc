"""The CLI and the session endpoints against the real thing: a `wad run` process whose
organization manager drives Chromium against the WhatsApp Web simulator.

`wad qr` draws each rotating QR until the simulated phone scans one; `wad pair` links a second
organization by pairing code; disconnect keeps the login and logout moves it aside, where
`wad session backups` finds it and `wad session purge --yes` deletes it.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import segno
import trio

from tests.support.daemonproc import (
    DaemonProcess,
    daemon_on_sim,
)
from wad.sim.client import SimClient, SimClientError
from wad.sim.server import SimServer

pytestmark = pytest.mark.browser

QR_ACCOUNT = "996555100301"
PAIR_ACCOUNT = "996555100302"


@dataclass
class Live:
    daemon: DaemonProcess
    sim: SimServer
    phone: SimClient
    config: Path

    async def wad(self, *argv: str, timeout: float = 60) -> tuple[int, str, str]:
        """Run `wad --config ... ARGV` as a process; (exit code, stdout, stderr)."""
        with trio.fail_after(timeout):
            done = await trio.run_process(
                [sys.executable, "-m", "wad.cli.main", "--config", str(self.config), *argv],
                capture_stdout=True, capture_stderr=True, check=False)
        return done.returncode, done.stdout.decode(), done.stderr.decode()

    async def ok(self, *argv: str) -> str:
        code, out, err = await self.wad(*argv)
        assert code == 0, (argv, out, err)
        return out

    async def status(self, org: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(await self.ok("status", org, "--json"))
        return result


@pytest.fixture
async def live(state_dir: Path, nursery: trio.Nursery) -> AsyncIterator[Live]:
    async with (daemon_on_sim(state_dir, nursery, seed=11, qr_rotate_s=2.5) as (sim, daemon),
                SimClient(sim.url) as phone):
        await phone.create_account(QR_ACCOUNT, "Issyk-Kul Tours")
        await phone.create_account(PAIR_ACCOUNT, "Osh Travel")
        yield Live(daemon=daemon, sim=sim, phone=phone, config=state_dir / "wad.toml")


def _drawn(payload: str) -> str:
    out = io.StringIO()
    segno.make(payload, error="m").terminal(out=out, compact=True)
    return out.getvalue()


async def test_qr_follows_rotation_until_the_phone_scans(live: Live) -> None:
    org = (await live.ok("org", "create", "Issyk-Kul Tours")).strip()
    out = await live.ok("connect", org)
    assert out.startswith("Issyk-Kul Tours: ")
    assert f"wad qr {org}" in out

    result: dict[str, Any] = {}
    drawing = live.config.parent / "qr-output.txt"

    async def run_qr() -> None:
        # Its output goes to a file, read while it runs: the test scans a code once it is drawn.
        with trio.fail_after(120):
            async with await trio.open_file(drawing, "wb") as sink:
                done = await trio.run_process(
                    [sys.executable, "-m", "wad.cli.main", "--config", str(live.config), "qr",
                     org, "--timeout", "90"], stdout=sink.fileno(), capture_stderr=True,
                    check=False)
        result["qr"] = done.returncode, drawing.read_text(), done.stderr.decode()

    seen: list[str] = []
    async with trio.open_nursery() as nursery, live.daemon.socket_client() as sock:
        nursery.start_soon(run_qr)
        with trio.fail_after(60):
            while True:
                r = await sock.get(f"/api/whatsapp/qr/{org}")
                if r.status_code == 200 and r.json()["qrCode"] not in (None, *seen):
                    seen.append(r.json()["qrCode"])
                # After one rotation (to see the CLI redraw), once the CLI has drawn the code.
                if len(seen) >= 2 and drawing.exists() \
                        and _drawn(seen[-1]) in drawing.read_text():
                    try:
                        await live.phone.scan_qr(QR_ACCOUNT, seen[-1])
                        break
                    except SimClientError as exc:
                        if "stale" not in exc.message:  # rotated meanwhile: the next one
                            raise
                await trio.sleep(0.2)
    code, out, err = result["qr"]
    assert code == 0, (out, err)
    for payload in seen:
        assert _drawn(payload) in out  # the very QR of each payload was drawn
    assert out.count("scan with WhatsApp") >= 2
    assert out.rstrip().endswith("Issyk-Kul Tours is connected as +996555100301")

    status = await live.status(org)
    assert status["status"] == "CONNECTED"
    assert status["phoneNumber"] == "+996555100301"
    table = await live.ok("status")
    assert any(org in line and "CONNECTED" in line and "+996555100301" in line
               for line in table.splitlines())
    tree = await live.ok("status", "--tree")
    assert f"organization Issyk-Kul Tours ({org})  session CONNECTED" in tree
    assert "session  running  restarts 0" in tree
    # One tree: the organization's supervisor under the manager's, beside the services.
    for task in ("change-feed", "metrics", "plugins", "notifications", "imports", "orgs",
                 org, "inbound", "outbound"):
        assert any(f"─ {task}  " in line and line.endswith("  restarts 0")
                   for line in tree.splitlines()), (task, tree)
    assert f"org-{org} [one_for_one] restarts 0" in tree

    # The QR is gone once linked: `qrCode` null, and the image is refused saying why.
    async with live.daemon.socket_client() as sock:
        r = await sock.get(f"/api/whatsapp/qr/{org}")
        png = await sock.get(f"/api/whatsapp/qr/{org}", params={"format": "png"})
    assert (r.status_code, r.json()["qrCode"], r.json()["status"]) == (200, None, "CONNECTED")
    assert png.status_code == 409
    assert "CONNECTED" in png.json()["error"]["message"]

    # Disconnect keeps the login: connecting again needs no QR.
    assert "DISCONNECTED" in await live.ok("disconnect", org)
    status = await live.status(org)
    assert status["status"] == "DISCONNECTED"
    assert status["shouldRun"] is False
    await live.ok("connect", org)
    await live.daemon.wait_state(org, "CONNECTED", timeout=30)

    # Logout unlinks and moves the profile aside; backups show it, purge deletes it.
    out = await live.ok("logout", org)
    assert "LOGGED_OUT" in out
    kept = json.loads(await live.ok("session", "backups", org, "--json"))
    assert kept["archives"], kept  # archives were written on disconnect
    assert len(kept["trash"]) == 1
    assert kept["profile"] is None
    code, _, err = await live.wad("qr", org, "--timeout", "5")
    assert code == 1
    assert "LOGGED_OUT" in err
    out = await live.ok("session", "purge", org, "--yes")
    assert f"deleted {len(kept['archives'])} archive versions and 1 folders" in out
    assert not await trio.Path(kept["trash"][0]["path"]).exists()

    # The audit trail has each of these, newest first, done on the control socket.
    trail = json.loads(await live.ok("audit", org, "--json"))
    assert [(e["action"], e["actor"], e["tokenId"]) for e in trail["entries"]] == [
        (action, "socket", None) for action in (
            "session.purged", "session.logout", "session.connect", "session.disconnect",
            "session.connect", "organization.created")]
    assert trail["entries"][0]["detail"]["archivesDeleted"] == len(kept["archives"])
    table = await live.ok("audit", org)
    assert any("session.logout" in line and "control socket" in line
               for line in table.splitlines()), table


async def test_pairing_code_and_tokens_on_session_actions(live: Live) -> None:
    org = (await live.ok("org", "create", "Osh Travel")).strip()
    other = (await live.ok("org", "create", "Someone Else")).strip()
    admin = (await live.ok("token", "create", "--org", org, "--role", "ADMIN")).strip()
    viewer = (await live.ok("token", "create", "--org", org, "--role", "VIEWER")).strip()
    other_admin = (await live.ok("token", "create", "--org", other, "--role", "ADMIN")).strip()

    async with httpx.AsyncClient(base_url=live.daemon.tcp_url, timeout=30) as http:
        def bearer(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        # Not running yet: a pairing code needs a running session.
        r = await http.post(f"/api/whatsapp/pairing-code/{org}", headers=bearer(admin),
                            json={"phoneNumber": "+996 555 100 302"})
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "not_running"

        r = await http.post("/api/whatsapp/connect", headers=bearer(viewer))
        assert r.status_code == 403
        r = await http.post("/api/whatsapp/connect", headers=bearer(other_admin),
                            json={"organizationId": org})
        assert r.status_code == 403
        assert (await live.status(org))["shouldRun"] is False  # nothing happened

        r = await http.post("/api/whatsapp/connect", headers=bearer(admin))  # no body: own org
        assert r.status_code == 202, r.text
        assert r.json()["organizationId"] == org
        assert r.json()["shouldRun"] is True
        await live.daemon.wait_state(org, "QR_CODE_PENDING", timeout=30)

        r = await http.post(f"/api/whatsapp/pairing-code/{org}", headers=bearer(viewer),
                            json={"phoneNumber": "+996555100302"})
        assert r.status_code == 403

    # `wad pair --wait` prints the code, then follows the session until the phone links it.
    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "wad.cli.main", "--config", str(live.config), "pair", org,
         "--phone", "+996 555 100 302", "--wait", "--json", "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        buffer = b""
        with trio.fail_after(60):
            while b"\n" not in buffer:
                chunk = await proc.stdout.receive_some()
                assert chunk, "the CLI ended before printing the code"
                buffer += chunk
            answer = json.loads(buffer.split(b"\n", 1)[0])
            assert answer["phoneNumber"] == "+996555100302"
            assert len(answer["code"]) == 8
            await live.daemon.wait_state(org, "PAIRING_CODE_PENDING", timeout=30)
            await live.phone.enter_pairing_code(PAIR_ACCOUNT, answer["code"])
            while chunk := await proc.stdout.receive_some():
                buffer += chunk
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    final = json.loads(buffer.decode().strip().splitlines()[-1])
    assert final == {"organizationId": org, "status": "CONNECTED",
                     "phoneNumber": "+996555100302"}
    status = await live.status(org)
    assert status["status"] == "CONNECTED"
    assert status["phoneNumber"] == "+996555100302"

    async with httpx.AsyncClient(base_url=live.daemon.tcp_url, timeout=60) as http:
        r = await http.post(f"/api/whatsapp/logout/{org}", headers=bearer(viewer))
        assert r.status_code == 403
        r = await http.post(f"/api/whatsapp/disconnect/{org}", headers=bearer(other_admin))
        assert r.status_code == 403
        assert (await live.status(org))["status"] == "CONNECTED"
        r = await http.post(f"/api/whatsapp/disconnect/{org}", headers=bearer(admin))
        assert r.status_code == 200, r.text
        assert r.json() == {"success": True, "organizationId": org, "status": "DISCONNECTED",
                            "shouldRun": False}
        r = await http.post(f"/api/whatsapp/logout/{org}", headers=bearer(admin))
        assert r.status_code == 409  # not running: nothing to log out of
        assert r.json()["error"]["code"] == "not_running"

        # The audit trail: what the admin token did (by its id) and what the socket did; the
        # refused and failed requests left nothing.
        tokens = json.loads(await live.ok("token", "list", "--org", org, "--json"))
        admin_id = next(t["id"] for t in tokens if admin.startswith(t["prefix"]))
        r = await http.get("/api/audit", headers=bearer(admin))
        assert r.status_code == 200, r.text
        trail = r.json()["entries"]
        assert [(e["action"], e["tokenId"]) for e in trail] == [
            ("session.disconnect", admin_id), ("session.pairing_code", None),
            ("session.connect", admin_id), ("token.created", None), ("token.created", None),
            ("organization.created", None)]
        assert (await http.get("/api/audit", headers=bearer(viewer))).status_code == 403
