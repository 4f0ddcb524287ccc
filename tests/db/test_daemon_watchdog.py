"""The systemd watchdog tells the truth: a real `wad run` under a stand-in for systemd (a unix
datagram socket as `NOTIFY_SOCKET`, `WATCHDOG_USEC` set) keeps pinging through a 60 s database
outage, says "database unavailable since ..." in `/healthz`, `wad status` and systemd's
`STATUS=`, and stops pinging while its event loop is blocked (`WAD_DEBUG_BLOCK_LOOP_S` and
SIGUSR2, a hook for tests)."""

from __future__ import annotations

import functools
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.support.daemonproc import datagram_listener, start_daemon
from wad.db.embedded import EmbeddedPostgres

WATCHDOG_USEC = 4_000_000  # systemd would kill after 4 s without a ping; wad pings every 2 s
PING_S = WATCHDOG_USEC / 2e6
OUTAGE_S = 60.0
BLOCK_S = 12.0


class NotifyRecorder:
    """Reads the notify socket in a thread: every message with its arrival time."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data))

    def pings(self, since: float, until: float) -> list[float]:
        return [t for t, m in list(self.messages) if "WATCHDOG=1" in m and since <= t <= until]

    def statuses(self) -> list[str]:
        return [m for _, m in list(self.messages) if m.startswith("STATUS=")]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


def largest_gap(times: list[float], start: float, end: float) -> float:
    points = [start, *times, end]
    return max(b - a for a, b in zip(points, points[1:], strict=False))


def wait_until(check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {check}"
        time.sleep(0.2)


def health(url: str) -> httpx.Response:
    return httpx.get(url + "/healthz", timeout=10)


def db_down(url: str) -> bool:
    r = health(url)
    return r.status_code == 503 and bool(r.json()["databaseUnavailableSince"])


def db_up(url: str) -> bool:
    return health(url).status_code == 200


def test_pings_go_on_through_a_database_outage_and_stop_when_the_loop_is_stuck(
        state_dir: Path) -> None:
    cluster = EmbeddedPostgres(state_dir / "pg-own", fsync=False)
    dsn = cluster.start()
    listener = datagram_listener(state_dir / "notify.sock")
    recorder = NotifyRecorder(listener)
    daemon = start_daemon(state_dir, env={
        "NOTIFY_SOCKET": str(state_dir / "notify.sock"), "WATCHDOG_USEC": str(WATCHDOG_USEC),
        "WAD_DATABASE_URL": dsn, "WAD_DEBUG_BLOCK_LOOP_S": str(BLOCK_S)}, log_level="info")
    try:
        wait_until((lambda: bool(recorder.pings(0, time.monotonic()))), 10)
        assert db_up(daemon.tcp_url)

        # A 60 s outage: the pings go on, at their interval, all along.
        cluster.stop(mode="fast")
        down_at = time.monotonic()
        wait_until(functools.partial(db_down, daemon.tcp_url), 20)
        body = health(daemon.tcp_url).json()
        assert body["message"].startswith("database unavailable since "), body
        status = subprocess.run(
            [sys.executable, "-m", "wad.cli.main", "--config", str(state_dir / "wad.toml"),
             "status"], capture_output=True, text=True, timeout=60)
        assert status.returncode != 0
        assert "database unavailable since" in status.stderr + status.stdout, status
        wait_until((lambda: any(
            "database unavailable since" in m for m in recorder.statuses())), 15)
        time.sleep(max(0.0, down_at + OUTAGE_S - time.monotonic()))  # the outage's length
        assert daemon.proc.poll() is None, "the daemon died during the outage"
        during = recorder.pings(down_at, time.monotonic())
        assert largest_gap(during, down_at, time.monotonic()) < WATCHDOG_USEC / 1e6
        assert len(during) >= OUTAGE_S / PING_S * 0.8  # one every PING_S

        cluster.start()
        wait_until(functools.partial(db_up, daemon.tcp_url), 60)
        wait_until((lambda: recorder.statuses()[-1:] == [
            "STATUS=database available again"]), 15)

        # A stuck event loop: no pings at all until it runs again.
        daemon.proc.send_signal(signal.SIGUSR2)
        sent_at = time.monotonic()
        wait_until((lambda: bool(recorder.pings(sent_at + BLOCK_S,
                                                                 time.monotonic()))), 30)
        gap = largest_gap(recorder.pings(sent_at, time.monotonic()), sent_at, time.monotonic())
        assert gap >= BLOCK_S - PING_S, "pings went on while the loop was blocked"
        assert gap > WATCHDOG_USEC / 1e6  # long enough for systemd to kill it
        assert daemon.wait_for_event("blocking the event loop (WAD_DEBUG_BLOCK_LOOP_S)")
        assert db_up(daemon.tcp_url)  # and it goes on once the loop runs again
        assert daemon.stop() == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
        recorder.close()
        listener.close()
        cluster.stop(mode="immediate")
