"""What the benchmarks share: scratch folders, free ports, the load average, and a simulator
running in its own process (so that its work is not counted as wad's)."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx


@contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A fresh temporary folder for the block, removed afterwards. Mode 0711: the embedded
    cluster's `postgres` user must reach it when the benchmark runs as root."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o711)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@dataclass(frozen=True)
class SimProcess:
    """A simulator serving in a process of its own (`wad sim`)."""

    url: str
    """Plain HTTP, for wad."""
    tls_port: int | None
    """Its HTTPS port, when asked for (whatsapp-web.js's page URL is fixed to https)."""
    pid: int


@contextmanager
def sim_process(*, tls: bool = False, seed: int = 1) -> Iterator[SimProcess]:
    """Start `wad sim` on free loopback ports, wait until it answers, stop it (SIGINT) after."""
    port = free_port()
    tls_port = free_port() if tls else None
    command = [sys.executable, "-m", "wad.cli.main", "sim", "--port", str(port), "--seed",
               str(seed)] + (["--tls-port", str(tls_port)] if tls_port else [])
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "_sim/config", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the simulator did not start ({' '.join(command)})"
                                       ) from None
                time.sleep(0.1)
        yield SimProcess(url=url, tls_port=tls_port, pid=proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
