"""`wad send` and `wad settings` against the real API on its unix control socket (the command
runs in a worker thread, as a separate process would block on the socket)."""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
import trio

from tests.support import api as api_support
from tests.support.api import LiveApi
from wad import log
from wad.cli import main as cli
from wad.db.repo import outbox as outbox_repo
from wad.db.repo import sessions as sessions_repo

live_api = api_support.live_api


@pytest.fixture(autouse=True)
def daemon_logs_to_stderr() -> Iterator[None]:
    """The daemon answering the CLI runs in this process: its log lines (the audit trail's
    among them) go to stderr here, so that stdout is the CLI's alone, as in production."""
    saved = structlog.get_config()
    log.configure(fmt="console", level="info", stream=sys.stderr)
    yield
    structlog.configure(**saved)


class Wad:
    def __init__(self, api: LiveApi, capsys: pytest.CaptureFixture[str]) -> None:
        self.api = api
        self.capsys = capsys

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        self.capsys.readouterr()

        def run() -> int:
            try:
                return cli.main([*argv, "--socket", str(self.api.socket_path)])
            except SystemExit as exc:
                return int(exc.code or 0)

        with trio.fail_after(30):
            code = await trio.to_thread.run_sync(run)
        out = self.capsys.readouterr()
        return code, out.out, out.err

    async def ok(self, *argv: str) -> str:
        code, out, err = await self(*argv)
        assert code == 0, (argv, out, err)
        return out


async def test_wad_send_queues_and_repeats_nothing_with_a_key(
        live_api: LiveApi, capsys: pytest.CaptureFixture[str]) -> None:
    wad = Wad(live_api, capsys)
    org = await live_api.create_org("Issyk-Kul Tours")
    out = await wad.ok("send", "issyk-kul tours", "--to", "+996 555 123 456", "--text",
                       "Ваш тур подтверждён", "--priority", "10", "--key", "booking-7")
    queued_id = out.split()[1]
    assert out == (f"queued {queued_id} for +996555123456 (Issyk-Kul Tours, priority 10)\n")
    item = await outbox_repo.get(live_api.ctx.db, outbox_id=uuid.UUID(queued_id))
    assert item is not None
    assert (item.organization_id, item.content, item.priority) == (
        org, "Ваш тур подтверждён", 10)
    again = await wad.ok("send", str(org), "--to", "+996555123456", "--text", "x",
                         "--key", "booking-7", "--json")
    assert json.loads(again)["id"] == queued_id
    assert json.loads(again)["created"] is False

    code, out, err = await wad("send", str(org), "--to", "555123456", "--text", "hi")
    assert code == 1
    assert err.startswith("wad: `to`: '555123456' has no country code")
    code, _, err = await wad("send", str(org), "--text", "hi")
    assert code == 1
    assert "needs --to NUMBER and --text TEXT" in err


async def test_wad_send_says_which_limit_refused(live_api: LiveApi,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    wad = Wad(live_api, capsys)
    org = await live_api.create_org("Tours")
    await wad.ok("settings", str(org), "--set", "messagesPerMinute=1", "--set",
                 "rateLimiting.messagesPerHour=1", "--set", "messagesPerDay=1")
    await wad.ok("send", str(org), "--to", "+996555123456", "--text", "one")
    code, _, err = await wad("send", str(org), "--to", "+996555123456", "--text", "two")
    assert code == 1
    assert err.startswith("wad: hour limit reached: at most 1 messages an hour; 0 remaining;")


async def test_wad_settings_shows_and_changes(live_api: LiveApi,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    wad = Wad(live_api, capsys)
    org = await live_api.create_org("Tours")
    shown = await wad.ok("settings", "Tours")
    assert shown.splitlines() == [
        f"Tours ({org})",
        "  rateLimiting.messagesPerMinute       10",
        "  rateLimiting.messagesPerHour         100",
        "  rateLimiting.messagesPerDay          500",
        "  rateLimiting.concurrency             3",
        "  safety.enableMassSending             false",
        "  safety.requireConfirmation           true",
        "  safety.maxBatchSize                  50"]
    changed: dict[str, Any] = json.loads(await wad.ok(
        "settings", "Tours", "--set", "rateLimiting.messagesPerMinute=15", "--set",
        "enableMassSending=true", "--json"))
    assert changed["rateLimiting"]["messagesPerMinute"] == 15
    assert changed["safety"]["enableMassSending"] is True
    code, _, err = await wad("settings", "Tours", "--set", "messagesPerHour=5")
    assert code == 1
    assert err == "wad: `rateLimiting.messagesPerHour`: must be at least messagesPerMinute (15)\n"
    code, _, err = await wad("settings", "Tours", "--set", "speed=3")
    assert code == 1
    assert "unknown setting" in err


async def test_wad_send_resume(live_api: LiveApi, capsys: pytest.CaptureFixture[str]) -> None:
    wad = Wad(live_api, capsys)
    org = await live_api.create_org("Tours")
    assert await wad.ok("send", "resume", "Tours") == "Tours: sending was not paused\n"
    await sessions_repo.set_sending_paused(live_api.ctx.db, organization_id=org, paused=True,
                                           reason="3 of the latest 3 sends failed")
    assert await wad.ok("send", "resume", "Tours") == (
        "Tours: sending resumed (it was paused: 3 of the latest 3 sends failed)\n")
    row = await sessions_repo.get(live_api.ctx.db, organization_id=org)
    assert row is not None
    assert row.sending_paused is False


async def test_wad_send_wait_follows_the_message_until_it_is_sent(
        live_api: LiveApi, capsys: pytest.CaptureFixture[str]) -> None:
    wad = Wad(live_api, capsys)
    org = await live_api.create_org("Tours")
    db = live_api.ctx.db
    result: dict[str, tuple[int, str, str]] = {}

    async def send() -> None:
        result["send"] = await wad("send", "Tours", "--to", "+996555123456", "--text", "hi",
                                   "--wait", "--timeout", "20")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send)
        with trio.fail_after(20):  # play the sender: claim it, then WhatsApp confirms it
            while (item := await outbox_repo.claim_next(db, organization_id=org,
                                                        wa_message_id="3EB0AA")) is None:
                await trio.sleep(0.1)
            await trio.sleep(1.0)
            await outbox_repo.mark_sent(db, outbox_id=item.id)
    code, out, err = result["send"]
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"queued {item.id} for +996555123456 (Tours, priority 1)"
    assert lines[-1] == "SENT (attempt 1)"
    assert "SENDING (attempt 1)" in lines


async def test_wad_send_cancel_cancels_a_queued_message_once(
        live_api: LiveApi, capsys: pytest.CaptureFixture[str]) -> None:
    wad = Wad(live_api, capsys)
    org = await live_api.create_org("Issyk-Kul Tours")
    out = await wad.ok("send", str(org), "--to", "+996555123456", "--text", "передумали")
    queued_id = out.split()[1]
    out = await wad.ok("send", "cancel", queued_id)
    assert out == f"cancelled {queued_id} (to +996555123456); it will not be sent\n"
    item = await outbox_repo.get(live_api.ctx.db, outbox_id=uuid.UUID(queued_id))
    assert item is not None
    assert item.status == "CANCELLED"
    code, out, err = await wad("send", "cancel", queued_id)
    assert code == 1
    assert err == ("wad: the message is CANCELLED: only a QUEUED message can be cancelled\n")
    code, out, err = await wad("send", "cancel", str(uuid.uuid4()))
    assert code == 1
    assert err.startswith("wad: no such message")
