"""Shared-browser mode against the simulator: organizations in browser contexts of one Chromium
keep separate logins that survive a killed browser, a daemon restart and a lost profile."""

from __future__ import annotations

import os
import shutil
import signal
import uuid
from pathlib import Path

import trio

from tests.support.stack import Stack, open_stack
from wad.browser.shared import STORAGE_FILE, SharedBrowsers, SharedSession
from wad.db.repo import sessions as sessions_repo


def _shared_session(stack: Stack, org: uuid.UUID) -> SharedSession:
    assert stack.manager is not None
    handle = stack.manager.running(org)
    assert handle is not None
    session = handle.session.session
    assert isinstance(session, SharedSession)
    return session


async def _login_saved(stack: Stack, org: uuid.UUID) -> None:
    """Wait until the connected session wrote its login (`storage.json`), as it does right
    after connecting."""
    with trio.fail_after(30):
        while _shared_session(stack, org).storage_saves < 1:
            await trio.sleep(0.05)


async def test_killed_shared_browser_restarts_only_its_orgs_without_a_qr(
        state_dir: Path, dsn: str) -> None:
    async with open_stack(state_dir, dsn, browser_mode="shared", orgs_per_browser=2) as stack:
        pool = stack.driver
        assert isinstance(pool, SharedBrowsers)
        numbers = ["996700020001", "996700020002", "996700020003"]
        for number in numbers:
            await stack.phone.create_account(number, f"Shared {number[-1]}")
        manager = await stack.start_daemon()
        stack.record_states()
        orgs = [await stack.new_org(f"Shared {n[-1]}") for n in numbers]
        for org, number in zip(orgs, numbers, strict=True):
            await stack.link_by_qr(org, number)
        first, second, third = (_shared_session(stack, o) for o in orgs)
        # Two organizations per browser: the first two share one, the third has another.
        assert first.browser is second.browser and third.browser is not first.browser
        assert len({p.pid for p in pool.browsers}) == 2
        victim, bystander = first.browser, third.browser
        assert victim.pid and bystander.pid
        for org in orgs:
            await _login_saved(stack, org)
        await stack.forget_states(*orgs)
        handles = [manager.running(o) for o in orgs]
        assert all(h is not None for h in handles)

        os.kill(victim.pid, signal.SIGKILL)

        with trio.fail_after(60):
            for handle in handles[:2]:
                assert handle is not None
                while handle.session.browser_starts < 2 or not handle.session.connected.is_set():
                    await trio.sleep(0.1)
        for org, handle in zip(orgs[:2], handles[:2], strict=True):
            assert handle is not None
            assert handle.supervisor.restart_count("session") == 1
            assert "BrowserCrashed" in (handle.supervisor.last_restart("session") or ("", None))[0]
            assert (await stack.session(org)).state == "CONNECTED"
            assert "QR_CODE_PENDING" not in stack.states.get(org, [])
            assert "CONNECTING" in stack.states.get(org, [])
        # Both came back in live browsers (a new one, or the room left in the other one); the
        # other browser was not touched.
        for session in (_shared_session(stack, o) for o in orgs[:2]):
            assert session.alive and session.browser.alive
            assert session.browser.pid not in (None, victim.pid)
        assert not victim.alive and victim not in pool.browsers
        assert _shared_session(stack, orgs[2]) is third and third.alive
        assert third.browser is bystander and bystander.alive
        assert bystander.pid == third.browser_pid()
        assert await trio.Path(f"/proc/{bystander.pid}").exists()
        assert orgs[2] not in stack.states  # never changed state
        assert (await stack.session(orgs[2])).state == "CONNECTED"
        assert manager.running(orgs[2]) is handles[2]
        assert handles[2] is not None and handles[2].session.browser_starts == 1
        for number in numbers:  # the same linked device each, no new link
            assert len(await stack.phone.devices(number)) == 1


async def test_shared_login_survives_restart_and_a_lost_profile(
        state_dir: Path, dsn: str) -> None:
    async with open_stack(state_dir, dsn, browser_mode="shared") as stack:
        numbers = ["996700020011", "996700020012"]
        for number in numbers:
            await stack.phone.create_account(number, f"Kept {number[-1]}")
        await stack.start_daemon()
        stack.record_states()
        orgs = [await stack.new_org(f"Kept {n[-1]}") for n in numbers]
        for org, number in zip(orgs, numbers, strict=True):
            await stack.link_by_qr(org, number)
        assert _shared_session(stack, orgs[0]).browser is _shared_session(stack, orgs[1]).browser
        await stack.stop_daemon()
        profiles = [state_dir / "sessions" / f"org-{org}" for org in orgs]
        for org, profile in zip(orgs, profiles, strict=True):
            # The whole login of a shared-mode profile is its storage state.
            assert (profile / STORAGE_FILE).stat().st_mode & 0o077 == 0
            assert not (profile / "Default").exists()
            assert await sessions_repo.list_archives(stack.db, organization_id=org)
        # Separate logins: each file holds its own account's identity only.
        texts = [(p / STORAGE_FILE).read_text() for p in profiles]
        assert texts[0] != texts[1]

        # A daemon start on the same profiles: connected again, no QR.
        stack.states.clear()
        await stack.start_daemon()
        for org in orgs:
            await stack.wait_published(org, "CONNECTED")
            assert "QR_CODE_PENDING" not in stack.states[org]
        await stack.stop_daemon()

        # The profile folders are lost (a new machine): restored from the database archives.
        for profile in profiles:
            shutil.rmtree(profile)
        stack.states.clear()
        await stack.start_daemon()
        for org, number, profile in zip(orgs, numbers, profiles, strict=True):
            await stack.wait_published(org, "CONNECTED")
            assert "QR_CODE_PENDING" not in stack.states[org]
            assert (profile / STORAGE_FILE).exists()
            row = await stack.session(org)
            assert row.phone_number == f"+{number}"
            assert len(await stack.phone.devices(number)) == 1  # the same linked device
