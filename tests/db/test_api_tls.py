"""TLS on the control API's TCP address, with a certificate made in the test (`cryptography`,
through the simulator's `self_signed`): HTTPS answers there, plain HTTP does not, the unix control
socket stays plain; a bad certificate stops the start with its reason."""

from __future__ import annotations

import functools
import ssl
from pathlib import Path

import httpx
import pytest
import trio

from wad.api.app import AppContext, create_app
from wad.api.server import serve_api
from wad.config import ApiSettings, DaemonSettings, Settings
from wad.db.pool import Database
from wad.errors import WadError
from wad.sim.tls import self_signed


async def test_the_tcp_address_speaks_tls_and_the_socket_stays_plain(
        db: Database, state_dir: Path, nursery: trio.Nursery) -> None:
    cert, key = self_signed(state_dir / "tls")
    settings = Settings(daemon=DaemonSettings(state_dir=str(state_dir)),
                        api=ApiSettings(listen="127.0.0.1:0", tls_cert_file=str(cert),
                                        tls_key_file=str(key)))
    assert settings.api.tls == (str(cert), str(key))
    shutdown = trio.Event()
    socket_path = state_dir / "run" / "wad.sock"
    addresses = await nursery.start(functools.partial(
        serve_api, create_app(AppContext(settings=settings, db=db)), listen="127.0.0.1:0",
        socket_path=socket_path, max_body=4096, shutdown=shutdown, tls=settings.api.tls))
    try:
        url = next(a for a in addresses if a.startswith("https://127."))
        trusted = ssl.create_default_context(cafile=str(cert))
        with trio.fail_after(30):
            async with httpx.AsyncClient(base_url=url, verify=trusted, timeout=10) as https:
                r = await https.get("/healthz")
                assert r.status_code == 200 and r.json()["status"] == "ok"
                assert r.http_version == "HTTP/1.1"
                assert (await https.get("/api/overview")).status_code == 401  # tokens still
            # An unknown certificate is refused by a client that checks (nothing is weakened),
            # and plain HTTP on the TLS port gets no answer.
            async with httpx.AsyncClient(base_url=url, timeout=10) as untrusting:
                with pytest.raises(httpx.ConnectError):
                    await untrusting.get("/healthz")
            plain_url = url.replace("https://", "http://")
            async with httpx.AsyncClient(base_url=plain_url, timeout=10) as plain:
                with pytest.raises(httpx.HTTPError):
                    await plain.get("/healthz")
            # The control socket is served plainly, as the super admin.
            transport = httpx.AsyncHTTPTransport(uds=str(socket_path))
            async with httpx.AsyncClient(transport=transport, base_url="http://wad",
                                         timeout=10) as sock:
                r = await sock.get("/api/organizations")
                assert r.status_code == 200, r.text
    finally:
        shutdown.set()


async def test_an_unreadable_certificate_stops_the_start_with_its_reason(
        db: Database, state_dir: Path, nursery: trio.Nursery) -> None:
    cert, _key = self_signed(state_dir / "tls")
    missing = state_dir / "tls" / "absent.key"
    settings = Settings(daemon=DaemonSettings(state_dir=str(state_dir)))
    with trio.fail_after(10), pytest.raises(WadError, match="api.tls_cert_file") as raised:
        await nursery.start(functools.partial(
            serve_api, create_app(AppContext(settings=settings, db=db)), listen="127.0.0.1:0",
            socket_path=None, max_body=4096, shutdown=trio.Event(),
            tls=(str(cert), str(missing))))
    assert str(missing) in str(raised.value)
