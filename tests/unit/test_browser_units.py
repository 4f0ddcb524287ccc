"""Pure parts of the browser package: chat ids, message ids, event decoding."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest

from wad.browser import events
from wad.browser.driver import find_browser_pid, new_message_id, origin
from wad.browser.events import AckChanged, BridgeReady, MessageReceived, Ready
from wad.whatsapp.ids import InvalidChatId, chat_id, phone_digits


@pytest.mark.parametrize(("given", "expected"), [
    ("+996555123456", "996555123456@c.us"),
    ("996555123456", "996555123456@c.us"),
    ("+996 (555) 12-34-56", "996555123456@c.us"),
    ("996555123456@c.us", "996555123456@c.us"),
    ("120363000000000001@g.us", "120363000000000001@g.us"),
    ("status@broadcast", "status@broadcast"),
    ("123456789012345@lid", "123456789012345@lid"),
])
def test_chat_id_accepts_phones_and_ids(given: str, expected: str) -> None:
    assert chat_id(given) == expected


@pytest.mark.parametrize("bad", ["", "+", "abc", "12345", "0555123456", "+1234567890123456",
                                 "996555@", "@c.us", "99 65@ c.us"])
def test_chat_id_refuses_what_is_not_a_number(bad: str) -> None:
    with pytest.raises(InvalidChatId):
        chat_id(bad)


def test_phone_digits() -> None:
    assert phone_digits("+996 555 123 456") == "996555123456"
    assert phone_digits("996555123456@c.us") == "996555123456"
    with pytest.raises(ValueError, match="international"):
        phone_digits("0555 123 456")


def test_new_message_ids_are_uppercase_hex_and_distinct() -> None:
    ids = {new_message_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"3EB0[0-9A-F]{16}", i) for i in ids)


def test_decode_events() -> None:
    assert events.decode(b'{"event":"bridge_ready","version":"2.3000.1"}') == BridgeReady(
        version="2.3000.1")
    ack = events.decode('{"event":"ack","id":"true_1@c.us_AB","chat_id":"1@c.us","ack":3}')
    assert ack == AckChanged(id="true_1@c.us_AB", chat_id="1@c.us", ack=3)
    ready = events.decode('{"event":"ready","wid":"996555100200@c.us","phone":"996555100200",'
                          '"push_name":"Issyk","platform":"smba","is_business":true}')
    assert isinstance(ready, Ready)
    assert ready.is_business
    got = events.decode('{"event":"message","message":{"id":"false_1@c.us_AB","from_me":false,'
                        '"chat_id":"1@c.us","type":"chat","body":"hi","timestamp":5}}')
    assert isinstance(got, MessageReceived)
    assert (got.message.body, got.message.caption, got.message.ack) == ("hi", None, 0)


def test_decode_names_the_bad_field() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"\$\.ack"):
        events.decode('{"event":"ack","id":"x","chat_id":"y","ack":"three"}')
    with pytest.raises(msgspec.ValidationError, match=r"`from_me` - at `\$\.message`"):
        events.decode('{"event":"message","message":{"id":"x","chat_id":"y","type":"chat"}}')
    with pytest.raises(msgspec.ValidationError, match="Invalid value 'nope'"):
        events.decode('{"event":"nope"}')


def test_a_binding_call_carries_one_event_or_a_batch_of_them_in_order() -> None:
    single = events.decode_each('{"event":"ack","id":"a","chat_id":"1@c.us","ack":2}')
    assert single == [AckChanged(id="a", chat_id="1@c.us", ack=2)]
    batch = events.decode_each(
        '[{"event":"ack","id":"a","chat_id":"1@c.us","ack":2},'
        '{"event":"ack","id":"b","chat_id":"1@c.us","ack":"three"},'
        '{"event":"message","message":{"id":"false_1@c.us_AB","from_me":false,'
        '"chat_id":"1@c.us","type":"chat","body":"a\\u0000b"}}]')
    assert batch[0] == AckChanged(id="a", chat_id="1@c.us", ack=2)
    # A malformed event stands as its error, naming the field; the others still count.
    assert isinstance(batch[1], msgspec.ValidationError) and "$.ack" in str(batch[1])
    assert isinstance(batch[2], MessageReceived) and batch[2].message.body == "a\ufffdb"
    with pytest.raises(msgspec.DecodeError):
        events.decode_each("[not json")


@pytest.mark.parametrize(("url", "expected"), [
    ("https://web.whatsapp.com/", "https://web.whatsapp.com"),
    ("https://WEB.whatsapp.com:443/?lang=en#x", "https://web.whatsapp.com"),
    ("http://127.0.0.1:8099/", "http://127.0.0.1:8099"),
    ("http://127.0.0.1:80/a", "http://127.0.0.1"),
    ("about:blank", ""),
    ("", ""),
    ("http://[::1:bad", ""),
])
def test_origin_of_an_address(url: str, expected: str) -> None:
    assert origin(url) == expected


def test_other_origins_differ() -> None:
    page = origin("https://web.whatsapp.com/")
    for other in ("https://web.whatsapp.com.evil.example/", "http://web.whatsapp.com/",
                  "https://web.whatsapp.com:8443/", "https://whatsapp.com/"):
        assert origin(other) != page, other


def test_browser_pid_is_the_browser_not_the_wrapper_script_that_started_it(
        tmp_path: Path) -> None:
    """Debian's /usr/bin/chromium-headless-shell is a script that runs the browser as its child:
    killing the script would leave the browser running, so the browser's own process is found."""
    profile = tmp_path / "profile"
    wrapper = tmp_path / "chromium-wrapper"
    wrapper.write_text(f'#!/bin/sh -e\n"{sys.executable}" -c "import time; time.sleep(30)" "$@"\n')
    wrapper.chmod(0o755)
    script = subprocess.Popen([str(wrapper), f"--user-data-dir={profile}"])
    try:
        deadline = time.monotonic() + 10
        while (found := find_browser_pid(profile)) in (None, script.pid):
            assert time.monotonic() < deadline, "the wrapper's child never showed up"
            time.sleep(0.05)
        argv = Path(f"/proc/{found}/cmdline").read_bytes().split(b"\0")
        assert argv[0] == sys.executable.encode()
        assert Path(f"/proc/{found}/stat").read_text().split(") ")[1].split()[1] == str(script.pid)
    finally:
        subprocess.run(["pkill", "-KILL", "-P", str(script.pid)], check=False)
        script.kill()
        script.wait()
