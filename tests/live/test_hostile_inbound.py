"""Hostile text arriving from WhatsApp: every kind of Unicode, control characters, SQL and HTML
metacharacters, a 4096-character message and hostile sender names travel from the simulated
phone through the page in Chromium and the inbound actor into PostgreSQL, and are stored
exactly. A message carrying U+0000 (which PostgreSQL text cannot hold) is not lost and does not
stop the messages after it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.inbound import link_inbound_org, stored, wa_id
from tests.support.stack import open_stack
from tests.support.texts import LONG, TEXTS
from wad.db.repo import clients as clients_repo

pytestmark = pytest.mark.browser

ACCOUNT = "996700200500"


async def test_hostile_messages_from_the_phone_are_stored_exactly(state_dir: Path,
                                                                  dsn: str) -> None:
    async with open_stack(state_dir, dsn) as stack:
        org = await link_inbound_org(stack, ACCOUNT, "Karakol Tours")

        texts = {**TEXTS, "4096 four-byte": LONG["four-byte"], "4096 mixed": LONG["mixed"]}
        sent = {}
        for i, (kind, text) in enumerate(texts.items()):
            sender = f"99655512{i:04d}"
            sent[kind] = await stack.phone.deliver(ACCOUNT, sender, text,
                                                   push_name=TEXTS["html"][:60])
        rows = await stored(stack, org, [wa_id(m) for m in sent.values()], timeout=60)
        for (kind, text), row in zip(texts.items(), rows, strict=True):
            assert row.body == text, kind
        client = await clients_repo.get_by_phone(stack.db, organization_id=org,
                                                 phone="+996555120000")
        assert client is not None and client.push_name == TEXTS["html"][:60]


async def test_a_message_with_nul_is_not_lost_and_does_not_stop_the_next(state_dir: Path,
                                                                       dsn: str) -> None:
    async with open_stack(state_dir, dsn) as stack:
        org = await link_inbound_org(stack, ACCOUNT, "Karakol Tours")
        nul = await stack.phone.deliver(ACCOUNT, "996555129999", "before\x00after",
                                        push_name="Nul\x00Name")
        after = await stack.phone.deliver(ACCOUNT, "996555129999", "the next message")
        nul_row, after_row = await stored(stack, org, [wa_id(nul), wa_id(after)], timeout=15)
        assert after_row.body == "the next message"
        assert after_row.processing_state == "DONE"  # the sender became a client all the same
        assert nul_row.body is not None and "before" in nul_row.body
        assert nul_row.body.endswith("after")
