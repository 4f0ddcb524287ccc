"""The control API served for `bench/api.py` in a process of its own, the way `wad run` serves
it: Hypercorn (`wad.api.server.serve_api`) on a TCP address and a unix socket, the API's services
(the change feed, the token cache's listener, ...) running beside it.

    .venv/bin/python bench/api_serve.py DSN STATE_DIR [--floor | --asgi-floor] [--profile FILE]

Prints one JSON line with the bound addresses once it serves, then serves until SIGTERM/SIGINT.
With `--floor` it serves a bare Quart-Trio app instead, whose one route (`GET /floor`) answers a
constant: what any route costs at least, served the same way. With `--asgi-floor` it serves a
bare ASGI app (no Quart) that answers the same constant to every request: what Hypercorn alone
costs, the floor of any app it serves.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import signal
import sys
from pathlib import Path
from typing import Any

import trio
import trio_asyncio
from quart_trio import QuartTrio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from wad import log  # noqa: E402
from wad.api.app import create_app  # noqa: E402
from wad.api.context import AppContext, run_services  # noqa: E402
from wad.api.server import serve_api  # noqa: E402
from wad.config import ApiSettings, DaemonSettings, DatabaseSettings, Settings  # noqa: E402
from wad.daemon import freeze_heap  # noqa: E402
from wad.db.pool import Database  # noqa: E402


def floor_app() -> QuartTrio:
    """A Quart-Trio app with one route that answers a constant (no database, no auth)."""
    app = QuartTrio("floor")

    @app.get("/floor")
    async def floor() -> dict[str, Any]:
        return {"status": "ok"}

    return app


class AsgiFloor:
    """A bare ASGI app: `{"status": "ok"}` to every HTTP request, no framework at all."""

    BODY = b'{"status":"ok"}'

    def __init__(self) -> None:
        self.config: dict[str, Any] = {}  # `serve_api` sets the body limits here

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(self.BODY)).encode())]})
        await send({"type": "http.response.body", "body": self.BODY})


async def serve(dsn: str, state_dir: Path, floor: str | None) -> None:
    socket_path = state_dir / "wad.sock"
    shutdown = trio.Event()
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, shutdown)
        if floor is not None:
            app = floor_app() if floor == "quart" else AsgiFloor()
            addresses = await nursery.start(_serve, app, socket_path, shutdown, 1024 * 1024)
            _announce(addresses)
            await shutdown.wait()
            nursery.cancel_scope.cancel()
            return
        settings = Settings(daemon=DaemonSettings(state_dir=str(state_dir)),
                            database=DatabaseSettings(dsn=dsn),
                            api=ApiSettings(listen="127.0.0.1:0"))
        async with Database.open(dsn, min_size=4, max_size=20) as db:
            ctx = AppContext(settings=settings, db=db)
            app = create_app(ctx)
            await nursery.start(run_services, ctx)
            addresses = await nursery.start(_serve, app, socket_path, shutdown,
                                            settings.api.max_body_bytes)
            freeze_heap()  # as `wad run` does once it serves
            _announce(addresses)
            await shutdown.wait()
            nursery.cancel_scope.cancel()


async def _serve(app: Any, socket_path: Path, shutdown: trio.Event, max_body: int,
                 task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    await serve_api(app, listen="127.0.0.1:0", socket_path=socket_path, max_body=max_body,
                    shutdown=shutdown, task_status=task_status)


def _announce(addresses: list[str]) -> None:
    print(json.dumps({"addresses": addresses}), flush=True)


async def _stop_on_signal(shutdown: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            shutdown.set()
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("dsn")
    parser.add_argument("state_dir", type=Path)
    kind = parser.add_mutually_exclusive_group()
    kind.add_argument("--floor", dest="floor", action="store_const", const="quart",
                      help="serve a bare Quart-Trio route instead of the API")
    kind.add_argument("--asgi-floor", dest="floor", action="store_const", const="asgi",
                      help="serve a bare ASGI app (no Quart) instead of the API")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the serving here")
    args = parser.parse_args()
    log.configure(fmt="console", level="warning", stream=sys.stderr)
    if args.profile is None:
        trio.run(serve, args.dsn, args.state_dir, args.floor)
        return
    profiler = cProfile.Profile()
    profiler.runcall(trio.run, serve, args.dsn, args.state_dir, args.floor)
    profiler.dump_stats(args.profile)


if __name__ == "__main__":
    main()
