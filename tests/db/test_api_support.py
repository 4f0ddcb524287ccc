"""A live control API for tests: the real app on real Hypercorn, on 127.0.0.1 port 0 and on a
unix socket, over a fresh migrated database. Also the sanity tests of that harness itself."""

from __future__ import annotations

import trio

from tests.support import api as api_support
from tests.support.api import LiveApi

live_api = api_support.live_api


async def test_harness_serves_tcp_and_socket(live_api: LiveApi) -> None:
    with trio.fail_after(10):
        tcp = await live_api.client().get("/healthz")
        unix = await live_api.socket_client().get("/healthz")
    assert tcp.status_code == 200
    assert unix.status_code == 200
    assert tcp.json()["database"] is True
