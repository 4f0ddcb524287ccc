"""Session status changes published on the bus reach the plugins' notification hook."""

import uuid
from typing import Any

import trio

from tests.support.bus_helpers import event
from wad import hookimpl
from wad.bus import EventBus
from wad.config import PluginSettings
from wad.notifications import forward_session_status
from wad.plugins import get_plugin_manager


class Recorder:
    def __init__(self) -> None:
        self.changes: list[Any] = []

    @hookimpl
    async def wad_session_status_changed(self, ctx: Any, change: Any) -> None:
        self.changes.append(change)


async def test_changes_are_forwarded_once_each_with_from_and_to() -> None:
    bus = EventBus()
    pm = get_plugin_manager(PluginSettings(entry_points=False), builtins=False, bundled=False)
    recorder = Recorder()
    pm.register(recorder, "recorder")
    org = uuid.uuid4()
    async with trio.open_nursery() as nursery:
        await nursery.start(forward_session_status, bus, pm)
        bus.publish(event("session.status", org, {
            "state": "QR_CODE_PENDING", "previous": "CONNECTING", "qr": "a,b,c,d,e"}))
        bus.publish(event("session.status", org, {
            "state": "QR_CODE_PENDING", "previous": "QR_CODE_PENDING", "qr": "f,g,h,i,j"}))
        bus.publish(event("session.status", org, {
            "state": "BANNED", "previous": "QR_CODE_PENDING",
            "last_error": "account banned (TOS_BLOCK)"}))
        with trio.fail_after(5):
            while len(recorder.changes) < 2:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    first, second = recorder.changes
    assert (first.from_state, first.to_state) == ("CONNECTING", "QR_CODE_PENDING")
    assert (second.from_state, second.to_state) == ("QR_CODE_PENDING", "BANNED")
    assert second.reason == "account banned (TOS_BLOCK)"
    assert first.organization_id == org
    assert len(recorder.changes) == 2  # a QR rotation is not a status change


class Failing:
    @hookimpl
    async def wad_session_status_changed(self, ctx: Any, change: Any) -> None:
        raise RuntimeError("boom")


async def test_plugin_errors_are_reported_to_listeners() -> None:
    from wad.payloads import SessionStatusChange
    from wad.plugins import notify

    pm = get_plugin_manager(PluginSettings(entry_points=False), builtins=False, bundled=False)
    pm.register(Failing(), "failing")
    recorder = Recorder()
    pm.register(recorder, "recorder")
    seen: list[tuple[str, str]] = []
    pm.on_error.append(lambda plugin, hook: seen.append((plugin, hook)))
    from datetime import UTC, datetime
    change = SessionStatusChange(organization_id=uuid.uuid4(), from_state=None,
                                 to_state="CONNECTING", at=datetime.now(UTC))
    await notify(pm, "wad_session_status_changed", change=change)
    assert seen == [("failing", "wad_session_status_changed")]
    assert recorder.changes == [change]  # the pipeline went on
