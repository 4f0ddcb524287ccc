"""One organization's failure never reaches another, with real Chromium against the simulator:
one organization's browser is killed (by pid) each time it comes up, until its supervisor gives
up. The same on Trio's mock clock is in tests/db/test_org_isolation.py."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import trio

from tests.support.stack import Stack, open_stack
from wad.db.repo import messages as messages_repo
from wad.sim.client import SimClientError


async def _link(stack: Stack, org: uuid.UUID, account: str) -> None:
    """Connect and scan the QR; scan again if the page rotated it in between (under load)."""
    assert stack.manager is not None
    await stack.manager.connect(org)
    with trio.fail_after(60):
        while True:
            row = await stack.wait_state(org, "QR_CODE_PENDING", "CONNECTED")
            if row.state == "CONNECTED":
                return
            try:
                await stack.phone.scan_qr(account, row.qr_payload or "")
            except SimClientError as exc:
                if "stale QR" not in str(exc):
                    raise
                continue
            await stack.wait_state(org, "CONNECTED")
            return


async def test_a_browser_killed_until_its_supervisor_gives_up_leaves_the_other_org_running(
        state_dir: Path, dsn: str) -> None:
    async with open_stack(state_dir, dsn) as stack:
        # However slowly Chromium starts on this machine, six crashes fall in one period.
        stack.settings.daemon.org_restart_period_s = 3600.0
        await stack.phone.create_account("996700000031", "Doomed")
        await stack.phone.create_account("996700000032", "Steady")
        manager = await stack.start_daemon()  # with the real inbound and outbound actors
        stack.record_states()
        doomed, steady = await stack.new_org("Doomed"), await stack.new_org("Steady")
        await _link(stack, doomed, "996700000031")
        await _link(stack, steady, "996700000032")
        steady_handle = manager.running(steady)
        assert steady_handle is not None
        await stack.forget_states(doomed, steady)

        handle = manager.running(doomed)
        assert handle is not None
        actor = handle.session
        kills = 0
        with trio.fail_after(240):
            while (await stack.session(doomed)).state != "ERROR":
                # Kill each browser the actor opens, as soon as it is open.
                page = actor.session
                if page is not None and actor.browser_starts > kills:
                    pid = page.browser_pid()  # type: ignore[attr-defined]
                    if pid:
                        os.kill(pid, signal.SIGKILL)
                        kills = actor.browser_starts
                await trio.sleep(0.05)
        row = await stack.session(doomed)
        assert row.last_error is not None
        assert row.last_error.startswith("session actor kept failing: BrowserCrashed"), row.last_error
        assert not row.should_run
        assert handle.supervisor.restart_count("session") == handle.supervisor.intensity
        assert manager.running(doomed) is None

        # The other organization never changed state and runs its first browser still.
        assert steady not in stack.states, stack.states.get(steady)
        assert (await stack.session(steady)).state == "CONNECTED"
        assert manager.running(steady) is steady_handle
        assert steady_handle.session.browser_starts == 1
        assert steady_handle.supervisor.restart_count("session") == 0

        # ... and stores a message delivered after the other one failed.
        hello = await stack.phone.deliver("996700000032", "996555123456", "Still open?",
                                          push_name="Aigerim")
        wa_id = str(hello["id"]["_serialized"])
        with trio.fail_after(30):
            while await messages_repo.get_by_wa_id(stack.db, organization_id=steady,
                                                   wa_message_id=wa_id) is None:
                await trio.sleep(0.05)
