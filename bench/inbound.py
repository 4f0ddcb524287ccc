"""Throughput and latency of the inbound channel, end to end: the simulator's phones deliver
messages, wad's sessions (real Chromium) report them, the inbound actors store them in a private
PostgreSQL (fsync on, as the daemon's embedded cluster runs). Processing delays are 0.

    .venv/bin/python bench/inbound.py [--orgs 1 10] [--messages 200] [--rate 10] [--no-fsync]
                                      [--store-only]

For each number of organizations it prints:
- a flood (every organization's phones deliver as fast as the simulator takes them): messages
  stored per second from the first delivery to the last row committed, and processed per second
  (client, conversation, language; no plugins) until none is left pending;
- restarts: how many browsers were restarted by a health check during the run, and browser
  restarts of any cause (a busy page must not be taken for a hung one: both should be 0);
- latency: paced delivery (`--rate` messages per second, all organizations together), the time
  from the simulator being asked to deliver a message to its row being committed, p50/p99/max.

The simulator, the browsers' driver and wad share one Python process here (as in the tests), so
on a small machine the figures are a floor, not wad's ceiling.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

from wad.browser.driver import BrowserDriver
from wad.bus import EventBus, MessageStored, SessionStatus
from wad.config import DaemonSettings, InboundSettings, Settings, WhatsAppSettings
from wad.db import migrate
from wad.db.embedded import EmbeddedPostgres
from wad.db.pool import Database
from wad.db.repo import organizations
from wad.db.repo import sessions as sessions_repo
from wad.org.inbound.actor import inbound_actor
from wad.org.manager import OrgManager
from wad.sim.client import SimClient
from wad.sim.model import SimConfig
from wad.sim.server import serve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import scratch_dir  # noqa: E402

FLOOD_SENDERS = 8
"""Concurrent delivery requests per organization in the flood."""
NO_DELAYS = InboundSettings(processing_delay_min_s=0, processing_delay_max_s=0,
                            reply_delay_min_s=0, reply_delay_max_s=0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class Recorder:
    """When each message's row was committed (the actor publishes `message.stored` right after),
    and the sessions that went back to `CONNECTING` because a health check failed."""

    def __init__(self) -> None:
        self.committed: dict[str, float] = {}
        self.changed = trio.Event()
        self.health_restarts: list[str] = []

    async def run(self, bus: EventBus, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        with bus.subscribe(kinds={MessageStored, SessionStatus}, buffer=100_000) as events:
            task_status.started()
            async for event in events:
                if isinstance(event, MessageStored):
                    self.committed[event.wa_message_id] = time.perf_counter()
                    self.changed.set()
                elif (isinstance(event, SessionStatus) and event.state == "CONNECTING"
                      and (event.last_error or "").startswith("health check")):
                    self.health_restarts.append(f"{event.org_id}: {event.last_error}")

    async def wait_for(self, ids: list[str], timeout: float) -> None:
        with trio.fail_after(timeout):
            while any(i not in self.committed for i in ids):
                self.changed = trio.Event()
                await self.changed.wait()


async def wait_state(db: Database, org: uuid.UUID, state: str, timeout: float = 60) -> Any:
    with trio.fail_after(timeout):
        while True:
            row = await sessions_repo.get(db, organization_id=org)
            if row is not None and row.state == state:
                return row
            await trio.sleep(0.05)


async def run_case(*, n_orgs: int, messages: int, rate: float, dsn: str, state_dir: Path,
                   inbound: InboundSettings = NO_DELAYS) -> dict[str, float]:
    async with trio.open_nursery() as nursery:
        sim = await nursery.start(functools.partial(
            serve, seed=1, config=SimConfig(qr_rotate_s=5.0, sync_delay_s=0.3)))
        settings = Settings(daemon=DaemonSettings(state_dir=str(state_dir)),
                            whatsapp=WhatsAppSettings(url=sim.url, health_check_interval_s=10.0,
                                                      ready_timeout_s=60.0))
        bus = EventBus()
        recorder = Recorder()
        await nursery.start(recorder.run, bus)
        async with (
            Database.open(dsn, min_size=2, max_size=20) as db,
            BrowserDriver.open(settings.whatsapp) as driver,
            SimClient(sim.url, timeout=30) as phone,
        ):
            manager = OrgManager(settings=settings, db=db, driver=driver, bus=bus,
                                 actors=[functools.partial(inbound_actor, settings=inbound)])
            scope = trio.CancelScope()
            stopped = trio.Event()

            async def run_manager(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                                  ) -> None:
                try:
                    with scope:
                        await manager.run(task_status=task_status)
                finally:
                    stopped.set()

            await nursery.start(run_manager)
            accounts: list[tuple[uuid.UUID, str]] = []
            for n in range(n_orgs):
                account = f"99670090{n:04d}"
                await phone.create_account(account, f"Bench Tours {n}")
                org = (await organizations.create(db, name=f"Bench {n}")).id
                await manager.connect(org)
                row = await wait_state(db, org, "QR_CODE_PENDING")
                await phone.scan_qr(account, row.qr_payload)
                accounts.append((org, account))
            for org, _ in accounts:
                await wait_state(db, org, "CONNECTED")
            await trio.sleep(1.0)

            # Flood: every organization's phones deliver as fast as they can.
            flood: list[str] = []

            async def deliver_all(account: str, lane: int, count: int) -> None:
                for i in range(lane, count, FLOOD_SENDERS):
                    sender = f"99655{int(account[-4:]):03d}{i % 50:04d}"
                    got = await phone.deliver(account, sender, f"flood message {i} about a tour")
                    flood.append(got["id"]["_serialized"])

            started = time.perf_counter()
            async with trio.open_nursery() as senders:
                for _, account in accounts:
                    for lane in range(FLOOD_SENDERS):
                        senders.start_soon(deliver_all, account, lane, messages)
            await recorder.wait_for(flood, timeout=600)
            elapsed = max(recorder.committed[i] for i in flood) - started
            throughput = len(flood) / elapsed
            # Processing (client, conversation, language, status) follows storing.
            with trio.fail_after(1200):
                while await db.fetchval(
                        "SELECT count(*) FROM messages WHERE processing_state = 'PENDING'"):
                    await trio.sleep(0.2)
            processed_per_s = len(flood) / (time.perf_counter() - started)

            # Paced: latency from asking the simulator to the committed row, at a total rate
            # the daemon keeps up with.
            asked: dict[str, float] = {}
            paced_count = max(10, messages // 4)

            async def deliver_paced(account: str, offset: float) -> None:
                await trio.sleep(offset)
                interval = len(accounts) / rate
                for i in range(paced_count):
                    sender = f"99670{int(account[-4:]):03d}{i % 50:04d}"
                    before = time.perf_counter()
                    got = await phone.deliver(account, sender, f"paced message {i}")
                    asked[got["id"]["_serialized"]] = before
                    await trio.sleep(max(0.0, interval - (time.perf_counter() - before)))

            async with trio.open_nursery() as senders:
                for n, (_, account) in enumerate(accounts):
                    senders.start_soon(deliver_paced, account, n / rate)
            await recorder.wait_for(list(asked), timeout=300)
            latencies = [recorder.committed[i] - t for i, t in asked.items()]
            browser_restarts = sum(
                max(0, handle.session.browser_starts - 1)
                for handle in (manager.running(org) for org, _ in accounts) if handle is not None)
            load = os.getloadavg()
            scope.cancel()
            with trio.fail_after(120):
                await stopped.wait()  # sessions closed before the pool goes
        nursery.cancel_scope.cancel()
    return {
        "orgs": n_orgs, "flood_messages": len(flood), "stored_per_s": throughput,
        "processed_per_s": processed_per_s,
        "paced_messages": len(latencies),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "max_ms": 1000 * max(latencies),
        "health_restarts": len(recorder.health_restarts),
        "browser_restarts": browser_restarts,
        "load_1m": load[0], "load_15m": load[2],
    }


async def main_async(args: argparse.Namespace, root: Path) -> list[dict[str, float]]:
    results = []
    async with trio_asyncio.open_loop():
        for n_orgs in args.orgs:
            cluster = EmbeddedPostgres(root / f"pg-{n_orgs}", fsync=not args.no_fsync)
            dsn = await trio.to_thread.run_sync(cluster.start)
            try:
                async with Database.open(dsn, min_size=1, max_size=1) as setup:
                    await migrate.apply(setup)
                state = root / f"state-{n_orgs}"
                state.mkdir()
                inbound = NO_DELAYS
                if args.store_only:
                    inbound = InboundSettings(processing_delay_min_s=3600,
                                              processing_delay_max_s=3600)
                result = await run_case(n_orgs=n_orgs, messages=args.messages, rate=args.rate,
                                        dsn=dsn, state_dir=state, inbound=inbound)
            finally:
                await trio.to_thread.run_sync(functools.partial(cluster.stop, mode="fast"))
            results.append(result)
            print(f"{n_orgs:>4} org(s): flood of {result['flood_messages']:.0f}: "
                  f"{result['stored_per_s']:6.1f} stored/s, {result['processed_per_s']:6.1f} "
                  f"processed/s | {result['paced_messages']:.0f} paced at {args.rate:g}/s: "
                  f"delivery to commit p50 {result['p50_ms']:6.1f} ms, p99 "
                  f"{result['p99_ms']:6.1f} ms, max {result['max_ms']:6.1f} ms | restarts by a "
                  f"health check: {result['health_restarts']:.0f}, browser restarts: "
                  f"{result['browser_restarts']:.0f} | load {result['load_1m']:.1f} (1 min), "
                  f"{result['load_15m']:.1f} (15 min) on {os.cpu_count()} CPUs", flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--orgs", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--messages", type=int, default=200,
                        help="messages per organization in the flood")
    parser.add_argument("--rate", type=float, default=10.0,
                        help="paced messages per second, all organizations together")
    parser.add_argument("--store-only", action="store_true",
                        help="measure storing alone (processing waits an hour)")
    parser.add_argument("--no-fsync", action="store_true",
                        help="run PostgreSQL without fsync (as the tests do)")
    args = parser.parse_args(argv)
    with scratch_dir("wad-bench-") as root:
        trio.run(main_async, args, root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
