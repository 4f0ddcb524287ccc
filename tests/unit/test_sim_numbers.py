"""The simulator's generated phone numbers are valid numbers of their countries."""

import random

import phonenumbers
import pytest

from wad.sim.history import PREFIXES, random_number


@pytest.mark.parametrize("lang", sorted(PREFIXES))
def test_generated_numbers_are_valid(lang: str) -> None:
    rng = random.Random(lang)
    for _ in range(300):
        number = random_number(rng, lang)
        parsed = phonenumbers.parse("+" + number)
        assert phonenumbers.is_valid_number(parsed), number
