"""NUL characters from the page become U+FFFD (PostgreSQL text cannot hold them); nothing else
in the text changes."""

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
