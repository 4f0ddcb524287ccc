"""The event stream's helpers: an app served on a real socket (`Served`, `serve_app`) and a
Server-Sent Events reader (`open_stream`)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.support.api import issue_token, serve_context
from wad.api.context import AppContext, Services
from wad.config import ApiSettings, DaemonSettings, Settings
from wad.db.models import Role
from wad.db.pool import Database
from wad.db.repo import changes
from wad.db.repo import organizations as orgs_repo


@dataclass
class Sse:
    """One server-sent event as a reader sees it."""

    event: str
    data: Any
    id: str | None


@dataclass
class SseReader:
    """Reads a `text/event-stream` response event by event."""

    response: httpx.Response
    _lines: AsyncIterator[str] | None = None
    last_id: str | None = None
    retry: int | None = None

    async def next(self, timeout: float = 10.0) -> Sse:
        if self._lines is None:
            self._lines = self.response.aiter_lines()
        fields: dict[str, list[str]] = {}
        with trio.fail_after(timeout):
            async for line in self._lines:
                if line == "":
                    if "event" in fields or "data" in fields:
                        break
                    fields = {}
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "retry":
                    self.retry = int(value)
                    continue
                fields.setdefault(name, []).append(value)
            else:
                raise AssertionError("the stream ended")
        event_id = fields["id"][-1] if "id" in fields else None
        if event_id is not None:
            self.last_id = event_id
        data = "\n".join(fields.get("data", []))
        return Sse(event=fields.get("event", ["message"])[-1],
                   data=json.loads(data) if data else None, id=event_id)

    async def until(self, predicate: Any, timeout: float = 30.0) -> list[Sse]:
        """Events up to and including the first that satisfies `predicate`."""
        seen = []
        with trio.fail_after(timeout):
            while True:
                sse = await self.next(timeout)
                seen.append(sse)
                if predicate(sse):
                    return seen


@dataclass
class Served:
    """The real app on Hypercorn (127.0.0.1, port 0) with the given services."""

    url: str
    ctx: AppContext
    db: Database
    clients: list[httpx.AsyncClient] = field(default_factory=list)

    def client(self, token: str | None = None, timeout: float = 10.0) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)
        self.clients.append(client)
        return client

    async def token(self, role: Role, org: uuid.UUID | None = None) -> str:
        return await issue_token(self.db, role, org)

    async def org(self, name: str) -> uuid.UUID:
        return (await orgs_repo.create(self.db, name=name)).id


async def serve_app(nursery: trio.Nursery, db: Database, state_dir: Path,
                    services: Services, settings: Settings | None = None
                    ) -> tuple[Served, trio.Event]:
    """Serve a fresh app; set the answered event to stop it."""
    settings = settings or Settings(daemon=DaemonSettings(state_dir=str(state_dir)),
                                    api=ApiSettings(listen="127.0.0.1:0"))
    ctx = AppContext(settings=settings, db=db, services=services)
    addresses, shutdown = await serve_context(nursery, ctx)
    url = next(a for a in addresses if a.startswith("http://127."))
    return Served(url=url, ctx=ctx, db=db), shutdown


async def open_stream(client: httpx.AsyncClient, path: str, last_id: str | None = None
                      ) -> tuple[httpx.Response, SseReader]:
    """Open `path` as a stream (the caller closes the answered response)."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    request = client.build_request("GET", path, headers=headers)
    response = await client.send(request, stream=True)
    return response, SseReader(response)


async def feed_message(db: Database, org: uuid.UUID, body: str | None, *,
                       caption: str | None = None, direction: str = "IN",
                       type: str = "text") -> int:
    """A `message.stored` change in the feed, shaped as the inbound actor writes it (the
    message row itself is not needed by the feed's readers); answers its cursor."""
    return await changes.record(db, organization_id=org, kind="message.stored", data={
        "messageId": str(uuid.uuid4()), "waMessageId": f"false_{uuid.uuid4().hex}",
        "direction": direction, "type": type, "body": body, "caption": caption,
        "status": "RECEIVED" if direction == "IN" else "SENT"})
