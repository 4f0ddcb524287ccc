"""Phone numbers: E.164 from what people type and paste; clear refusals."""

import pytest

from wad.whatsapp.phone import InvalidPhoneNumber, normalize


@pytest.mark.parametrize("raw", [
    "+996555123456", "+996 555 123 456", "00996555123456", "996555123456",
    "+996 (555) 12-34-56", "+996\u00a0555\u202f123\u2009456", "+996\u2007555.123.456",
])
def test_forms_of_one_number(raw: str) -> None:
    assert normalize(raw) == "+996555123456"


@pytest.mark.parametrize(("raw", "why"), [
    ("", "empty"), ("555123456", "no country code"), ("+9965551", "wrong number of digits"), ("+99655512", "not a valid phone number"),
    ("+abc", "not a phone number"),
])
def test_refusals_say_why(raw: str, why: str) -> None:
    with pytest.raises(InvalidPhoneNumber, match=why):
        normalize(raw)
