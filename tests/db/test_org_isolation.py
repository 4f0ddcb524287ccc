"""One organization's failure never reaches another (SPEC's first promise), on Trio's mock clock.

The real organization manager, its per-organization supervisors and the real inbound actor run
against a real PostgreSQL on virtual time (tests/virtual_time.py). Only the browser session
actor is a stand-in: Chromium cannot run on virtual time. The same with real Chromium, killing
one organization's browser, is in tests/live/test_org_isolation_live.py.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import trio
import trio.testing

from tests.virtual_time import virtual_time_database
from wad.browser import events as ev
from wad.bus import EventBus
from wad.config import DaemonSettings, InboundSettings, Settings
from wad.db.pool import Database
from wad.db.repo import messages as messages_repo
from wad.db.repo import organizations
from wad.db.repo import sessions as sessions_repo
from wad.org.inbound.actor import inbound_actor
from wad.org.manager import OrgManager
from wad.org.session import BrowserCrashed

NO_DELAYS = InboundSettings(processing_delay_min_s=0, processing_delay_max_s=0,
                            reply_delay_min_s=0, reply_delay_max_s=0,
                            enrichment_pause_min_s=0, enrichment_pause_max_s=0)


class FakeSession:
    """A session actor whose browser either connects at once or crashes a second after it
    opens (when its organization is in `crashing`), like `SessionActor` does on a crash."""

    def __init__(self, crashing: set[uuid.UUID], starts: dict[uuid.UUID, int], *,
                 org_id: uuid.UUID, db: Database, bus: EventBus,
                 inbound: trio.MemorySendChannel[Any], **_: Any) -> None:
        self.org_id, self.db, self.bus, self.inbound = org_id, db, bus, inbound
        self.crashing, self.starts = crashing, starts
        self.state = "DISCONNECTED"
        self.session = None
        self.browser_starts = 0
        self.connected = trio.Event()
        self.page_open = trio.Event()
        self.finished = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[FakeSession] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        await sessions_repo.ensure(self.db, organization_id=self.org_id)
        task_status.started(self)
        self.browser_starts += 1
        self.starts[self.org_id] = self.starts.get(self.org_id, 0) + 1
        if self.org_id in self.crashing:
            await sessions_repo.set_state(self.db, organization_id=self.org_id,
                                          state="CONNECTING")
            await trio.sleep(1)
            raise BrowserCrashed("browser crashed")
        self.state = "CONNECTED"
        await sessions_repo.set_state(self.db, organization_id=self.org_id, state="CONNECTED")
        self.connected.set()
        await trio.sleep_forever()


async def _state(db: Database, org: uuid.UUID) -> tuple[str, str | None]:
    row = await sessions_repo.get(db, organization_id=org)
    assert row is not None
    return row.state, row.last_error


async def test_a_crash_looping_organization_ends_error_and_never_touches_another(
        mock_clock: trio.testing.MockClock, dsn: str, state_dir: Path) -> None:
    async with virtual_time_database(mock_clock, dsn) as db:
        bad = (await organizations.create(db, name="Crashing")).id
        good = (await organizations.create(db, name="Healthy")).id
        for org in (bad, good):
            await sessions_repo.ensure(db, organization_id=org)
            await sessions_repo.set_should_run(db, organization_id=org, should_run=True)
        settings = Settings(daemon=DaemonSettings(state_dir=str(state_dir)), inbound=NO_DELAYS)
        starts: dict[uuid.UUID, int] = {}
        sessions: dict[uuid.UUID, FakeSession] = {}

        def session_factory(**kwargs: Any) -> FakeSession:
            sessions[kwargs["org_id"]] = FakeSession({bad}, starts, **kwargs)
            return sessions[kwargs["org_id"]]

        manager = OrgManager(settings=settings, db=db, driver=None, bus=EventBus(),
                             actors=[inbound_actor], session_factory=session_factory)
        async with trio.open_nursery() as nursery:
            await nursery.start(manager.run)
            with trio.fail_after(600):  # virtual seconds
                while (await _state(db, bad))[0] != "ERROR":
                    await trio.sleep(1)
            state, reason = await _state(db, bad)
            assert reason is not None and "BrowserCrashed: browser crashed" in reason, reason
            assert starts[bad] > 5  # more restarts than the supervisor's intensity allows
            row = await sessions_repo.get(db, organization_id=bad)
            assert row is not None and not row.should_run
            crashes = starts[bad]

            # Long after, the healthy organization still runs its first and only browser.
            await trio.sleep(120)
            assert (await _state(db, good))[0] == "CONNECTED"
            assert starts[good] == 1
            assert manager.running(bad) is None
            assert manager.running(good) is not None
            assert starts[bad] == crashes  # not claimed and started again in a loop

            # ... and stores a message delivered after the other one failed.
            message = ev.Message(id="false_996555123456@c.us_0000000000000000000A",
                                 from_me=False, chat_id="996555123456@c.us", type="chat",
                                 body="Still here?", timestamp=1751360400, push_name="Aigerim",
                                 ack=0)
            await sessions[good].inbound.send(ev.MessageReceived(message=message))
            with trio.fail_after(60):
                while await messages_repo.get_by_wa_id(db, organization_id=good,
                                                       wa_message_id=message.id) is None:
                    await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
