"""The control API served on real sockets (TCP and the unix socket) for tests: `LiveApi` and
the `live_api` fixture."""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from wad.api import auth
from wad.api.app import create_app
from wad.api.context import AppContext, Services, run_services
from wad.api.server import serve_api
from wad.config import ApiSettings, DaemonSettings, Settings
from wad.db.models import Role
from wad.db.pool import Database
from wad.db.repo import tokens as tokens_repo


@dataclass
class LiveApi:
    """The served app and ways to call it."""

    tcp_url: str
    socket_path: Path
    ctx: AppContext
    _clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    def client(self, token: str | None = None) -> httpx.AsyncClient:
        """An HTTP client on the TCP address, with `token` as its bearer token (one per token,
        reused: creating clients is what would make the tests slow)."""
        key = f"tcp:{token}"
        if key not in self._clients:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            self._clients[key] = httpx.AsyncClient(base_url=self.tcp_url, headers=headers,
                                                   timeout=10)
        return self._clients[key]

    def socket_client(self) -> httpx.AsyncClient:
        """An HTTP client on the unix control socket (no token: the socket is the super admin)."""
        if "socket" not in self._clients:
            self._clients["socket"] = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(uds=str(self.socket_path)),
                base_url="http://wad", timeout=10)
        return self._clients["socket"]

    async def create_org(self, name: str = "Acme Tours") -> uuid.UUID:
        r = await self.socket_client().post("/api/organizations", json={"name": name})
        assert r.status_code == 201, r.text
        return uuid.UUID(r.json()["id"])

    async def create_token(self, role: str, org: uuid.UUID | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"role": role, "name": f"test {role}"}
        if org is not None:
            body["organizationId"] = str(org)
        r = await self.socket_client().post("/api/tokens", json=body)
        assert r.status_code == 201, r.text
        created: dict[str, Any] = r.json()
        return created

    async def close(self) -> None:
        for c in self._clients.values():
            await c.aclose()


async def serve_context(nursery: trio.Nursery, ctx: AppContext, *, listen: str = "127.0.0.1:0",
                        socket_path: Path | None = None, **limits: Any
                        ) -> tuple[list[str], trio.Event]:
    """Serve `ctx`'s app in `nursery`, with its services running beside it (as the daemon's
    tree runs them); answers the bound addresses and the event that stops serving."""
    app = create_app(ctx)
    await nursery.start(run_services, ctx)
    shutdown = trio.Event()
    addresses = await nursery.start(functools.partial(
        serve_api, app, listen=listen, socket_path=socket_path,
        max_body=limits.pop("max_body", ctx.settings.api.max_body_bytes), shutdown=shutdown,
        **limits))
    return addresses, shutdown


async def issue_token(db: Database, role: Role, org: uuid.UUID | None = None, *,
                      name: str | None = None) -> str:
    """A new API token of `role` (for `org`), stored as the daemon stores them; answers the
    secret."""
    token, digest, prefix = auth.new_token()
    await tokens_repo.create(db, role=role, organization_id=org, token_hash=digest,
                             prefix=prefix, name=name or f"test {role}")
    return token


def make_settings(state_dir: Path, **api: Any) -> Settings:
    return Settings(daemon=DaemonSettings(state_dir=str(state_dir)),
                    api=ApiSettings(listen="127.0.0.1:0", **api))


@asynccontextmanager
async def serving(db: Database, state_dir: Path, nursery: trio.Nursery, *, max_body_bytes: int,
                  services: Services | None = None) -> AsyncIterator[LiveApi]:
    """The real app served in `nursery` until the block ends, its clients closed then."""
    settings = make_settings(state_dir, max_body_bytes=max_body_bytes)
    ctx = AppContext(settings=settings, db=db, services=services or Services())
    socket_path = state_dir / "run" / "wad.sock"
    addresses, shutdown = await serve_context(nursery, ctx, listen=settings.api.listen,
                                              socket_path=socket_path)
    tcp = next(a for a in addresses if a.startswith("http://127."))
    api = LiveApi(tcp_url=tcp, socket_path=socket_path, ctx=ctx)
    try:
        yield api
    finally:
        await api.close()
        shutdown.set()


@pytest.fixture
async def live_api(db: Database, state_dir: Path, nursery: trio.Nursery
                   ) -> AsyncIterator[LiveApi]:
    async with serving(db, state_dir, nursery, max_body_bytes=4096) as api:
        yield api
