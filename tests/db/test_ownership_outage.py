"""The organization manager across a database outage, on a cluster the test stops: when the
database returns, an organization that another daemon claimed meanwhile is stopped at once,
and its lease is never valid again from the loss on (nothing is sent: the outbound actor sends
only while the lease is valid)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import trio

from tests.support.outage import own_database
from wad.bus import EventBus
from wad.config import DaemonSettings, Settings
from wad.db.pool import Database
from wad.db.repo import organizations
from wad.db.repo import sessions as sessions_repo
from wad.org.manager import OrgManager
from wad.org.ownership import Lease, Ownership, lock_key


class IdleSession:
    """A session actor stand-in that connects and stays (no browser); keeps its lease."""

    def __init__(self, *, org_id: uuid.UUID, lease: Lease, **_: Any) -> None:
        self.org_id, self.lease = org_id, lease
        self.state = "CONNECTED"
        self.browser_starts = 1
        self.session = None
        self.page_open = trio.Event()
        self.connected = trio.Event()
        self.finished = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[IdleSession] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started(self)
        self.connected.set()
        await trio.sleep_forever()


async def test_an_organization_claimed_elsewhere_during_an_outage_is_stopped_when_it_ends(
        state_dir: Path, aio_loop: None) -> None:
    async with own_database(state_dir, setup_sql="CREATE ROLE daemon_a LOGIN SUPERUSER") as own:
        async with Database.open(own.dsn, min_size=1, max_size=1) as admin:
            org = (await organizations.create(admin, name="Claimed Meanwhile")).id
            await sessions_repo.ensure(admin, organization_id=org)
            await sessions_repo.set_should_run(admin, organization_id=org, should_run=True)
        user = own.dsn.split("//", 1)[1].split("@", 1)[0]
        settings = Settings(daemon=DaemonSettings(
            state_dir=str(state_dir), node_id="daemon-a", claim_interval_s=0.5,
            lock_check_interval_s=0.2, lease_s=30.0, lease_renew_interval_s=0.5))
        sessions: list[IdleSession] = []

        def session_factory(**kwargs: Any) -> IdleSession:
            sessions.append(IdleSession(**kwargs))
            return sessions[-1]

        async with Database.open(own.dsn.replace(f"//{user}@", "//daemon_a@"), min_size=1,
                                 max_size=2) as a_db, trio.open_nursery() as nursery:
            manager = OrgManager(settings=settings, db=a_db, driver=None, bus=EventBus(),
                                 actors=[], session_factory=session_factory)
            await nursery.start(manager.run)
            with trio.fail_after(20):
                while manager.running(org) is None or not sessions[-1].lease.valid():
                    await trio.sleep(0.05)
            session = sessions[-1]
            async with Database.open(own.dsn, min_size=1, max_size=1) as admin:
                await admin.execute("ALTER ROLE daemon_a NOLOGIN")  # kept out after the restart

            valid_after_loss: list[bool] = []

            async def watch_lease() -> None:
                """From the loss (the lease lapses) until the organization is stopped."""
                while session.lease.valid():
                    await trio.sleep(0.01)
                while manager.running(org) is not None:
                    valid_after_loss.append(session.lease.valid())
                    await trio.sleep(0.01)

            nursery.start_soon(watch_lease)
            await own.stop()
            with trio.fail_after(20):  # the loss is seen: the lease lapses, the session stays
                while session.lease.valid():
                    await trio.sleep(0.05)
            await own.start()
            async with Database.open(own.dsn, min_size=1, max_size=2) as db, \
                    db.dedicated() as conn:
                other = Ownership(conn, "daemon-b")
                await other.setup()
                # Another daemon claims it (with a grace shorter than the time since the
                # restart) while daemon A cannot log in yet.
                assert await other.try_claim(org, lease_s=0.001)
                assert await other.renew(lease_s=60.0) == {org}  # and keeps it (not expired)
                assert manager.running(org) is not None and not session.lease.valid()
                await db.execute("ALTER ROLE daemon_a LOGIN")
                with trio.fail_after(30):
                    while manager.running(org) is not None:
                        await trio.sleep(0.05)
                assert session.lease.lost
                assert lock_key(org) in await other.held_keys()
                assert await other.renew(lease_s=60.0) == {org}  # still the other's lease
            assert valid_after_loss and not any(valid_after_loss)
            nursery.cancel_scope.cancel()
