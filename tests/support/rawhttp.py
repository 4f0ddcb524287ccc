"""HTTP/1.1 by hand on raw sockets, for tests that need exactly the bytes: requests written as
given, answers read back (status, headers, body), connections watched for their close."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import trio


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def read_answer(stream: trio.SocketStream, timeout: float = 10.0) -> Answer | None:
    """The next HTTP answer on `stream`, or None when the server closed it first."""
    buffer = b""
    with trio.fail_after(timeout):
        while b"\r\n\r\n" not in buffer:
            chunk = await _receive(stream)
            if not chunk:
                assert not buffer, f"closed in the middle of an answer: {buffer!r}"
                return None
            buffer += chunk
        head, _, body = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip()
                   for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = await _receive(stream)
            assert chunk, "closed in the middle of a body"
            body += chunk
    return Answer(status, headers, body)


async def _receive(stream: trio.SocketStream) -> bytes:
    try:
        return bytes(await stream.receive_some(65536))
    except trio.BrokenResourceError:  # reset by the server: closed as well
        return b""


async def closed_within(stream: trio.SocketStream, seconds: float) -> float:
    """Wait for the server to close `stream` (reading and discarding); answer when it did."""
    started = time.monotonic()
    with trio.fail_after(seconds):
        while await _receive(stream):
            pass
    return time.monotonic() - started


def request(method: str, path: str, *, headers: dict[str, str] | None = None,
            body: bytes = b"") -> bytes:
    headers = headers or {}
    lines = [f"{method} {path} HTTP/1.1", "Host: wad"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if "Content-Length" not in headers and (body or method in ("POST", "PUT")):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
