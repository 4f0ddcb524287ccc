"""The fast lane: the API's two hottest calls answered straight off the connection.

A CRM polls `GET /api/whatsapp/status/{org}` and queues through `POST /api/whatsapp/send` all
day. Through Hypercorn and Quart a request costs 0.5-0.9 ms of CPU before the route runs (HTTP
parsing by h11, a task per request, the idle timer's restart, Quart's request and response
objects); that, not the database, capped both routes (issue 20). Every connection therefore
starts here: plain keep-alive HTTP/1.1 requests for those two routes are parsed, answered by the
same functions the Quart routes call (`session_status`, `queue_send`, with the same
authentication, validation and error shapes) and written back, at a few hundredths of a
millisecond each.

The first request the lane does not take (any other path, another method, HTTP/1.0, a query
string, `Transfer-Encoding`, `Expect`, `Upgrade`, a body over the size limit, a duplicated or
malformed header, anything unusual) hands the connection to Hypercorn, with the bytes already
read, for the rest of its life: everything else keeps its one implementation there, limits
included (`wad.api.server`). The lane keeps the server's limits for what it takes: the head must
arrive within the header timeout of the connection's start or of the previous answer, the body
within the body timeout (else 408 and the connection closes); a head past the head limit
(`max_head`) still incomplete goes to Hypercorn, which refuses it.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

import msgspec
import trio

from wad import log
from wad.api import auth
from wad.api.app import failure_answer
from wad.api.context import AppContext, LaneCounts
from wad.api.errors import ApiError
from wad.api.routes.outbound import SendRequest, queue_send
from wad.api.routes.whatsapp import session_status
from wad.api.validation import parse_body

_log = log.get("api")

MAX_RECV = 64 * 1024
STATUS_PREFIX = b"/api/whatsapp/status/"
SEND_PATH = b"/api/whatsapp/send"

# A header line the lane takes as it is: a token name, optional blanks, a value of visible
# ASCII (inner spaces and tabs allowed). Anything else (obsolete line folding, control or
# non-ASCII bytes, blanks before the colon) goes to Hypercorn, which knows every rule.
_HEADER = re.compile(rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*((?:[\x21-\x7e](?:[\x20-\x7e\t]*"
                     rb"[\x21-\x7e])?)?)[ \t]*")
_ORG_SEGMENT = re.compile(rb"[0-9A-Za-z-]{1,64}")
_NOT_TAKEN = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"te", b"trailer"})

Answer = tuple[int, bytes, dict[str, str]]
Handoff = Callable[[Any], Awaitable[None]]


@dataclass(frozen=True)
class LaneRequest:
    """A request the lane takes: its route, the part of the path it names, and what it needs
    of the headers."""

    route: str  # "status" or "send"
    org: str  # the `{org}` segment of a status path ("" for send)
    authorization: str
    content_type: str
    content_length: int
    close: bool  # `Connection: close`: answer, then close


def parse_head(head: bytes, *, max_body: int) -> LaneRequest | None:
    """The request whose line and headers (without the blank line) are `head`, or None when
    the lane does not take it."""
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] != b"HTTP/1.1":
        return None
    method, target = parts[0], parts[1]
    if method == b"GET" and target.startswith(STATUS_PREFIX):
        org = target[len(STATUS_PREFIX):]
        if _ORG_SEGMENT.fullmatch(org) is None:
            return None
        route = "status"
    elif method == b"POST" and target == SEND_PATH:
        org, route = b"", "send"
    else:
        return None
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        match = _HEADER.fullmatch(line)
        if match is None:
            return None
        name = match[1].lower()
        if name in headers or name in _NOT_TAKEN:
            return None
        headers[name] = match[2]
    if b"host" not in headers:
        return None  # HTTP/1.1 requires it: Hypercorn answers 400
    length = headers.get(b"content-length", b"0")
    if not length.isdigit() or len(length) > 12 or int(length) > max_body:
        return None
    if route == "status" and length != b"0":
        return None
    connection = headers.get(b"connection", b"keep-alive").lower()
    if connection not in (b"keep-alive", b"close"):
        return None
    return LaneRequest(route=route, org=org.decode(),
                       authorization=headers.get(b"authorization", b"").decode(),
                       content_type=headers.get(b"content-type", b"").decode(),
                       content_length=int(length), close=connection == b"close")


class _Replay:
    """A stream that gives back `buffered` before reading on from `inner`: how a connection
    reaches Hypercorn with what the lane already read. Anything else is `inner`'s."""

    def __init__(self, inner: Any, buffered: bytes) -> None:
        self._inner = inner
        self._buffered = buffered

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._buffered:
            data, self._buffered = self._buffered, b""
            await trio.lowlevel.checkpoint()
            return data
        return bytes(await self._inner.receive_some(max_bytes))

    async def send_all(self, data: bytes) -> None:
        await self._inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._inner.send_eof()  # an SSLStream has none: AttributeError, as Hypercorn expects

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class FastLane:
    """Serves connections for one daemon's API (see the module's docstring)."""

    def __init__(self, ctx: AppContext, *, max_head: int, max_body: int,
                 header_timeout_s: float, body_timeout_s: float,
                 handshake_timeout_s: float) -> None:
        self.ctx = ctx
        self.max_head = max_head
        self.max_body = max_body
        self.header_timeout_s = header_timeout_s
        self.body_timeout_s = body_timeout_s
        self.handshake_timeout_s = handshake_timeout_s
        self.counts = LaneCounts()
        self._waiting: set[trio.CancelScope] = set()
        self._closing = False
        self._date = (0, b"")

    def close_idle(self) -> None:
        """The server stops: close every connection between requests now, and every other one
        after its answer."""
        self._closing = True
        for scope in self._waiting:
            scope.cancel()

    async def serve(self, stream: Any, handoff: Handoff) -> None:
        """Answer what the lane takes on `stream`; hand the connection to `handoff` at the
        first request it does not take. Closes `stream` when it is done with it."""
        handed = False
        try:
            if isinstance(stream, trio.SSLStream):
                with trio.fail_after(self.handshake_timeout_s):
                    await stream.do_handshake()
            on_socket = _transport(stream).family == socket.AF_UNIX
            buffer = bytearray()
            while not self._closing:
                request, head_end = await self._read_head(stream, buffer)
                if request is None:
                    if head_end < 0:
                        return  # closed, timed out or stopping
                    handed = True
                    self.counts.handed_off += 1
                    await handoff(_Replay(stream, bytes(buffer)))
                    return
                body_end = head_end + request.content_length
                if not await self._read_body(stream, buffer, body_end):
                    await stream.send_all(self._encode(
                        _error(ApiError(408, "request_timeout", "the request body did not "
                                        f"arrive within {self.body_timeout_s:g} s")),
                        close=True))
                    return
                body = bytes(buffer[head_end:body_end])
                del buffer[:body_end]
                answer = await self._answer(request, body, on_socket=on_socket)
                close = request.close or self._closing
                self.counts.answered += 1
                await stream.send_all(self._encode(answer, close=close))
                if close:
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError,
                OSError):
            pass  # the client went away, or never finished its TLS handshake
        finally:
            if not handed:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(stream)

    async def _read_head(self, stream: Any, buffer: bytearray) -> tuple[LaneRequest | None, int]:
        """Read until `buffer` holds a whole head: (the request, where its body starts);
        (None, where the body starts) for a request the lane does not take, or a head too large
        to be one; (None, -1) when the connection closed or timed out first, or the server
        stops while it waits."""
        with trio.move_on_after(self.header_timeout_s) as scope:
            self._waiting.add(scope)
            try:
                while (end := buffer.find(b"\r\n\r\n")) < 0:
                    if len(buffer) > self.max_head:
                        return None, 0
                    data = await stream.receive_some(MAX_RECV)
                    if not data:
                        return None, -1
                    buffer += data
            finally:
                self._waiting.discard(scope)
        if scope.cancelled_caught:
            return None, -1
        if end > self.max_head:
            return None, end + 4  # whole but too large: Hypercorn's `Guard` answers 431
        request = parse_head(bytes(buffer[:end]), max_body=self.max_body)
        return request, end + 4

    async def _read_body(self, stream: Any, buffer: bytearray, end: int) -> bool:
        """Read until `buffer` holds `end` bytes; False if the body timeout passes first."""
        with trio.move_on_after(self.body_timeout_s):
            while len(buffer) < end:
                data = await stream.receive_some(MAX_RECV)
                if not data:
                    raise trio.BrokenResourceError("the client closed before its body arrived")
                buffer += data
            return True
        return False

    async def _answer(self, request: LaneRequest, body: bytes, *, on_socket: bool) -> Answer:
        try:
            principal = await auth.identify_api(self.ctx.token_cache(), on_socket=on_socket,
                                                authorization=request.authorization)
            if request.route == "status":
                org_id = auth.parse_uuid(request.org, what="organization")
                auth.permit(principal, org_id, "VIEWER")
                found = await session_status(self.ctx, org_id)
                return 200, msgspec.json.encode(found), {}
            data = parse_body(SendRequest, body, request.content_type)
            queued, status = await queue_send(self.ctx, principal, data)
            return status, msgspec.json.encode(queued), {}
        except ApiError as err:
            return _error(err)
        except Exception as err:
            path = SEND_PATH if request.route == "send" else STATUS_PREFIX + request.org.encode()
            return _error(failure_answer(self.ctx, err, path.decode()))

    def _encode(self, answer: Answer, *, close: bool) -> bytes:
        status, body, headers = answer
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, formatdate(now, usegmt=True).encode())
        lines = [b"HTTP/1.1 %d %s" % (status, HTTPStatus(status).phrase.encode()),
                 b"content-type: application/json",
                 b"content-length: %d" % len(body),
                 b"date: " + self._date[1]]
        lines += [f"{name}: {value}".encode() for name, value in headers.items()]
        if close:
            lines.append(b"connection: close")
        return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _error(err: ApiError) -> Answer:
    return err.status, msgspec.json.encode(err.body()), err.headers


def _transport(stream: Any) -> socket.socket:
    """The socket under a (TLS) stream."""
    while isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    sock: socket.socket = stream.socket
    return sock

