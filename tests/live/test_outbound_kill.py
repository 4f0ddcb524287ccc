"""At most once, for real: a `wad run` process is killed with SIGKILL during a slow send, then
started again. The simulator's own record holds that message exactly once, its row says SENT,
and the messages queued behind it are all sent, once each. Two ways to die:

- while the server is still at the send: Chromium dies with the daemon and the send never
  completes, so the restarted daemon does not find it in the chat and sends it (once);
- after the server recorded it, before the page could confirm it (the page is frozen): the
  restarted daemon finds it in the chat and does not send it again.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.support.daemonproc import DaemonProcess, start_daemon
from wad.db.embedded import process_alive
from wad.db.pool import Database
from wad.db.repo import outbox as outbox_repo
from wad.sim.client import SimClient
from wad.sim.model import SimConfig
from wad.sim.server import SimServer, serve

pytestmark = pytest.mark.browser

ACCOUNT = "996555100401"
CLIENT = "+996700123456"


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (the daemon's Playwright driver and its Chromium)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rpartition(")")[2].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier}
        frontier = children - found
        found |= children
    return found


def kill_leftovers(pids: set[int]) -> list[int]:
    """SIGKILL what is still running of `pids` (processes this test started); answers them."""
    alive = [pid for pid in pids if process_alive(pid)]
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return alive


class Daemon:
    """A `wad run` process on the test's database and simulator, reached on its socket."""

    def __init__(self, state_dir: Path, dsn: str, sim_url: str) -> None:
        self.state_dir, self.dsn, self.sim_url = state_dir, dsn, sim_url
        self.proc: DaemonProcess | None = None
        self.started: set[int] = set()

    async def start(self) -> None:
        # Health checks far apart: a frozen page must not be restarted before the kill.
        extra = (f'[whatsapp]\nurl = "{self.sim_url}"\nhealth_check_interval_s = 60.0\n'
                 "reconnect_initial_s = 0.2\nreconnect_max_s = 1.0\nready_timeout_s = 20.0\n"
                 "[outbound]\npoll_interval_s = 0.5\n")
        self.proc = await trio.to_thread.run_sync(partial(
            start_daemon, self.state_dir, env={"WAD_DATABASE_URL": self.dsn},
            extra_config=extra))

    def client(self) -> httpx.AsyncClient:
        assert self.proc is not None
        return httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(self.proc.socket_path)),
            base_url="http://wad", timeout=30)

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        async with self.client() as client:
            r = await client.request(method, path, **kwargs)
        assert r.status_code < 300, (method, path, r.status_code, r.text)
        return r.json()

    async def wait_state(self, org: str, state: str, timeout: float = 60) -> None:
        with trio.fail_after(timeout):
            while (await self.call("GET", f"/api/whatsapp/status/{org}"))["status"] != state:
                await trio.sleep(0.2)

    async def kill(self) -> None:
        """SIGKILL, as an out-of-memory killer or a power cut would stop it."""
        assert self.proc is not None
        self.started |= descendants(self.proc.proc.pid)
        self.proc.proc.kill()
        await trio.to_thread.run_sync(self.proc.proc.wait, 10)
        self.proc = None

    async def stop(self) -> None:
        if self.proc is not None:
            self.started |= descendants(self.proc.proc.pid)
            code = await trio.to_thread.run_sync(self.proc.stop)
            assert code == 0, self.proc.log_path.read_text()[-3000:]
            self.proc = None


@pytest.fixture
async def world(state_dir: Path, dsn: str, nursery: trio.Nursery
                ) -> AsyncIterator[tuple[Daemon, SimClient, SimServer]]:
    config = SimConfig(qr_rotate_s=5.0, qr_max_rotations=20, sync_delay_s=0.3,
                       ack_delays_s=(0.2, 0.4, 0.6))
    sim: SimServer = await nursery.start(partial(serve, seed=13, config=config))
    daemon = Daemon(state_dir, dsn, sim.url)
    try:
        async with SimClient(sim.url) as phone:
            yield daemon, phone, sim
    finally:
        await daemon.stop()
        kill_leftovers(daemon.started)


@pytest.mark.parametrize("reached_server", [False, True],
                         ids=["send-lost-with-the-browser", "send-done-not-confirmed"])
async def test_kill_9_during_a_slow_send_sends_it_exactly_once(
        world: tuple[Daemon, SimClient, SimServer], db: Database, reached_server: bool) -> None:
    daemon, phone, _ = world
    await phone.create_account(ACCOUNT, "Issyk-Kul Tours")
    with trio.fail_after(240):
        await daemon.start()
        org = (await daemon.call("POST", "/api/organizations", json={"name": "Tours"}))["id"]
        await daemon.call("PUT", f"/api/whatsapp/settings/{org}",
                          json={"rateLimiting": {"concurrency": 1}})
        await daemon.call("POST", "/api/whatsapp/connect", json={"organizationId": org})
        await daemon.wait_state(org, "QR_CODE_PENDING")
        qr = await daemon.call("GET", f"/api/whatsapp/qr/{org}")
        await phone.scan_qr(ACCOUNT, qr["qrCode"])
        await daemon.wait_state(org, "CONNECTED")

        await phone.set_sends(ACCOUNT, delay_s=4.0)
        ids = [uuid.UUID((await daemon.call("POST", "/api/whatsapp/send", json={
            "organizationId": org, "to": CLIENT, "content": f"Сообщение {i}"}))["id"])
            for i in range(4)]
        first = ids[0]
        while (item := await outbox_repo.get(db, outbox_id=first)) is None \
                or item.status != "SENDING":
            await trio.sleep(0.05)
        # The page has handed it to the server, which is still at it.
        while not (await phone.sent(ACCOUNT))["in_progress"]:
            await trio.sleep(0.05)
        if reached_server:
            await phone.freeze(ACCOUNT)  # the page will not hear the server's answer
            while not (await phone.sent(ACCOUNT))["counts"]:
                await trio.sleep(0.1)
        await daemon.kill()
        interrupted = await outbox_repo.get(db, outbox_id=first)
        assert interrupted is not None
        assert interrupted.status == "SENDING"  # nobody recorded an outcome
        assert interrupted.wa_message_id is not None

        await phone.set_sends(ACCOUNT, delay_s=0.0)
        await daemon.start()  # the session should run: it comes back without a QR
        await daemon.wait_state(org, "CONNECTED")
        while True:
            items = [await outbox_repo.get(db, outbox_id=i) for i in ids]
            if all(i is not None and i.status in ("SENT", "DELIVERED", "READ") for i in items):
                break
            await trio.sleep(0.1)
        state = await daemon.call("GET", f"/api/whatsapp/messages/{first}")
        sent = await phone.sent(ACCOUNT)
        assert daemon.proc is not None
        settled = [line["event"] for line in daemon.proc.lines()
                   if str(line.get("event", "")).startswith("interrupted send")]

    serialized = f"true_996700123456@c.us_{interrupted.wa_message_id}"
    assert sent["counts"][serialized] == 1  # exactly once, by the server's own record
    bodies = [m["body"] for m in sent["messages"] if m["result"] == "OK"]
    assert sorted(bodies) == [f"Сообщение {i}" for i in range(4)]  # nothing lost, none twice
    assert set(sent["counts"].values()) == {1}
    assert settled == ["interrupted send found in the chat; not sent again" if reached_server
                       else "interrupted send not in the chat; queued again"]
    assert state["status"] in ("SENT", "DELIVERED", "READ")
    assert state["waMessageId"] == interrupted.wa_message_id
    assert [e["status"] for e in state["events"]][:2] == ["QUEUED", "SENDING"]
