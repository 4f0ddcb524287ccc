"""The WhatsApp Web change canary against the real thing: a `wad run` process with two linked
organizations in Chromium; the simulator ships one of them a page build without a member the
bridge needs. That organization goes to `ERROR` within the ready timeout, naming the build and
the member (API, `wad status`, the bus event, the metric) and is not restarted; the other stays
`CONNECTED`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import trio

from tests.support import daemonproc
from tests.support.metrics import parse, value
from wad.sim.client import SimClient

pytestmark = pytest.mark.browser
BROKEN = "996555100911"
HEALTHY = "996555100912"
READY_TIMEOUT_S = 20.0
NEW_BUILD = "2.3000.1999999999"


def ended_lines(daemon: daemonproc.DaemonProcess) -> list[dict[str, object]]:
    return [line for line in daemon.lines() if line.get("event") == "session ended"]


async def wad_status(config: Path, org: str) -> str:
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "wad.cli.main", "--config", str(config), "status", org],
            capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


async def test_a_missing_member_stops_only_that_session_naming_it(
        state_dir: Path, nursery: trio.Nursery) -> None:
    sim = await daemonproc.start_sim(nursery, seed=5)
    extra = daemonproc.whatsapp_config(sim.url, ready_timeout_s=READY_TIMEOUT_S,
                                       health_check_interval_s=2.0)
    daemon = await daemonproc.start_daemon_in_thread(state_dir, extra_config=extra)
    try:
        async with SimClient(sim.url) as phone:
            await phone.create_account(BROKEN, "Naryn Tours")
            await phone.create_account(HEALTHY, "Talas Travel")
            broken = await daemonproc.link_org(daemon, phone, "Naryn", BROKEN)
            healthy = await daemonproc.link_org(daemon, phone, "Talas", HEALTHY)

            assert await phone.page_build(BROKEN, "WAWebSendMsgChatAction", "addAndSendMsgToChat",
                                          version=NEW_BUILD) == 1
            started = trio.current_time()
            status = await daemon.wait_state(broken, "ERROR", timeout=READY_TIMEOUT_S)
            assert trio.current_time() - started <= READY_TIMEOUT_S
            reason = (f"WhatsApp Web {NEW_BUILD}: "
                      "WAWebSendMsgChatAction.addAndSendMsgToChat is missing")
            assert status["errorMessage"] == reason
            assert status["shouldRun"] is False  # ended, like a ban: not restarted

            shown = await wad_status(state_dir / "wad.toml", broken)
            assert "ERROR" in shown and reason in shown, shown

            # Its browser is closed and stays closed; the other organization is untouched.
            profile = state_dir / "sessions" / f"org-{broken}"
            with trio.fail_after(15):
                while daemonproc.processes_using(profile):
                    await trio.sleep(0.2)
            other = await daemon.whatsapp_status(healthy)
            assert other["status"] == "CONNECTED" and other["errorMessage"] is None
            assert daemonproc.processes_using(state_dir / "sessions" / f"org-{healthy}")

            async with daemon.socket_client() as api:
                samples = parse((await api.get("/metrics")).text)
            assert value(samples, "wad_page_incompatible_total", organization=broken,
                         version=NEW_BUILD) == 1
            assert value(samples, "wad_page_incompatible_total", organization=healthy,
                         version=NEW_BUILD) is None

            # Asked to connect again, the stored profile opens straight into the same build:
            # ERROR again at the first injection, not a wait for the ready timeout.
            async with daemon.socket_client() as api:
                again = await api.post("/api/whatsapp/connect", json={"organizationId": broken})
                assert again.status_code in (200, 202), again.text
            with trio.fail_after(READY_TIMEOUT_S / 2):
                while len(ended_lines(daemon)) < 2:
                    await trio.sleep(0.2)
            status = await daemon.whatsapp_status(broken)
            assert (status["status"], status["errorMessage"]) == ("ERROR", reason)

            lines = daemon.lines()
            incompatible = [line for line in lines
                            if line.get("event") == "page incompatible with the bridge"]
            assert len(incompatible) == 2, json.dumps(incompatible)
            assert [(line.get("state"), line.get("reason")) for line in ended_lines(daemon)] == [
                ("ERROR", reason)] * 2
    finally:
        assert await trio.to_thread.run_sync(daemon.stop) == 0, daemon.log_path.read_text()[-3000:]
