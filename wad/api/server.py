"""Serving the control API on the TCP address and the unix control socket."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from wad.errors import WadError


def _clear_stale_socket(path: Path) -> None:
    """Remove a socket file left by a daemon that died; refuse if a daemon still answers."""
    if not path.exists():
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()
    else:
        raise WadError(f"another wad daemon is already serving {path}")
    finally:
        probe.close()


async def serve_api(app: Any, *, listen: str, socket_path: Path | None, max_body: int,
                    shutdown: trio.Event,
                    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` until `shutdown` is set; `task_status.started` gets the bound addresses."""
    config = Config()
    config.bind = []
    if listen:
        config.bind.append(listen)
    if socket_path is not None:
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        _clear_stale_socket(socket_path)
        config.bind.append(f"unix:{socket_path}")
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 5.0
    config.h11_max_incomplete_size = 16 * 1024
    config.keep_alive_timeout = 30.0
    config.read_timeout = 60
    app.config["MAX_CONTENT_LENGTH"] = max_body
    old_umask = os.umask(0o117)  # the control socket is born 0660, never wider
    try:
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(_serve, app, config, shutdown)
            os.umask(old_umask)
            if socket_path is not None:
                os.chmod(socket_path, 0o660)
            task_status.started(bound)
    finally:
        os.umask(old_umask)


async def _serve(app: Any, config: Config, shutdown: trio.Event,
                 task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    await serve(app, config, shutdown_trigger=shutdown.wait, task_status=task_status)
