"""Several daemons, one database: each organization has exactly one owner; when a daemon is
killed its organizations move to another without a QR; a database outage stops no browser (the
daemon takes its locks back when the database returns); a frozen owner is fenced and taken over."""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.support.daemonproc import (
    DaemonProcess,
    link_org,
    processes_using,
    shared_state_dir,
    start_daemon_in_thread,
    start_sim,
    whatsapp_config,
)
from wad.db.embedded import EmbeddedPostgres
from wad.db.pool import Database, Record
from wad.db.repo import outbox as outbox_repo
from wad.sim.client import SimClient
from wad.sim.model import SimConfig

pytestmark = pytest.mark.browser

FAST = "claim_interval_s = 1.0\nlock_check_interval_s = 0.5\n"


async def _link(daemon: DaemonProcess, phone: SimClient, account: str, name: str) -> str:
    await phone.create_account(account, name)
    return await link_org(daemon, phone, name, account)


async def _archived(dsn: str, *orgs: str) -> None:
    """Wait until each organization has a login archive in the database."""
    async with Database.open(dsn, min_size=1, max_size=1) as db:
        with trio.fail_after(60):
            while await db.fetchval(
                    "SELECT count(DISTINCT organization_id) FROM session_archives "
                    "WHERE organization_id::text = ANY($1::text[])", list(orgs)) < len(orgs):
                await trio.sleep(0.2)


@asynccontextmanager
async def _two_daemons(dsn: str, sim_url: str, *, prefix: str, secret: str, daemon_config: str
                       ) -> AsyncIterator[tuple[DaemonProcess, DaemonProcess]]:
    """Two `wad run` daemons on one database, each in a new state dir. They share the archive
    key (`secret`), so each can restore the other's logins. At the end, each one still running is
    woken (should it be frozen) and stopped, and the state dirs are removed."""
    dirs = [shared_state_dir(prefix) for _ in range(2)]
    env = {"WAD_DATABASE_URL": dsn, "WAD_SECRET_KEY": secret}
    extra = whatsapp_config(sim_url)
    daemons = [await start_daemon_in_thread(path, env=env, extra_config=extra,
                                            daemon_config=daemon_config) for path in dirs]
    try:
        yield daemons[0], daemons[1]
    finally:
        for daemon in daemons:
            if daemon.proc.poll() is None:
                daemon.proc.send_signal(signal.SIGCONT)
                await trio.to_thread.run_sync(daemon.stop)
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)


async def test_killed_daemon_hands_its_organizations_over_without_qr(
        dsn: str, nursery: trio.Nursery, aio_loop: None) -> None:
    sim = await start_sim(nursery, seed=5)
    async with _two_daemons(dsn, sim.url, prefix="wad-fo-", daemon_config=FAST,
                            secret="failover-test-key-shared-by-both-daemons"
                            ) as (first, second):
        async with SimClient(sim.url) as phone:
            accounts = [f"99655520000{i}" for i in range(4)]
            orgs = [await _link(first if i < 2 else second, phone, accounts[i], f"Org {i}")
                    for i in range(4)]
            first_node, second_node = first.node(), second.node()
            owners = [(await second.whatsapp_status(org)).get("nodeId") for org in orgs]
            assert owners == [first_node, first_node, second_node, second_node]
            # An action for an organization another daemon runs says where it lives.
            async with second.socket_client() as api:
                elsewhere = await api.post(f"/api/whatsapp/logout/{orgs[0]}")
            assert elsewhere.status_code == 409, elsewhere.text
            assert elsewhere.json()["error"]["code"] == "not_running"
            assert first_node in elsewhere.json()["error"]["message"]

            # Let the first daemon archive its logins; queue sends on one of its organizations
            # while the simulated WhatsApp is slow, then kill it outright.
            await _archived(dsn, *orgs[:2])
            await phone.set_sends(accounts[0], delay_s=3.0)
            async with first.socket_client() as api:
                for n in range(3):
                    queued = await api.post("/api/whatsapp/send", json={
                        "organizationId": orgs[0], "to": f"+99655560000{n}",
                        "content": f"queued before the kill {n}"})
                    assert queued.status_code == 202, queued.text
            with trio.fail_after(30):  # the first send is with the server, which is slow
                while not (await phone.sent(accounts[0]))["in_progress"]:
                    await trio.sleep(0.05)
            first.proc.send_signal(signal.SIGKILL)
            first.proc.wait(10)
            killed_at = time.monotonic()
            await phone.set_sends(accounts[0], delay_s=0.0)
            for n in range(3):  # clients write during the gap
                await phone.deliver(accounts[1], f"99655570000{n}", f"during the gap {n}")
            with trio.fail_after(15):  # its browsers go with it
                while processes_using(f"--user-data-dir={first.state_dir}"):
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
                assert (await second.whatsapp_status(org))["status"] == "CONNECTED"

            # Messages written during the gap are stored once; queued ones are sent once.
            async with Database.open(dsn, min_size=1, max_size=1) as db:
                stored = await _until_stored_and_sent(db, bodies="during the gap %", stored=3,
                                                      sent=3)
            assert sorted(r["body"] for r in stored) == [f"during the gap {n}" for n in range(3)]
            record = await phone.sent(accounts[0])
            bodies = [m["body"] for m in record["messages"] if m.get("result") == "OK"]
            for n in range(3):
                assert bodies.count(f"queued before the kill {n}") == 1, record


async def _until_stored_and_sent(db: Database, *, bodies: str, stored: int, sent: int,
                                 sent_content: str = "%") -> list[Record]:
    """Poll, for at most 60 s, until at least `stored` messages whose body is LIKE `bodies` are
    stored and at least `sent` outbox rows whose content is LIKE `sent_content` were sent (or
    delivered, or read); answers those messages (wa_message_id, body, sent_at)."""
    with trio.fail_after(60):
        while True:
            messages = await db.fetch("SELECT wa_message_id, body, sent_at FROM messages "
                                      "WHERE body LIKE $1", bodies)
            done = await db.fetchval("SELECT count(*) FROM outbox WHERE content LIKE $1 AND "
                                     "status IN ('SENT', 'DELIVERED', 'READ')", sent_content)
            if len(messages) >= stored and done >= sent:
                return messages
            await trio.sleep(0.3)


def _browser_pid(profile_root: Path) -> int:
    """The Chromium browser process (not a renderer or helper) on a profile under that root."""
    pids = [pid for pid in processes_using(f"--user-data-dir={profile_root}")
            if b"--type=" not in Path(f"/proc/{pid}/cmdline").read_bytes()]
    assert len(pids) == 1, pids
    return pids[0]


def _qr_states(daemon: DaemonProcess, org: str) -> int:
    return len([line for line in daemon.lines() if line.get("event") == "session state"
                and line.get("state") == "QR_CODE_PENDING" and line.get("org") == org])


OUTAGE_S = 30.0


async def test_a_database_outage_keeps_the_daemons_organizations_running(
        state_dir: Path, nursery: trio.Nursery, aio_loop: None) -> None:
    """The database stops for 30 s under a real `wad run`: the lock connection is lost, the
    organization keeps its browser (same process) and sends nothing meanwhile; back, the daemon
    takes its lock again, the session is CONNECTED without a QR, what clients wrote during the
    outage is stored once and every queued message is sent once."""
    cluster = EmbeddedPostgres(state_dir / "shared-pg", fsync=False)
    dsn = await trio.to_thread.run_sync(cluster.start)
    sim = await start_sim(nursery, seed=6)
    daemon_dir = state_dir / "daemon"
    daemon_dir.mkdir()
    os.chmod(daemon_dir, 0o711)
    account = "996555300001"
    daemon = await start_daemon_in_thread(daemon_dir, env={"WAD_DATABASE_URL": dsn},
                                          extra_config=whatsapp_config(sim.url),
                                          daemon_config=FAST + LEASE)
    try:
        async with SimClient(sim.url) as phone:
            org = await _link(daemon, phone, account, "Cut Off")
            await _archived(dsn, org)
            browser = _browser_pid(daemon_dir)
            async with daemon.socket_client() as api:
                queued = await api.post("/api/whatsapp/send", json={
                    "organizationId": org, "to": "+996555310000",
                    "content": "before the outage"})
                assert queued.status_code == 202, queued.text
            with trio.fail_after(30):
                while not [m for m in (await phone.sent(account))["messages"]
                           if m["body"] == "before the outage"]:
                    await trio.sleep(0.2)

            qr_shown = _qr_states(daemon, org)  # the link's

            # The outage ----------------------------------------------------------------------
            await trio.to_thread.run_sync(partial(cluster.stop, mode="fast"))
            down_at = trio.current_time()
            await trio.to_thread.run_sync(partial(
                daemon.wait_for_event, "the database is unavailable: organizations keep "
                "running (sending nothing) until the lock connection is back", OUTAGE_S))
            # Clients write while the database is down: nothing may be lost.
            for n in range(20):
                await phone.deliver(account, f"99655540000{n % 3}", f"during the outage {n}")
            # The outage lasts its full length (the scenario, not a synchronisation).
            await trio.sleep_until(down_at + OUTAGE_S)
            assert _browser_pid(daemon_dir) == browser
            assert not any(line.get("event") ==
                           "lost the lock connection: stopping every organization now"
                           for line in daemon.lines()), daemon.log_path.read_text()[-3000:]

            # Back --------------------------------------------------------------------------
            await trio.to_thread.run_sync(cluster.start)
            back = await trio.to_thread.run_sync(partial(
                daemon.wait_for_event,
                "lock connection back after the outage: organizations taken back", 60.0))
            assert (back["kept"], back["stopped"]) == (1, 0), back
            await daemon.wait_state(org, "CONNECTED", timeout=60, node=daemon.node())
            assert _browser_pid(daemon_dir) == browser  # the same Chromium all along
            assert len(await phone.devices(account)) == 1
            assert _qr_states(daemon, org) == qr_shown
            async with daemon.socket_client() as api:
                for n in range(3):
                    queued = await api.post("/api/whatsapp/send", json={
                        "organizationId": org, "to": f"+99655532000{n}",
                        "content": f"after the outage {n}"})
                    assert queued.status_code == 202, queued.text
            async with Database.open(dsn, min_size=1, max_size=1) as db:
                rows = await _until_stored_and_sent(db, bodies="during the outage %", stored=20,
                                                    sent=4)
            assert len(rows) == 20
            assert len({r["wa_message_id"] for r in rows}) == 20
            by_body = {r["body"]: r["sent_at"] for r in rows}
            times = [by_body[f"during the outage {n}"] for n in range(20)]
            assert times == sorted(times)  # WhatsApp's times kept, in delivery order
            record = (await phone.sent(account))["messages"]
            bodies = [m["body"] for m in record if m.get("result") == "OK"]
            for body in ["before the outage", *(f"after the outage {n}" for n in range(3))]:
                assert bodies.count(body) == 1, record
            assert _browser_pid(daemon_dir) == browser
    finally:
        await trio.to_thread.run_sync(daemon.stop)
        await trio.to_thread.run_sync(cluster.stop)


LEASE = "lease_s = 6.0\nlease_renew_interval_s = 1.0\n"
TAKEOVER_S = 6.0 + 1.0
"""docs/operations.md: another daemon owns the organization within lease_s + claim_interval_s."""
TAKEOVER_SLACK_S = 8.0
"""The takeover's queries and the new owner's start on a loaded test machine."""


async def test_frozen_owner_is_fenced_and_its_organization_taken_over(
        dsn: str, nursery: trio.Nursery, aio_loop: None) -> None:
    sim = await start_sim(nursery, seed=7, config=SimConfig(qr_rotate_s=5.0, sync_delay_s=0.3))
    account = "996555800001"
    async with _two_daemons(dsn, sim.url, prefix="wad-fz-", daemon_config=FAST + LEASE,
                            secret="freeze-test-key-shared-by-both-daemons") as (owner, other):
        async with SimClient(sim.url) as phone, Database.open(dsn, min_size=1,
                                                               max_size=2) as db:
            org = await _link(owner, phone, account, "Frozen Owner")
            owner_node, other_node = owner.node(), other.node()
            assert (await other.whatsapp_status(org))["nodeId"] == owner_node
            with trio.fail_after(30):  # the login archive, so that the other can restore it
                while not await db.fetchval(
                        "SELECT count(*) FROM session_archives WHERE organization_id = $1",
                        uuid.UUID(org)):
                    await trio.sleep(0.2)
            # One send through the owner names its page in the simulator's sent log.
            async with owner.socket_client() as api:
                queued = await api.post("/api/whatsapp/send", json={
                    "organizationId": org, "to": "+996555810000", "content": "before the freeze"})
                assert queued.status_code == 202, queued.text
            with trio.fail_after(30):
                while not [m for m in (await phone.sent(account))["messages"]
                           if m["body"] == "before the freeze"]:
                    await trio.sleep(0.2)
            stale_page = next(m["page"] for m in (await phone.sent(account))["messages"]
                              if m["body"] == "before the freeze")

            owner.proc.send_signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            for n in range(3):  # clients write during the switch
                await phone.deliver(account, f"99655582000{n}", f"during the switch {n}")
            with trio.fail_after(TAKEOVER_S + TAKEOVER_SLACK_S):
                while (await other.whatsapp_status(org)).get("nodeId") != other_node:
                    await trio.sleep(0.2)
            took_over_s = time.monotonic() - frozen_at
            taken_at = time.time()
            await other.wait_state(org, "CONNECTED", timeout=60, node=other_node)
            assert any(line.get("event") == "taking over organizations whose owner's lease "
                       "expired" for line in other.lines())
            assert len(await phone.devices(account)) == 1  # the same linked device, no QR

            # Sends that fall due as the frozen daemon wakes: only the new owner may send them.
            for n in range(3):
                await outbox_repo.enqueue(db, organization_id=uuid.UUID(org),
                                          to_phone=f"+99655583000{n}",
                                          content=f"due at the wake {n}")
            owner.proc.send_signal(signal.SIGCONT)
            with trio.fail_after(30):  # the stale owner stops its browser for the organization
                while processes_using(f"--user-data-dir={owner.state_dir}"):
                    await trio.sleep(0.2)
            assert any(line.get("event") in (
                "lost the lock connection: stopping every organization now",
                "lease lost: another daemon took the organization over; stopping it here")
                for line in owner.lines()), owner.log_path.read_text()[-3000:]

            stored = await _until_stored_and_sent(db, bodies="during the switch %", stored=3,
                                                  sent=3, sent_content="due at the wake %")
            assert sorted(r["body"] for r in stored) == [f"during the switch {n}"
                                                         for n in range(3)]
            assert len({r["wa_message_id"] for r in stored}) == 3
            record = (await phone.sent(account))["messages"]
            stale = [m for m in record if m["page"] == stale_page and m["at"] > taken_at]
            assert stale == [], stale
            bodies = [m["body"] for m in record if m.get("result") == "OK"]
            for n in range(3):
                assert bodies.count(f"due at the wake {n}") == 1, record
            # The stale owner left the new owner's record alone.
            status = await other.whatsapp_status(org)
            assert (status["status"], status["nodeId"]) == ("CONNECTED", other_node)
            assert owner.proc.poll() is None  # it goes on (with what it still owns)
            print(f"ownership moved {took_over_s:.1f} s after the freeze")
