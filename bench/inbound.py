"""Throughput, CPU cost and latency of the inbound channel, end to end: the simulator's phones
deliver messages, wad's sessions (real Chromium) report them, the inbound actors store them in a
private PostgreSQL (fsync on, as the daemon's embedded cluster runs). Processing delays are 0.

    .venv/bin/python bench/inbound.py [--orgs 1 10] [--messages 200] [--rate 10] [--no-fsync]
                                      [--store-only] [--profile 25] [--profile-out PATH]
                                      [--profile-phase burst|paced] [--page-profile 25]
                                      [--browser-mode per-org|shared]

Each number of `--orgs` is a case of its own, run one after the other (a number may be given
twice: `--orgs 10 10 10` measures the same case three times, each on a fresh database and
fresh browsers). The simulator runs in a process of its own (`wad sim`), so its work is not
counted as wad's;
this process plays the daemon (organization manager, sessions, inbound actors), with Playwright's
driver and the Chromiums as its children. For each number of organizations it prints:
- a burst: every organization's phone delivers `--messages` messages in control calls of
  `BURST_CHUNK`, each handed to the page in one WebSocket frame (as WhatsApp hands a device what
  queued up for it: `Simulator.together`); messages stored per second from the call to the last row
  committed, and processed per second (client, conversation, language and status, by the plugins a
  daemon with no `[plugins]` table runs) until none is left pending;
- CPU per stored message during the burst, in ms, by process kind: wad's Python process, the
  Playwright driver, Chromium, PostgreSQL, and (apart, not wad's) the simulator; and how the
  burst's work was shared (binding calls from the pages, store and finish batches, until its
  processing was done);
- restarts: how many browsers were restarted by a health check during the run, and browser
  restarts of any cause (a busy page must not be taken for a hung one: both should be 0);
- latency: paced delivery (`--rate` messages per second, all organizations together, one frame
  per message), the time
  from the simulator being asked to deliver a message to its row being committed, p50/p99/max,
  and the CPU each process kind used meanwhile (percent of one CPU);
- CPU idle: the same, over 5 s with every session connected and no message coming (before the
  burst): what the paced run's CPU stands on;
With `--profile N`, the N functions of wad's Python process that took the most time during the
burst (or with `--profile-phase paced`, the paced run) (cProfile, own time); `--profile-out PATH`
also writes the profile to PATH.<orgs>. With `--page-profile N`, the N JavaScript functions
of the first organization's page that took the most samples during the burst (Chromium's own
sampling profiler, through CDP; `(program)` is the renderer's native work: parsing, style,
layout, bindings).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import functools
import io
import json
import os
import pstats
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import trio
import trio_asyncio

from wad.browser.driver import BrowserDriver
from wad.browser.shared import open_sessions
from wad.bus import EventBus, MessageStored, SessionStatus
from wad.config import DaemonSettings, InboundSettings, Settings, WhatsAppSettings
from wad.daemon import freeze_heap
from wad.db import migrate
from wad.db.embedded import EmbeddedPostgres
from wad.db.pool import Database
from wad.db.repo import organizations
from wad.db.repo import sessions as sessions_repo
from wad.observe.metrics import cpu_by_kind
from wad.org.inbound.actor import inbound_actor
from wad.org.manager import OrgManager
from wad.plugins import get_plugin_manager, task_supervisor
from wad.sim.client import SimClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.common import SimProcess, scratch_dir, sim_process  # noqa: E402

NO_DELAYS = InboundSettings(processing_delay_min_s=0, processing_delay_max_s=0,
                            reply_delay_min_s=0, reply_delay_max_s=0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


class Recorder:
    """When each message's row was committed (the actor publishes `message.stored` right after;
    wall-clock time, as `bench/sim_paced.py` tells when it asked for each paced message),
    and the sessions that went back to `CONNECTING` because a health check failed."""

    def __init__(self) -> None:
        self.committed: dict[str, float] = {}
        self.order: list[str] = []
        """The committed ids in the order their events came (so waiting is not quadratic)."""
        self.changed = trio.Event()
        self.health_restarts: list[str] = []

    async def run(self, bus: EventBus, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        with bus.subscribe(kinds={MessageStored, SessionStatus}, buffer=100_000) as events:
            task_status.started()
            async for event in events:
                if isinstance(event, MessageStored):
                    self.committed[event.wa_message_id] = time.time()
                    self.order.append(event.wa_message_id)
                    self.changed.set()
                elif (isinstance(event, SessionStatus) and event.state == "CONNECTING"
                      and (event.last_error or "").startswith("health check")):
                    self.health_restarts.append(f"{event.org_id}: {event.last_error}")

    async def wait_for(self, ids: list[str], timeout: float) -> None:
        waiting = {i for i in ids if i not in self.committed}
        seen = len(self.order)
        with trio.fail_after(timeout):
            while waiting:
                self.changed = trio.Event()
                await self.changed.wait()
                waiting.difference_update(self.order[seen:])  # only what came meanwhile
                seen = len(self.order)


async def wait_state(db: Database, org: uuid.UUID, state: str, timeout: float = 60) -> Any:
    with trio.fail_after(timeout):
        while True:
            row = await sessions_repo.get(db, organization_id=org)
            if row is not None and row.state == state:
                return row
            await trio.sleep(0.05)


BURST_CHUNK = 100
"""Messages per control call in the burst (one call per chunk, all chunks at once)."""
SENDERS = 50
"""Distinct clients writing to each organization."""
IDLE_S = 5.0
"""How long the connected sessions' CPU is measured with no message coming."""


def cpu_since(before: dict[str, float], postmaster: int | None, sim_pid: int
              ) -> dict[str, float]:
    """CPU seconds used by each process kind since `before` (a `cpu_now`)."""
    return {kind: used - before.get(kind, 0.0)
            for kind, used in cpu_now(postmaster, sim_pid).items()}


def cpu_now(postmaster: int | None, sim_pid: int) -> dict[str, float]:
    """CPU seconds used so far by this process (wad), its driver and Chromiums, PostgreSQL and
    the simulator."""
    used = {kind: seconds for kind, (seconds, _) in cpu_by_kind(os.getpid(), postmaster).items()}
    used["simulator"] = sum(seconds for seconds, _ in cpu_by_kind(sim_pid).values())
    return used


async def run_case(*, case: int, n_orgs: int, messages: int, rate: float, dsn: str, state_dir: Path,
                   sim_url: str, sim_pid: int, postmaster: int | None,
                   inbound: InboundSettings = NO_DELAYS, profile: int = 0,
                   profile_out: str = "", profile_phase: str = "burst", chromium: str = "",
                   page_profile: int = 0, browser_mode: str = "per-org") -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        settings = Settings(daemon=DaemonSettings(state_dir=str(state_dir)),
                            whatsapp=WhatsAppSettings(
                                url=sim_url, health_check_interval_s=10.0, ready_timeout_s=60.0,
                                chromium_path=chromium or WhatsAppSettings().chromium_path,
                                browser_mode=browser_mode))  # type: ignore[arg-type]
        bus = EventBus()
        recorder = Recorder()
        await nursery.start(recorder.run, bus)
        async with (
            Database.open(dsn, min_size=2, max_size=20) as db,
            BrowserDriver.open(settings.whatsapp) as browser_driver,
            open_sessions(browser_driver, mode=browser_mode,
                          orgs_per_browser=settings.whatsapp.orgs_per_browser,
                          save_interval_s=settings.whatsapp.storage_save_interval_s) as driver,
            SimClient(sim_url, timeout=120) as phone,
        ):
            await phone.config(qr_rotate_s=5.0, sync_delay_s=0.3)
            # The plugins a daemon with no `[plugins]` table runs (its language and status
            # detectors among them), as `wad run` loads them.
            pm = get_plugin_manager(settings.plugins)
            pm.bind(settings=settings, db=db)
            await nursery.start(task_supervisor(pm).run)  # their background tasks, as at a start
            manager = OrgManager(settings=settings, db=db, driver=driver, bus=bus, plugins=pm,
                                 actors=[functools.partial(inbound_actor, settings=inbound)])
            scope = trio.CancelScope()
            stopped = trio.Event()

            async def run_manager(task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
                                  ) -> None:
                try:
                    with scope:
                        await manager.run(task_status=task_status)
                finally:
                    stopped.set()

            await nursery.start(run_manager)
            accounts: list[tuple[uuid.UUID, str]] = []
            for n in range(n_orgs):
                account = f"9967{case % 100:02d}90{n:04d}"  # new accounts for each case
                await phone.create_account(account, f"Bench Tours {n}")
                org = (await organizations.create(db, name=f"Bench {n}")).id
                await manager.connect(org)
                row = await wait_state(db, org, "QR_CODE_PENDING")
                await phone.scan_qr(account, row.qr_payload)
                accounts.append((org, account))
            for org, _ in accounts:
                await wait_state(db, org, "CONNECTED")
            # Settled: each session saves its login archive once connected (seconds of CPU for
            # ten); measured from here, the burst and the paced run see the steady state.
            with trio.fail_after(120):
                while await db.fetchval(
                        "SELECT count(DISTINCT organization_id) FROM session_archives "
                        "WHERE organization_id = ANY($1::uuid[])",
                        [org for org, _ in accounts]) < len(accounts):
                    await trio.sleep(0.2)
            await trio.sleep(1.0)
            freeze_heap()  # as the daemon does once it is ready
            # Idle: what the connected sessions cost with no message coming.
            idle_before, idle_started = cpu_now(postmaster, sim_pid), time.time()
            await trio.sleep(IDLE_S)
            idle_s = time.time() - idle_started
            idle_cpu = {kind: 100 * used / idle_s
                        for kind, used in cpu_since(idle_before, postmaster, sim_pid).items()}

            # Burst: every organization's phone delivers all its messages at once.
            burst: list[str] = []

            async def deliver_chunk(account: str, first: int) -> None:
                batch = [{"sender": f"99655{int(account[-4:]):03d}{i % SENDERS:04d}",
                          "body": f"burst message {i} about a tour"}
                         for i in range(first, min(messages, first + BURST_CHUNK))]
                burst.extend(got["id"]["_serialized"]
                             for got in await phone.deliver_burst(account, batch))

            batching_before = batching(manager, [org for org, _ in accounts])
            profiler = cProfile.Profile() if profile else None
            page_profiler = await PageProfiler.start(manager, accounts[0][0]) \
                if page_profile else None
            cpu_before = cpu_now(postmaster, sim_pid)
            started = time.time()
            if profiler is not None and profile_phase == "burst":
                profiler.enable()
            async with trio.open_nursery() as senders:
                for _, account in accounts:
                    for first in range(0, messages, BURST_CHUNK):
                        senders.start_soon(deliver_chunk, account, first)
            await recorder.wait_for(burst, timeout=600)
            if profiler is not None and profile_phase == "burst":
                profiler.disable()
            if page_profiler is not None:
                print(await page_profiler.stop(page_profile), flush=True)
            elapsed = max(recorder.committed[i] for i in burst) - started
            cpu_ms = {kind: 1000 * used / len(burst)
                      for kind, used in cpu_since(cpu_before, postmaster, sim_pid).items()}
            throughput = len(burst) / elapsed
            # Processing (client, conversation, language, status) follows storing (unless it
            # was put off: --store-only).
            processed_per_s = 0.0
            if inbound.processing_delay_min_s < 60:
                with trio.fail_after(1200):
                    while await db.fetchval(
                            "SELECT count(*) FROM messages WHERE processing_state = 'PENDING'"):
                        await trio.sleep(0.2)
                processed_per_s = len(burst) / (time.time() - started)
            batching_after = batching(manager, [org for org, _ in accounts])
            burst_batching = {k: batching_after[k] - batching_before[k] for k in batching_after}

            # Paced: latency from asking the simulator to the committed row, at a total rate
            # the daemon keeps up with; the asking is done by a process of its own
            # (`bench/sim_paced.py`), as the CRM's clients are not in the daemon's process.
            paced_count = max(10, messages // 4)
            paced_cpu_before = cpu_now(postmaster, sim_pid)
            paced_started = time.perf_counter()
            if profiler is not None and profile_phase == "paced":
                profiler.enable()
            paced = await trio.run_process(
                [sys.executable, str(Path(__file__).with_name("sim_paced.py")), sim_url,
                 "--accounts", *[account for _, account in accounts], "--count",
                 str(paced_count), "--rate", str(rate), "--senders", str(SENDERS)],
                capture_stdout=True)
            asked: dict[str, float] = json.loads(paced.stdout)
            await recorder.wait_for(list(asked), timeout=300)
            paced_s = time.perf_counter() - paced_started
            if profiler is not None and profile_phase == "paced":
                profiler.disable()
            paced_cpu = {kind: 100 * used / paced_s for kind, used
                         in cpu_since(paced_cpu_before, postmaster, sim_pid).items()}
            latencies = [recorder.committed[i] - t for i, t in asked.items()]
            browser_restarts = sum(
                max(0, handle.session.browser_starts - 1)
                for handle in (manager.running(org) for org, _ in accounts) if handle is not None)
            load = os.getloadavg()
            scope.cancel()
            with trio.fail_after(120):
                await stopped.wait()  # sessions closed before the pool goes
        nursery.cancel_scope.cancel()
    if profiler is not None:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(profile)
        # Where wad's own code spends it, callees included:
        stats.sort_stats("cumulative").print_stats(r"/wad/|playwright/_impl|asyncpg", profile)
        print(out.getvalue(), flush=True)
        if profile_out:
            stats.dump_stats(f"{profile_out}.{n_orgs}")
    return {
        "orgs": n_orgs, "burst_messages": len(burst), "stored_per_s": throughput,
        "processed_per_s": processed_per_s, "cpu_ms": cpu_ms, "paced_cpu_percent": paced_cpu,
        "burst_batching": burst_batching,
        "idle_cpu_percent": idle_cpu,
        "paced_messages": len(latencies),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "max_ms": 1000 * max(latencies),
        "health_restarts": len(recorder.health_restarts),
        "browser_restarts": browser_restarts,
        "load_1m": load[0], "load_15m": load[2],
    }


class PageProfiler:
    """Chromium's sampling profiler on one organization's page (CDP `Profiler`)."""

    def __init__(self, cdp: Any) -> None:
        self.cdp = cdp

    @classmethod
    async def start(cls, manager: OrgManager, org: uuid.UUID) -> PageProfiler:
        handle = manager.running(org)
        assert handle is not None
        assert handle.session.session is not None
        session: Any = handle.session.session
        page = session._page  # the Playwright page (a bench may look inside)
        cdp = await trio_asyncio.aio_as_trio(page.context.new_cdp_session)(page)
        for method, params in (("Profiler.enable", {}),
                               ("Profiler.setSamplingInterval", {"interval": 250}),
                               ("Profiler.start", {})):
            await trio_asyncio.aio_as_trio(cdp.send)(method, params)
        return cls(cdp)

    async def stop(self, top: int) -> str:
        """The `top` functions by samples taken while they ran (own time), as text."""
        profile = (await trio_asyncio.aio_as_trio(self.cdp.send)("Profiler.stop"))["profile"]
        frames = {node["id"]: node["callFrame"] for node in profile["nodes"]}
        by_function: collections.Counter[str] = collections.Counter()
        for node_id in profile["samples"]:
            frame = frames[node_id]
            where = frame["url"].rsplit("/", 1)[-1]
            by_function[f"{frame['functionName'] or '(anonymous)'} "
                        f"{where}:{frame['lineNumber'] + 1}" if where else
                        frame["functionName"]] += 1
        total = sum(by_function.values()) or 1
        lines = [f"  page profile: {total} samples (250 us apart) on the first organization's page"]
        lines += [f"    {100 * n / total:5.1f}%  {name}" for name, n in by_function.most_common(top)]
        return "\n".join(lines)


def batching(manager: OrgManager, orgs: list[uuid.UUID]) -> dict[str, int]:
    """How the work was shared so far, summed over the organizations: binding calls from the
    pages (`emit_calls`), and the inbound actors' store and finish batches."""
    totals = {"binding calls": 0, "store batches": 0, "finish batches": 0}
    for org in orgs:
        handle = manager.running(org)
        if handle is None:
            continue
        session: Any = handle.session.session
        totals["binding calls"] += getattr(session, "emit_calls", 0)
        actor: Any = handle.supervisor.handle("inbound")
        if actor is not None:
            totals["store batches"] += actor.stats["store_batches"]
            totals["finish batches"] += actor.stats["finish_batches"]
    return totals


def _percents(cpu: dict[str, float]) -> str:
    """CPU use by process kind, in percent of one CPU, wad's parts first."""
    names = {"daemon": "wad's Python", "driver": "driver", "browser": "Chromium",
             "database": "PostgreSQL", "simulator": "simulator"}
    return ", ".join(f"{label} {cpu.get(kind, 0.0):.0f}%" for kind, label in names.items())


async def main_async(args: argparse.Namespace, root: Path, sim: SimProcess
                     ) -> list[dict[str, Any]]:
    results = []
    async with trio_asyncio.open_loop():
        for case, n_orgs in enumerate(args.orgs):
            cluster = EmbeddedPostgres(root / f"pg-{case}", fsync=not args.no_fsync)
            dsn = await trio.to_thread.run_sync(cluster.start)
            try:
                async with Database.open(dsn, min_size=1, max_size=1) as setup:
                    await migrate.apply(setup)
                state = root / f"state-{case}"
                state.mkdir()
                inbound = NO_DELAYS
                if args.store_only:
                    inbound = InboundSettings(processing_delay_min_s=3600,
                                              processing_delay_max_s=3600)
                result = await run_case(case=case, n_orgs=n_orgs, messages=args.messages, rate=args.rate,
                                        dsn=dsn, state_dir=state, sim_url=sim.url,
                                        sim_pid=sim.pid, postmaster=cluster.pid(),
                                        inbound=inbound, profile=args.profile,
                                        profile_out=args.profile_out,
                                        profile_phase=args.profile_phase,
                                        chromium=args.chromium,
                                        page_profile=args.page_profile,
                                        browser_mode=args.browser_mode)
            finally:
                await trio.to_thread.run_sync(functools.partial(cluster.stop, mode="fast"))
            results.append(result)
            cpu = result["cpu_ms"]
            wad_ms = sum(cpu.get(k, 0.0) for k in ("daemon", "driver", "browser", "database"))
            print(f"{n_orgs:>4} org(s): burst of {result['burst_messages']:.0f}: "
                  f"{result['stored_per_s']:6.1f} stored/s, {result['processed_per_s']:6.1f} "
                  f"processed/s | CPU per stored message: {wad_ms:.2f} ms (wad's Python "
                  f"{cpu.get('daemon', 0.0):.2f}, driver {cpu.get('driver', 0.0):.2f}, "
                  f"Chromium {cpu.get('browser', 0.0):.2f}, PostgreSQL "
                  f"{cpu.get('database', 0.0):.2f}; simulator apart "
                  f"{cpu.get('simulator', 0.0):.2f}; shared by "
                  f"{', '.join(f'{n} {k}' for k, n in result['burst_batching'].items())}) | "
                  f"{result['paced_messages']:.0f} paced at "
                  f"{args.rate:g}/s: delivery to commit p50 {result['p50_ms']:6.1f} ms, p99 "
                  f"{result['p99_ms']:6.1f} ms, max {result['max_ms']:6.1f} ms (CPU meanwhile: "
                  f"{_percents(result['paced_cpu_percent'])}) | restarts by a "
                  f"health check: {result['health_restarts']:.0f}, browser restarts: "
                  f"{result['browser_restarts']:.0f} | load {result['load_1m']:.1f} (1 min), "
                  f"{result['load_15m']:.1f} (15 min) on {os.cpu_count()} CPUs | CPU idle "
                  f"(connected, no message, {IDLE_S:g} s): {_percents(result['idle_cpu_percent'])}",
                  flush=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--orgs", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--messages", type=int, default=200,
                        help="messages per organization in the burst")
    parser.add_argument("--rate", type=float, default=10.0,
                        help="paced messages per second, all organizations together")
    parser.add_argument("--store-only", action="store_true",
                        help="measure storing alone (processing waits an hour)")
    parser.add_argument("--no-fsync", action="store_true",
                        help="run PostgreSQL without fsync (as the tests do)")
    parser.add_argument("--chromium", default="", metavar="PATH",
                        help="the browser binary (default: the daemon's, chromium-headless-shell)")
    parser.add_argument("--profile", type=int, default=0, metavar="N",
                        help="print the N functions of wad's process that took most time")
    parser.add_argument("--profile-out", default="", metavar="PATH",
                        help="with --profile, also write the profile (pstats) to PATH.<orgs>")
    parser.add_argument("--profile-phase", choices=["burst", "paced"], default="burst",
                        help="with --profile, which part of the run to profile")
    parser.add_argument("--browser-mode", choices=("per-org", "shared"), default="per-org",
                        help="one Chromium per organization (default), or organizations "
                             "sharing Chromiums as browser contexts (`whatsapp.browser_mode`)")
    parser.add_argument("--page-profile", type=int, default=0, metavar="N",
                        help="print the N JavaScript functions of the first organization's page "
                        "that took most samples during the burst")
    args = parser.parse_args(argv)
    with scratch_dir("wad-bench-") as root, sim_process() as sim:
        trio.run(main_async, args, root, sim)
    return 0


if __name__ == "__main__":
    sys.exit(main())
