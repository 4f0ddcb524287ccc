"""The daemon as a real process: embedded database, /healthz on TCP and the unix socket, systemd
notify, graceful stop leaving nothing behind, reload on SIGHUP."""

from __future__ import annotations

import signal
import stat
from pathlib import Path

import httpx

from tests.support.daemonproc import (
    assert_gone,
    children_of,
    datagram_listener,
    receive_all,
    start_daemon,
)


def test_daemon_serves_health_notifies_and_stops_cleanly(state_dir: Path) -> None:
    notify_path = state_dir / "notify.sock"
    listener = datagram_listener(notify_path)
    daemon = start_daemon(state_dir, env={"NOTIFY_SOCKET": str(notify_path),
                                          "WATCHDOG_USEC": "1000000"})
    try:
        ready = receive_all(listener, "READY=1")
        assert any("STATUS=serving on" in m for m in ready)
        # The watchdog is fed at half of WATCHDOG_USEC while the database answers.
        receive_all(listener, "WATCHDOG=1", timeout=5)

        tcp = httpx.get(daemon.tcp_url + "/healthz", timeout=10)
        assert tcp.status_code == 200
        body = tcp.json()
        assert body["status"] == "ok"
        assert body["database"] is True
        assert body["version"]
        assert body["uptimeS"] >= 0

        transport = httpx.HTTPTransport(uds=str(daemon.socket_path))
        with httpx.Client(transport=transport, base_url="http://wad") as client:
            unix = client.get("/healthz")
        assert unix.status_code == 200
        assert unix.json()["database"] is True
        mode = stat.S_IMODE(daemon.socket_path.stat().st_mode)
        assert mode & 0o007 == 0
        assert mode <= 0o660

        pg_pid = daemon.postgres_pid()
        assert pg_pid is not None
        kids = children_of(daemon.proc.pid)

        # SIGHUP reloads the configuration and keeps serving.
        daemon.proc.send_signal(signal.SIGHUP)
        receive_all(listener, "RELOADING=1", timeout=10)
        daemon.wait_for_event("configuration reloaded")
        assert httpx.get(daemon.tcp_url + "/healthz", timeout=10).status_code == 200

        assert daemon.stop(signal.SIGTERM) == 0
        receive_all(listener, "STOPPING=1", timeout=5)
        assert_gone(pg_pid)
        for kid in kids:
            assert_gone(kid)
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
        listener.close()


def test_second_start_reuses_the_embedded_cluster(state_dir: Path) -> None:
    first = start_daemon(state_dir)
    assert first.stop() == 0
    second = start_daemon(state_dir)
    try:
        events = [line.get("event") for line in second.lines()]
        assert "migrations applied" not in events  # already up to date
        assert httpx.get(second.tcp_url + "/healthz", timeout=10).json()["database"] is True
    finally:
        assert second.stop(signal.SIGINT) == 0


def test_bad_configuration_stops_the_start_with_the_key_named(state_dir: Path) -> None:
    import subprocess
    import sys

    config = state_dir / "bad.toml"
    config.write_text("[whatsapp]\nreconnect_max_attempts = 0\n")
    result = subprocess.run([sys.executable, "-m", "wad.cli.main", "--config", str(config), "run"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "whatsapp.reconnect_max_attempts" in result.stderr


def test_db_migrate_command_applies_then_reports_up_to_date(state_dir: Path) -> None:
    import subprocess
    import sys

    from tests.support.daemonproc import write_config

    config = write_config(state_dir)
    first = subprocess.run([sys.executable, "-m", "wad.cli.main", "--config", str(config), "db",
                            "migrate"], capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "migrations applied" in first.stdout and "0001_initial.sql" in first.stdout
    assert "database is up to date" in first.stdout
    second = subprocess.run([sys.executable, "-m", "wad.cli.main", "--config", str(config), "db",
                             "migrate"], capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "migrations applied" not in second.stdout
    assert not (state_dir / "pg" / "postmaster.pid").exists()  # the cluster was stopped


def test_db_migrate_beside_a_running_daemon_leaves_its_database_up(state_dir: Path) -> None:
    import subprocess
    import sys

    daemon = start_daemon(state_dir)
    try:
        result = subprocess.run([sys.executable, "-m", "wad.cli.main", "--config",
                                 str(state_dir / "wad.toml"), "db", "migrate"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        health = httpx.get(daemon.tcp_url + "/healthz", timeout=10).json()
        assert health["database"] is True
    finally:
        assert daemon.stop() == 0
