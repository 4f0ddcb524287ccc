"""Benchmark: memory and restore time of browser sessions.

For 1, 5 and 10 organizations linked to the simulator, prints the memory (PSS) of the daemon
plus its browsers once all are connected (total and per organization), and the time from a
daemon start to all organizations connected when their logins are restored from the profiles.

    .venv/bin/python bench/sessions.py [--counts 1 5 10]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.daemonproc import DaemonProcess, start_daemon  # noqa: E402


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


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api(daemon: DaemonProcess) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(daemon.socket_path)),
                        base_url="http://wad", timeout=60)


def wait_all(daemon: DaemonProcess, orgs: list[str], state: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    with api(daemon) as client:
        while time.monotonic() < deadline:
            states = [client.get(f"/api/whatsapp/status/{o}").json()["state"] for o in orgs]
            if all(s == state for s in states):
                return
            time.sleep(0.2)
    raise SystemExit(f"not all {state} within {timeout}s")


def run(count: int, sim_url: str, sim: httpx.Client) -> tuple[int, float]:
    state_dir = Path(tempfile.mkdtemp(prefix=f"wad-bench-{count}-"))
    os.chmod(state_dir, 0o711)
    extra = f'[whatsapp]\nurl = "{sim_url}"\nready_timeout_s = 60.0\n'
    daemon = start_daemon(state_dir, extra_config=extra)
    orgs: list[str] = []
    try:
        with api(daemon) as client:
            for i in range(count):
                number = f"99670{count:02d}{i:05d}"
                sim.post("/_sim/accounts", json={"number": number, "push_name": f"Org {i}",
                                                 "contacts": [], "chats": []}).raise_for_status()
                org = client.post("/api/organizations", json={"name": f"Org {i}"}).json()["id"]
                orgs.append(org)
                client.post("/api/whatsapp/connect", json={"organization_id": org})
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    qr = client.get(f"/api/whatsapp/qr/{org}")
                    if qr.status_code == 200:
                        break
                    time.sleep(0.2)
                sim.post(f"/_sim/accounts/{number}/scan",
                         json={"payload": qr.json()["payload"]}).raise_for_status()
        wait_all(daemon, orgs, "CONNECTED")
        time.sleep(2)
        memory = pss_kib(daemon.proc.pid)
        assert daemon.stop(signal.SIGTERM) == 0

        started = time.monotonic()
        daemon = start_daemon(state_dir, extra_config=extra)
        wait_all(daemon, orgs, "CONNECTED")
        restore_s = time.monotonic() - started
        return memory, restore_s
    finally:
        if daemon.proc.poll() is None:
            daemon.stop(signal.SIGTERM)
        subprocess.run(["rm", "-rf", str(state_dir)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 5, 10])
    args = parser.parse_args()
    port = free_port()
    sim_proc = subprocess.Popen([sys.executable, "-m", "wad.cli.main", "sim", "--port", str(port),
                                 "--seed", "1"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    sim_url = f"http://127.0.0.1:{port}/"
    try:
        with httpx.Client(base_url=sim_url, timeout=30) as sim:
            for _ in range(100):
                try:
                    sim.get("/_sim/config").raise_for_status()
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            print(f"{'orgs':>5} {'PSS total MiB':>14} {'per org MiB':>12} {'restore s':>10}")
            for count in args.counts:
                memory, restore_s = run(count, sim_url, sim)
                print(f"{count:>5} {memory / 1024:>14.1f} {memory / 1024 / count:>12.1f} "
                      f"{restore_s:>10.2f}", flush=True)
    finally:
        sim_proc.send_signal(signal.SIGINT)
        sim_proc.wait(10)


if __name__ == "__main__":
    main()
