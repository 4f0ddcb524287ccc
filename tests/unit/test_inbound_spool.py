"""The spool that keeps message events while the database is unreachable: durable lines, read
back in order after a crash, a torn last line skipped, bounded (the writer waits), emptied only
when every event is out."""

from __future__ import annotations

from pathlib import Path

import trio
import trio.testing

from wad.browser.events import AckChanged, Message, MessageReceived, MessageRevoked
from wad.org.inbound.spool import Spool, SpoolRecord, spool_path


def received(n: int) -> SpoolRecord:
    msg = Message(id=f"false_996555{n:06d}@c.us_{n:020X}", from_me=False,
                  chat_id=f"996555{n:06d}@c.us", type="chat", body=f"message {n}",
                  timestamp=1751360400 + n, push_name="Client")
    return SpoolRecord(at=1751360400.5 + n, event=MessageReceived(message=msg))


async def test_appended_events_are_on_disk_and_come_back_in_order(tmp_path: Path) -> None:
    path = spool_path(tmp_path, "org-1")
    assert path == tmp_path / "spool" / "org-org-1.jsonl"
    spool = Spool(path)
    records = [received(n) for n in range(5)]
    records.append(SpoolRecord(at=1.0, event=AckChanged(id="true_1@c.us_A", chat_id="1@c.us",
                                                        ack=3)))
    records.append(SpoolRecord(at=2.0, event=MessageRevoked(id="x", chat_id="1@c.us",
                                                            from_me=False)))
    for record in records:
        await spool.append(record)
    assert len(path.read_bytes().splitlines()) == 7

    again = Spool(path)  # a new run after a crash
    assert again.load() == 7
    replayed = []
    while (again_record := again.peek()) is not None:
        replayed.append(again_record)
        await again.pop()
    assert replayed == records
    assert path.read_bytes() == b"", "emptied once every event is out"
    assert Spool(path).load() == 0


async def test_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    spool = Spool(path)
    for n in range(3):
        await spool.append(received(n))
    path.write_bytes(path.read_bytes() + b'{"at": 5.0, "event": {"event": "message", "mess')
    again = Spool(path)
    assert again.load() == 3
    assert again.peek() == received(0)


async def test_the_file_is_kept_until_the_last_event_is_out(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    spool = Spool(path)
    for n in range(3):
        await spool.append(received(n))
    await spool.pop()
    # A crash now replays all three (storing is idempotent), never fewer.
    assert Spool(path).load() == 3


async def test_a_full_spool_makes_the_writer_wait(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.jsonl", max_events=3)
    appended: list[int] = []

    async def writer() -> None:
        for n in range(5):
            await spool.append(received(n))
            appended.append(n)

    async def until(count: int) -> None:
        with trio.fail_after(5):
            while len(appended) < count:
                await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await until(3)
        await trio.sleep(0.3)
        assert len(appended) == 3 and len(spool) == 3, "the fourth waits for room"
        await spool.pop()
        await until(4)
        await spool.pop()
        await until(5)
    assert len(spool) == 3
    first = spool.peek()
    assert first is not None and first == received(2)


async def test_a_batch_is_appended_with_one_write_and_taken_out_in_order(tmp_path: Path
                                                                         ) -> None:
    path = spool_path(tmp_path, "org-batch")
    spool = Spool(path, max_events=4)
    records = [received(n) for n in range(6)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(spool.append_many, records)
        with trio.fail_after(5):
            while len(spool) < 4:
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()  # the writer waits for room now
        # Full at four: the first four are on disk, the writer waits for room.
        assert len(spool) == 4 and len(path.read_bytes().splitlines()) == 4
        assert spool.peek_many(10) == records[:4] and spool.peek_many(2) == records[:2]
        await spool.pop_many(3)
    assert spool.peek_many(10) == records[3:]
    again = Spool(path)
    assert again.load() == 6, "popped events stay in the file until the spool is empty"
    await spool.pop_many(10)
    assert not spool and path.read_bytes() == b""
