"""The warning at start for a control API reachable beyond loopback without TLS."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from wad.api.server import is_loopback, warn_if_exposed


@pytest.mark.parametrize(("listen", "loopback"), [
    ("127.0.0.1:8080", True), ("127.8.9.10:80", True), ("localhost:8080", True),
    ("[::1]:8080", True), ("0.0.0.0:8080", False), ("[::]:8080", False),
    ("10.0.0.5:8080", False), ("crm-gateway.internal:8080", False), (":8080", False),
])
def test_which_addresses_are_loopback(listen: str, loopback: bool) -> None:
    assert is_loopback(listen) is loopback


def test_an_exposed_address_without_tls_is_warned_about() -> None:
    with capture_logs() as logs:
        assert warn_if_exposed("0.0.0.0:8080", None) is True
        assert warn_if_exposed("0.0.0.0:8080", ("/etc/wad/api.crt", "/etc/wad/api.key")) is False
        assert warn_if_exposed("127.0.0.1:8080", None) is False
    assert len(logs) == 1
    warning = logs[0]
    assert warning["log_level"] == "warning"
    assert warning["listen"] == "0.0.0.0:8080"
    assert "without TLS" in warning["event"] and "api.tls_cert_file" in warning["event"]
