"""Owner leases on real PostgreSQL connections: renewed by their owner, and once expired, the
stale owner's lock connection is ended by another daemon, which can then claim the
organization."""

from __future__ import annotations

import uuid
from pathlib import Path

import trio

from tests.support.outage import OwnDatabase, own_database
from wad.config import Settings
from wad.db.pool import Database
from wad.db.repo import organizations
from wad.org.ownership import Lease, Ownership, keepalive_settings, lock_connection, lock_key


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


async def test_the_lock_connection_asks_for_tcp_keepalive(db: Database) -> None:
    settings = Settings()
    async with lock_connection(db, settings) as owner:
        rows = await owner.conn.fetch(
            "SELECT name, source, reset_val FROM pg_settings WHERE name LIKE 'tcp_keepalives_%'")
    asked = {r["name"]: (r["source"], r["reset_val"]) for r in rows}
    seconds = str(settings.daemon.tcp_keepalive_s)
    # Asked for by the client at connection start (on a unix socket the kernel has no TCP
    # keepalive to apply, so SHOW reads 0; over TCP these are the socket's values).
    assert asked == {"tcp_keepalives_idle": ("client", seconds),
                     "tcp_keepalives_interval": ("client", seconds),
                     "tcp_keepalives_count": ("client", "3")}


async def test_after_a_database_restart_the_owner_takes_back_what_no_one_claimed(
        state_dir: Path, aio_loop: None) -> None:
    """A restart drops every lock. For `lease_s` after it, an organization stays its previous
    owner's to take again (another daemon's claim is refused); the owner takes back only what
    no other daemon claimed meanwhile."""
    async with own_database(state_dir) as own:
        async with Database.open(own.dsn, min_size=1, max_size=1) as db:
            kept, taken, gone = [(await organizations.create(db, name=name)).id
                                 for name in ("Kept", "Taken", "Gone")]
        lost = await _lose_to_a_restart(own, [kept, taken, gone])
        async with Database.open(own.dsn, min_size=1, max_size=2) as db, \
                db.dedicated() as second_conn, db.dedicated() as first_conn:
            second = Ownership(second_conn, "second")
            await second.setup()
            assert second.server_started != lost.server_started
            # Reserved for the previous owner for lease_s after the restart ...
            assert not await second.try_claim(kept, lease_s=60.0)
            assert lock_key(kept) not in await second.held_keys()  # given back at once
            # ... but claimed with a shorter grace (the restart is older than that): another
            # daemon that took "Taken" and still holds it, and one that took "Gone" and died.
            assert await second.try_claim(taken, lease_s=0.001)
            async with db.dedicated() as third_conn:
                third = Ownership(third_conn, "third")
                await third.setup()
                assert await third.try_claim(gone, lease_s=0.001)
            first = Ownership(first_conn, "first")
            await first.setup()
            await first.end_previous(lost)  # a no-op: that session ended with the server
            assert await first.retake(kept, lost, lease_s=60.0)
            assert not await first.retake(taken, lost, lease_s=60.0)  # locked by another
            assert not await first.retake(gone, lost, lease_s=60.0)  # claimed meanwhile
            assert await first.held_keys() >= {lock_key(kept), lock_key(taken)}
            assert lock_key(gone) not in await first.held_keys()  # not kept by the failed try
            assert await first.renew(lease_s=60.0) == {kept}  # the lease moved to it


async def _lose_to_a_restart(own: OwnDatabase, org_ids: list[uuid.UUID]) -> Ownership:
    """The first daemon's lock connection, owning those organizations, lost as the server
    restarts (fast shutdown, then start)."""
    async with Database.open(own.dsn, min_size=1, max_size=1) as db, \
            db.dedicated() as conn:
        first = Ownership(conn, "first")
        await first.setup()
        for org_id in org_ids:
            assert await first.try_claim(org_id, lease_s=60.0)
        await own.stop()
        await own.start()
        assert not await first.alive(timeout=5)
    return first
