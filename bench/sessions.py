"""Benchmark: memory and restore time of browser sessions, per browser mode.

For each number of organizations (default 1, 5 and 10), a fresh `wad run` (its own state
directory and embedded PostgreSQL) links that many accounts of one simulator (a separate
process), waits until all are `CONNECTED` and reads the PSS of the daemon's process tree by
kind (the daemon, Playwright's node driver, the Chromium processes; PostgreSQL apart). Then it
stops the daemon (SIGTERM: logins archived, browsers closed), starts it again on the same state
directory and times the start to every organization `CONNECTED`, failing if any of them showed
a QR on the way (a lost login).

    .venv/bin/python bench/sessions.py --mode shared --counts 1 5 10
    .venv/bin/python bench/sessions.py --mode per-org --counts 1 5 10

Prints per count: PSS total, per organization, per additional organization (against the
smallest count of the run), the same for USS (private memory, which depends less on the other
processes of the machine: PSS divides shared code pages among every process that maps them,
other helpers' Chromiums included), the parts (PSS) (daemon, driver, Chromium and its process count,
PostgreSQL apart), the restart's time to the daemon ready (`wad is ready`: database, API) and to
every organization connected (the restore time), and the load average with each line (the
machine is shared: memory figures hold, times are pessimistic under load).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import load_average, sim_process  # noqa: E402
from tests.support.daemonproc import DaemonProcess, descendants, start_daemon  # noqa: E402
from wad.observe.metrics import memory_by_kind  # noqa: E402

SETTLE_S = 3.0
"""Wait after the last organization connected before reading memory (start-up work ends)."""
POLL_S = 0.1


def pss_kib(pid: int) -> int:
    """PSS of a process and all its descendants, in KiB."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def uss_kib(pid: int) -> int:
    """USS (private memory: Private_Clean + Private_Dirty) of a process and its descendants, in
    KiB. It depends less than PSS on other processes that map the same files (other Chromiums
    share the browser's code pages, and PSS divides those among them), though a page only one
    process touches still counts as private."""
    total = 0
    for p in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def api(daemon: DaemonProcess) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket_path)),
                        base_url="http://wad", timeout=60)


def wait_all(daemon: DaemonProcess, orgs: list[str], state: str, timeout: float = 300,
             forbidden: str | None = None) -> None:
    """Poll every organization's state (one request for all) until each is STATE; fail if one
    shows FORBIDDEN on the way."""
    deadline = time.monotonic() + timeout
    wanted = set(orgs)
    with api(daemon) as client:
        while time.monotonic() < deadline:
            listed = client.get("/api/whatsapp/status").json()["organizations"]
            states = {o["organizationId"]: o["status"] for o in listed
                      if o["organizationId"] in wanted}
            if forbidden is not None and forbidden in states.values():
                raise SystemExit(f"an organization showed {forbidden}: {states}")
            if len(states) == len(wanted) and all(s == state for s in states.values()):
                return
            time.sleep(POLL_S)
    raise SystemExit(f"not all {state} within {timeout}s")


def config(sim_url: str, mode: str, per_browser: int) -> str:
    return (f'[whatsapp]\nurl = "{sim_url}"\nready_timeout_s = 60.0\n'
            f'browser_mode = "{mode}"\norgs_per_browser = {per_browser}\n')


def link(daemon: DaemonProcess, sim: httpx.Client, count: int, tag: str) -> list[str]:
    """Create COUNT organizations and link each to a new simulator account by its QR."""
    orgs: list[str] = []
    with api(daemon) as client:
        for i in range(count):
            number = f"99671{tag}{count:02d}{i:04d}"
            sim.post("/_sim/accounts", json={"number": number, "push_name": f"Org {i}",
                                             "contacts": [], "chats": []}).raise_for_status()
            org = client.post("/api/organizations", json={"name": f"Org {i}"}).json()["id"]
            orgs.append(org)
            client.post("/api/whatsapp/connect", json={"organizationId": org})
            deadline = time.monotonic() + 120
            while True:
                qr = client.get(f"/api/whatsapp/qr/{org}")
                if qr.status_code == 200 and qr.json()["qrCode"]:
                    scanned = sim.post(f"/_sim/accounts/{number}/scan",
                                       json={"payload": qr.json()["qrCode"]})
                    if scanned.status_code < 400:
                        break
                    if "stale" not in scanned.text:  # a QR rotated meanwhile: scan the next
                        scanned.raise_for_status()
                if time.monotonic() > deadline:
                    raise SystemExit(f"organization {i}: no QR to scan within 120 s")
                time.sleep(0.2)
    return orgs


def run(count: int, sim_url: str, sim: httpx.Client, mode: str, per_browser: int
        ) -> tuple[dict[str, tuple[int, int]], int, tuple[float, float], str]:
    """Memory by kind once COUNT organizations are connected, PostgreSQL's PSS (KiB), the
    times from the restart to the daemon ready and to all connected, and the load average."""
    state_dir = Path(tempfile.mkdtemp(prefix=f"wad-bench-{count}-"))
    os.chmod(state_dir, 0o711)
    extra = config(sim_url, mode, per_browser)
    daemon = start_daemon(state_dir, extra_config=extra, log_level="info")
    try:
        orgs = link(daemon, sim, count, {"shared": "1", "per-org": "2"}[mode])
        wait_all(daemon, orgs, "CONNECTED")
        time.sleep(SETTLE_S)
        memory = memory_by_kind(daemon.proc.pid)
        memory["uss"] = (uss_kib(daemon.proc.pid) * 1024, 0)
        postgres = pss_kib(daemon.postgres_pid() or 0)
        assert daemon.stop(signal.SIGTERM) == 0

        started = time.monotonic()
        daemon = start_daemon(state_dir, extra_config=extra, log_level="info")
        ready_s = time.monotonic() - started
        wait_all(daemon, orgs, "CONNECTED", forbidden="QR_CODE_PENDING")
        restore_s = time.monotonic() - started
        return memory, postgres, (ready_s, restore_s), load_average()
    finally:
        if daemon.proc.poll() is None:
            daemon.stop(signal.SIGTERM)
        subprocess.run(["rm", "-rf", str(state_dir)], check=False)


def mib(memory: dict[str, tuple[int, int]], *kinds: str) -> float:
    """PSS in MiB of the processes of KINDS (all when none given); "uss" is the tree's USS."""
    return sum(b for k, (b, _) in memory.items()
               if (k in kinds if kinds else k != "uss")) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 5, 10])
    parser.add_argument("--mode", choices=["shared", "per-org"], default="per-org")
    parser.add_argument("--orgs-per-browser", type=int, default=10,
                        help="in shared mode: organizations per Chromium")
    args = parser.parse_args()
    print(f"mode {args.mode}" + (f", {args.orgs_per_browser} organizations per browser"
                                 if args.mode == "shared" else "")
          + f"; {os.cpu_count()} cores, load average {load_average()} at the start", flush=True)
    try:
        with sim_process() as simproc, httpx.Client(base_url=simproc.url, timeout=30) as sim:
            sim_url = simproc.url
            print(f"{'orgs':>4} {'PSS MiB':>8} {'per org':>8} {'per add.':>8} {'USS MiB':>8} "
                  f"{'per add.':>8} {'daemon':>7} "
                  f"{'driver':>7} {'chromium':>9} {'procs':>6} {'pg MiB':>7} {'ready s':>7} {'restore s':>9}"
                  f"  load", flush=True)
            first: tuple[int, float, float] | None = None
            for count in sorted(args.counts):
                memory, postgres, (ready_s, restore_s), load = run(count, sim_url, sim, args.mode,
                                                        args.orgs_per_browser)
                total, uss = mib(memory), mib(memory, "uss")
                if first is None:
                    first = (count, total, uss)
                more = count - first[0]
                extra = (total - first[1]) / more if more else None
                extra_uss = (uss - first[2]) / more if more else None
                browsers = memory.get("browser", (0, 0))[1]
                print(f"{count:>4} {total:>8.1f} {total / count:>8.1f} "
                      f"{(f'{extra:.1f}' if extra is not None else '-'):>8} {uss:>8.1f} "
                      f"{(f'{extra_uss:.1f}' if extra_uss is not None else '-'):>8} "
                      f"{mib(memory, 'daemon'):>7.1f} {mib(memory, 'driver'):>7.1f} "
                      f"{mib(memory, 'browser'):>9.1f} {browsers:>6} {postgres / 1024:>7.1f} "
                      f"{ready_s:>7.2f} {restore_s:>9.2f}  {load}", flush=True)
    finally:
        print(f"load average {load_average()} at the end")


if __name__ == "__main__":
    main()
