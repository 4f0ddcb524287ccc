"""Running `wad run` as a real process in tests: start, wait until ready, stop, check leftovers."""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from wad.db.embedded import process_alive
from wad.sim.client import SimClient
from wad.sim.model import SimConfig
from wad.sim.server import SimServer, serve

QUICK_SIM = SimConfig(qr_rotate_s=5.0, sync_delay_s=0.3)
"""A simulator whose QR codes rotate and whose sync ends quickly, for daemons under test."""


@dataclass
class DaemonProcess:
    """A `wad run` child process and what it printed."""

    proc: subprocess.Popen[str]
    state_dir: Path
    log_path: Path
    tcp_url: str = ""
    socket_path: Path = field(default_factory=Path)

    def lines(self) -> list[dict[str, object]]:
        out = []
        for raw in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(raw))
            except ValueError:
                out.append({"event": raw})
        return out

    def wait_for_event(self, event: str, timeout: float = 60.0) -> dict[str, object]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines():
                if line.get("event") == event:
                    return line
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}:\n"
                                     f"{self.log_path.read_text()[-4000:]}")
            time.sleep(0.1)
        raise AssertionError(f"no {event!r} within {timeout}s:\n{self.log_path.read_text()[-4000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def socket_client(self, timeout: float = 30) -> httpx.AsyncClient:
        """An HTTP client on the control socket (which is the super admin: no token)."""
        return httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(self.socket_path)),
                                 base_url="http://wad", timeout=timeout)

    async def whatsapp_status(self, org: str) -> dict[str, Any]:
        """`GET /api/whatsapp/status/ORG` on the control socket."""
        async with self.socket_client() as client:
            body: dict[str, Any] = (await client.get(f"/api/whatsapp/status/{org}")).json()
            return body

    async def wait_state(self, org: str, *states: str, timeout: float = 40,
                         node: str | None = None) -> dict[str, Any]:
        """Poll the organization's status until its state is one of `states` (and, given
        `node`, that node owns it); answers that status."""
        with trio.fail_after(timeout):
            while True:
                body = await self.whatsapp_status(org)
                if body["status"] in states and (node is None or body.get("nodeId") == node):
                    return body
                await trio.sleep(0.2)

    def node(self) -> str:
        """The node id the daemon announced when it was ready."""
        for line in self.lines():
            if line.get("event") == "wad is ready":
                return str(line["node"])
        raise AssertionError("no ready line")

    def postgres_pid(self) -> int | None:
        try:
            return int((self.state_dir / "pg" / "postmaster.pid").read_text().split("\n")[0])
        except (OSError, ValueError):
            return None


def shared_state_dir(prefix: str) -> Path:
    """A new temporary state dir that others may enter (0711): the sandboxed browser reaches its
    profile below it."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o711)
    return path


def write_config(state_dir: Path, extra: str = "", daemon_extra: str = "",
                 log_level: str = "debug") -> Path:
    path = state_dir / "wad.toml"
    path.write_text(
        f'[daemon]\nstate_dir = "{state_dir}"\nlog_format = "json"\nlog_level = "{log_level}"\n'
        f'shutdown_grace_s = 20.0\n{daemon_extra}[api]\nlisten = "127.0.0.1:0"\n{extra}'
    )
    return path


def start_daemon(state_dir: Path, *, env: dict[str, str] | None = None,
                 extra_config: str = "", daemon_config: str = "",
                 log_level: str = "debug") -> DaemonProcess:
    """Start `wad run`; `extra_config` is appended to the file, `daemon_config` goes into its
    `[daemon]` table."""
    config = write_config(state_dir, extra_config, daemon_config, log_level)
    log_path = state_dir / "daemon.log"
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    full_env.update(env or {})
    full_env.pop("WAD_DATABASE_URL", None) if "WAD_DATABASE_URL" not in (env or {}) else None
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "wad.cli.main", "--config", str(config), "run"],
            stdout=log_file, stderr=subprocess.STDOUT, env=full_env, text=True,
        )
    daemon = DaemonProcess(proc=proc, state_dir=state_dir, log_path=log_path)
    ready = daemon.wait_for_event("wad is ready")
    raw_addresses = ready["addresses"]
    assert isinstance(raw_addresses, list)
    addresses = [str(a) for a in raw_addresses]
    daemon.tcp_url = next(a for a in addresses if a.startswith("http://127."))
    daemon.socket_path = Path(next(a for a in addresses if "unix:" in a).split("unix:", 1)[1])
    return daemon


def descendants(pid: int) -> list[int]:
    """Every living process below PID (children, their children ...)."""
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


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            fields = stat.rpartition(")")[2].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


def assert_gone(pid: int | None) -> None:
    assert pid is None or not process_alive(pid), f"process {pid} is still running"


def datagram_listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.2)
    return sock


def receive_all(sock: socket.socket, until: str, timeout: float = 30.0) -> list[str]:
    """Collect notify messages until one contains `until`."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        if until in seen[-1]:
            return seen
    raise AssertionError(f"no {until!r} in {seen}")


def processes_using(path: Path | str) -> list[int]:
    """Live processes whose command line mentions `path` (e.g. Chromium on a profile)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if str(path) in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


async def start_sim(nursery: trio.Nursery, *, seed: int, config: SimConfig = QUICK_SIM
                    ) -> SimServer:
    """The WhatsApp Web simulator served in `nursery`."""
    sim: SimServer = await nursery.start(functools.partial(serve, seed=seed, config=config))
    return sim


def whatsapp_config(sim_url: str, **settings: float) -> str:
    """The `[whatsapp]` table of a daemon against the simulator at `sim_url`: the page's
    internals waited for 20 s, reconnects after 0.2 s up to 1 s, and `settings` on top."""
    values: dict[str, str | float] = {"url": sim_url, "ready_timeout_s": 20.0,
                                      "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0,
                                      **settings}
    return "[whatsapp]\n" + "".join(f"{key} = {json.dumps(value)}\n"
                                    for key, value in values.items())


async def start_daemon_in_thread(state_dir: Path, **options: Any) -> DaemonProcess:
    """`start_daemon` without blocking the Trio loop while the daemon comes up."""
    daemon: DaemonProcess = await trio.to_thread.run_sync(
        functools.partial(start_daemon, state_dir, **options))
    return daemon


@asynccontextmanager
async def daemon_on_sim(state_dir: Path, nursery: trio.Nursery, *, seed: int, qr_rotate_s: float
                        ) -> AsyncIterator[tuple[SimServer, DaemonProcess]]:
    """A simulator (its QR codes rotating every `qr_rotate_s`, 20 times at most; a quick sync
    and quick acks) and a `wad run` daemon on it that checks its sessions' health every 2 s.
    When the block ends the daemon is stopped, and must have exited with 0."""
    config = SimConfig(qr_rotate_s=qr_rotate_s, qr_max_rotations=20, sync_delay_s=0.3,
                       ack_delays_s=(0.2, 0.4, 0.6))
    sim = await start_sim(nursery, seed=seed, config=config)
    daemon = await start_daemon_in_thread(state_dir, extra_config=whatsapp_config(
        sim.url, health_check_interval_s=2.0))
    try:
        yield sim, daemon
    finally:
        code = await trio.to_thread.run_sync(daemon.stop)
        assert code == 0, daemon.log_path.read_text()[-3000:]


async def link_org(daemon: DaemonProcess, phone: SimClient, name: str, account: str) -> str:
    """Create an organization, connect it and scan its QR with the simulated phone of
    `account`; answers its id once it is CONNECTED."""
    async with daemon.socket_client() as api:
        created = await api.post("/api/organizations", json={"name": name})
        assert created.status_code == 201, created.text
        org: str = created.json()["id"]
        connect = await api.post("/api/whatsapp/connect", json={"organizationId": org})
        assert connect.status_code in (200, 202), connect.text
        await daemon.wait_state(org, "QR_CODE_PENDING")
        qr = (await api.get(f"/api/whatsapp/qr/{org}")).json()
        await phone.scan_qr(account, qr["qrCode"])
        await daemon.wait_state(org, "CONNECTED")
    return org
