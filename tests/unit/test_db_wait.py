"""Work that waits out a database outage, on Trio's mock clock: `when_available` retries with
the shared backoff while the database is unavailable and only then; the enricher keeps its
results through an outage and asks again for a contact card the page could not give."""

from __future__ import annotations

import random
import uuid
from typing import Any

import asyncpg
import pytest
import trio
import trio.testing

from wad.browser.events import Contact
from wad.db.pool import WAIT_BACKOFF, Availability, when_available
from wad.org.inbound import enrich
from wad.org.inbound.enrich import Enricher, EnrichJob, Profile
from wad.org.inbound.pacing import RequestPacer


async def test_waits_with_the_backoff_while_unavailable_then_answers(
        autojump_clock: trio.testing.MockClock) -> None:
    attempts: list[float] = []

    async def write() -> str:
        attempts.append(trio.current_time())
        if len(attempts) <= 5:
            raise ConnectionRefusedError("connection refused")
        return "written"

    assert await when_available(write, what="test") == "written"
    gaps = [round(b - a, 6) for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps == [WAIT_BACKOFF.delay(n) for n in range(1, 6)]
    assert gaps == [0.5, 1.0, 2.0, 4.0, 5.0]


async def test_other_errors_are_not_retried(autojump_clock: trio.testing.MockClock) -> None:
    calls = 0

    async def bad() -> None:
        nonlocal calls
        calls += 1
        raise asyncpg.exceptions.UniqueViolationError("duplicate key")

    with pytest.raises(asyncpg.exceptions.UniqueViolationError):
        await when_available(bad, what="test")
    assert calls == 1


def test_availability_says_since_when() -> None:
    availability = Availability()
    assert availability.describe() is None
    availability.failed(ValueError("not an outage"))
    assert availability.unavailable_since is None
    availability.failed(ConnectionRefusedError())
    since = availability.unavailable_since
    assert since is not None and since.tzinfo is not None
    availability.failed(OSError("still down"))
    assert availability.unavailable_since == since  # the first failure's time is kept
    assert availability.describe() == f"database unavailable since {since.isoformat()}"
    availability.answered()
    assert availability.unavailable_since is None


class FlakySession:
    """The page: the contact card fails `card_failures` times, the picture always works."""

    def __init__(self, card_failures: int) -> None:
        self.card_failures = card_failures
        self.cards: list[float] = []

    async def get_contact(self, wid: str) -> Contact:
        self.cards.append(trio.current_time())
        if len(self.cards) <= self.card_failures:
            raise RuntimeError("page busy")
        return Contact(id=wid, number=wid.split("@")[0], push_name="Bakyt",
                       saved_name="Bakyt (Osh)")

    async def profile_picture_url(self, wid: str) -> str | None:
        return f"https://pp.example/{wid}.jpg"


def enricher(session: Any, save: Any) -> Enricher:
    async def get_session() -> Any:
        return session

    return Enricher(pacer=RequestPacer(per_window=100, pause_min_s=0.0, pause_max_s=0.0,
                                       rng=random.Random(1)), session=get_session, save=save)


async def test_a_result_is_kept_through_a_database_outage(
        autojump_clock: trio.testing.MockClock) -> None:
    saved: list[tuple[float, Profile]] = []
    down_until = 40.0

    async def save(job: EnrichJob, profile: Profile) -> None:
        if trio.current_time() < down_until:
            raise OSError("connection refused")
        saved.append((trio.current_time(), profile))

    worker = enricher(FlakySession(card_failures=0), save)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        assert worker.submit(EnrichJob(client_id=uuid.uuid4(), wid="996555777888@c.us"))
        while not saved:
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    [(at, profile)] = saved
    assert down_until <= at <= down_until + WAIT_BACKOFF.max
    assert profile.saved_name == "Bakyt (Osh)"
    assert worker.done == 1 and worker.failed == 0 and worker.pending == 0


async def test_a_contact_card_the_page_could_not_give_is_asked_for_again(
        autojump_clock: trio.testing.MockClock) -> None:
    saved: list[tuple[EnrichJob, Profile]] = []

    async def save(job: EnrichJob, profile: Profile) -> None:
        saved.append((job, profile))

    session = FlakySession(card_failures=1)
    worker = enricher(session, save)
    client = uuid.uuid4()
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        assert worker.submit(EnrichJob(client_id=client, wid="996555777888@c.us"))
        while worker.pending:
            await trio.sleep(1)
            # Still queued while it waits to ask again: a new message does not add a job.
            if worker.pending:
                assert not worker.submit(EnrichJob(client_id=client, wid="996555777888@c.us"))
        nursery.cancel_scope.cancel()
    (first_job, first), (second_job, second) = saved
    assert not first.contact_ok and not first_job.last  # the picture kept, not final
    assert second.contact_ok and second.saved_name == "Bakyt (Osh)"
    assert session.cards[1] - session.cards[0] >= enrich.RETRY.delay(1)
    assert worker.done == 1


async def test_after_the_last_attempt_the_client_counts_as_enriched(
        autojump_clock: trio.testing.MockClock) -> None:
    saved: list[tuple[EnrichJob, Profile]] = []

    async def save(job: EnrichJob, profile: Profile) -> None:
        saved.append((job, profile))

    worker = enricher(FlakySession(card_failures=100), save)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.run)
        worker.submit(EnrichJob(client_id=uuid.uuid4(), wid="996555777888@c.us"))
        while worker.pending:
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert [job.attempt for job, _ in saved] == list(range(1, enrich.ATTEMPTS + 1))
    assert saved[-1][0].last and not saved[-1][1].contact_ok
    assert worker.done == 1
