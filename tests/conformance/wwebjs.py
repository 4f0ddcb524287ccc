"""A node process running `driver.js`: unmodified whatsapp-web.js Clients, seen from Trio.

`WWebJS.open()` starts it; `start()` creates a Client pointed at a simulator's TLS port,
`eval()` runs a function on a Client (`"async (client, arg) => ..."`) and returns its JSON,
`wait_event()` waits for what a Client emitted. Every event is kept in `events`, in order.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

HERE = Path(__file__).parent
DRIVER = HERE / "driver.js"
PACKAGE = HERE / "node_modules" / "whatsapp-web.js"


class DriverError(Exception):
    """A command to the driver failed (its message carries the JavaScript error)."""


@dataclass
class Event:
    client: str
    name: str
    args: list[Any]
    seq: int  # position in WWebJS.events


class WWebJS:
    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.events: list[Event] = []
        self._changed = trio.Event()
        self._replies: dict[int, Any] = {}
        self._next_id = 0
        self._closed = False

    @classmethod
    @asynccontextmanager
    async def open(cls) -> AsyncIterator[WWebJS]:
        """Run the driver for the length of the block; its Chromiums are closed at the end."""
        if not (PACKAGE / "package.json").exists():
            raise RuntimeError(f"{PACKAGE} is missing: run `make setup` (npm ci in {HERE})")
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed (Debian: apt-get install nodejs npm)")
        proc = await trio.lowlevel.open_process(
            [node, str(DRIVER)], cwd=str(HERE), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self = cls(proc)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read)
            try:
                yield self
            finally:
                with trio.move_on_after(20, shield=True):
                    try:
                        await self._send({"op": "exit"})
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                nursery.cancel_scope.cancel()

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        buf = b""
        async for chunk in self.proc.stdout:
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                self._take(json.loads(line))
        self._closed = True
        self._wake()

    def _take(self, obj: dict[str, Any]) -> None:
        if "event" in obj:
            self.events.append(Event(obj.get("client", ""), obj["event"], obj.get("args") or [],
                                     len(self.events)))
        else:
            self._replies[obj.get("id", -1)] = obj
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _send(self, cmd: dict[str, Any]) -> int:
        assert self.proc.stdin is not None
        self._next_id += 1
        cmd["id"] = self._next_id
        await self.proc.stdin.send_all(json.dumps(cmd).encode() + b"\n")
        return self._next_id

    async def call(self, op: str, **fields: Any) -> Any:
        """One command to the driver; its result, or DriverError."""
        rid = await self._send({"op": op, **fields})
        while rid not in self._replies:
            if self._closed:
                raise DriverError(f"driver exited before answering {op}")
            await self._changed.wait()
        reply = self._replies.pop(rid)
        if not reply["ok"]:
            raise DriverError(reply["error"])
        return reply["result"]

    async def start(self, client: str, *, port: int, data_path: Path, auth: str = "local",
                    pair: str | None = None) -> None:
        """A new whatsapp-web.js Client with web.whatsapp.com mapped to 127.0.0.1:`port`."""
        await self.call("start", client=client, port=port, dataPath=str(data_path), auth=auth,
                        pair=pair)

    async def eval(self, client: str, js: str, arg: Any = None) -> Any:
        return await self.call("eval", client=client, js=js, arg=arg)

    async def stop(self, client: str) -> None:
        await self.call("stop", client=client)

    def seen(self, client: str, name: str, since: int = 0) -> list[Event]:
        return [e for e in self.events[since:] if e.client == client and e.name == name]

    async def wait_event(self, client: str, name: str,
                         match: Callable[[list[Any]], bool] | None = None,
                         since: int = 0) -> Event:
        """The first event `name` of `client` at or after position `since` whose arguments
        satisfy `match`; waits for it (bound it with trio.fail_after)."""
        while True:
            for e in self.seen(client, name, since):
                if match is None or match(e.args):
                    return e
            failed = [e for e in self.events[since:]
                      if e.client in (client, "") and e.name in ("initialize_failed",
                                                                  "unhandled_rejection")]
            if failed:
                raise DriverError(f"while waiting for {name}: {failed[0].name} {failed[0].args}")
            if self._closed:
                raise DriverError(f"driver exited while waiting for {name}")
            await self._changed.wait()

    def mark(self) -> int:
        """The position of the next event, for `wait_event(since=...)`."""
        return len(self.events)
