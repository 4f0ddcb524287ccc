"""Benchmark: wad side by side with whatsapp-web.js on the same simulator.

One simulator (`wad sim`, plain HTTP for wad, TLS for whatsapp-web.js, whose page URL is fixed to
`https://web.whatsapp.com/` and is mapped to it by Chromium's host resolver). For each number of
accounts, first whatsapp-web.js (the version pinned in tests/conformance, unmodified, one
`Client` per account in one node process with LocalAuth, as its users run it), then wad (a
`wad run` process with its embedded PostgreSQL, one organization per account), once in each
browser mode asked for (`--wad-modes`, default both: `per-org`, one Chromium per organization,
and `shared`, every organization in its own context of one Chromium). One after the
other, so they do not compete for the CPU. For each it prints:

- memory: PSS of the client process plus its whole process tree (node + its Chromiums; `wad run`
  + Playwright's driver + its Chromiums), once every session is ready, per session, and its USS
  (private memory, which depends less than PSS on other processes mapping the same files);
  wad's PostgreSQL (not in the daemon's tree, and with no counterpart in whatsapp-web.js) apart;
- ready, fresh link: from starting a client (`initialize()` / `POST /api/whatsapp/connect`)
  to ready (`ready` event / state `CONNECTED`), the phone scanning the first QR at once;
  median and slowest session;
- ready, restored login: the same after stopping every session (`destroy()` / disconnect) and
  starting them again on their profiles, `--restores` times (one start varies by tenths of a
  second from run to run: the median is over every start of every round);
- inbound latency: from asking the simulator to deliver a message (each from a new sender, one
  every DELIVERY_GAP_S) to the `message` event in node (timestamped there) / the message's row
  being visible in wad's database (committed with fsync on, polled every 20 ms), p50 and p95;

then the ratios wad / whatsapp-web.js.

    .venv/bin/python bench/peer.py [--counts 1 10] [--messages 40] [--wad-modes per-org shared]
                                   [--restores 3] [--processes]

Needs `make setup` (whatsapp-web.js under tests/conformance/node_modules) and /usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import trio
import trio_asyncio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import load_average, sim_process  # noqa: E402
from bench.sessions import pss_kib, uss_kib  # noqa: E402
from tests.conformance.wwebjs import WWebJS  # noqa: E402
from tests.support.daemonproc import DaemonProcess, descendants, start_daemon  # noqa: E402
from wad.db.embedded import EmbeddedPostgres  # noqa: E402
from wad.db.pool import Database  # noqa: E402
from wad.observe.metrics import memory_by_kind  # noqa: E402
from wad.sim.client import SimClient, SimClientError  # noqa: E402

SETTLE_S = 3.0
"""Wait after the last session is ready before reading memory (start-up work dies down)."""
DELIVERY_GAP_S = 0.5
"""Pause between two deliveries of the latency run: paced well below what either side can
take on a loaded machine, so the figure is one message's latency, not a queue's."""
POLL_S = 0.02
SYNC_DELAY_S = 3.0
READY_TIMEOUT_S = 240.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def print_processes(side: str, root_pid: int) -> None:
    """One line per process of ROOT_PID's tree: its role (Chromium's `--type`, else the
    program), PSS, USS and anonymous memory in MiB (`--processes`)."""
    print(f"processes of {side}: PSS / USS / anonymous MiB")
    for pid in [root_pid, *descendants(root_pid)]:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        # Chromium rewrites its command line into one string: look for --type= in any word.
        words = b" ".join(argv).decode(errors="replace").split()
        role = next((w.split("=", 1)[1] for w in words if w.startswith("--type=")),
                    Path(words[0]).name if words else "?")
        kib = {f[0].rstrip(":"): int(f[1]) for f in map(str.split, rollup)
               if len(f) >= 2 and f[1].isdigit()}
        uss = kib.get("Private_Clean", 0) + kib.get("Private_Dirty", 0)
        print(f"  {pid:>7} {role:<22} {kib.get('Pss', 0) / 1024:7.1f} {uss / 1024:7.1f} "
              f"{kib.get('Anonymous', 0) / 1024:7.1f}")


def account_numbers(side: str, count: int) -> list[str]:
    prefix = {"wwebjs": "9967701", "wad-per-org": "9967702", "wad-shared": "9967703"}[side]
    return [f"{prefix}{count:02d}{i:03d}" for i in range(count)]

async def start_all(start: Callable[[int, bool, list[float]], Awaitable[None]], count: int, *,
                    fresh: bool) -> list[float]:
    """Start `count` accounts at once (fresh links or restored logins); their times to ready."""
    took: list[float] = []
    with trio.fail_after(READY_TIMEOUT_S):
        async with trio.open_nursery() as nursery:
            for i in range(count):
                nursery.start_soon(start, i, fresh, took)
    return took


def measure_memory(side: str, root_pid: int, processes: bool) -> dict[str, tuple[int, int]]:
    """PSS by process kind of ROOT_PID's tree, and its USS under "uss"; with PROCESSES, each
    process printed too."""
    memory = memory_by_kind(root_pid)
    memory["uss"] = (uss_kib(root_pid) * 1024, 0)
    if processes:
        print_processes(side, root_pid)
    return memory


async def create_accounts(phone: SimClient, numbers: list[str]) -> None:
    for number in numbers:
        await phone.create_account(number, f"Bench {number[-5:]}")


async def deliver_paced(phone: SimClient, numbers: list[str], messages: int,
                        tag: str) -> dict[str, tuple[int, float]]:
    """`messages` in all, to the accounts in turn, one every DELIVERY_GAP_S, each from a new
    sender; body -> (account index, time asked)."""
    asked: dict[str, tuple[int, float]] = {}
    for i in range(messages):
        n = i % len(numbers)
        body = f"peer bench {tag} {n} {i}: is the Song-Kol tour still on?"
        asked[body] = (n, time.time())
        await phone.deliver(numbers[n], f"996555{n:03d}{i:03d}", body)
        await trio.sleep(DELIVERY_GAP_S)
    return asked


async def scan_first_fresh_qr(phone: SimClient, number: str, next_qr: Any) -> None:
    """Scan the QR `await next_qr()` answers; a QR that rotated away meanwhile (the machine is
    slow) is skipped for the next one, as a person would rescan."""
    while True:
        payload = await next_qr()
        try:
            await phone.scan_qr(number, payload)
            return
        except SimClientError as exc:
            if "stale" not in exc.message:
                raise


def latencies(asked: dict[str, tuple[int, float]], seen: dict[str, float]) -> list[float]:
    return [seen[b] - at for b, (_, at) in asked.items()]


# ------------------------------------------------------------------------ whatsapp-web.js

RECORD_ARRIVALS = """async (client) => {
  client.__arrivals = {};
  client.on('message', (msg) => { client.__arrivals[msg.body] = Date.now(); });
}"""


async def run_wwebjs(count: int, tls_port: int, phone: SimClient, messages: int,
                     root: Path, restores: int, processes: bool = False) -> dict[str, Any]:
    numbers = account_numbers("wwebjs", count)
    await create_accounts(phone, numbers)
    names = [f"c{i}" for i in range(count)]
    # One command at a time on the driver's stdin (the harness writes from the calling task).
    commands = trio.Lock()
    async with WWebJS.open() as node:

        async def start(i: int, fresh: bool, took: list[float]) -> None:
            since = node.mark()
            started = time.monotonic()
            async with commands:
                await node.start(names[i], port=tls_port, data_path=root / names[i])
            if fresh:
                mark = since

                async def next_qr() -> str:
                    nonlocal mark
                    qr = await node.wait_event(names[i], "qr", since=mark)
                    mark = qr.seq + 1
                    return str(qr.args[0])

                await scan_first_fresh_qr(phone, numbers[i], next_qr)
            # On a restore, a QR (or a failure) instead of `ready` means the login was lost.
            ends = {"ready"} if fresh else {"ready", "qr", "auth_failure", "disconnected"}
            while not (done := [e for e in node.events[since:]
                                if e.client == names[i] and e.name in ends]):
                await trio.sleep(0.05)
            if done[0].name != "ready":
                raise SystemExit(f"whatsapp-web.js {names[i]}: {done[0].name} instead of ready "
                                 "on a restored login")
            took.append(time.monotonic() - started)

        fresh = await start_all(start, count, fresh=True)
        await trio.sleep(SETTLE_S)
        memory = measure_memory("whatsapp-web.js", node.proc.pid, processes)

        # Timestamps taken in node, in the Client's own `message` listener.
        for name in names:
            await node.eval(name, RECORD_ARRIVALS)
        asked = await deliver_paced(phone, numbers, messages, "wwebjs")
        seen: dict[str, float] = {}
        with trio.fail_after(60):
            while len(seen) < len(asked):
                for name in names:
                    arrived = await node.eval(name, "async (client) => client.__arrivals")
                    seen.update({body: at / 1000 for body, at in arrived.items()})
                await trio.sleep(0.2)
        lat = latencies(asked, seen)

        restored: list[float] = []
        for _ in range(restores):
            for name in names:
                await node.stop(name)
            restored += await start_all(start, count, fresh=False)
    return {"memory": memory, "fresh": fresh, "restored": restored, "latency": lat}


# ------------------------------------------------------------------------ wad


def api(daemon: DaemonProcess) -> httpx.AsyncClient:
    return daemon.socket_client(timeout=60)


async def session_row(db: Database, org: str) -> Any:
    """The session's row, read from the database: watching this way costs the daemon nothing
    (polling its API for ten organizations every 50 ms took a good share of its CPU)."""
    return await db.fetchrow("SELECT state, qr_payload FROM whatsapp_sessions "
                             "WHERE organization_id = $1::uuid", org)


async def wait_state(db: Database, org: str, state: str) -> None:
    while (await session_row(db, org))["state"] != state:
        await trio.sleep(0.05)


async def run_wad(count: int, sim_url: str, phone: SimClient, messages: int,
                  root: Path, mode: str, restores: int, processes: bool = False
                  ) -> dict[str, Any]:
    numbers = account_numbers(f"wad-{mode}", count)
    await create_accounts(phone, numbers)
    extra = (f'[whatsapp]\nurl = "{sim_url}"\nready_timeout_s = 60.0\n'
             f'browser_mode = "{mode}"\norgs_per_browser = {max(count, 1)}\n')
    # Logging at `info`, as a production daemon runs (the tests' default is `debug`).
    daemon = await trio.to_thread.run_sync(functools.partial(
        start_daemon, root, extra_config=extra, log_level="info"))
    try:
        async with api(daemon) as client, Database.open(
                EmbeddedPostgres(root / "pg").dsn, min_size=1, max_size=4) as db:
            orgs = []
            for i in range(count):
                made = await client.post("/api/organizations", json={"name": f"Bench {i}"})
                orgs.append(made.json()["id"])

            async def start(i: int, fresh: bool, took: list[float]) -> None:
                started = time.monotonic()
                r = await client.post("/api/whatsapp/connect", json={"organizationId": orgs[i]})
                r.raise_for_status()
                if fresh:
                    shown: set[str] = set()

                    async def next_qr() -> str:
                        while True:
                            row = await session_row(db, orgs[i])
                            if row["state"] == "QR_CODE_PENDING" and row["qr_payload"] \
                                    and row["qr_payload"] not in shown:
                                shown.add(row["qr_payload"])
                                return str(row["qr_payload"])
                            await trio.sleep(0.05)

                    await scan_first_fresh_qr(phone, numbers[i], next_qr)
                await wait_state(db, orgs[i], "CONNECTED")
                took.append(time.monotonic() - started)

            fresh = await start_all(start, count, fresh=True)
            await trio.sleep(SETTLE_S)
            memory = measure_memory(f"wad {mode}", daemon.proc.pid, processes)
            postgres = pss_kib(daemon.postgres_pid() or 0)

            seen: dict[str, float] = {}

            async def watch() -> None:
                while True:
                    rows = await db.fetch("SELECT body FROM messages WHERE direction = 'IN' AND "
                                          "body LIKE 'peer bench wad %'")
                    now = time.time()
                    for row in rows:
                        seen.setdefault(row["body"], now)
                    await trio.sleep(POLL_S)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                asked = await deliver_paced(phone, numbers, messages, "wad")
                with trio.fail_after(60):
                    while not all(b in seen for b in asked):
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
            lat = latencies(asked, seen)

            restored: list[float] = []
            for _ in range(restores):
                for org in orgs:
                    (await client.post(f"/api/whatsapp/disconnect/{org}")).raise_for_status()
                for org in orgs:
                    await wait_state(db, org, "DISCONNECTED")
                restored += await start_all(start, count, fresh=False)
    finally:
        await trio.to_thread.run_sync(daemon.stop)
    return {"memory": memory, "postgres_kib": postgres, "fresh": fresh,
            "restored": restored, "latency": lat}


# ------------------------------------------------------------------------ report


def mib(memory: dict[str, tuple[int, int]], *kinds: str) -> float:
    """PSS in MiB of the processes of `kinds` (all when none given); "uss": the tree's USS."""
    return sum(b for k, (b, _) in memory.items()
               if (k in kinds if kinds else k != "uss")) / 2**20


def report(count: int, peer: dict[str, Any], ours: dict[str, dict[str, Any]]) -> None:
    """One table: whatsapp-web.js, then wad in each browser mode with its ratio to it."""
    def rows(side: dict[str, Any]) -> list[tuple[str, float]]:
        mem = side["memory"]
        return [
            ("memory per session, MiB", mib(mem) / count),
            ("  USS per session, MiB", mib(mem, "uss") / count),
            ("memory total, MiB", mib(mem)),
            ("  client process", mib(mem, "daemon")),
            ("  Playwright driver (node)", mib(mem, "driver")),
            ("  Chromium processes", mib(mem, "browser")),
            ("  other processes", mib(mem, "other")),
            ("ready fresh link, median s", statistics.median(side["fresh"])),
            ("ready fresh link, slowest s", max(side["fresh"])),
            ("ready restored, median s", statistics.median(side["restored"])),
            ("ready restored, slowest s", max(side["restored"])),
            ("inbound latency p50, ms", percentile(side["latency"], 0.5) * 1000),
            ("inbound latency p95, ms", percentile(side["latency"], 0.95) * 1000),
        ]

    theirs = rows(peer)
    mine = {mode: rows(side) for mode, side in ours.items()}
    any_side = next(iter(ours.values()))
    print(f"\n{count} account(s), {len(any_side['latency'])} messages each side, one every "
          f"{DELIVERY_GAP_S:g} s, load average {load_average()}")
    header = f"{'':<30} {'whatsapp-web.js':>16}"
    for mode in mine:
        header += f" {'wad ' + mode:>12} {'/wwebjs':>8}"
    print(header)
    for i, (label, peer_value) in enumerate(theirs):
        line = f"{label:<30} {peer_value:>16.2f}"
        for values in mine.values():
            value = values[i][1]
            ratio = f"{value / peer_value:>8.2f}" if peer_value else f"{'-':>8}"
            line += f" {value:>12.2f} {ratio}"
        print(line)
    line = f"{'(wad PostgreSQL, MiB, apart)':<30} {'':>16}"
    for side in ours.values():
        line += f" {side['postgres_kib'] / 1024:>12.2f} {'':>8}"
    print(line, flush=True)


async def amain(counts: list[int], messages: int, sim_url: str, tls_port: int,
                root: Path, modes: list[str], restores: int, processes: bool) -> None:
    async with SimClient(sim_url, timeout=60) as phone:
        # The real page announces `hasSynced` seconds after CONNECTED (WAWEB.md); clients attach
        # their listeners in between. With ten Chromiums starting on a loaded machine the
        # simulator's default 1.5 s was too short for whatsapp-web.js, which then never saw
        # `ready`; 3 s is used for both sides.
        config = await phone.config(sync_delay_s=SYNC_DELAY_S)
        print(f"simulator: sync_delay_s={config.get('sync_delay_s')}", flush=True)
        for count in counts:
            peer = await run_wwebjs(count, tls_port, phone, messages, root / f"wwebjs-{count}",
                                   restores, processes)
            ours = {mode: await run_wad(count, sim_url, phone, messages,
                                        root / f"wad-{mode}-{count}", mode, restores, processes)
                    for mode in modes}
            report(count, peer, ours)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--messages", type=int, default=40,
                        help="messages delivered in the latency run (to the accounts in turn)")
    parser.add_argument("--wad-modes", nargs="+", choices=["per-org", "shared"],
                        default=["per-org", "shared"],
                        help="wad's browser modes to run (shared: every account in one Chromium)")
    parser.add_argument("--restores", type=int, default=3,
                        help="times every session is stopped and started on its profile")
    parser.add_argument("--processes", action="store_true",
                        help="print each process of every side's tree with its memory")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="wad-bench-peer-"))
    for count in args.counts:
        for mode in args.wad_modes:
            (root / f"wad-{mode}-{count}").mkdir(mode=0o711)
    root.chmod(0o711)
    print(f"machine: {os.cpu_count()} cores, load average {load_average()} at the start",
          flush=True)
    try:
        with sim_process(tls=True) as sim:
            assert sim.tls_port is not None
            trio_asyncio.run(amain, args.counts, args.messages, sim.url, sim.tls_port, root,
                             args.wad_modes, args.restores, args.processes)
    finally:
        print(f"load average {load_average()} at the end")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
