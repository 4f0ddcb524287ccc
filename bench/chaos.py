"""The fault drill: several daemons on one PostgreSQL, steady traffic, and faults on a seeded
schedule; at the end, what was lost, duplicated, and how long organizations went unowned.

It starts a private PostgreSQL cluster, the WhatsApp Web simulator (in this process) and
`--daemons` wad daemons (processes sharing the database and the archive key), links
`--orgs` organizations, then for `--duration` seconds delivers inbound messages to the accounts
and queues outbound messages (through the outbox repository, as the send API does), while it
kills a daemon with SIGKILL (and starts it again), kills Chromium processes, restarts
PostgreSQL, and makes the simulator drop an account's network. Then it lets the system settle
and prints:

    delivered to the simulator vs stored, queued vs sent, lost, duplicated,
    organizations connected, the longest time an organization had no owner,
    and the daemons' restart counts.

    .venv/bin/python bench/chaos.py --duration 300 --seed 1

It exits 1 when anything was lost or duplicated.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.daemonproc import DaemonProcess, processes_using, start_daemon  # noqa: E402
from wad.db import migrate  # noqa: E402
from wad.db.embedded import EmbeddedPostgres  # noqa: E402
from wad.db.pool import Database  # noqa: E402
from wad.db.repo import outbox  # noqa: E402
from wad.sim.client import SimClient  # noqa: E402
from wad.sim.model import SimConfig  # noqa: E402
from wad.sim.server import SimServer, serve  # noqa: E402

LIMITS = {"rateLimiting": {"messagesPerMinute": 20, "messagesPerHour": 1000,
                           "messagesPerDay": 10000, "concurrency": 3}}
DAEMON_CONFIG = "claim_interval_s = 1.0\nlock_check_interval_s = 0.5\n"


@dataclass
class Drill:
    args: argparse.Namespace
    rng: random.Random
    root: Path
    cluster: EmbeddedPostgres
    dsn: str
    sim: SimServer
    phone: SimClient
    daemons: dict[int, DaemonProcess | None] = field(default_factory=dict)
    accounts: dict[str, str] = field(default_factory=dict)  # org id -> account number
    delivered: list[str] = field(default_factory=list)  # bodies of inbound messages
    queued: list[str] = field(default_factory=list)  # contents of outbound messages
    faults: Counter[str] = field(default_factory=Counter)
    daemon_starts: Counter[int] = field(default_factory=Counter)
    unowned_since: dict[str, float] = field(default_factory=dict)
    longest_unowned: dict[str, float] = field(default_factory=dict)
    db_down: bool = False

    # -- daemons -------------------------------------------------------------------------------

    def daemon_dir(self, n: int) -> Path:
        path = self.root / f"daemon-{n}"
        path.mkdir(exist_ok=True)
        os.chmod(path, 0o711)
        return path

    async def start(self, n: int) -> None:
        extra = (f'[whatsapp]\nurl = "{self.sim.url}"\nready_timeout_s = 30.0\n'
                 "reconnect_initial_s = 0.5\nreconnect_max_s = 4.0\n"
                 "reconnect_max_attempts = 1000\n"
                 "[inbound]\nprocessing_delay_min_s = 0.0\nprocessing_delay_max_s = 0.2\n"
                 "[outbound]\npoll_interval_s = 1.0\nretry_initial_s = 1.0\n")
        env = {"WAD_DATABASE_URL": self.dsn, "WAD_SECRET_KEY": "chaos-drill-shared-key-of-every-daemon"}
        self.daemons[n] = await trio.to_thread.run_sync(partial(
            start_daemon, self.daemon_dir(n), env=env, extra_config=extra,
            daemon_config=DAEMON_CONFIG))
        self.daemon_starts[n] += 1

    def live(self) -> list[tuple[int, DaemonProcess]]:
        return [(n, d) for n, d in self.daemons.items() if d is not None and d.proc.poll() is None]

    # -- set-up --------------------------------------------------------------------------------

    async def link_all(self, db: Database) -> None:
        for i in range(self.args.orgs):
            number = f"99677{i:07d}"
            await self.phone.create_account(number, f"Chaos Tours {i}")
            _, daemon = self.live()[i % len(self.live())]
            async with daemon.socket_client() as api:
                org = (await api.post("/api/organizations", json={"name": f"Chaos {i}"})).json()
                org_id = org["id"]
                await db.execute("UPDATE organizations SET settings = $2 WHERE id = $1::uuid",
                                 org_id, LIMITS)
                await api.post("/api/whatsapp/connect", json={"organizationId": org_id})
                with trio.fail_after(90):
                    while True:
                        qr = await api.get(f"/api/whatsapp/qr/{org_id}")
                        if qr.status_code == 200 and qr.json()["qrCode"]:
                            break
                        await trio.sleep(0.3)
            await self.phone.scan_qr(number, qr.json()["qrCode"])
            self.accounts[org_id] = number
        await self.wait_connected(db, timeout=120)

    async def wait_connected(self, db: Database, *, timeout: float) -> int:
        with trio.move_on_after(timeout):
            while True:
                connected = await self.connected(db)
                if connected == len(self.accounts):
                    return connected
                await trio.sleep(0.5)
        return await self.connected(db)

    async def connected(self, db: Database) -> int:
        return int(await db.fetchval(
            "SELECT count(*) FROM whatsapp_sessions WHERE state = 'CONNECTED' "
            "AND node_id IS NOT NULL"))

    # -- traffic -------------------------------------------------------------------------------

    async def inbound_traffic(self, until: float) -> None:
        seq = 0
        while trio.current_time() < until:
            account = self.rng.choice(list(self.accounts.values()))
            client = f"99670{self.rng.randrange(100):05d}"
            body = f"chaos in {seq}"
            try:
                await self.phone.deliver(account, client, body, push_name=f"Client {client[-3:]}")
                self.delivered.append(body)
            except Exception as exc:  # the simulator refused: nothing was delivered
                print(f"  (inbound {seq} not delivered: {exc})", flush=True)
            seq += 1
            await trio.sleep(1 / self.args.inbound_rate)

    async def outbound_traffic(self, db: Database, until: float) -> None:
        seq = 0
        while trio.current_time() < until:
            org_id = self.rng.choice(list(self.accounts))
            content = f"chaos out {seq}"
            if not self.db_down:
                try:
                    await outbox.enqueue(db, organization_id=uuid.UUID(org_id),
                                         to_phone=f"+99671{self.rng.randrange(100):05d}",
                                         content=content, idempotency_key=f"chaos-{seq}")
                    self.queued.append(content)
                except Exception as exc:  # the database is down: the CRM would retry later
                    print(f"  (outbound {seq} not queued: {type(exc).__name__})", flush=True)
            seq += 1
            await trio.sleep(1 / self.args.outbound_rate)

    async def watch_owners(self, db: Database, until: float) -> None:
        while trio.current_time() < until:
            now = time.monotonic()
            try:
                rows = await db.fetch("SELECT organization_id::text AS org, state, node_id "
                                      "FROM whatsapp_sessions")
            except Exception:
                await trio.sleep(0.5)
                continue
            for row in rows:
                org = row["org"]
                owned = row["state"] == "CONNECTED" and row["node_id"] is not None
                if owned:
                    since = self.unowned_since.pop(org, None)
                    if since is not None:
                        self.longest_unowned[org] = max(self.longest_unowned.get(org, 0.0),
                                                        now - since)
                else:
                    self.unowned_since.setdefault(org, now)
            await trio.sleep(0.5)

    # -- faults --------------------------------------------------------------------------------

    async def faults_schedule(self, until: float) -> None:
        kinds = ["kill_daemon", "kill_chromium", "restart_postgres", "drop_network"]
        deck: list[str] = []  # every kind once per round, in a seeded order
        while True:
            await trio.sleep(self.rng.uniform(self.args.fault_every * 0.5,
                                              self.args.fault_every * 1.5))
            if trio.current_time() >= until:
                return
            if not deck:
                deck = self.rng.sample(kinds, len(kinds))
            kind = deck.pop()
            print(f"  fault at {time.strftime('%H:%M:%S')}: {kind}", flush=True)
            await getattr(self, kind)()
            self.faults[kind] += 1

    async def kill_daemon(self) -> None:
        live = self.live()
        if len(live) < 2:
            return
        n, daemon = self.rng.choice(live)
        daemon.proc.send_signal(signal.SIGKILL)
        await trio.to_thread.run_sync(daemon.proc.wait)
        self.daemons[n] = None
        await trio.sleep(5)
        await self.start(n)

    async def kill_chromium(self) -> None:
        pids = processes_using(f"--user-data-dir={self.root}")
        if pids:
            with_children = [p for p in pids if "--type=" not in _cmdline(p)] or pids
            try:
                os.kill(self.rng.choice(with_children), signal.SIGKILL)
            except ProcessLookupError:
                pass

    async def restart_postgres(self) -> None:
        self.db_down = True
        await trio.to_thread.run_sync(partial(self.cluster.stop, mode="fast"))
        await trio.sleep(3)
        await trio.to_thread.run_sync(self.cluster.start)
        self.db_down = False

    async def drop_network(self) -> None:
        account = self.rng.choice(list(self.accounts.values()))
        await self.phone.drop_network(account, seconds=5)

    # -- results -------------------------------------------------------------------------------

    async def settle(self, db: Database) -> None:
        """Wait (bounded) until every delivered message is stored and every queued one sent."""
        with trio.move_on_after(self.args.settle):
            while True:
                stored, sent = await self.stored_and_sent(db)
                if len(stored) >= len(set(self.delivered)) and len(sent) >= len(set(self.queued)):
                    return
                await trio.sleep(1)

    async def stored_and_sent(self, db: Database) -> tuple[list[str], list[str]]:
        stored = [r["body"] for r in await db.fetch(
            "SELECT body FROM messages WHERE direction = 'IN' AND body LIKE 'chaos in %'")]
        sent = [r["content"] for r in await db.fetch(
            "SELECT content FROM outbox WHERE content LIKE 'chaos out %' "
            "AND status IN ('SENT', 'DELIVERED', 'READ')")]
        return stored, sent

    async def report(self, db: Database) -> dict[str, Any]:
        stored, sent = await self.stored_and_sent(db)
        on_the_wire: Counter[str] = Counter()
        for account in self.accounts.values():
            record = await self.phone.sent(account)
            for message in record.get("messages", []):
                body = message.get("body", "")
                if body.startswith("chaos out ") and message.get("result") == "OK":
                    on_the_wire[body] += 1
        restarts = 0
        for daemon in self.daemons.values():
            if daemon is not None:
                restarts += sum(1 for line in daemon.lines()
                                if line.get("event") == "actor restarted")
        for org, since in self.unowned_since.items():
            self.longest_unowned[org] = max(self.longest_unowned.get(org, 0.0),
                                            time.monotonic() - since)
        lost_in = set(self.delivered) - set(stored)
        lost_out = set(self.queued) - set(on_the_wire)
        duplicated = ([b for b, n in Counter(stored).items() if n > 1]
                      + [b for b, n in on_the_wire.items() if n > 1])
        return {
            "delivered": len(self.delivered), "stored": len(set(stored)),
            "queued": len(self.queued), "sent": len(on_the_wire),
            "lost": len(lost_in) + len(lost_out),
            "lost_inbound": sorted(lost_in)[:10], "lost_outbound": sorted(lost_out)[:10],
            "duplicated": len(duplicated), "duplicated_examples": duplicated[:10],
            "organizations": len(self.accounts),
            "organizations_connected": await self.connected(db),
            "longest_unowned_s": round(max(self.longest_unowned.values(), default=0.0), 1),
            "faults": dict(self.faults),
            "daemon_starts": {f"daemon-{n}": c for n, c in sorted(self.daemon_starts.items())},
            "actor_restarts_logged_by_live_daemons": restarts,
        }


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


async def run(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="wad-chaos-"))
    os.chmod(root, 0o711)
    cluster = EmbeddedPostgres(root / "pg", fsync=False)
    dsn = await trio.to_thread.run_sync(cluster.start)
    try:
        async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
            sim = await nursery.start(partial(serve, seed=args.seed, config=SimConfig(
                qr_rotate_s=10.0, sync_delay_s=0.5, ack_delays_s=(0.3, 0.6, 1.0))))
            async with (Database.open(dsn, min_size=1, max_size=4) as db,
                        SimClient(sim.url) as phone):
                await migrate.apply(db)
                drill = Drill(args=args, rng=random.Random(args.seed), root=root,
                              cluster=cluster, dsn=dsn, sim=sim, phone=phone)
                try:
                    for n in range(args.daemons):
                        await drill.start(n)
                    await drill.link_all(db)
                    print(f"{args.orgs} organizations linked on {args.daemons} daemons; "
                          f"traffic and faults for {args.duration:.0f} s", flush=True)
                    until = trio.current_time() + args.duration
                    async with trio.open_nursery() as traffic:
                        traffic.start_soon(drill.inbound_traffic, until)
                        traffic.start_soon(drill.outbound_traffic, db, until)
                        traffic.start_soon(drill.watch_owners, db, until + args.settle)
                        traffic.start_soon(drill.faults_schedule, until)
                        await trio.sleep_until(until)
                        print("traffic stopped; letting the system settle", flush=True)
                        await drill.wait_connected(db, timeout=args.settle)
                        await drill.settle(db)
                        traffic.cancel_scope.cancel()
                    result = await drill.report(db)
                finally:
                    for daemon in drill.daemons.values():
                        if daemon is not None and daemon.proc.poll() is None:
                            await trio.to_thread.run_sync(daemon.stop)
            nursery.cancel_scope.cancel()
    finally:
        await trio.to_thread.run_sync(partial(cluster.stop, mode="immediate"))
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of traffic")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--daemons", type=int, default=2)
    parser.add_argument("--orgs", type=int, default=4)
    parser.add_argument("--inbound-rate", type=float, default=1.0, help="messages per second")
    parser.add_argument("--outbound-rate", type=float, default=0.5, help="messages per second")
    parser.add_argument("--fault-every", type=float, default=30.0, help="mean seconds")
    parser.add_argument("--settle", type=float, default=180.0, help="seconds to settle")
    parser.add_argument("--keep", action="store_true", help="keep the state directories")
    sys.exit(trio.run(run, parser.parse_args()))


if __name__ == "__main__":
    main()
