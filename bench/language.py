"""Accuracy of wad's language detection on labelled chat messages.

    .venv/bin/python bench/language.py [--data tests/data/language/messages.tsv] [--unrestricted]

Prints, per language, how many messages were told right, told wrong and left unknown, then the
same per conversation (the decision wad makes for a client's preferred language), and the time
per message. `--unrestricted` also shows plain langdetect over all its languages, for contrast.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections import defaultdict
from pathlib import Path

from wad.language import DEFAULT_LANGUAGES, LanguageDetector, conversation_language

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "language" / "messages.tsv"


def load(path: Path) -> list[tuple[str, str, str]]:
    """(conversation, language, text) rows, in file order."""
    with path.open(encoding="utf-8", newline="") as handle:
        lines = [line for line in handle if line.strip() and not line.startswith("#")]
    rows = list(csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(row["conversation"], row["language"], row["text"]) for row in rows]


def _table(title: str, outcomes: dict[str, list[str | None]], truth: dict[str, str]) -> float:
    print(f"\n{title}")
    print(f"{'language':<10}{'n':>5}{'right':>7}{'wrong':>7}{'unknown':>9}{'accuracy':>10}")
    all_right = all_n = 0
    for lang in sorted(outcomes):
        guesses = outcomes[lang]
        right = sum(1 for g in guesses if g == truth[lang])
        unknown = sum(1 for g in guesses if g is None)
        wrong = len(guesses) - right - unknown
        all_right += right
        all_n += len(guesses)
        print(f"{lang:<10}{len(guesses):>5}{right:>7}{wrong:>7}{unknown:>9}"
              f"{right / len(guesses):>10.1%}")
    total = all_right / all_n if all_n else 0.0
    print(f"{'all':<10}{all_n:>5}{all_right:>7}{'':>7}{'':>9}{total:>10.1%}")
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--unrestricted", action="store_true")
    args = parser.parse_args(argv)

    rows = load(args.data)
    detector = LanguageDetector(DEFAULT_LANGUAGES)
    texts = [text for _, _, text in rows]
    detector.detect_many(texts[:5])  # warm up
    started = time.perf_counter()
    guesses = detector.detect_many(texts)
    per_text_ms = (time.perf_counter() - started) * 1000 / len(texts)

    truth = {lang: lang for _, lang, _ in rows}
    per_message: dict[str, list[str | None]] = defaultdict(list)
    conversations: dict[str, list[int]] = defaultdict(list)
    for index, ((conversation, lang, _), guess) in enumerate(zip(rows, guesses, strict=True)):
        per_message[lang].append(guess.language)
        conversations[conversation].append(index)
    per_conversation: dict[str, list[str | None]] = defaultdict(list)
    for indexes in conversations.values():
        lang = rows[indexes[0]][1]
        decided = conversation_language([texts[i] for i in indexes], [guesses[i] for i in indexes])
        per_conversation[lang].append(decided.language)

    print(f"{len(rows)} messages, {len(conversations)} conversations, "
          f"languages {', '.join(DEFAULT_LANGUAGES)}; {per_text_ms:.2f} ms per message")
    _table("per message (restricted to the configured languages, seeded)", per_message, truth)
    _table("per conversation", per_conversation, truth)

    if args.unrestricted:
        import langdetect

        langdetect.DetectorFactory.seed = 0
        plain: dict[str, list[str | None]] = defaultdict(list)
        for _, lang, text in rows:
            try:
                plain[lang].append(langdetect.detect(text))
            except langdetect.LangDetectException:
                plain[lang].append(None)
        _table("per message, plain langdetect over all its languages", plain, truth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
