"""WhatsApp's rules in `wad.whatsapp`: id forms, the chat of a number, which chats are stored,
and that inbound, catch-up and the importer all answer from that one rule."""

from __future__ import annotations

import pytest

from wad.browser.events import Message as WaMessage
from wad.importer.sources import chat_kind as importer_kind
from wad.whatsapp import chats, ids
from wad.whatsapp import messages as parse


def test_id_forms() -> None:
    assert ids.server("996555123456@c.us") == "c.us"
    assert ids.server("no-at-sign") == ""
    assert ids.is_lid("123456789012345@lid")
    assert not ids.is_lid("996555123456@c.us")
    assert ids.user_chat("+996555123456") == "996555123456@c.us"
    assert ids.user_chat("996555123456") == "996555123456@c.us"


@pytest.mark.parametrize(("chat", "phone"), [
    ("996555123456@c.us", "+996555123456"),
    ("996555123456@s.whatsapp.net", "+996555123456"),
    ("123456789012345@lid", None),
    ("120363012345678901@g.us", None),
    ("status@broadcast", None),
    ("99@c.us", None),
])
def test_phone_of_a_chat(chat: str, phone: str | None) -> None:
    assert ids.phone_from_chat_id(chat) == phone


def test_chat_ids_from_numbers_and_ids() -> None:
    assert ids.chat_id("+996 (555) 12-34-56") == "996555123456@c.us"
    assert ids.chat_id("120363012345678901@g.us") == "120363012345678901@g.us"
    for bad in ("@c.us", "996555123456@", "a b@c.us", "0555 123 456", "12"):
        with pytest.raises(ids.InvalidChatId):
            ids.chat_id(bad)
    assert isinstance(ids.InvalidChatId("x"), ValueError)


def test_message_ids() -> None:
    own = ids.serialized_id("996555123456@c.us", "3EB0ABC")
    assert own == "true_996555123456@c.us_3EB0ABC"
    assert ids.serialized_id("996555123456@c.us", "AB", from_me=False) == \
        "false_996555123456@c.us_AB"
    assert ids.bare_id(own) == "3EB0ABC"


@pytest.mark.parametrize(("chat", "flags", "kind"), [
    ("996555123456@c.us", {}, "chat"),
    ("123456789012345@lid", {}, "chat"),
    ("120363012345678901@g.us", {}, "group"),
    ("120363012345678901", {"is_group": True}, "group"),
    ("status@broadcast", {}, "broadcast"),
    # A broadcast list's own chat: broadcast by its id even when the page sets no flag.
    ("1712345678@broadcast", {}, "broadcast"),
    ("996555123456@c.us", {"is_broadcast": True}, "broadcast"),
    ("120363111111111111@newsletter", {}, "newsletter"),
    ("120363111111111111", {"is_newsletter": True}, "newsletter"),
])
def test_chat_kinds(chat: str, flags: dict[str, bool], kind: str) -> None:
    assert chats.chat_kind(chat, **flags) == kind


def test_which_chats_are_stored() -> None:
    assert chats.is_stored("chat")
    for kind, setting in (("group", "groups"), ("broadcast", "status"),
                          ("newsletter", "newsletters")):
        assert not chats.is_stored(kind)  # type: ignore[arg-type]
        assert chats.is_stored(kind, **{setting: True})  # type: ignore[arg-type]
        others = {s: True for s in ("groups", "status", "newsletters") if s != setting}
        assert not chats.is_stored(kind, **others)  # type: ignore[arg-type]


LIST = "1712345678@broadcast"


def test_inbound_catch_up_and_importer_agree_on_broadcast_lists() -> None:
    """The copies used to disagree: a broadcast list's message without the page's broadcast flag
    was stored live although catch-up and the importer skipped the chat."""
    message = WaMessage(id=f"true_{LIST}_3EB0AA", from_me=True, chat_id=LIST, type="chat",
                        body="hello", timestamp=1)
    assert parse.is_ignored(message)
    assert not parse.is_ignored(message, status=True)
    assert importer_kind(LIST) == "broadcast"
