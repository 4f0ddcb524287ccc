"""A real `wad run` process with a linked organization: SIGTERM saves the login archive, closes
every browser and exits 0; the next start is connected again without a QR."""

from __future__ import annotations

import signal
from functools import partial
from pathlib import Path

import pytest
import trio

from tests.support.daemonproc import (
    link_org,
    processes_using,
    start_daemon_in_thread,
    start_sim,
)
from wad.sim.client import SimClient

pytestmark = pytest.mark.browser
ACCOUNT = "996555100901"


async def test_sigterm_archives_closes_browsers_and_restart_needs_no_qr(
        state_dir: Path, nursery: trio.Nursery) -> None:
    sim = await start_sim(nursery, seed=3)
    extra = f'[whatsapp]\nurl = "{sim.url}"\nready_timeout_s = 20.0\n'
    daemon = await start_daemon_in_thread(state_dir, extra_config=extra)
    try:
        async with SimClient(sim.url) as phone:
            await phone.create_account(ACCOUNT, "Chui Valley Tours")
            org = await link_org(daemon, phone, "Chui", ACCOUNT)
            profile = state_dir / "sessions" / f"org-{org}"
            assert processes_using(profile), "a Chromium runs on the organization's profile"
            assert profile.stat().st_mode & 0o077 == 0  # the login is its owner's only

            code = await trio.to_thread.run_sync(partial(daemon.stop, signal.SIGTERM))
            assert code == 0
            assert processes_using(profile) == []
            stored = [line for line in daemon.lines()
                      if line.get("event") == "login archive stored"]
            assert stored and stored[-1].get("reason") == "disconnect"

            again = await start_daemon_in_thread(state_dir, extra_config=extra)
            try:
                await again.wait_state(org, "CONNECTED")
                events = [line.get("event") for line in again.lines()]
                states = [line.get("state") for line in again.lines()
                          if line.get("event") == "session state"]
                assert "QR_CODE_PENDING" not in states, events
                assert len(await phone.devices(ACCOUNT)) == 1
            finally:
                assert await trio.to_thread.run_sync(again.stop) == 0
    finally:
        if daemon.proc.poll() is None:
            daemon.proc.kill()


async def test_the_ready_daemon_keeps_its_start_up_objects_out_of_the_collector(
        state_dir: Path) -> None:
    """Once ready, what the start made (modules, app, plugins) is frozen (`gc.freeze`): the
    collector's full passes over it were the event loop's longest pauses under load."""
    daemon = await start_daemon_in_thread(state_dir)
    try:
        ready = next(line for line in daemon.lines() if line.get("event") == "wad is ready")
        frozen = ready.get("heap_frozen")
        assert isinstance(frozen, int) and frozen > 50_000, ready
    finally:
        assert await trio.to_thread.run_sync(daemon.stop) == 0
