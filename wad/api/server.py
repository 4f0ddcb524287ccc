"""Serving the control API on the TCP address and the unix control socket.

Limits against hostile or broken clients:

- the request line and headers together are at most 16 KiB (431 past that, see `Guard`);
- a connection must deliver its request line and headers within `header_timeout_s` of being
  opened (or of its previous answer, between keep-alive requests), however it dribbles them;
- a body must arrive whole within `body_timeout_s` of the handler asking for it (408 after);
  its size is capped by `max_body` (413);
- there is no per-read timeout: a long answer (an event stream) is not cut because the client,
  rightly, sends nothing while it reads;
- a client that stops reading (its window stays closed) is dropped by the kernel after
  `send_timeout_s` (`TCP_USER_TIMEOUT` on the TCP sockets). Hypercorn writes under a shield, so
  nothing in the process could interrupt that write: such a client used to pin its connection
  for ever and keep the daemon from stopping.

With `tls` (a certificate and its key) the TCP address speaks HTTPS (HTTP/1.1 only, so that the
limits above hold as they are); the unix control socket stays plain. A TCP address that is not
loopback without TLS is warned about at start.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import repr_socket_addr, wrap_app

from wad import log
from wad.api.context import AppContext
from wad.api.lane import FastLane
from wad.errors import WadError

_log = log.get("api")

MAX_HEAD_BYTES = 16 * 1024
HEADER_TIMEOUT_S = 10.0
BODY_TIMEOUT_S = 60.0
SEND_TIMEOUT_S = 60.0
CONTROL_SOCKET_MODE = 0o660
"""The control socket acts as super admin: its owner and group only."""

Message = dict[str, Any]
Send = Callable[[Message], Awaitable[None]]


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


class Guard:
    """ASGI wrapper: the head size limit, and answers that leave the connection sound.

    Head size: Hypercorn (h11) refuses a head that is still incomplete past its buffer limit,
    but accepts one of any size that arrives whole in one read (up to 64 KiB). Here every head
    larger than `MAX_HEAD_BYTES` is refused with 431 in the error shape; Hypercorn's own limit,
    set higher, catches only heads dribbled past it (a bare 431).

    Sound connections: Quart-Trio cancels the request's task as soon as Hypercorn reports the
    stream closed, and Hypercorn reports that from inside the send of the answer's last piece,
    before it has either made the connection ready for the next request or closed it. Answered
    before its body had arrived (a 401, a 404 for a POST), a connection was then left neither
    open nor closed: the client's next request on it was never answered and the connection was
    never released. So the last piece is sent under a shield (Hypercorn then only updates its
    own state and closes the socket; it cannot wait on the client), and such an answer says
    `Connection: close`, so that the client does not reuse a connection about to be closed."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                       send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.lower(): value for name, value in scope["headers"]}
        body_done = headers.get(b"content-length", b"0").strip() in (b"0", b"") and \
            b"transfer-encoding" not in headers

        async def tracking_receive() -> Message:
            nonlocal body_done
            message = await receive()
            if message["type"] == "http.request" and not message.get("more_body", False):
                body_done = True
            return message

        async def finishing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not body_done:
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"connection", b"close")]}
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                with trio.CancelScope(shield=True):
                    await send(message)
            else:
                await send(message)

        if head_size(scope) > MAX_HEAD_BYTES:
            body_done = False  # not read: the connection is closed after the answer
            await _refuse(finishing_send, 431, "headers_too_large",
                          f"the request line and headers are larger than {MAX_HEAD_BYTES} "
                          "bytes")
            return
        await self.app(scope, tracking_receive, finishing_send)


def head_size(scope: Message) -> int:
    """The bytes of a request's line and headers, as they came on the wire (near enough)."""
    line = len(scope["method"]) + len(scope.get("raw_path") or b"") + \
        len(scope.get("query_string") or b"") + 12
    return line + sum(len(name) + len(value) + 4 for name, value in scope["headers"])


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "field": None}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def is_loopback(listen: str) -> bool:
    """Whether a `host:port` address is on loopback (`localhost`, 127.0.0.0/8, `[::1]`)."""
    host = listen.rpartition(":")[0].strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def warn_if_exposed(listen: str, tls: tuple[str, str] | None) -> bool:
    """Log a warning (and answer True) when `listen` is reachable beyond loopback without TLS."""
    if tls is not None or is_loopback(listen):
        return False
    _log.warning("the control API listens beyond loopback without TLS: tokens and messages "
                 "cross the network in clear; set api.tls_cert_file and api.tls_key_file, or "
                 "listen on 127.0.0.1 behind a TLS proxy", listen=listen)
    return True


def _use_tls(config: Config, tls: tuple[str, str]) -> None:
    cert, key = tls
    config.certfile, config.keyfile = cert, key
    config.alpn_protocols = ["http/1.1"]
    try:
        config.create_ssl_context()  # now, so that a bad file stops the start with its reason
    except (OSError, ssl.SSLError) as exc:
        raise WadError(f"api.tls_cert_file / api.tls_key_file: cannot load {cert} and {key}: "
                       f"{exc}") from None


async def serve_api(app: Any, *, listen: str, socket_path: Path | None, max_body: int,
                    shutdown: trio.Event, header_timeout_s: float = HEADER_TIMEOUT_S,
                    body_timeout_s: float = BODY_TIMEOUT_S, send_timeout_s: float = SEND_TIMEOUT_S,
                    tls: tuple[str, str] | None = None, fast_lane: bool = True,
                    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `app` until `shutdown` is set; `task_status.started` gets the bound addresses.
    With `tls` (certificate and key files), `listen` is served over TLS. With `fast_lane`, a
    wad app's hottest calls are answered by `wad.api.lane` (see there)."""
    config = Config()
    config.bind = []
    if listen:
        config.bind.append(listen)
        warn_if_exposed(listen, tls)
    if tls is not None:
        _use_tls(config, tls)
    if socket_path is not None:
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        _clear_stale_socket(socket_path)
        control = f"fd://{bind_control_socket(socket_path)}"
        # With TLS, Hypercorn serves `bind` securely and `insecure_bind` plainly. (Assigned,
        # not appended to: Config's default list is shared by every instance.)
        if tls is not None:
            config.insecure_bind = [control]
        else:
            config.bind.append(control)
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 5.0
    # Twice the limit `Guard` enforces with a proper answer: see there.
    config.h11_max_incomplete_size = 2 * MAX_HEAD_BYTES
    # Hypercorn's idle timer runs from a connection's start (or its previous answer) until a
    # request's head is complete, so it bounds a slowly dribbled head as well as idle keep-alive.
    config.keep_alive_timeout = header_timeout_s
    # No per-read timeout: it would also fire while a client waits on a long answer.
    config.read_timeout = None
    config.include_server_header = False  # the fast lane's answers name no server either
    app.config["MAX_CONTENT_LENGTH"] = max_body
    app.config["BODY_TIMEOUT"] = body_timeout_s
    ctx = app.config.get("wad")
    lane = FastLane(ctx, max_head=MAX_HEAD_BYTES, max_body=max_body,
                    header_timeout_s=header_timeout_s, body_timeout_s=body_timeout_s,
                    handshake_timeout_s=config.ssl_handshake_timeout) \
        if fast_lane and isinstance(ctx, AppContext) else None
    if lane is not None:
        ctx.lane = lane.counts
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(_serve, Guard(app), config, shutdown, send_timeout_s, lane)
        task_status.started(bound)


def bind_control_socket(path: Path) -> int:
    """Bind a unix socket at PATH, mode 0660 from birth, and answer its file descriptor (for
    Hypercorn's `fd://` bind, which then owns it).

    The mode is set on the socket before `bind` (Linux gives the new file the socket's mode,
    narrowed by the umask), so the process-wide umask is never touched: changing it would
    race with every thread that creates files meanwhile."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(sock.fileno(), CONTROL_SOCKET_MODE)
        sock.bind(str(path))
        os.chmod(path, CONTROL_SOCKET_MODE)  # the umask may have narrowed it further
    except BaseException:
        sock.close()
        raise
    return sock.detach()


async def _serve(app: Any, config: Config, shutdown: trio.Event, send_timeout_s: float,
                 lane: FastLane | None,
                 task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED) -> None:
    """Hypercorn's `worker_serve` for this daemon: every connection starts in `lane` (when
    there is one), which hands it to Hypercorn at the first request it does not take.

    As `worker_serve` does, the app's lifespan runs around the serving; at `shutdown`
    connections between requests are closed, the others get `config.graceful_timeout` to
    finish their answer."""
    sockets = config.create_sockets()
    for sock in [*sockets.secure_sockets, *sockets.insecure_sockets]:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # Accepted connections inherit it from the listening socket.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                            max(1, int(send_timeout_s * 1000)))
        sock.listen(config.backlog)
    asgi = wrap_app(app, config.wsgi_max_body_size, "asgi")
    context = WorkerContext(None)
    lifespan = Lifespan(asgi, config, {})
    tls = config.create_ssl_context()  # None without a certificate, and then no secure sockets
    listeners: list[Any] = [
        trio.SSLListener(trio.SocketListener(trio.socket.from_stdlib_socket(sock)), tls,
                         https_compatible=True)
        for sock in sockets.secure_sockets if tls is not None]
    listeners += [trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                  for sock in sockets.insecure_sockets]
    binds = [f"https://{repr_socket_addr(sock.family, sock.getsockname())}"
             for sock in sockets.secure_sockets]
    binds += [f"http://{repr_socket_addr(sock.family, sock.getsockname())}"
              for sock in sockets.insecure_sockets]

    async def hypercorn(stream: Any) -> None:
        await TCPServer(asgi, config, context, ConnectionState({}), stream).run()

    async def connection(stream: Any) -> None:
        if lane is None:
            await hypercorn(stream)
        else:
            await lane.serve(stream, hypercorn)

    accepting = trio.CancelScope()

    async def accept(handlers: trio.Nursery) -> None:
        try:
            with accepting:
                await trio.serve_listeners(connection, listeners, handler_nursery=handlers)
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)

    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            server_nursery.start_soon(accept, server_nursery)
            task_status.started(binds)
            await shutdown.wait()
            accepting.cancel()  # no new connections while the others finish
            if lane is not None:
                lane.close_idle()
            await context.terminated.set()  # Hypercorn's idle connections close
            server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()
