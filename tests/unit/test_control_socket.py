"""The control socket is born 0660 without the process-wide umask ever being changed (a change
would race with every thread creating files meanwhile)."""

from __future__ import annotations

import functools
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from wad.api.server import serve_api


async def _hello(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


class _App:
    """A bare ASGI app with the `config` dict serve_api sets its limits in."""

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        await _hello(scope, receive, send)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The most permissive umask, restored afterwards."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


async def test_socket_is_0660_and_the_umask_is_never_touched(
        tmp_path: Path, open_umask: None, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def umask(mask: int) -> int:
        calls.append(mask)
        return 0

    monkeypatch.setattr(os, "umask", umask)
    path = tmp_path / "run" / "wad.sock"
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        addresses = await nursery.start(functools.partial(
            serve_api, _App(), listen="", socket_path=path, max_body=1024, shutdown=shutdown))
        assert addresses == [f"http://unix:{path}"]
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(path)),
                                     base_url="http://wad") as client:
            assert (await client.get("/")).text == "hello"
        shutdown.set()
    assert calls == []
