"""Enrichment of new clients from WhatsApp: their contact card (saved name, push name, business
flag) and profile picture, two requests per client, paced per organization by a `RequestPacer`
(at most 5 a minute by default, random pauses between them).

Enrichment runs beside message processing, never in its way: a burst of fifty new clients is
processed at once and enriched over the following minutes. Jobs live in memory; a client whose
enrichment was lost to a restart is queued again with their next message (the pipeline queues
every client whose metadata lacks `enriched_at`).

A contact card the page could not give is asked for again later (`ATTEMPTS` in all, `RETRY`
between them); only then is the client marked enriched with what was found. Saving a result
waits out a database outage (`wad.db.pool.when_available`).
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import trio

from wad import log
from wad.db.pool import when_available
from wad.org.inbound.pacing import RequestPacer
from wad.supervise import Backoff

_log = log.get("enrich")

ATTEMPTS = 3
"""Lookups of one client before it is marked enriched without its contact card."""
RETRY = Backoff(initial=30.0, max=120.0)
"""Wait before asking again for a contact card the page could not give: 30 s, then 60 s."""


class ContactSource(Protocol):
    """What enrichment asks of the browser session (see `wad.browser.driver.BrowserSession`)."""

    async def get_contact(self, wid: str) -> Any: ...
    async def profile_picture_url(self, wid: str) -> str | None: ...


@dataclass(frozen=True)
class EnrichJob:
    """Look up `wid` (the client's chat id) for client `client_id`."""

    client_id: uuid.UUID
    wid: str
    attempt: int = 1

    @property
    def last(self) -> bool:
        """This lookup's result is final, whatever it found."""
        return self.attempt >= ATTEMPTS


@dataclass(frozen=True)
class Profile:
    """What WhatsApp told about a client. None: not known (or the request failed)."""

    saved_name: str | None = None
    push_name: str | None = None
    picture_url: str | None = None
    is_business: bool | None = None
    verified_name: str | None = None
    contact_ok: bool = False
    picture_ok: bool = False


class Enricher:
    """A bounded queue of enrichment jobs and the task that works through it.

    `session()` answers the live browser session, waiting while there is none; `save(job,
    profile)` records the result (and marks the client enriched when the contact card was read
    or `job.last`). Both come from the caller, so the pacing is testable on the mock clock."""

    def __init__(self, *, pacer: RequestPacer,
                 session: Callable[[], Awaitable[ContactSource]],
                 save: Callable[[EnrichJob, Profile], Awaitable[None]],
                 max_jobs: int = 10_000) -> None:
        self.pacer = pacer
        self._session = session
        self._save = save
        self._send, self._receive = trio.open_memory_channel[EnrichJob](max_jobs)
        self._queued: set[uuid.UUID] = set()
        self.done = 0
        self.failed = 0

    def submit(self, job: EnrichJob) -> bool:
        """Queue a job unless that client is queued already or the queue is full (the client's
        next message queues it again). Answers whether it was queued."""
        if job.client_id in self._queued:
            return False
        try:
            self._send.send_nowait(job)
        except trio.WouldBlock:
            _log.warning("enrichment queue full; client left for later", client=str(job.client_id))
            return False
        self._queued.add(job.client_id)
        return True

    @property
    def pending(self) -> int:
        return len(self._queued)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Work through the jobs, one request at a time as the pacer allows, until cancelled."""
        async with trio.open_nursery() as retries:
            task_status.started()
            async for job in self._receive:
                again = False
                try:
                    profile = await self.lookup(job)
                    await when_available(partial(self._save, job, profile),
                                         what="client enrichment")
                    again = not profile.contact_ok and not job.last
                    if not again:
                        self.done += 1
                except Exception:
                    self.failed += 1
                    _log.exception("client enrichment failed", client=str(job.client_id))
                finally:
                    if again:
                        retries.start_soon(self._again, job)
                    else:
                        self._queued.discard(job.client_id)

    async def _again(self, job: EnrichJob) -> None:
        """Queue the job's next attempt after the retry wait (the client stays queued)."""
        await trio.sleep(RETRY.delay(job.attempt))
        try:
            self._send.send_nowait(dataclasses.replace(job, attempt=job.attempt + 1))
        except trio.WouldBlock:
            self._queued.discard(job.client_id)  # the next message queues it again

    async def lookup(self, job: EnrichJob) -> Profile:
        """The two paced requests for one client. A request that fails leaves its part unknown."""
        session = await self._session()
        await self.pacer.wait()
        contact: Any = None
        try:
            contact = await session.get_contact(job.wid)
        except Exception as exc:  # the page's error; the picture may still work
            _log.warning("contact lookup failed", client=str(job.client_id), error=str(exc))
        await self.pacer.wait()
        picture: str | None = None
        picture_ok = False
        try:
            picture = await session.profile_picture_url(job.wid)
            picture_ok = True
        except Exception as exc:
            _log.warning("profile picture lookup failed", client=str(job.client_id),
                         error=str(exc))
        if contact is None:
            return Profile(picture_url=picture, picture_ok=picture_ok)
        return Profile(
            saved_name=getattr(contact, "saved_name", None) or None,
            push_name=getattr(contact, "push_name", None) or None,
            picture_url=picture,
            is_business=getattr(contact, "is_business", None),
            verified_name=getattr(contact, "verified_name", None) or None,
            contact_ok=True,
            picture_ok=picture_ok,
        )
