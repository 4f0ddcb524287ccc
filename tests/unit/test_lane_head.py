"""Which requests the fast lane takes (`wad.api.lane.parse_head`): plain keep-alive HTTP/1.1
calls of its two routes; anything else is left to Hypercorn, which knows every rule."""

from __future__ import annotations

import pytest

from wad.api.lane import parse_head

ORG = "3f2b8a52-3c39-4d8e-9a55-0b7d1c1f2a10"
STATUS = f"GET /api/whatsapp/status/{ORG} HTTP/1.1\r\nHost: wad\r\nAuthorization: Bearer wad_x"
SEND = ("POST /api/whatsapp/send HTTP/1.1\r\nHost: wad\r\nContent-Type: application/json\r\n"
        "Content-Length: 42")


def head(text: str) -> bytes:
    return text.encode("latin-1")


def test_takes_status_and_send_with_what_they_need() -> None:
    status = parse_head(head(STATUS), max_body=1024)
    assert status is not None
    assert (status.route, status.org, status.authorization) == ("status", ORG, "Bearer wad_x")
    assert (status.content_length, status.close) == (0, False)
    send = parse_head(head(SEND + "\r\nConnection: close"), max_body=1024)
    assert send is not None
    assert (send.route, send.content_type, send.content_length, send.close) == \
        ("send", "application/json", 42, True)


def test_header_names_are_case_insensitive_and_blanks_around_values_ignored() -> None:
    found = parse_head(head(f"GET /api/whatsapp/status/{ORG} HTTP/1.1\r\nHOST:wad\r\n"
                            "authorization: \t Bearer wad_y \t"), max_body=1024)
    assert found is not None
    assert found.authorization == "Bearer wad_y"


@pytest.mark.parametrize("text", [
    # other routes, methods, versions, targets
    f"GET /api/whatsapp/qr/{ORG} HTTP/1.1\r\nHost: wad",
    f"POST /api/whatsapp/status/{ORG} HTTP/1.1\r\nHost: wad",
    "GET /api/whatsapp/send HTTP/1.1\r\nHost: wad",
    "POST /api/whatsapp/send/bulk HTTP/1.1\r\nHost: wad\r\nContent-Length: 2",
    f"GET /api/whatsapp/status/{ORG} HTTP/1.0\r\nHost: wad",
    f"GET /api/whatsapp/status/{ORG}?x=1 HTTP/1.1\r\nHost: wad",
    f"GET /api/whatsapp/status/{ORG}/ HTTP/1.1\r\nHost: wad",
    "GET /api/whatsapp/status/ HTTP/1.1\r\nHost: wad",
    "GET /api/whatsapp/status/%41bc HTTP/1.1\r\nHost: wad",
    f"GET  /api/whatsapp/status/{ORG} HTTP/1.1\r\nHost: wad",
    f"GET http://wad/api/whatsapp/status/{ORG} HTTP/1.1\r\nHost: wad",
    # headers the lane leaves to Hypercorn
    f"GET /api/whatsapp/status/{ORG} HTTP/1.1",  # no Host
    SEND + "\r\nTransfer-Encoding: chunked",
    SEND + "\r\nExpect: 100-continue",
    f"GET /api/whatsapp/status/{ORG} HTTP/1.1\r\nHost: wad\r\nUpgrade: websocket",
    f"GET /api/whatsapp/status/{ORG} HTTP/1.1\r\nHost: wad\r\nConnection: Upgrade",
    f"GET /api/whatsapp/status/{ORG} HTTP/1.1\r\nHost: wad\r\nContent-Length: 3",
    SEND.replace("Content-Length: 42", "Content-Length: 2048"),  # over max_body
    SEND.replace("Content-Length: 42", "Content-Length: -1"),
    SEND.replace("Content-Length: 42", "Content-Length: 4x"),
    SEND + "\r\nContent-Length: 42",  # duplicated
    STATUS + "\r\nAuthorization: Bearer wad_z",  # duplicated
    STATUS + "\r\n folded continuation",
    STATUS + "\r\nX-Name : value",  # blank before the colon
    STATUS + "\r\nX-Name: caf\xe9",  # not ASCII
    STATUS + "\r\nX-Name: a\x00b",
    STATUS + "\r\nno colon here",
    STATUS + "\r\n",  # an empty header line
])
def test_leaves_everything_else_to_hypercorn(text: str) -> None:
    assert parse_head(head(text), max_body=1024) is None
