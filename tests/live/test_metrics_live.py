"""`/metrics` while traffic flows through the simulator: a real Chromium session, the inbound
actor, a real PostgreSQL, the API on real HTTP. The counters move with the messages, the session
state follows the link, a killed browser counts as an actor restart, a hung page as a failed
health check, and the browsers' memory is part of the daemon's."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest
import trio

from tests.support.daemonproc import start_daemon
from tests.support.inbound import serve_inbound_daemon
from tests.support.metrics import Samples, parse, value
from tests.support.stack import open_stack

pytestmark = pytest.mark.browser

ACCOUNT = "996555100501"


async def test_metrics_move_with_traffic_restarts_and_health_checks(
        state_dir: Path, dsn: str) -> None:
    async with open_stack(state_dir, dsn, health_check_interval_s=1.0,
                          health_check_timeout_s=1.0) as stack, \
            trio.open_nursery() as nursery:
        await stack.phone.create_account(ACCOUNT, "Issyk-Kul Tours")
        served, shutdown = await serve_inbound_daemon(stack, nursery, state_dir)
        root = served.client(await served.token("SUPER_ADMIN"), timeout=30)

        async def scrape() -> Samples:
            r = await root.get("/metrics")
            assert r.status_code == 200, r.text
            return parse(r.text)

        async def until(check: object, timeout: float = 30) -> Samples:
            with trio.fail_after(timeout):
                while True:
                    samples = await scrape()
                    if check(samples):  # type: ignore[operator]
                        return samples
                    await trio.sleep(0.1)

        org = await stack.new_org("Issyk-Kul Tours")
        label = str(org)
        before = await scrape()
        assert value(before, "wad_session_state", organization=label, state="DISCONNECTED") == 1
        assert value(before, "wad_messages_received_total", organization=label) == 0

        await stack.link_by_qr(org, ACCOUNT)
        samples = await scrape()
        assert value(samples, "wad_session_state", organization=label, state="CONNECTED") == 1
        assert value(samples, "wad_sessions", state="CONNECTED") == 1
        # The organization's Chromium is the daemon's too.
        assert (value(samples, "wad_processes", kind="browser") or 0) >= 1
        assert (value(samples, "wad_memory_pss_bytes", kind="browser") or 0) > 20 * 2**20

        for text in ("Здравствуйте! Тур на Иссык-Куль есть?", "На двоих, в июле"):
            await stack.phone.deliver(ACCOUNT, "996555700001", text)
        await stack.phone.deliver(ACCOUNT, "996555700002", "Salam, Osh tour?")
        await stack.phone.phone_send(ACCOUNT, "996555700001", "Да, есть")
        samples = await until(lambda s: value(s, "wad_messages_received_total",
                                              organization=label) == 3
                              and value(s, "wad_messages_sent_total", organization=label) == 1)
        assert value(samples, "wad_inbound_processing_seconds_count", organization=label) == 3

        # A killed browser: the session actor is restarted by its supervisor, and counted.
        assert stack.manager is not None
        handle = stack.manager.running(org)
        assert handle is not None and handle.session.session is not None
        pid = handle.session.session.browser_pid()  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)
        samples = await until(lambda s: value(s, "wad_actor_restarts_total", organization=label,
                                              actor="session") == 1)
        await stack.wait_state(org, "CONNECTED")
        assert value(samples, "wad_browser_health_check_failures_total",
                     organization=label) in (None, 0)

        # A hung page: the health check fails, the browser is reopened.
        await stack.phone.freeze(ACCOUNT, seconds=None)
        samples = await until(lambda s: (value(s, "wad_browser_health_check_failures_total",
                                               organization=label) or 0) >= 1, timeout=40)
        await stack.wait_state(org, "CONNECTED", timeout=40)
        # More messages still count after both recoveries.
        await stack.phone.deliver(ACCOUNT, "996555700001", "Алло?")
        await until(lambda s: value(s, "wad_messages_received_total", organization=label) == 4)

        for client in served.clients:
            await client.aclose()
        shutdown.set()
        nursery.cancel_scope.cancel()


async def test_a_real_daemon_serves_metrics_on_its_control_socket(state_dir: Path) -> None:
    """`wad run` as a process, with its embedded PostgreSQL: the metrics need no wiring in the
    daemon, the control socket may scrape without a token, TCP may not, and the embedded
    database's memory is counted."""
    daemon = await trio.to_thread.run_sync(start_daemon, state_dir)
    try:
        async with daemon.socket_client() as sock, \
                httpx.AsyncClient(base_url=daemon.tcp_url, timeout=30) as tcp:
            with trio.fail_after(60):
                org = (await sock.post("/api/organizations", json={"name": "Tours"})).json()
                r = await sock.get("/metrics")
                assert r.status_code == 200, r.text
                samples = parse(r.text)
                assert value(samples, "wad_session_state", organization=org["id"],
                             state="DISCONNECTED") == 1
                assert (value(samples, "wad_memory_pss_bytes", kind="database") or 0) > 0
                assert (value(samples, "wad_processes", kind="database") or 0) >= 2
                assert value(samples, "wad_db_up") == 1
                assert (await tcp.get("/metrics")).status_code == 401
                page = await tcp.get("/")
                assert page.status_code == 200 and "status.js" in page.text
    finally:
        code = await trio.to_thread.run_sync(daemon.stop)
    assert code == 0, daemon.log_path.read_text()[-3000:]
