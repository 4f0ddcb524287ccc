"""The durable change feed against real daemons (`wad run` processes), the simulator's phone,
a real Chromium and a real PostgreSQL.

- A CRM stand-in follows `GET /api/whatsapp/changes/{org}` from its cursor; the daemon is
  killed with SIGKILL and started again; the stand-in resumes from its cursor on the new process
  and sees every change once, in order, the messages written while the daemon was dead included.
- Two daemons on one database: the event stream served by the daemon that does not run the
  organization carries the owner's changes, and resumes on the owner where it stopped.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import httpx
import pytest
import trio

from tests.support.daemonproc import (
    DaemonProcess,
    descendants,
    link_org,
    shared_state_dir,
    start_daemon_in_thread,
    start_sim,
    whatsapp_config,
)
from tests.support.events import open_stream
from wad.db.embedded import process_alive
from wad.sim.client import SimClient

pytestmark = pytest.mark.browser

ACCOUNT = "996555100501"
CLIENT = "996555700501"


async def _admin_token(daemon: DaemonProcess, org: str) -> str:
    async with daemon.socket_client() as api:
        r = await api.post("/api/tokens", json={"role": "ADMIN", "organizationId": org,
                                                "name": "crm"})
        assert r.status_code == 201, r.text
        token: str = r.json()["token"]
        return token


class Crm:
    """The CRM's side: its cursor, and every change it handled, in the order it did."""

    def __init__(self, org: str, token: str) -> None:
        self.org, self.token = org, token
        self.cursor = 0
        self.seen: list[dict[str, Any]] = []

    async def catch_up(self, url: str) -> None:
        """Page the feed from the cursor until caught up (on whichever daemon `url` is)."""
        async with httpx.AsyncClient(base_url=url, timeout=30, headers={
                "Authorization": f"Bearer {self.token}"}) as http:
            while True:
                r = await http.get(f"/api/whatsapp/changes/{self.org}",
                                   params={"after": self.cursor, "limit": 3})
                assert r.status_code == 200, r.text
                page = r.json()
                self.seen.extend(page["changes"])
                self.cursor = page["nextAfter"]
                if self.cursor >= page["lastCursor"]:
                    return

    def bodies(self) -> list[str]:
        return [c["data"]["body"] for c in self.seen
                if c["kind"] == "message.stored" and c["data"]["direction"] == "IN"]

    async def until_bodies(self, url: str, wanted: list[str], timeout: float = 90) -> None:
        """Until every one of `wanted` was seen."""
        with trio.fail_after(timeout):
            while not set(wanted) <= set(self.bodies()):
                await self.catch_up(url)
                await trio.sleep(0.2)


def _kill_all(pids: set[int]) -> None:
    for pid in pids:
        if process_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


async def test_a_crm_resumes_from_its_cursor_after_kill_9_and_sees_every_change_once(
        dsn: str, nursery: trio.Nursery, aio_loop: None) -> None:
    sim = await start_sim(nursery, seed=21)
    state = shared_state_dir("wad-feed-")
    env = {"WAD_DATABASE_URL": dsn}
    extra = whatsapp_config(sim.url)
    started: set[int] = set()
    daemon = await start_daemon_in_thread(state, env=env, extra_config=extra)
    try:
        async with SimClient(sim.url) as phone:
            await phone.create_account(ACCOUNT, "Issyk-Kul Tours")
            with trio.fail_after(240):
                org = await link_org(daemon, phone, "Issyk-Kul Tours", ACCOUNT)
                crm = Crm(org, await _admin_token(daemon, org))
                before = ["Салам! Тур на Иссык-Куль есть?", "На двоих", "В июле"]
                for text in before:
                    await phone.deliver(ACCOUNT, CLIENT, text, push_name="Айгерим")
                await crm.until_bodies(daemon.tcp_url, before)

                # One more arrives and the daemon dies at once, as on a power cut.
                await phone.deliver(ACCOUNT, CLIENT, "Алло?")
                started |= set(descendants(daemon.proc.pid))
                daemon.proc.send_signal(signal.SIGKILL)
                await trio.to_thread.run_sync(daemon.proc.wait, 10)
                during = ["Вы тут?", "Ответьте, пожалуйста"]
                for text in during:  # the client writes while no daemon runs
                    await phone.deliver(ACCOUNT, CLIENT, text)

                daemon = await start_daemon_in_thread(state, env=env, extra_config=extra)
                await daemon.wait_state(org, "CONNECTED", timeout=90)
                after = ["Хорошо, жду"]
                for text in after:
                    await phone.deliver(ACCOUNT, CLIENT, text)
                texts = [*before, "Алло?", *during, *after]
                await crm.until_bodies(daemon.tcp_url, texts)
                # The stand-in has handled the changes up to its cursor: read the whole feed
                # again to compare.
                everything = Crm(org, crm.token)
                await everything.catch_up(daemon.tcp_url)
    finally:
        started |= set(descendants(daemon.proc.pid))
        await trio.to_thread.run_sync(daemon.stop)
        _kill_all(started)

    # Every change once, in order: cursors 1, 2, 3 ... without a gap or a repeat, exactly the
    # feed's; every message once. (The feed's order is the order the changes committed: a
    # message the page had before the kill, found by the catch-up after the restart, may come
    # after those the phone delivered to the new page meanwhile; its WhatsApp time still tells
    # the order it was written in, to the second.)
    cursors = [c["cursor"] for c in crm.seen]
    assert cursors == list(range(1, len(cursors) + 1))
    assert crm.seen == everything.seen[:len(crm.seen)]
    assert sorted(crm.bodies()) == sorted(texts)
    stored = [c["data"] for c in crm.seen
              if c["kind"] == "message.stored" and c["data"]["direction"] == "IN"]
    # WhatsApp's times have whole seconds: two messages written in one second (one before the
    # kill, one after) tie, and then neither their times nor the feed tell their order. What
    # must hold: the times never go back in the order the messages were written.
    at = {d["body"]: d["timestamp"] for d in stored}
    written = [at[text] for text in texts]
    assert written == sorted(written)
    assert all(c["data"]["clientId"] for c in crm.seen if c["kind"] == "message.stored")
    states = [c["data"]["status"] for c in crm.seen if c["kind"] == "session.state"]
    assert states[-1] == "CONNECTED" and "QR_CODE_PENDING" in states
    assert [c["kind"] for c in crm.seen].count("client.created") == 1


async def test_the_stream_of_a_daemon_that_does_not_run_the_organization_carries_its_changes(
        dsn: str, nursery: trio.Nursery, aio_loop: None) -> None:
    sim = await start_sim(nursery, seed=22)
    env = {"WAD_DATABASE_URL": dsn, "WAD_SECRET_KEY": "feed-test-key-shared-by-both-daemons"}
    extra = whatsapp_config(sim.url)
    owner = await start_daemon_in_thread(shared_state_dir("wad-feed-"), env=env, extra_config=extra)
    other = await start_daemon_in_thread(shared_state_dir("wad-feed-"), env=env, extra_config=extra)
    started: set[int] = set()
    try:
        async with SimClient(sim.url) as phone:
            await phone.create_account(ACCOUNT, "Osh Travel")
            with trio.fail_after(240):
                org = await link_org(owner, phone, "Osh Travel", ACCOUNT)
                # The first daemon runs it; the other only serves the API.
                status = await other.whatsapp_status(org)
                assert status.get("nodeId") == owner.node() != other.node()
                token = await _admin_token(other, org)
                texts = ["Здравствуйте!", "Есть туры в Ош?"]
                async with httpx.AsyncClient(base_url=other.tcp_url, timeout=30, headers={
                        "Authorization": f"Bearer {token}"}) as http:
                    response, reader = await open_stream(http, f"/api/whatsapp/events/{org}")
                    try:
                        start = await reader.next()
                        assert start.event == "stream.start"
                        for text in texts:
                            await phone.deliver(ACCOUNT, CLIENT, text, push_name="Бакыт")
                        got = await reader.until(
                            lambda s: s.event == "message.stored"
                            and s.data["data"]["body"] == texts[-1], timeout=90)
                    finally:
                        await response.aclose()
                stored = [s for s in got if s.event == "message.stored"]
                assert [s.data["data"]["body"] for s in stored] == texts
                last_id = reader.last_id
                assert last_id is not None

                # The same stream resumes on the owner where the other daemon's stopped.
                await phone.deliver(ACCOUNT, CLIENT, "Алло?")
                async with httpx.AsyncClient(base_url=owner.tcp_url, timeout=30, headers={
                        "Authorization": f"Bearer {token}"}) as http:
                    response, reader = await open_stream(http, f"/api/whatsapp/events/{org}",
                                                         last_id=last_id)
                    try:
                        start = await reader.next()
                        assert start.data["resumed"] is True
                        more = await reader.until(
                            lambda s: s.event == "message.stored", timeout=90)
                    finally:
                        await response.aclose()
                assert more[0].id == str(int(last_id) + 1)
                assert more[-1].data["data"]["body"] == "Алло?"
    finally:
        for daemon in (owner, other):
            started |= set(descendants(daemon.proc.pid))
            await trio.to_thread.run_sync(daemon.stop)
        _kill_all(started)
