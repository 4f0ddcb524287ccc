"""The simulator served over TLS (`serve(tls_port=...)`, `wad sim --tls-port`), for clients whose
URL is fixed to https://web.whatsapp.com/ (docs/simulator.md, "TLS routing")."""

from __future__ import annotations

import ssl
from functools import partial
from urllib.parse import urlsplit

import httpx
import trio
from cryptography import x509

from wad.sim.client import SimClient
from wad.sim.server import serve


async def test_tls_endpoint_serves_the_same_simulator_as_plain_http(nursery: trio.Nursery):
    handle = await nursery.start(partial(serve, seed=1, tls_port=0))
    assert handle.url.startswith("http://") and handle.tls_url.startswith("https://")
    async with SimClient(handle.url) as simc:
        await simc.create_account("996555100200", "Silk Road Tours")
    async with httpx.AsyncClient(verify=False) as http:
        page = await http.get(handle.tls_url)
        assert page.status_code == 200 and "wa.js" in page.text
        # One simulator behind both endpoints: the account made over HTTP is seen over HTTPS.
        acc = await http.get(handle.tls_url + "_sim/accounts/996555100200")
        assert acc.json()["push_name"] == "Silk Road Tours"
    host, port = urlsplit(handle.tls_url).hostname, urlsplit(handle.tls_url).port
    pem = await trio.to_thread.run_sync(ssl.get_server_certificate, (host, port))
    cert = x509.load_pem_x509_certificate(pem.encode())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "web.whatsapp.com" in names.get_values_for_type(x509.DNSName)


async def test_without_tls_port_there_is_no_tls_endpoint(nursery: trio.Nursery):
    handle = await nursery.start(partial(serve, seed=1))
    assert handle.tls_url is None and handle.url.startswith("http://")
