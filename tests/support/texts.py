"""Hostile texts (scripts, joiners, emoji, control characters) and over-long values for the
Unicode tests."""

from __future__ import annotations

TEXTS = {
    "plain": "Hello, world",
    "emoji sequences": "👨‍👩‍👧‍👦 🇰🇬 👍🏽 🏳️‍🌈 ❤️",
    "right to left": "مرحبا بالعالم \u200fשלום\u200e עולם",
    "combining (NFD, not to be composed)": "e\u0301 a\u0308 n\u0303 \u1100\u1161",
    "composed (NFC)": "é ä ñ 가",
    "scripts": "Кыргызстан 漢字かなカナ हिन्दी ภาษาไทย ქართული Ελληνικά",
    "astral plane": "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𐍈 𓀀 🀄 \U0010fffd",
    "invisible": "zero\u200bwidth\u200cjoin\u200dbom\ufeffsoft\u00adhyphen\u2060",
    "controls": "tab\tnew\nline\rcr\x01\x07bell\x1b[31mansi\x1b[0m\x7fdel\x85nel\u2028ls\u2029ps",
    "non-characters and private use": "\ufffe\uffff\ue000\U000f0000\ufffd",
    "sql": "'; DROP TABLE organizations; -- \" $1 %_ \\ \\x00 E'\\n' /* */ ;",
    "html": "<script>alert('x')</script><img src=x onerror=alert(1)>&amp;&lt;&#0;\"'`",
    "json-looking": '{"error": null, "name": "\\u0000"}',
    "edges kept": "  leading and trailing spaces and newlines \n\n",
}


LONG = {
    "ascii": "x" * 4096,
    "two-byte": "я" * 4096,
    "four-byte": "🙂" * 4096,
    "combining": "e\u0301" * 2048,
    "mixed": ("Aя漢🙂\n\t<'\"" * 512)[:4096],
}
