"""Running `wad run` as a real process in tests: start, wait until ready, stop, check leftovers."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from wad.db.embedded import process_alive


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
                if body["state"] in states and (node is None or body.get("node_id") == node):
                    return body
                await trio.sleep(0.2)

    def postgres_pid(self) -> int | None:
        try:
            return int((self.state_dir / "pg" / "postmaster.pid").read_text().split("\n")[0])
        except (OSError, ValueError):
            return None


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
