"""Enrichment pacing on Trio's mock clock: many new clients at once never cause more than 5
extra WhatsApp requests in any minute, with 0.5-2 s between two requests."""

from __future__ import annotations

import random
import uuid
from typing import Any

import trio
import trio.testing

from wad.browser.events import Contact
from wad.org.inbound.enrich import Enricher, EnrichJob, Profile
from wad.org.inbound.pacing import RequestPacer


def max_in_any_window(times: list[float], window: float) -> int:
    """The most requests in any half-open window [t, t + window)."""
    return max(sum(1 for u in times if t <= u < t + window) for t in times)


class RecordingSession:
    """Answers like the bridge and notes when each request was made (Trio's clock)."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, str, str]] = []

    async def get_contact(self, wid: str) -> Contact:
        self.calls.append((trio.current_time(), "contact", wid))
        await trio.sleep(0.05)
        return Contact(id=wid, number=wid.split("@")[0], push_name=f"P{wid[:4]}",
                       saved_name="Saved" if wid.startswith("1") else None)

    async def profile_picture_url(self, wid: str) -> str | None:
        self.calls.append((trio.current_time(), "picture", wid))
        if wid.startswith("2"):
            raise RuntimeError("picture hidden")
        return f"https://pp.example/{wid}.jpg"


async def test_many_new_clients_never_exceed_five_requests_a_minute(
        autojump_clock: trio.testing.MockClock) -> None:
    session = RecordingSession()
    saved: dict[uuid.UUID, Profile] = {}

    async def get_session() -> Any:
        return session

    async def save(job: EnrichJob, profile: Profile) -> None:
        saved[job.client_id] = profile

    enricher = Enricher(pacer=RequestPacer(per_window=5, window_s=60.0, pause_min_s=0.5,
                                           pause_max_s=2.0, rng=random.Random(3)),
                        session=get_session, save=save)
    jobs = [EnrichJob(client_id=uuid.uuid4(), wid=f"{n}9655510{n:04d}@c.us") for n in range(40)]
    async with trio.open_nursery() as nursery:
        await nursery.start(enricher.run)
        start = trio.current_time()
        for job in jobs:
            assert enricher.submit(job)
        assert not enricher.submit(jobs[0]), "a client already queued is not queued twice"
        while len(saved) < len(jobs):
            await trio.sleep(1)
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()

    times = [t for t, _, _ in session.calls]
    assert len(times) == 80  # a contact card and a picture per client
    assert max_in_any_window(times, 60.0) == 5
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.5 - 1e-9
    # 80 requests at 5 a minute: the last one goes out in minute 16, not earlier, not much later.
    assert 15 * 60 <= elapsed <= 16 * 60 + 5
    assert all(p.contact_ok for p in saved.values())
    failed_pictures = [p for p in saved.values() if not p.picture_ok]
    assert len(failed_pictures) == 11  # the numbers starting with 2 hide their picture
    assert all(p.picture_url is None for p in failed_pictures)
    assert enricher.pending == 0 and enricher.done == 40


async def test_pauses_are_random_between_half_a_second_and_two(
        autojump_clock: trio.testing.MockClock) -> None:
    pacer = RequestPacer(per_window=100, pause_min_s=0.5, pause_max_s=2.0,
                         rng=random.Random(11))
    times = []
    for _ in range(40):
        await pacer.wait()
        times.append(trio.current_time())
    gaps = [round(b - a, 6) for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) >= 0.5 and max(gaps) <= 2.0
    assert len(set(gaps)) > 30, "pauses vary"


async def test_concurrent_callers_share_one_window(autojump_clock: trio.testing.MockClock) -> None:
    pacer = RequestPacer(per_window=5, window_s=60.0, pause_min_s=0.0, pause_max_s=0.0)
    granted: list[float] = []

    async def caller() -> None:
        for _ in range(3):
            await pacer.wait()
            granted.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(caller)
    assert len(granted) == 12
    assert max_in_any_window(granted, 60.0) == 5
    assert granted[:5] == [0.0] * 5 and granted[5:10] == [60.0] * 5 and granted[10:] == [120.0] * 2
