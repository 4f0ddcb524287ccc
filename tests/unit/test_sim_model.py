"""The simulator's world without a browser: history generation, pairing rules, event catch-up.
Time-dependent rules run on the mock clock."""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio

from wad.sim import history
from wad.sim.model import Page, SimConfig, SimError, Simulator

ACCOUNT = "996555100200"


class FakeLink:
    """A page's WebSocket as the model sees it, recording frames."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.closed = False

    def push(self, obj: dict[str, Any]) -> None:
        self.frames.append(obj)

    def close(self, reason: str) -> None:
        self.closed = True

    def kinds(self) -> list[str]:
        return [f["t"] for f in self.frames]


def new_page(sim: Simulator, device: str = "dev1", **hello: Any) -> tuple[Page, FakeLink]:
    link = FakeLink()
    page = Page(link=link, device_id=device,
                keys={"noise": "n", "identity": "i", "adv": "a", "platform": "WEB"})
    sim.page_hello(page, {"t": "hello", "device": device, **hello})
    return page, link


@pytest.fixture
def world(nursery: trio.Nursery) -> Simulator:
    sim = Simulator(seed=3, config=SimConfig(sync_delay_s=0.5, pairing_code_ttl_s=180))
    sim.nursery = nursery
    sim.create_account(number=ACCOUNT, push_name="Silk Road Tours")
    return sim


def test_history_is_seeded_multilingual_and_varied():
    def make(seed: int) -> Simulator:
        sim = Simulator(seed=99)
        acc = sim.create_account(number=ACCOUNT, push_name="Tours")
        history.generate(sim, acc, chats=14, messages=30, seed=seed, statuses=5,
                         phone_only_chats=2, end_t=1_750_000_000)
        return sim

    a, b, c = make(1), make(1), make(2)
    msgs = lambda s: [(m["id"]["_serialized"], m["body"], m.get("caption"))  # noqa: E731
                      for m in s.accounts[ACCOUNT].msgs.values()]
    assert msgs(a) == msgs(b)
    assert msgs(a) != msgs(c)
    acc = a.accounts[ACCOUNT]
    chats = list(acc.chats.values())
    assert len([ch for ch in chats if ch.is_group]) == 1
    assert "status@broadcast" in acc.chats
    assert sum(1 for ch in chats if ch.hidden_before) == 2
    types = {m["type"] for m in acc.msgs.values()}
    assert {"chat", "image", "video", "ptt", "document", "sticker", "location"} <= types
    texts = " ".join(m["body"] + (m.get("caption") or "") for m in acc.msgs.values())
    for script in ("Здравствуйте", "مرحبا", "Bonjour", "Hallo", "Hola", "Dzień dobry", "Hello"):
        assert script in texts
    numbers = [c.wid.split("@")[0] for c in acc.contacts.values()]
    assert sum(n.startswith("996") for n in numbers) >= len(numbers) // 3
    assert all(re.fullmatch(r"\d{11,13}", n) for n in numbers)
    for ch in chats:
        assert [m["t"] for m in ch.msgs] == sorted(m["t"] for m in ch.msgs)


async def test_pairing_code_expires_after_three_minutes(world: Simulator, autojump_clock):
    page, link = new_page(world)
    assert link.kinds() == ["ref"]
    code = world.request_code(page, ACCOUNT)
    await trio.sleep(181)
    with pytest.raises(SimError) as err:
        world.enter_code(ACCOUNT, code)
    assert err.value.status == 410
    fresh = world.request_code(page, ACCOUNT)
    assert world.enter_code(ACCOUNT, fresh[:4] + "-" + fresh[4:]) == "dev1"
    assert link.kinds()[-2:] == ["pairing", "linked"]


async def test_unknown_and_stale_qr_and_device_limit(world: Simulator, autojump_clock):
    with pytest.raises(SimError) as err:
        world.scan(ACCOUNT, "2@nothing,n,i,a,WEB")
    assert err.value.status == 404
    pages = [new_page(world, f"dev{i}") for i in range(5)]
    old = pages[0][0].payload()
    world.rotate(pages[0][0])
    with pytest.raises(SimError) as err:
        world.scan(ACCOUNT, old)
    assert err.value.status == 409
    for page, _ in pages[:4]:
        world.scan(ACCOUNT, page.payload())
    with pytest.raises(SimError) as err:
        world.scan(ACCOUNT, pages[4][0].payload())
    assert err.value.status == 409


async def test_sync_comes_later_and_a_returning_page_gets_what_it_missed(
        world: Simulator, autojump_clock):
    page, link = new_page(world)
    world.scan(ACCOUNT, page.payload())
    assert "sync" not in link.kinds()
    await trio.sleep(0.6)
    assert link.kinds()[-1] == "sync"
    first = world.incoming(ACCOUNT, sender="996555301122", body="one")
    world.page_seq(page, link.frames[-1]["seq"])
    # The browser closes; two messages arrive; it loads again on the same profile.
    world.page_gone(page)
    world.incoming(ACCOUNT, sender="996555301122", body="two")
    world.incoming(ACCOUNT, sender="996555301122", body="three")
    page2, link2 = new_page(world, linked=ACCOUNT)
    assert link2.kinds() == ["linked"]
    await trio.sleep(0.6)
    sync = link2.frames[1]
    (chat,) = sync["chats"]
    assert [m["body"] for m in chat["msgs"]] == ["one"]
    assert chat["msgs"][0]["id"] == first["id"]
    live = [f["e"]["m"]["body"] for f in link2.frames[2:] if f["e"]["k"] == "msg"]
    assert live == ["two", "three"]


async def test_unlinked_device_is_told_on_return(world: Simulator, autojump_clock):
    page, _ = new_page(world)
    world.scan(ACCOUNT, page.payload())
    world.page_gone(page)
    world.unlink(ACCOUNT)
    _, link = new_page(world, linked=ACCOUNT)
    assert link.kinds() == ["unlinked"]


async def test_messages_delivered_together_reach_the_page_in_one_frame(
        world: Simulator, autojump_clock):
    page, link = new_page(world)
    world.scan(ACCOUNT, page.payload())
    await trio.sleep(0.6)
    before = len(link.frames)
    with world.together(ACCOUNT):
        for n in range(3):
            world.incoming(ACCOUNT, sender="996555301122", body=f"burst {n}")
        assert len(link.frames) == before  # nothing until the block ends
    (batch,) = link.frames[before:]
    assert batch["t"] == "batch"
    assert [f["e"]["m"]["body"] for f in batch["frames"]] == ["burst 0", "burst 1", "burst 2"]
    seqs = [f["seq"] for f in batch["frames"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3  # each event keeps its place
    world.incoming(ACCOUNT, sender="996555301122", body="alone")
    assert link.frames[-1]["t"] == "ev"  # outside the block: one frame each, as before
    with world.together(ACCOUNT):
        world.incoming(ACCOUNT, sender="996555301122", body="single")
    assert link.frames[-1]["t"] == "ev"  # one event needs no batch
