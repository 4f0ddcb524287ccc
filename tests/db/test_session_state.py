"""The session actor's state changes: each one written and announced (logged and published on
the bus), even when the call that made it was cancelled during its write. Real PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import trio

from wad.bus import EventBus, SessionStatus
from wad.config import DaemonSettings, Settings
from wad.db.pool import Database
from wad.db.repo import organizations
from wad.db.repo import sessions as sessions_repo
from wad.org.session import SessionActor


async def test_a_change_whose_write_was_cancelled_is_announced_by_the_next_call(
        db: Database, state_dir: Path) -> None:
    org = (await organizations.create(db, name="Tours")).id
    bus = EventBus()
    actor = SessionActor(org_id=org, settings=Settings(
        daemon=DaemonSettings(state_dir=str(state_dir))), db=db, driver=None, bus=bus)
    with bus.subscribe(org_id=org, kinds={SessionStatus}) as events:
        await actor._set_state("CONNECTED")
        # A crash: the close event's handler enters CONNECTING, and the run fails around it
        # while its write is under way (cancelled before anything was announced) ...
        with trio.move_on_after(0):
            await actor._set_state("CONNECTING", last_error="browser closed")
        # ... then the crash path enters the same state with its reason.
        await actor._set_state("CONNECTING", last_error="browser gone")
        published: list[SessionStatus] = []
        while True:
            try:
                event = events.receive_nowait()
            except trio.WouldBlock:
                break
            assert isinstance(event, SessionStatus)
            published.append(event)
    assert [(e.previous, e.state, e.last_error) for e in published] == [
        ("DISCONNECTED", "CONNECTED", None), ("CONNECTED", "CONNECTING", "browser gone")]
    row = await sessions_repo.get(db, organization_id=org)
    assert row is not None and (row.state, row.last_error) == ("CONNECTING", "browser gone")
