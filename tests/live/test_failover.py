"""Several daemons, one database: each organization has exactly one owner; when a daemon is
killed its organizations move to another without a QR; a daemon cut from the database stops
driving its organizations before anyone else can claim them."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import time
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.support.daemonproc import DaemonProcess, processes_using, start_daemon
from wad.db.embedded import EmbeddedPostgres
from wad.db.pool import Database
from wad.sim.client import SimClient
from wad.sim.model import SimConfig
from wad.sim.server import SimServer, serve

pytestmark = pytest.mark.browser

FAST = "claim_interval_s = 1.0\nlock_check_interval_s = 0.5\n"


def _config(sim_url: str) -> str:
    return (f'[whatsapp]\nurl = "{sim_url}"\nready_timeout_s = 20.0\n'
            "reconnect_initial_s = 0.2\nreconnect_max_s = 1.0\n")


async def _link(daemon: DaemonProcess, phone: SimClient, account: str, name: str) -> str:
    await phone.create_account(account, name)
    async with daemon.socket_client() as api:
        org = (await api.post("/api/organizations", json={"name": name})).json()["id"]
        answer = await api.post("/api/whatsapp/connect", json={"organization_id": org})
        assert answer.status_code in (200, 202), answer.text
        await daemon.wait_state(org, "QR_CODE_PENDING")
        qr = (await api.get(f"/api/whatsapp/qr/{org}")).json()
    await phone.scan_qr(account, qr["payload"])
    await daemon.wait_state(org, "CONNECTED")
    return org


def _node(daemon: DaemonProcess) -> str:
    for line in daemon.lines():
        if line.get("event") == "wad is ready":
            return str(line["node"])
    raise AssertionError("no ready line")


async def test_killed_daemon_hands_its_organizations_over_without_qr(
        dsn: str, nursery: trio.Nursery, aio_loop: None) -> None:
    sim: SimServer = await nursery.start(partial(serve, seed=5, config=SimConfig(
        qr_rotate_s=5.0, sync_delay_s=0.3)))
    dirs = []
    for _ in range(2):
        path = Path(tempfile.mkdtemp(prefix="wad-fo-"))
        os.chmod(path, 0o711)
        dirs.append(path)
    # Daemons that share a database share the archive key, so each can restore the others'.
    env = {"WAD_DATABASE_URL": dsn, "WAD_SECRET_KEY": "failover-test-key-shared-by-both-daemons"}
    extra = _config(sim.url)
    first = await trio.to_thread.run_sync(partial(start_daemon, dirs[0], env=env,
                                                  extra_config=extra, daemon_config=FAST))
    second = await trio.to_thread.run_sync(partial(start_daemon, dirs[1], env=env,
                                                   extra_config=extra, daemon_config=FAST))
    try:
        async with SimClient(sim.url) as phone:
            accounts = [f"99655520000{i}" for i in range(4)]
            orgs = [await _link(first if i < 2 else second, phone, accounts[i], f"Org {i}")
                    for i in range(4)]
            first_node, second_node = _node(first), _node(second)
            owners = [(await second.whatsapp_status(org)).get("node_id") for org in orgs]
            assert owners == [first_node, first_node, second_node, second_node]
            # An action for an organization another daemon runs says where it lives.
            async with second.socket_client() as api:
                elsewhere = await api.post(f"/api/whatsapp/logout/{orgs[0]}")
            assert elsewhere.status_code == 409, elsewhere.text
            assert elsewhere.json()["error"]["code"] == "not_running"
            assert first_node in elsewhere.json()["error"]["message"]

            # Give the first daemon time to archive its logins; queue sends on one of its
            # organizations while the simulated WhatsApp is slow, then kill it outright.
            await trio.sleep(5)
            await phone.set_sends(accounts[0], delay_s=3.0)
            async with first.socket_client() as api:
                for n in range(3):
                    queued = await api.post("/api/whatsapp/send", json={
                        "organization_id": orgs[0], "to": f"+99655560000{n}",
                        "content": f"queued before the kill {n}"})
                    assert queued.status_code == 202, queued.text
            await trio.sleep(1)
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(10)
            killed_at = time.monotonic()
            await phone.set_sends(accounts[0], delay_s=0.0)
            for n in range(3):  # clients write during the gap
                await phone.deliver(accounts[1], f"99655570000{n}", f"during the gap {n}")
            with trio.fail_after(15):  # its browsers go with it
                while processes_using(f"--user-data-dir={dirs[0]}"):
                    await trio.sleep(0.2)

            try:
                for org in orgs[:2]:
                    await second.wait_state(org, "CONNECTED", timeout=30, node=second_node)
            except trio.TooSlowError:
                interesting = [line for line in second.lines()
                               if line.get("level") in ("info", "warning", "error")]
                raise AssertionError("not taken over:\n" + "\n".join(
                    str(line) for line in interesting[-40:])) from None
            assert time.monotonic() - killed_at < 30
            qr_states = [line for line in second.lines() if line.get("event") == "session state"
                         and line.get("state") == "QR_CODE_PENDING"
                         and line.get("org") in orgs[:2]]
            assert qr_states == []
            for account in accounts:
                assert len(await phone.devices(account)) == 1  # no second linked device
            for org in orgs[2:]:
                assert (await second.whatsapp_status(org))["state"] == "CONNECTED"

            # Messages written during the gap are stored once; queued ones are sent once.
            async with Database.open(dsn, min_size=1, max_size=1) as db:
                with trio.fail_after(60):
                    while True:
                        stored = await db.fetch("SELECT body FROM messages "
                                                "WHERE body LIKE 'during the gap %'")
                        sent = await db.fetch("SELECT content FROM outbox WHERE status IN "
                                              "('SENT', 'DELIVERED', 'READ')")
                        if len(stored) >= 3 and len(sent) >= 3:
                            break
                        await trio.sleep(0.5)
            assert sorted(r["body"] for r in stored) == [f"during the gap {n}" for n in range(3)]
            record = await phone.sent(accounts[0])
            bodies = [m["body"] for m in record["messages"] if m.get("result") == "OK"]
            for n in range(3):
                assert bodies.count(f"queued before the kill {n}") == 1, record
    finally:
        for daemon in (first, second):
            if daemon.proc.poll() is None:
                await trio.to_thread.run_sync(daemon.stop)
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)


async def test_daemon_cut_from_the_database_stops_its_organizations(
        state_dir: Path, nursery: trio.Nursery, aio_loop: None) -> None:
    cluster = EmbeddedPostgres(state_dir / "shared-pg", fsync=False)
    dsn = await trio.to_thread.run_sync(cluster.start)
    sim: SimServer = await nursery.start(partial(serve, seed=6, config=SimConfig(
        qr_rotate_s=5.0, sync_delay_s=0.3)))
    daemon_dir = state_dir / "daemon"
    daemon_dir.mkdir()
    os.chmod(daemon_dir, 0o711)
    daemon = await trio.to_thread.run_sync(partial(
        start_daemon, daemon_dir, env={"WAD_DATABASE_URL": dsn},
        extra_config=_config(sim.url), daemon_config=FAST))
    try:
        async with SimClient(sim.url) as phone:
            org = await _link(daemon, phone, "996555300001", "Cut Off")
            assert processes_using(f"--user-data-dir={daemon_dir}")
            await trio.sleep(4)  # let it archive the login
            await trio.to_thread.run_sync(partial(cluster.stop, mode="immediate"))
            with trio.fail_after(15):
                while processes_using(f"--user-data-dir={daemon_dir}"):
                    await trio.sleep(0.2)
            assert any(line.get("event") ==
                       "lost the lock connection: stopping every organization now"
                       for line in daemon.lines()), daemon.log_path.read_text()[-3000:]
            # Clients write while the daemon is cut off: nothing may be lost.
            for n in range(20):
                await phone.deliver("996555300001", f"99655540000{n % 3}",
                                    f"during the outage {n}")
            # The database comes back: the daemon claims the organization again, no QR, and
            # stores what arrived meanwhile, once each.
            await trio.to_thread.run_sync(cluster.start)
            await daemon.wait_state(org, "CONNECTED", timeout=60)
            assert len(await phone.devices("996555300001")) == 1
            async with Database.open(dsn, min_size=1, max_size=1) as db:
                with trio.fail_after(60):
                    while True:
                        rows = await db.fetch(
                            "SELECT wa_message_id, body, sent_at FROM messages "
                            "WHERE body LIKE 'during the outage %'")
                        if len(rows) >= 20:
                            break
                        await trio.sleep(0.3)
            assert len(rows) == 20
            assert len({r["wa_message_id"] for r in rows}) == 20
            by_body = {r["body"]: r["sent_at"] for r in rows}
            times = [by_body[f"during the outage {n}"] for n in range(20)]
            assert times == sorted(times)  # WhatsApp's times kept, in delivery order
            assert sorted(by_body) == sorted(f"during the outage {n}" for n in range(20))
    finally:
        await trio.to_thread.run_sync(daemon.stop)
        await trio.to_thread.run_sync(cluster.stop)
