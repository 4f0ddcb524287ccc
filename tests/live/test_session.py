"""The browser session actor against the simulator, in a real Chromium, with a real database."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import trio

from tests.support.stack import Stack, open_stack
from wad.db.repo import sessions as sessions_repo
from wad.org.manager import OrgManager
from wad.sim.model import DEFAULT_VERSION


async def _daemon_and_linked_org(stack: Stack, account: str, name: str
                                 ) -> tuple[OrgManager, uuid.UUID]:
    """A phone account named `name`, the daemon started, and a new organization linked to the
    account by QR: (the daemon's manager, the organization)."""
    await stack.phone.create_account(account, name)
    manager = await stack.start_daemon()
    org = await stack.new_org()
    await stack.link_by_qr(org, account)
    return manager, org


async def test_link_by_qr_stores_rotating_payload_number_and_version(
        state_dir: Path, dsn: str) -> None:
    async with open_stack(state_dir, dsn) as stack:
        await stack.phone.create_account("996700000001", "Bishkek Tours")
        manager = await stack.start_daemon()
        stack.record_states()
        org = await stack.new_org()
        await manager.connect(org)
        first = await stack.wait_state(org, "QR_CODE_PENDING")
        assert first.qr_payload and len(first.qr_payload.split(",")) == 5
        assert first.qr_issued_at is not None
        with trio.fail_after(15):  # the page rotates Conn.ref by itself
            while (await stack.session(org)).qr_payload == first.qr_payload:
                await trio.sleep(0.1)
        current = await stack.session(org)
        await stack.phone.scan_qr("996700000001", current.qr_payload or "")
        row = await stack.wait_state(org, "CONNECTED")
        assert row.phone_number == "+996700000001"
        assert row.wa_version == DEFAULT_VERSION
        assert row.push_name == "Bishkek Tours"
        assert row.last_connected_at is not None and row.qr_payload is None
        # The row changes before the event is published and recorded.
        await stack.wait_published(org, "CONNECTED")
        assert stack.states[org][:2] == ["CONNECTING", "QR_CODE_PENDING"]
        assert stack.states[org][-1] == "CONNECTED"


async def test_link_by_pairing_code(state_dir: Path, dsn: str) -> None:
    async with open_stack(state_dir, dsn) as stack:
        await stack.phone.create_account("996700000002", "Osh Travel")
        manager = await stack.start_daemon()
        org = await stack.new_org()
        await manager.connect(org)
        await stack.wait_state(org, "QR_CODE_PENDING")
        code = await manager.request_pairing_code(org, "+996700000002")
        assert len(code) == 8
        row = await stack.wait_state(org, "PAIRING_CODE_PENDING")
        assert row.pairing_code == code
        await stack.phone.enter_pairing_code("996700000002", code)
        row = await stack.wait_state(org, "CONNECTED")
        assert row.phone_number == "+996700000002"


async def test_login_survives_restart_and_a_lost_profile(state_dir: Path, dsn: str) -> None:
    async with open_stack(state_dir, dsn) as stack:
        await stack.phone.create_account("996700000003", "Karakol Trek")
        await stack.start_daemon()
        stack.record_states()
        org = await stack.new_org()
        await stack.link_by_qr(org, "996700000003")
        await stack.stop_daemon()
        archives = await sessions_repo.list_archives(stack.db, organization_id=org)
        assert archives, "stopping stores the login archive"

        # Daemon start on the same profile: connected again, no QR.
        assert (await stack.session(org)).state == "DISCONNECTED"
        stack.states.clear()
        await stack.start_daemon()
        await stack.wait_published(org, "CONNECTED")
        assert "QR_CODE_PENDING" not in stack.states[org]
        await stack.stop_daemon()

        # The profile folder is lost (a new machine): restored from the database archive.
        profile = state_dir / "sessions" / f"org-{org}"
        idb_files = [p for p in profile.rglob("*") if p.is_file() and "IndexedDB" in str(p)
                     and p.stat().st_size > 64]
        assert idb_files
        sample = max(idb_files, key=lambda p: p.stat().st_size).read_bytes()[:64]
        latest = await sessions_repo.latest_archive(stack.db, organization_id=org)
        assert latest is not None and sample not in latest.archive  # encrypted at rest
        import shutil
        shutil.rmtree(profile)
        stack.states.clear()
        await stack.start_daemon()
        await stack.wait_published(org, "CONNECTED")
        assert "QR_CODE_PENDING" not in stack.states[org]
        assert profile.exists()
        devices = await stack.phone.devices("996700000003")
        assert len(devices) == 1  # the same linked device, not a new one


async def test_unlink_from_phone_logs_out_and_keeps_data(state_dir: Path, dsn: str) -> None:
    async with open_stack(state_dir, dsn) as stack:
        _, org = await _daemon_and_linked_org(stack, "996700000004", "Issyk-Kul Stay")
        await stack.stop_daemon()  # stores an archive
        manager = await stack.start_daemon()
        await stack.wait_state(org, "CONNECTED", timeout=30)
        before = await sessions_repo.list_archives(stack.db, organization_id=org)

        await stack.phone.unlink("996700000004")
        row = await stack.wait_state(org, "LOGGED_OUT")
        assert "phone" in (row.last_error or "")
        profile = state_dir / "sessions" / f"org-{org}"
        trash = list((state_dir / "sessions" / "trash").glob(f"org-{org}-*"))
        assert not profile.exists() and len(trash) == 1
        assert any(trash[0].rglob("*"))
        after = await sessions_repo.list_archives(stack.db, organization_id=org)
        assert {a.id for a in before} <= {a.id for a in after}  # nothing deleted
        assert (await stack.session(org)).should_run is False

        await manager.connect(org)
        row = await stack.wait_state(org, "QR_CODE_PENDING")
        assert row.qr_payload


async def test_conflict_ends_in_error_without_takeover(state_dir: Path, dsn: str) -> None:
    async with open_stack(state_dir, dsn) as stack:
        _, org = await _daemon_and_linked_org(stack, "996700000005", "Naryn")
        await stack.phone.conflict("996700000005")
        row = await stack.wait_state(org, "ERROR")
        assert "conflict" in (row.last_error or "")


async def test_conflict_is_taken_over_when_configured(state_dir: Path, dsn: str) -> None:
    async with open_stack(state_dir, dsn, takeover_on_conflict=True,
                          takeover_delay_s=0.5) as stack:
        await stack.phone.create_account("996700000006", "Talas")
        await stack.start_daemon()
        stack.record_states()
        org = await stack.new_org()
        await stack.link_by_qr(org, "996700000006")
        stack.states[org].clear()
        await stack.phone.conflict("996700000006")
        with trio.fail_after(20):
            while stack.states[org][-1:] != ["CONNECTED"] or "CONNECTING" not in stack.states[org]:
                await trio.sleep(0.1)
        assert "ERROR" not in stack.states[org]


async def test_ban_is_final_with_no_retry(state_dir: Path, dsn: str) -> None:
    async with open_stack(state_dir, dsn) as stack:
        manager, org = await _daemon_and_linked_org(stack, "996700000007", "Batken")
        handle = manager.running(org)
        assert handle is not None
        actor = handle.session
        await stack.phone.ban("996700000007")
        row = await stack.wait_state(org, "BANNED")
        assert "banned" in (row.last_error or "")
        await trio.sleep(3)  # longer than the whole reconnect schedule
        assert actor.browser_starts == 1
        assert manager.running(org) is None
        assert (await stack.session(org)).state == "BANNED"


async def test_deprecated_version_is_an_error(state_dir: Path, dsn: str) -> None:
    async with open_stack(state_dir, dsn) as stack:
        await stack.phone.set_deprecated(True)
        manager = await stack.start_daemon()
        org = await stack.new_org()
        await manager.connect(org)
        row = await stack.wait_state(org, "ERROR")
        assert "deprecated" in (row.last_error or "")


async def test_killed_browser_is_restarted_without_touching_another_org(
        state_dir: Path, dsn: str) -> None:
    async with open_stack(state_dir, dsn) as stack:
        await stack.phone.create_account("996700000008", "One")
        await stack.phone.create_account("996700000009", "Two")
        manager = await stack.start_daemon()
        stack.record_states()
        first, second = await stack.new_org("One"), await stack.new_org("Two")
        await stack.link_by_qr(first, "996700000008")
        await stack.link_by_qr(second, "996700000009")
        await stack.forget_states(first, second)
        handle = manager.running(first)
        assert handle is not None and handle.session.session is not None
        pid = handle.session.session.browser_pid()  # type: ignore[attr-defined]
        assert pid
        os.kill(pid, signal.SIGKILL)
        with trio.fail_after(30):
            while handle.session.browser_starts < 2 or not handle.session.connected.is_set():
                await trio.sleep(0.1)
        assert handle.supervisor.restart_count("session") == 1  # the actor was restarted
        assert "BrowserCrashed" in (handle.supervisor.last_restart("session") or ("", None))[0]
        assert (await stack.session(first)).state == "CONNECTED"
        assert "QR_CODE_PENDING" not in stack.states.get(first, [])
        assert "CONNECTING" in stack.states.get(first, [])
        assert second not in stack.states  # the other organization never changed state
        assert (await stack.session(second)).state == "CONNECTED"


async def test_hung_page_is_caught_by_the_health_check(state_dir: Path, dsn: str) -> None:
    async with open_stack(state_dir, dsn, health_check_interval_s=1.0,
                          health_check_timeout_s=1.0) as stack:
        manager, org = await _daemon_and_linked_org(stack, "996700000010", "Frozen")
        handle = manager.running(org)
        assert handle is not None
        await stack.phone.freeze("996700000010", seconds=None)
        with trio.fail_after(40):
            while handle.session.browser_starts < 2 or not handle.session.connected.is_set():
                await trio.sleep(0.1)
        row = await stack.session(org)
        assert row.state == "CONNECTED"
        assert "health check" in (row.last_error or "") or row.last_connected_at is not None

