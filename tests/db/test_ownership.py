"""Owner leases on real PostgreSQL connections: renewed by their owner, and once expired, the
stale owner's lock connection is ended by another daemon, which can then claim the
organization."""

from __future__ import annotations

import trio

from wad.config import Settings
from wad.db.pool import Database
from wad.db.repo import organizations
from wad.org.ownership import Lease, Ownership, keepalive_settings, lock_key


async def test_an_expired_lease_lets_another_daemon_end_the_owner_and_claim(
        db: Database) -> None:
    org = (await organizations.create(db, name="Leased Tours")).id
    other_org = (await organizations.create(db, name="Unleased Tours")).id
    # The manager's keepalive settings are accepted (they take effect on TCP connections only;
    # the embedded cluster listens on a unix socket).
    async with db.dedicated(server_settings=keepalive_settings(Settings())) as first_conn, \
            db.dedicated() as second_conn:
        first, second = Ownership(first_conn, "first"), Ownership(second_conn, "second")
        await first.setup()
        await second.setup()
        assert await first.try_claim(org, lease_s=1.0)
        assert not await second.try_claim(org, lease_s=1.0)  # held
        assert await first.renew(lease_s=1.0) == {org}
        assert await second.end_expired_owners([org]) == []  # the lease is fresh
        with trio.fail_after(10):
            while not (freed := await second.end_expired_owners([org])):
                await trio.sleep(0.1)  # the owner stopped renewing (frozen)
        assert freed == [org]
        with trio.fail_after(10):
            while lock_key(org) in await second.held_keys():
                await trio.sleep(0.05)
        assert await second.try_claim(org, lease_s=1.0)
        assert not await first.alive(timeout=2)  # its connection was ended
        # An organization whose lock is not held is never "freed" by ending anyone.
        assert await second.end_expired_owners([other_org]) == []


async def test_a_lease_is_valid_until_its_deadline_and_never_again_once_lost() -> None:
    lease = Lease(valid_until=trio.current_time() + 0.05)
    assert lease.valid()
    with trio.fail_after(1):
        while lease.valid():
            await trio.sleep(0.01)
    async with trio.open_nursery() as nursery:
        waited = trio.Event()

        async def waiter() -> None:
            await lease.wait_valid()
            waited.set()

        nursery.start_soon(waiter)
        await trio.sleep(0.05)
        assert not waited.is_set()
        lease.extend(trio.current_time() + 10)
        with trio.fail_after(1):
            await waited.wait()
    lease.lose()
    assert not lease.valid()
    with trio.move_on_after(0.1) as scope:
        await lease.wait_valid()
    assert scope.cancelled_caught  # a lost lease never comes back
    assert Lease().valid()  # no manager: always valid
