"""Hostile text through the control API, over real HTTP into a real PostgreSQL and back: every
kind of Unicode, control characters, SQL and HTML metacharacters and 4096-character bodies are
stored and returned exactly (no normalisation, no trimming of message text, no escaping);
phone numbers typed with other scripts' digits are stored as ASCII E.164. What PostgreSQL cannot
store (U+0000) and what JSON cannot carry (lone surrogates) is refused with 400, never a 500.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from tests.support.api import LiveApi, serving
from tests.support.texts import LONG, TEXTS
from wad.api.context import Services
from wad.bus import EventBus
from wad.db.pool import Database

NAME_TEXTS = {k: v.strip() for k, v in TEXTS.items()}  # names are trimmed: see the API docs


UNICODE_DIGITS = {
    "+９９６ ５５５ １２３ ４５６": "+996555123456",  # fullwidth
    "+٩٩٦٥٥٥١٢٣٤٥٦": "+996555123456",  # Arabic-Indic
    "+۹۹۶۵۵۵۱۲۳۴۵۶": "+996555123456",  # Extended Arabic-Indic (Persian)
    "+९९६५५५१२३४५६": "+996555123456",  # Devanagari
}


@pytest.fixture
async def api(db: Database, state_dir: Path, nursery: trio.Nursery) -> AsyncIterator[LiveApi]:
    """The real app over a fresh database, with room for 4096 four-byte characters."""
    async with serving(db, state_dir, nursery, max_body_bytes=64 * 1024,
                       services=Services(bus=EventBus())) as live:
        yield live


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> httpx.Response:
    # Sent as UTF-8 JSON without \u escapes, as most clients send it; the escaped form is
    # covered by the NUL test below.
    raw = json.dumps(body, ensure_ascii=False).encode("utf-8", "surrogatepass")
    return await client.post(path, content=raw, headers={"Content-Type": "application/json"})


async def test_names_are_stored_and_returned_exactly(api: LiveApi) -> None:
    sock = api.socket_client()
    with trio.fail_after(60):
        made: dict[str, str] = {}
        for kind, text in NAME_TEXTS.items():
            r = await post(sock, "/api/organizations", {"name": text})
            assert r.status_code == 201, (kind, r.text)
            assert r.json()["name"] == text, kind
            made[r.json()["id"]] = text
            r = await post(sock, "/api/tokens", {"role": "VIEWER", "organizationId":
                                                 r.json()["id"], "name": TEXTS[kind]})
            assert r.status_code == 201, (kind, r.text)
            assert r.json()["name"] == TEXTS[kind], kind  # token names are kept as given
        listed = {o["id"]: o["name"] for o in
                  (await sock.get("/api/organizations")).json()["organizations"]}
        assert listed == made
        names = sorted(t["name"] for t in (await sock.get("/api/tokens")).json()["tokens"])
        assert names == sorted(TEXTS.values())
        # And in the database itself, byte for byte.
        stored = {str(row["id"]): row["name"] for row in
                  await api.ctx.db.fetch("SELECT id, name FROM organizations")}
        assert stored == made


async def test_message_text_is_queued_and_returned_exactly(api: LiveApi) -> None:
    org = await api.create_org("Round Trip Tours")
    agent = (await api.create_token("AGENT", org))["token"]
    client = api.client(agent)
    with trio.fail_after(60):
        for kind, text in {**TEXTS, **{f"4096 {k}": v for k, v in LONG.items()}}.items():
            r = await post(client, "/api/whatsapp/send", {"to": "+996555123456",
                                                          "content": text})
            assert r.status_code == 202, (kind, r.text)
            message_id = r.json()["id"]
            got = await client.get(f"/api/whatsapp/messages/{message_id}")
            assert got.status_code == 200, got.text
            assert got.json()["content"] == text, kind
            assert got.json()["to"] == "+996555123456"
            stored = await api.ctx.db.fetchval("SELECT content FROM outbox WHERE id = $1",
                                               uuid.UUID(message_id))
            assert stored == text, kind
        for kind, text in LONG.items():
            r = await post(client, "/api/whatsapp/send", {"to": "+996555123456",
                                                          "content": text + "x"})
            assert r.status_code == 400, (kind, r.text)
            assert r.json()["error"]["field"] == "content"
            assert "4096" in r.json()["error"]["message"]


async def test_numbers_in_any_digits_are_stored_as_ascii_e164(api: LiveApi) -> None:
    org = await api.create_org("Digits Tours")
    client = api.client((await api.create_token("AGENT", org))["token"])
    with trio.fail_after(30):
        for typed, e164 in UNICODE_DIGITS.items():
            r = await post(client, "/api/whatsapp/send", {"to": typed, "content": "hi"})
            assert r.status_code == 202, (typed, r.text)
            assert r.json()["to"] == e164
        # Garbage around a number: refused naming `to`, or (the parser is lenient about
        # trailing text) the clean number alone; never the garbage.
        for hostile in ("+996555123456'; --", "+996<b>555</b>123456", "+𝟗𝟗𝟔𝟓𝟓𝟓𝟏𝟐𝟑𝟒𝟓𝟔x",
                        "+996555\u202e654321", "+996555123456\n\rX-Injected: 1",
                        "+1' OR '1'='1"):
            r = await post(client, "/api/whatsapp/send", {"to": hostile, "content": "hi"})
            if r.status_code == 400:
                assert r.json()["error"]["field"] == "to", r.text
            else:
                assert r.status_code == 202, (hostile, r.text)
                assert r.json()["to"] == "+996555123456", (hostile, r.text)
        queued = await api.ctx.db.fetch("SELECT DISTINCT to_phone FROM outbox")
        assert [row["to_phone"] for row in queued] == ["+996555123456"]


async def test_what_cannot_be_stored_is_refused_naming_the_field(api: LiveApi) -> None:
    org = await api.create_org("Refusals")
    sock = api.socket_client()
    json_type = {"Content-Type": "application/json"}
    cases = [
        ("/api/organizations", b'{"name": "before\\u0000after"}', "name"),
        ("/api/tokens", b'{"role": "SUPER_ADMIN", "name": "t\\u0000"}', "name"),
        ("/api/whatsapp/send", f'{{"organizationId": "{org}", "to": "+996555123456", '
         f'"content": "nul \\u0000 inside"}}'.encode(), "content"),
        ("/api/whatsapp/send/bulk", f'{{"organizationId": "{org}", "messages": ['
         f'{{"to": "+996555123456", "content": "fine"}}, '
         f'{{"to": "+996555123457", "content": "\\u0000"}}]}}'.encode(),
         "messages[1].content"),
    ]
    with trio.fail_after(30):
        for path, raw, field in cases:
            r = await sock.post(path, content=raw, headers=json_type)
            assert r.status_code == 400, (path, r.text)
            assert r.json()["error"]["code"] == "invalid"
            assert r.json()["error"]["field"] == field, r.text
            assert "U+0000" in r.json()["error"]["message"]
        # JSON cannot carry a lone surrogate; raw control characters must be escaped in JSON.
        for raw in (b'{"name": "half \\ud83d"}', b'{"name": "\\udc00"}',
                    b'{"name": "raw \x01"}', b'{"name": "bad \xff utf-8"}'):
            r = await sock.post("/api/organizations", content=raw, headers=json_type)
            assert r.status_code == 400, (raw, r.text)
            assert r.json()["error"]["code"] == "bad_json", r.text
        # Nothing of it was stored.
        assert [o["name"] for o in (await sock.get("/api/organizations")).json()[
            "organizations"]] == ["Refusals"]
        assert await api.ctx.db.fetchval("SELECT count(*) FROM outbox") == 0
