"""How often each word is written in each language: wordfreq's compact word lists (shipped in the
wordfreq package, read from it, never downloaded), kept for the languages a detector needs.

A one- to three-word message is too short for a model of letter sequences, but its words say a
lot: "petite question" is French because French writes both words far more often than English
does. `WordLists.log_frequency` gives that evidence per word and language.

Frequencies are kept as wordfreq stores them, in centibels (hundredths of a decade below 1), one
table per language of the words as written and one of the words with accents that a chat
writer may leave out ("dzieki" for "dzięki"); the words are shared between the languages'
tables. A few MiB per language.
"""

from __future__ import annotations

from collections.abc import Iterable

from wad_fasttext_language.lexicon import fold, fold_once


def available() -> frozenset[str]:
    """The languages wordfreq has a compact word list for."""
    import wordfreq

    return frozenset(wordfreq.available_languages("small"))


class WordLists:
    """The word frequencies of `languages` (each must be in `available()`)."""

    def __init__(self, languages: Iterable[str]) -> None:
        import wordfreq

        files = wordfreq.available_languages("small")
        self.languages = tuple(dict.fromkeys(languages))
        words: dict[str, str] = {}  # one str object per word, whatever its languages
        self._exact: dict[str, dict[str, int]] = {}
        self._folded: dict[str, dict[str, int]] = {}
        for language in self.languages:
            # read_cBpack, not get_frequency_dict: that one keeps every list it read forever.
            buckets = wordfreq.read_cBpack(files[language])
            exact: dict[str, int] = {}
            folded: dict[str, int] = {}
            for centibels, bucket in enumerate(buckets):
                for word in bucket:
                    word = words.setdefault(word, word)
                    exact.setdefault(word, centibels)
                    bare = fold_once(word)  # each word once: not worth remembering
                    if bare != word:
                        folded.setdefault(words.setdefault(bare, bare), centibels)
            del buckets
            self._exact[language], self._folded[language] = exact, folded

    def known(self, word: str) -> bool:
        """Whether any of the languages writes `word` (as written)."""
        return any(word in table for table in self._exact.values())

    def log_frequency(self, word: str, *, floor: float, unaccented_penalty: float
                      ) -> dict[str, float]:
        """log10 of how often each language writes `word` (lower case): its exact form, else its
        form without accents less `unaccented_penalty`, else `floor`."""
        bare: str | None = None
        scores = {}
        for language in self.languages:
            centibels = self._exact[language].get(word)
            if centibels is not None:
                scores[language] = -centibels / 100
                continue
            bare = fold(word) if bare is None else bare
            centibels = self._folded[language].get(bare, self._exact[language].get(bare))
            scores[language] = (floor if centibels is None
                                else -centibels / 100 - unaccented_penalty)
        return scores
