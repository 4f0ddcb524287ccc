"""Language detection: langdetect limited to the configured languages, deterministic, and honest
about texts too short to tell.

langdetect alone is random (it samples n-grams) and weak on chat-length texts; limited to the few
languages an organization's clients write, and seeded, it is repeatable and much better. A text
with fewer than `min_letters` letters ("ok", "👍", "15.07") is unknown. A text written in a script
that only one configured language uses (Cyrillic when Russian is the only Cyrillic language,
Arabic script when Arabic is) is decided by its script, which is right even for one-word texts.

A client's language is decided from the whole conversation (`conversation_language`), each
message weighing by its length and its guess's probability, so one "ok" does not change it.

Detection costs about a millisecond per text: call `detect_async` (or the `wad_detect_language`
hook, which this module implements as wad's default) from Trio; both run in a worker thread.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from pathlib import Path

import trio
from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory
from langdetect.lang_detect_exception import LangDetectException

from wad.config import DEFAULT_LANGUAGES
from wad.payloads import LanguageGuess
from wad.plugins import PluginContext, hookimpl

"""The languages a tour company's clients write in, unless configured otherwise."""

# Languages written in a script of their own among those langdetect knows. When exactly one of a
# script's languages is configured, the script alone decides.
_SCRIPT_LANGUAGES: dict[str, frozenset[str]] = {
    "cyrillic": frozenset({"ru", "uk", "bg", "mk"}),
    "arabic": frozenset({"ar", "fa", "ur"}),
    "greek": frozenset({"el"}),
    "hebrew": frozenset({"he"}),
    "georgian": frozenset(),
}

_URL = re.compile(r"(?:https?://|www\.)\S+|\S+@\S+\.\w+|@\w+", re.IGNORECASE)


def _script(char: str) -> str:
    code = ord(char)
    if 0x0400 <= code <= 0x052F:
        return "cyrillic"
    if 0x0600 <= code <= 0x06FF or 0x0750 <= code <= 0x077F or 0xFB50 <= code <= 0xFEFF:
        return "arabic"
    if 0x0370 <= code <= 0x03FF:
        return "greek"
    if 0x0590 <= code <= 0x05FF:
        return "hebrew"
    return "latin" if code < 0x0250 or 0x1E00 <= code <= 0x1EFF else "other"


def letters(text: str) -> str:
    """The letters of `text`, without links, addresses, mentions, digits, emoji or punctuation."""
    return "".join(c for c in _URL.sub(" ", text) if c.isalpha())


def clean(text: str) -> str:
    """What a detector should see: words only, in lower case, one space between them."""
    text = unicodedata.normalize("NFC", _URL.sub(" ", text))
    words = re.findall(r"[^\W\d_]+(?:['’][^\W\d_]+)*", text)
    return " ".join(words).lower()


def script_languages(languages: Sequence[str]) -> dict[str, str]:
    """For each script that exactly one of `languages` is written in, that language."""
    decided: dict[str, str] = {}
    for script, members in _SCRIPT_LANGUAGES.items():
        present = [lang for lang in dict.fromkeys(languages) if lang in members]
        if len(present) == 1:
            decided[script] = present[0]
    return decided


def language_of_script(found: str, by_script: dict[str, str]) -> str | None:
    """The language `by_script` (from `script_languages`) names for the script that at least 60 %
    of the letters `found` are in; None when no such script decides."""
    if not found:
        return None
    if found.isascii():  # all Latin letters: the common case, decided without counting
        return by_script.get("latin")
    scripts: dict[str, int] = {}
    for char in found:
        script = _script(char)
        scripts[script] = scripts.get(script, 0) + 1
    main, count = max(scripts.items(), key=lambda item: item[1])
    return by_script.get(main) if count >= 0.6 * len(found) else None


@functools.cache
def _has_profile(language: str) -> bool:
    return (Path(PROFILES_DIRECTORY) / language).is_file()


class LanguageDetector:
    """Detects among `languages` (ISO 639-1 codes with a langdetect profile). Deterministic for a
    given `seed`. Thread-safe: each detection uses its own langdetect detector."""

    def __init__(self, languages: Sequence[str] = DEFAULT_LANGUAGES, *, seed: int = 0,
                 min_letters: int = 4, min_probability: float = 0.4) -> None:
        self.languages = tuple(dict.fromkeys(languages))
        if not self.languages:
            raise ValueError("at least one language is needed")
        unknown = [lang for lang in self.languages if not _has_profile(lang)]
        if unknown:
            raise ValueError(f"no language profile for {', '.join(unknown)}")
        self.min_letters = min_letters
        self.min_probability = min_probability
        self._by_script = script_languages(self.languages)
        self._factory: DetectorFactory | None = None
        if len(self.languages) > 1:
            factory = DetectorFactory()
            profiles = [(Path(PROFILES_DIRECTORY) / lang).read_text(encoding="utf-8")
                        for lang in self.languages]
            factory.load_json_profile(profiles)
            factory.set_seed(seed)
            self._factory = factory

    def detect(self, text: str) -> LanguageGuess:
        """The language of one text, or unknown."""
        found = letters(text)
        if len(found) < self.min_letters:
            return LanguageGuess(language=None)
        by_script = language_of_script(found, self._by_script)
        if by_script is not None:
            return LanguageGuess(language=by_script, probability=0.99)
        if self._factory is None:
            return LanguageGuess(language=self.languages[0], probability=1.0)
        detector = self._factory.create()
        detector.append(clean(text))
        try:
            ranked = detector.get_probabilities()
        except LangDetectException:
            return LanguageGuess(language=None)
        if not ranked or ranked[0].prob < self.min_probability:
            return LanguageGuess(language=None)
        return LanguageGuess(language=ranked[0].lang, probability=round(min(ranked[0].prob, 1.0), 4))

    def detect_many(self, texts: Sequence[str]) -> list[LanguageGuess]:
        """`detect` for each text, in order."""
        return [self.detect(text) for text in texts]

    def conversation(self, texts: Sequence[str]) -> LanguageGuess:
        """The language of a conversation (the client's messages), see `conversation_language`."""
        return conversation_language(texts, self.detect_many(texts))


def conversation_language(texts: Sequence[str], guesses: Sequence[LanguageGuess], *,
                          min_letters: int = 12) -> LanguageGuess:
    """The language of a whole conversation from its texts and their guesses. Each known guess
    weighs its probability times the text's letters (capped at 60, so one long message does not
    drown many short ones). Unknown when fewer than `min_letters` letters were told apart in all;
    the answer's probability is the winner's share of the weight."""
    weights: dict[str, float] = {}
    told = 0
    for text, guess in zip(texts, guesses, strict=True):
        if guess.language is None:
            continue
        size = min(len(letters(text)), 60)
        told += size
        weights[guess.language] = weights.get(guess.language, 0.0) + guess.probability * size
    total = sum(weights.values())
    if told < min_letters or total <= 0:
        return LanguageGuess(language=None)
    best = max(weights, key=lambda lang: weights[lang])
    return LanguageGuess(language=best, probability=round(weights[best] / total, 4))


@functools.lru_cache(maxsize=16)
def get_detector(languages: tuple[str, ...] = DEFAULT_LANGUAGES, seed: int = 0) -> LanguageDetector:
    """A shared detector for these languages (loading profiles takes a moment)."""
    return LanguageDetector(languages, seed=seed)


def supported(languages: Sequence[str]) -> tuple[str, ...]:
    """Those of `languages` that langdetect has a profile for (others need another plugin).
    Called for every detection, so the profiles' presence is looked up once per language."""
    return tuple(lang for lang in dict.fromkeys(languages) if _has_profile(lang))


async def detect_async(texts: Sequence[str], languages: Sequence[str] = DEFAULT_LANGUAGES
                       ) -> list[LanguageGuess]:
    """`detect_many` in a worker thread, so the event loop keeps running. Languages without a
    langdetect profile are left out; with none left, every text is unknown."""
    known = supported(languages)
    if not known:
        return [LanguageGuess(language=None) for _ in texts]
    detector = get_detector(known)
    return await trio.to_thread.run_sync(detector.detect_many, list(texts))


async def conversation_language_async(texts: Sequence[str],
                                      languages: Sequence[str] = DEFAULT_LANGUAGES
                                      ) -> LanguageGuess:
    """The language of a conversation's texts, detected in a worker thread."""
    known = supported(languages)
    if not known:
        return LanguageGuess(language=None)
    detector = get_detector(known)
    return await trio.to_thread.run_sync(detector.conversation, list(texts))


@hookimpl(trylast=True)
async def wad_detect_language(ctx: PluginContext, texts: Sequence[str],
                              languages: Sequence[str]) -> list[LanguageGuess]:
    """wad's default language detection (this module), run last so that plugins may override."""
    return await detect_async(texts, languages)

