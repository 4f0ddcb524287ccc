"""Phone numbers: one way to check them and one stored form, E.164 (`+996555123456`).

Everything that takes a phone number from outside (the API, the CLI, the importer) passes it
through `normalize`, so that the database only ever sees numbers it can compare.
"""

from __future__ import annotations

import phonenumbers

from wad.errors import WadError


class InvalidPhoneNumber(WadError):
    """The text is not a valid international phone number; the message says why."""


_HINT = "give the number in international format, for example +996555123456"


_SPACES = str.maketrans({"\u00a0": " ", "\u2007": " ", "\u2009": " ", "\u202f": " "})


def normalize(raw: str) -> str:
    """The E.164 form of `raw` (spaces, dashes, dots, brackets and a `00` prefix allowed), or
    `InvalidPhoneNumber` naming what is wrong. Numbers without a country code are refused:
    wad serves organizations in many countries and must not guess."""
    # Numbers pasted from documents carry no-break and thin spaces as separators.
    text = raw.translate(_SPACES).strip()
    if not text:
        raise InvalidPhoneNumber(f"the phone number is empty; {_HINT}")
    if text.startswith("00"):
        text = "+" + text[2:]
    elif not text.startswith("+") and text[:1].isdigit() and len(_digits(text)) > 10:
        # A full international number typed without its plus sign (996555123456).
        text = "+" + text
    if not text.startswith("+"):
        raise InvalidPhoneNumber(f"{raw!r} has no country code; {_HINT}")
    try:
        parsed = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        raise InvalidPhoneNumber(f"{raw!r} is not a phone number; {_HINT}") from None
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidPhoneNumber(
            f"{raw!r} has the wrong number of digits for its country; {_HINT}")
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber(f"{raw!r} is not a valid phone number in its country; {_HINT}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def is_valid(raw: str) -> bool:
    """True when `normalize` accepts `raw`."""
    try:
        normalize(raw)
    except InvalidPhoneNumber:
        return False
    return True


def _digits(text: str) -> str:
    return "".join(ch for ch in text if ch.isdigit())
