"""NUL characters from the page become U+FFFD (PostgreSQL text cannot hold them); nothing else
in the text changes."""

import pytest

from wad.browser import events


def test_decode_replaces_nul_and_keeps_everything_else() -> None:
    raw = ('{"event": "message", "message": {"id": "false_1@c.us_A", "from_me": false, '
           '"chat_id": "1@c.us", "type": "chat", "body": "a\\u0000b \\\\u0000 literal", '
           '"push_name": "N\\u0000"}}')
    event = events.decode(raw)
    assert isinstance(event, events.MessageReceived)
    assert event.message.body == "a\ufffdb \\u0000 literal"
    assert event.message.push_name == "N\ufffd"


def test_scrub_walks_nested_answers() -> None:
    answer = {"chats": [{"name": "x\x00y", "t": 1}], "ok": True}
    assert events.scrub(answer) == {"chats": [{"name": "x\ufffdy", "t": 1}], "ok": True}


def test_answers_without_an_escaped_nul_are_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    walked: list[object] = []
    real = events.scrub

    def counting(value: object) -> object:
        walked.append(value)
        return real(value)

    monkeypatch.setattr(events, "scrub", counting)
    plain = '{"ok": true, "value": {"messages": [{"body": "a \\\\u0000 literal"}]}}'
    assert not events.may_hold_nul('{"body": "x"}')
    assert events.decode_json('{"body": "x"}') == {"body": "x"} and not walked
    # A literal backslash before "u0000" is escaped as "\\\\u0000", which still contains the
    # escape's text: scrubbed (nothing changes), never mistaken.
    assert events.decode_json(plain)["value"]["messages"][0]["body"] == "a \\u0000 literal"
    with_nul = '{"body": "a\\u0000b"}'
    assert events.may_hold_nul(with_nul) and events.may_hold_nul(with_nul.encode())
    assert events.decode_json(with_nul) == {"body": "a\ufffdb"}
