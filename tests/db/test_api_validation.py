"""Body validation over real HTTP: each field's wrong type, missing value, unknown neighbour and
out-of-range value is a 400 naming the field; bad JSON is a 400 saying so; oversized bodies 413."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
import trio

from tests.support import api as api_support
from tests.support.api import LiveApi
from wad.whatsapp import phone

live_api = api_support.live_api


def assert_invalid(r: httpx.Response, field: str | None, *, status: int = 400,
                   mentions: str = "") -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["field"] == field, error
    assert error["message"], error
    if field:
        assert field in error["message"], error
    if mentions:
        assert mentions.lower() in error["message"].lower(), error


# (path template, a valid body, {field: [(bad value or MISSING, words the message carries)]})
MISSING = object()


def cases(org: uuid.UUID) -> list[tuple[str, dict[str, Any], str, Any, str]]:
    pairing = f"/api/whatsapp/pairing-code/{org}"
    purge = f"/api/sessions/{org}/purge"
    out: list[tuple[str, dict[str, Any], str, Any, str]] = []

    def add(path: str, valid: dict[str, Any], field: str, bad: Any, words: str) -> None:
        out.append((path, valid, field, bad, words))

    add("/api/organizations", {"name": "Acme"}, "name", 42, "expected `str`")
    add("/api/organizations", {"name": "Acme"}, "name", MISSING, "missing")
    add("/api/organizations", {"name": "Acme"}, "name", "", "length >= 1")
    add("/api/organizations", {"name": "Acme"}, "name", "x" * 201, "length <= 200")
    add("/api/organizations", {"name": "Acme"}, "name", "   ", "blank")

    token = {"role": "ADMIN", "organizationId": str(org), "name": "crm"}
    add("/api/tokens", token, "role", 3, "expected `str`")
    add("/api/tokens", token, "role", MISSING, "missing")
    add("/api/tokens", token, "role", "ROOT", "invalid enum value")
    add("/api/tokens", token, "organizationId", 7, "expected `uuid")
    add("/api/tokens", token, "organizationId", "acme", "invalid uuid")
    add("/api/tokens", token, "organizationId", MISSING, "required for a admin")
    add("/api/tokens", token, "organizationId", str(uuid.uuid4()), "no such organization")
    add("/api/tokens", token, "name", ["crm"], "expected `str`")
    add("/api/tokens", token, "name", "n" * 201, "length <= 200")
    add("/api/tokens", {"role": "SUPER_ADMIN"}, "organizationId", str(org), "no organization")

    add("/api/whatsapp/connect", {"organizationId": str(org)}, "organizationId", 1,
        "expected `uuid")
    add("/api/whatsapp/connect", {"organizationId": str(org)}, "organizationId", "x",
        "invalid uuid")
    add("/api/whatsapp/connect", {"organizationId": str(org)}, "organizationId", MISSING,
        "super admin must name")

    add(pairing, {"phoneNumber": "+996555123456"}, "phoneNumber", 996555123456,
        "expected `str`")
    add(pairing, {"phoneNumber": "+996555123456"}, "phoneNumber", MISSING, "missing")
    add(pairing, {"phoneNumber": "+996555123456"}, "phoneNumber", "", "length >= 1")
    add(pairing, {"phoneNumber": "+996555123456"}, "phoneNumber", "+9" * 30, "length <= 40")
    add(pairing, {"phoneNumber": "+996555123456"}, "phoneNumber", "+abc", "not a phone")
    add(pairing, {"phoneNumber": "+996555123456"}, "phoneNumber", "0555 123 456",
        "no country code")
    add(pairing, {"phoneNumber": "+996555123456"}, "phoneNumber", "+996555", "digits")

    add(purge, {"confirm": True}, "confirm", "yes", "expected `bool`")
    add(purge, {"confirm": True}, "confirm", MISSING, "missing")
    add(purge, {"confirm": True}, "confirm", False, "must be true")
    return out


async def test_each_field_wrong_missing_and_out_of_range(live_api: LiveApi) -> None:
    with trio.fail_after(60):
        org = await live_api.create_org()
        sock = live_api.socket_client()
        failures = []
        for path, valid, field, bad, words in cases(org):
            body = dict(valid)
            if bad is MISSING:
                body.pop(field, None)
            else:
                body[field] = bad
            r = await sock.post(path, json=body)
            try:
                assert_invalid(r, field, mentions=words)
            except AssertionError as exc:
                failures.append(f"{path} {field}={bad!r}: {exc}")
        assert not failures, "\n".join(failures)


@pytest.mark.parametrize("path", [
    "/api/organizations", "/api/tokens", "/api/whatsapp/connect",
    "/api/whatsapp/pairing-code/{org}", "/api/sessions/{org}/purge"])
async def test_unknown_fields_are_refused_by_name(live_api: LiveApi, path: str) -> None:
    with trio.fail_after(30):
        org = await live_api.create_org()
        r = await live_api.socket_client().post(path.format(org=org),
                                                json={"surprise": 1})
        assert_invalid(r, "surprise", mentions="unknown field")


async def test_bad_json_and_bad_shapes(live_api: LiveApi) -> None:
    with trio.fail_after(30):
        sock = live_api.socket_client()
        json_header = {"Content-Type": "application/json"}
        r = await sock.post("/api/organizations", content=b'{"name": "Acme"',
                            headers=json_header)
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "bad_json"
        assert "not valid JSON" in r.json()["error"]["message"]
        r = await sock.post("/api/organizations", content=b'{"name": "Acme"} trailing',
                            headers=json_header)
        assert r.status_code == 400
        assert "trailing" in r.json()["error"]["message"]
        r = await sock.post("/api/organizations", content=b'["Acme"]', headers=json_header)
        assert_invalid(r, None, mentions="expected `object`")
        r = await sock.post("/api/organizations", content=b"", headers=json_header)
        assert_invalid(r, None, mentions="JSON object body")
        r = await sock.post("/api/organizations", content=b"name=Acme",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert r.status_code == 415
        assert "application/json" in r.json()["error"]["message"]
        # Nothing was created by any of these.
        assert (await sock.get("/api/organizations")).json()["organizations"] == []


async def test_oversized_bodies_are_413(live_api: LiveApi) -> None:
    limit = live_api.ctx.settings.api.max_body_bytes
    with trio.fail_after(30):
        sock = live_api.socket_client()
        big = b'{"name": "' + b"x" * limit + b'"}'
        r = await sock.post("/api/organizations", content=big,
                            headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert r.json()["error"]["code"] == "body_too_large"
        assert str(limit) in r.json()["error"]["message"]

        async def chunks() -> Any:  # no Content-Length: the limit holds while streaming too
            for _ in range(8):
                yield b"x" * (limit // 4)

        r = await sock.post("/api/organizations", content=chunks(),
                            headers={"Content-Type": "application/json"})
        assert r.status_code == 413
        assert (await sock.get("/api/organizations")).json()["organizations"] == []


async def test_unknown_paths_and_methods_use_the_error_shape(live_api: LiveApi) -> None:
    with trio.fail_after(30):
        sock = live_api.socket_client()
        r = await sock.get("/api/nothing-here")
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "not_found"
        r = await sock.put("/api/organizations", json={"name": "x"})
        assert r.status_code == 405
        assert r.json()["error"]["code"] == "method_not_allowed"
        r = await sock.get(f"/api/whatsapp/qr/{uuid.uuid4()}", params={"format": "gif"})
        assert_invalid(r, "format", mentions="png")


def test_phone_numbers_normalise_to_e164() -> None:
    assert phone.normalize("+996555123456") == "+996555123456"
    assert phone.normalize(" +996 (555) 12-34-56 ") == "+996555123456"
    assert phone.normalize("00996555123456") == "+996555123456"
    assert phone.normalize("996555123456") == "+996555123456"
    assert phone.normalize("+1 650 253 0000") == "+16502530000"
    assert phone.normalize("+48 600 123 456") == "+48600123456"
    for bad, words in [("", "empty"), ("0555123456", "no country code"),
                       ("+996555", "wrong number of digits"),
                       ("+99655512345678", "wrong number of digits"), ("call me", "no country code"),
                       ("+abc", "not a phone number"), ("+996 111 123456", "not a valid")]:
        with pytest.raises(phone.InvalidPhoneNumber, match=words):
            phone.normalize(bad)
        assert not phone.is_valid(bad)
