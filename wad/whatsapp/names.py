"""A name the client gives in a message ("my name is Anna", "меня зовут Азамат", "اسمي أحمد"),
in the seven languages wad's clients write. Used when WhatsApp has no saved or push name.

Deliberately cautious: only explicit introductions count (not "I'm ..." or "это ..."), the name
is one or two words of letters, and words that cannot be names ("not", "a", "very") are refused,
so a wrong name is rarer than a missed one.
"""

from __future__ import annotations

import re

# The phrase that introduces a name, per language. Matched case-insensitively, at a word start.
_INTRODUCTIONS: tuple[str, ...] = (
    # en
    r"my name is", r"my name's", r"my first name is",
    # ru
    r"меня зовут", r"зовут меня", r"мо[её] имя", r"имя мо[её]", r"меня звать",
    # ar (no letter case: the name is the next one or two words)
    r"اسمي", r"إسمي", r"انا اسمي", r"أنا اسمي",
    # fr
    r"je m'appelle", r"je m’appelle", r"mon nom est", r"mon prénom est", r"mon prenom est",
    # de
    r"ich heiße", r"ich heisse", r"mein name ist", r"mein vorname ist",
    # es
    r"me llamo", r"mi nombre es",
    # pl
    r"mam na imię", r"mam na imie", r"nazywam się", r"nazywam sie", r"moje imię to",
    r"moje imie to",
)

_PATTERN = re.compile(
    r"(?:^|(?<=[\s,.!?;:¡¿\"'«(]))(?:" + "|".join(_INTRODUCTIONS) + r")\s*[:\-–—]?\s+"
    r"(?P<rest>.+)",
    re.IGNORECASE | re.DOTALL,
)

_WORD = re.compile(r"[^\W\d_]+(?:[-'’][^\W\d_]+)?")

# First words that follow an introduction but are not names.
_NOT_NAMES = frozenset("""
    a an the not no is was just also really very only still maybe and but or so mister mr mrs ms miss
    dr sir madam
    не нет это был была просто тоже очень только и а но или господин госпожа
    pas est le la les un une et mais ou monsieur madame
    nicht ist der die das ein eine und aber oder herr frau
    no es el la los las un una y pero o señor señora
    nie jest to i ale lub albo pan pani
    ليس هو هي و
""".split())

_ARABIC = re.compile(r"[\u0600-\u06FF]")


def given_name(text: str) -> str | None:
    """The name the writer introduces themselves with, or None. One or two words; a second word
    is kept only when it is capitalised (a surname); in Arabic script, which has no case to tell
    a surname from the next word, only the first."""
    match = _PATTERN.search(text or "")
    if match is None:
        return None
    words: list[str] = []
    rest = match.group("rest")
    position = 0
    for found in _WORD.finditer(rest):
        if rest[position:found.start()].strip():  # punctuation ends the name ("Anna, from Oslo")
            break
        word = found.group(0)
        if word.lower() in _NOT_NAMES or not 2 <= len(word) <= 30:
            break
        if words and (_ARABIC.match(word) or not word[0].isupper()):
            break
        words.append(word)
        position = found.end()
        if len(words) == 2:
            break
    if not words:
        return None
    if not _ARABIC.match(words[0]) and not words[0][0].isupper():
        words[0] = words[0][0].upper() + words[0][1:]
    return " ".join(words)
