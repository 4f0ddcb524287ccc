"""The inbound channel's pure parts: WhatsApp messages to rows, names given in messages, the
country of a number, and the settings' validation."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import msgspec
import pytest

from wad.browser.events import Message as WaMessage
from wad.config import InboundSettings, inbound_settings
from wad.whatsapp import ids
from wad.whatsapp import messages as parse
from wad.whatsapp.names import given_name

ORG = uuid.UUID("00000000-0000-4000-8000-0000000000aa")


def wa(**fields: object) -> WaMessage:
    values: dict[str, object] = {
        "id": "false_996555123456@c.us_ABCDEF0123456789ABCD", "from_me": False,
        "chat_id": "996555123456@c.us", "type": "chat", "body": "Hello", "timestamp": 1751360400,
        "push_name": "Aigerim", "ack": 0,
    }
    values.update(fields)
    return msgspec.convert(values, WaMessage)


@pytest.mark.parametrize(("chat", "phone"), [
    ("996555123456@c.us", "+996555123456"),
    ("48601234567@c.us", "+48601234567"),
    ("971501234567@s.whatsapp.net", "+971501234567"),
    ("120363012345678901@g.us", None),
    ("status@broadcast", None),
    ("123456789012345@lid", None),
    ("120363111111111111@newsletter", None),
    ("99655512@c.us", None),  # too short for Kyrgyzstan
    ("abc@c.us", None),
])
def test_chat_id_to_e164(chat: str, phone: str | None) -> None:
    assert ids.phone_from_chat_id(chat) == phone


@pytest.mark.parametrize(("wa_type", "stored"), [
    ("chat", "text"), ("image", "image"), ("video", "video"), ("ptt", "audio"),
    ("audio", "audio"), ("document", "document"), ("sticker", "sticker"),
    ("location", "location"), ("vcard", "vcard"), ("multi_vcard", "vcard"), ("poll_creation", "other"),
])
def test_message_types(wa_type: str, stored: str) -> None:
    assert parse.message_type(wa_type) == stored


def test_incoming_text_row() -> None:
    row = parse.new_message(ORG, wa())
    assert (row.direction, row.sender, row.status, row.type) == ("IN", "CLIENT", "RECEIVED", "text")
    assert row.body == "Hello" and row.caption is None and row.media is None
    assert row.wa_message_id == "false_996555123456@c.us_ABCDEF0123456789ABCD"
    assert row.sent_at == datetime(2025, 7, 1, 9, 0, tzinfo=UTC)
    assert row.processing_state == "PENDING"


def test_own_message_typed_on_the_phone_is_outgoing_from_a_human() -> None:
    row = parse.new_message(ORG, wa(id="true_996555123456@c.us_3EB0AA", from_me=True, ack=1))
    assert (row.direction, row.sender, row.status) == ("OUT", "HUMAN", "SENT")
    queued = parse.new_message(ORG, wa(id="true_996555123456@c.us_3EB0AB", from_me=True, ack=2),
                               sender="AI")
    assert (queued.sender, queued.status) == ("AI", "DELIVERED")


def test_media_rows_keep_type_caption_and_file_facts() -> None:
    image = parse.new_message(ORG, wa(type="image", body="", caption="Our hotel?", has_media=True,
                                      mimetype="image/jpeg", size=48213))
    assert (image.type, image.body, image.caption) == ("image", None, "Our hotel?")
    assert image.media == {"wa_type": "image", "mimetype": "image/jpeg", "size": 48213}
    voice = parse.new_message(ORG, wa(type="ptt", body="", has_media=True,
                                      mimetype="audio/ogg; codecs=opus"))
    assert voice.type == "audio" and voice.media and voice.media["wa_type"] == "ptt"
    doc = parse.new_message(ORG, wa(type="document", body="", has_media=True, filename="visa.pdf",
                                    mimetype="application/pdf", size=1024))
    assert doc.media == {"wa_type": "document", "mimetype": "application/pdf",
                         "filename": "visa.pdf", "size": 1024}
    place = parse.new_message(ORG, wa(type="location", body="", has_media=True))
    assert place.type == "location" and place.media == {"wa_type": "location"}


def test_groups_status_and_channels_are_ignored_unless_asked() -> None:
    group = wa(chat_id="120363012345678901@g.us", is_group=True, author="996555123456@c.us")
    status = wa(chat_id="status@broadcast", is_status=True, is_broadcast=True)
    channel = wa(chat_id="120363111111111111@newsletter", is_newsletter=True)
    notice = wa(type="e2e_notification")
    for m in (group, status, channel, notice):
        assert parse.is_ignored(m)
    assert not parse.is_ignored(wa())
    assert not parse.is_ignored(group, groups=True)
    assert not parse.is_ignored(status, status=True)
    assert not parse.is_ignored(channel, newsletters=True)
    assert parse.is_ignored(notice, groups=True, status=True, newsletters=True)


def test_acks_and_ids() -> None:
    assert [parse.ack_status(a) for a in (-1, 0, 1, 2, 3, 4, 7)] == [
        "FAILED", "PENDING", "SENT", "DELIVERED", "READ", "PLAYED", None]
    assert ids.bare_id("true_996555123456@c.us_3EB0ABCDEF") == "3EB0ABCDEF"
    assert ids.bare_id("false_120363@g.us_ABCD_996555123456@c.us") == "ABCD"
    assert ids.bare_id("3EB0ABCDEF") == "3EB0ABCDEF"


def test_number_context_gives_country_and_time_zone() -> None:
    kg = parse.number_context("+996555123456")
    assert kg == {"country": "KG", "country_name": "Kyrgyzstan", "time_zone": "Asia/Bishkek"}
    us = parse.number_context("+12025550123")
    assert us["country"] == "US" and us["region"] == "Washington D.C."
    assert "time_zone" not in parse.number_context("+79161234567")  # Russia spans eleven zones
    assert parse.number_context("not a number") == {}


@pytest.mark.parametrize(("text", "name"), [
    ("Hi! My name is anna, I'd like a tour to Issyk-Kul", "Anna"),
    ("Hello, my name is John Smith", "John Smith"),
    ("Здравствуйте, меня зовут Азамат Осмонов. Хочу тур", "Азамат Осмонов"),
    ("добрый день! меня зовут ольга", "Ольга"),
    ("مرحبا، اسمي أحمد وأريد جولة", "أحمد"),
    ("Bonjour, je m'appelle Claire et je voudrais réserver", "Claire"),
    ("Hallo, ich heiße Jonas Weber.", "Jonas Weber"),
    ("Hola, me llamo María y quiero información", "María"),
    ("Dzień dobry, nazywam się Katarzyna Nowak, chciałabym zapytać", "Katarzyna Nowak"),
    ("Mam na imię Piotr", "Piotr"),
    ("My name is not important", None),
    ("I am fine, thanks", None),
    ("Сколько стоит тур?", None),
    ("", None),
])
def test_given_name(text: str, name: str | None) -> None:
    assert given_name(text) == name


def test_settings_defaults_are_the_spec_numbers_and_ranges_are_checked() -> None:
    s = InboundSettings()
    assert (s.processing_delay_min_s, s.processing_delay_max_s) == (2.0, 5.0)
    assert (s.reply_delay_min_s, s.reply_delay_max_s) == (2.0, 10.0)
    assert (s.enrichment_per_minute, s.enrichment_pause_min_s, s.enrichment_pause_max_s) == (
        5, 0.5, 2.0)
    assert s.languages == ["en", "ru", "ar", "fr", "de", "es", "pl"]
    assert not (s.store_groups or s.store_status or s.store_newsletters)
    with pytest.raises(msgspec.ValidationError, match="reply_delay_min_s"):
        msgspec.convert({"reply_delay_min_s": 11}, InboundSettings)
    with pytest.raises(msgspec.ValidationError, match="enrichment_per_minute"):
        msgspec.convert({"enrichment_per_minute": 0}, InboundSettings)
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.convert({"delay": 1}, InboundSettings)
    assert inbound_settings(object()) == InboundSettings()
