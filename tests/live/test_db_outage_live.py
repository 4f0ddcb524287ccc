"""A database outage while an organization is connected: the page stays up, nothing dies, and
everything the organization did meanwhile reaches the database once it is back.

The database is a cluster of the test's own, stopped for 30 s while the session is connected:
a login archive save falls due, the account is opened elsewhere and taken back (two state
changes), and clients write. The same browser process carries the session through; the
messages are stored once; the state changes are written in order, each with its own time."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from tests.support.inbound import org_actors, stored, wa_id
from tests.support.outage import own_database
from tests.support.stack import open_stack
from wad.org.inbound.spool import spool_path

ACCOUNT = "996700200400"
OUTAGE_S = 30.0

# Every write of the session row, in the order the database saw them.
STATE_LOG = """
CREATE TABLE test_state_log (
    n bigserial PRIMARY KEY, state text NOT NULL, last_error text,
    last_connected_at timestamptz, last_disconnected_at timestamptz,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE FUNCTION test_log_state() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO test_state_log (state, last_error, last_connected_at, last_disconnected_at)
    VALUES (NEW.state, NEW.last_error, NEW.last_connected_at, NEW.last_disconnected_at);
    RETURN NEW;
END $$;
CREATE TRIGGER test_log_state AFTER UPDATE OF state ON whatsapp_sessions
    FOR EACH ROW EXECUTE FUNCTION test_log_state();
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_30s_database_outage_keeps_the_page_up_and_writes_everything_after(
        state_dir: Path, aio_loop: None) -> None:
    async with own_database(state_dir, setup_sql=STATE_LOG) as own:
        async with open_stack(state_dir, own.dsn, archive_interval_s=5.0,
                              takeover_on_conflict=True, takeover_delay_s=0.5) as stack:
            await stack.phone.create_account(ACCOUNT, "Karakol Tours")
            org = await stack.new_org()
            stack.record_states()
            async with org_actors(stack, org, outbound=True) as actor:
                session = actor.ctx.session
                row = await stack.wait_state(org, "QR_CODE_PENDING")
                await stack.phone.scan_qr(ACCOUNT, row.qr_payload or "")
                await stack.wait_state(org, "CONNECTED")
                with trio.fail_after(30):  # the first archive, soon after connecting
                    while not await stack.db.fetchval(
                            "SELECT count(*) FROM session_archives WHERE organization_id = $1",
                            org):
                        await trio.sleep(0.1)
                assert session.session is not None
                pid = session.session.browser_pid()  # type: ignore[attr-defined]
                assert pid is not None and alive(pid)
                starts = session.browser_starts
                await stack.forget_states(org)

                # The outage ------------------------------------------------------------------
                await own.stop()
                down_at = trio.current_time()
                # Opened on another computer and taken back: CONNECTING, then CONNECTED.
                await stack.phone.conflict(ACCOUNT)
                await stack.wait_published(org, "CONNECTING")
                await stack.wait_published(org, "CONNECTED")
                assert session.unwritten_states >= 2
                senders = ["996555000041", "996555000042"]
                during = [await stack.phone.deliver(ACCOUNT, senders[n % 2],
                                                    f"Written during the outage {n}")
                          for n in range(10)]
                spool = spool_path(state_dir, org)
                with trio.fail_after(OUTAGE_S):
                    while not spool.exists() or len(spool.read_bytes().splitlines()) < 10:
                        await trio.sleep(0.1)
                    # The archive save fell due (every 5 s) and waits for the database.
                    while session.archive_waits == 0:
                        await trio.sleep(0.1)
                # The outage lasts its full length (the scenario, not a synchronisation).
                await trio.sleep_until(down_at + OUTAGE_S)
                assert alive(pid) and session.browser_starts == starts
                assert session.session is not None and session.state == "CONNECTED"
                assert stack.db.availability.unavailable_since is not None

                # Back ------------------------------------------------------------------------
                await own.start()
                rows = await stored(stack, org, [wa_id(m) for m in during], timeout=60)
                assert [r.body for r in rows] == [f"Written during the outage {n}"
                                                  for n in range(10)]
                assert await stack.db.fetchval(
                    "SELECT count(*) FROM messages WHERE organization_id = $1", org) == 10
                with trio.fail_after(30):
                    while session.unwritten_states:
                        await trio.sleep(0.1)
                log = await stack.db.fetch("SELECT * FROM test_state_log ORDER BY n")
                assert [r["state"] for r in log][-2:] == ["CONNECTING", "CONNECTED"]
                connecting, connected = log[-2], log[-1]
                assert "conflict" in (connecting["last_error"] or "")
                assert connected["last_error"] is None
                # Written after the outage, each with the time it happened (during it, long
                # before the database was back).
                left, returned = (connecting["last_disconnected_at"],
                                  connected["last_connected_at"])
                assert left <= returned
                assert (connected["written_at"] - returned).total_seconds() > OUTAGE_S / 3
                db_row = await stack.session(org)
                assert db_row.state == "CONNECTED" == session.state

                # The same browser all along, and still working.
                assert session.browser_starts == starts and alive(pid)
                assert session.session is not None
                assert session.session.browser_pid() == pid  # type: ignore[attr-defined]
                after = await stack.phone.deliver(ACCOUNT, senders[0], "After the outage")
                await stored(stack, org, [wa_id(after)])
                assert stack.db.availability.unavailable_since is None
