"""Language detection on labelled chat messages: accuracy per message and per conversation,
determinism, restriction to the configured languages, and short texts left unknown."""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pytest

from wad.language import (
    DEFAULT_LANGUAGES,
    LanguageDetector,
    conversation_language,
    conversation_language_async,
    detect_async,
)
from wad.payloads import LanguageGuess

DATA = Path(__file__).parent.parent / "data" / "language" / "messages.tsv"


def labelled() -> list[tuple[str, str, str]]:
    """(conversation, language, text) from the TSV file."""
    rows = []
    for line in DATA.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#") or line.startswith("conversation\t"):
            continue
        conversation, language, text = line.split("\t")
        rows.append((conversation, language, text))
    return rows


@pytest.fixture(scope="module")
def detector() -> LanguageDetector:
    return LanguageDetector(DEFAULT_LANGUAGES)


def test_the_data_set_is_big_enough() -> None:
    rows = labelled()
    assert len(rows) >= 200
    per_language: dict[str, int] = defaultdict(int)
    for _, language, text in rows:
        per_language[language] += 1
        assert 2 <= len(text) <= 200
    assert sorted(per_language) == sorted(DEFAULT_LANGUAGES)
    assert all(count >= 28 for count in per_language.values())


def test_accuracy_per_message(detector: LanguageDetector) -> None:
    rows = labelled()
    guesses = detector.detect_many([text for _, _, text in rows])
    right: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    wrong = []
    for (_, language, text), guess in zip(rows, guesses, strict=True):
        total[language] += 1
        if guess.language == language:
            right[language] += 1
        else:
            wrong.append((language, guess.language, text))
    for language in DEFAULT_LANGUAGES:
        assert right[language] / total[language] >= 0.9, (language, wrong)
    assert sum(right.values()) / len(rows) >= 0.95, wrong


def test_accuracy_per_conversation(detector: LanguageDetector) -> None:
    by_conversation: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for conversation, language, text in labelled():
        by_conversation[conversation].append((language, text))
    wrong = []
    for conversation, rows in by_conversation.items():
        decided = detector.conversation([text for _, text in rows])
        if decided.language != rows[0][0]:
            wrong.append((conversation, decided))
    assert len(wrong) <= len(by_conversation) // 20, wrong  # at least 95 % right


def test_detection_is_deterministic() -> None:
    texts = [text for _, _, text in labelled()][::3]
    first = LanguageDetector(DEFAULT_LANGUAGES).detect_many(texts)
    for _ in range(3):
        assert LanguageDetector(DEFAULT_LANGUAGES).detect_many(texts) == first


@pytest.mark.parametrize("text", ["ok", "👍👍", "15.07", "да", "Hi", "https://example.com/tour",
                                  "+996 555 123 456", "", "   ", "ok 👍 10:30"])
def test_very_short_texts_are_unknown(detector: LanguageDetector, text: str) -> None:
    assert detector.detect(text) == LanguageGuess(language=None)


def test_a_script_used_by_one_configured_language_decides_even_one_word(
        detector: LanguageDetector) -> None:
    assert detector.detect("Спасибо!").language == "ru"
    assert detector.detect("شكرا جزيلا").language == "ar"
    # With Ukrainian configured too, Cyrillic alone no longer decides.
    both = LanguageDetector(["ru", "uk", "en"])
    assert both.detect("Дякую, чекаємо на вашу відповідь").language == "uk"


def test_only_configured_languages_are_answered() -> None:
    detector = LanguageDetector(["en", "ru"])
    for text in ["Quanto costa il tour per due persone?", "Quanto custa a viagem?",
                 "Hoeveel kost de reis?"]:
        assert detector.detect(text).language in {"en", "ru", None}
    with pytest.raises(ValueError, match="no language profile for xx"):
        LanguageDetector(["en", "xx"])
    assert LanguageDetector(["de"]).detect("Wie viel kostet das?").language == "de"


def test_the_client_language_comes_from_the_whole_conversation(
        detector: LanguageDetector) -> None:
    texts = ["Здравствуйте! Сколько стоит тур на Иссык-Куль?", "ok", "Thanks",
             "Хорошо, тогда бронируем на август"]
    assert detector.conversation(texts).language == "ru"
    # Short replies alone say nothing.
    assert detector.conversation(["ok", "👍", "Hi"]) == LanguageGuess(language=None)
    # The weight of each message is its guess times its length.
    guesses: Sequence[LanguageGuess] = [LanguageGuess(language="en", probability=1.0),
                                        LanguageGuess(language="fr", probability=1.0)]
    decided = conversation_language(["short one", "a much longer message in French"], guesses)
    assert decided.language == "fr"
    assert 0.5 < decided.probability < 1.0


async def test_async_detection_runs_in_a_worker_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[int] = []
    original = LanguageDetector.detect_many

    def spy(self: LanguageDetector, texts: Sequence[str]) -> list[LanguageGuess]:
        threads.append(threading.get_ident())
        return original(self, texts)

    monkeypatch.setattr(LanguageDetector, "detect_many", spy)
    guesses = await detect_async(["Bonjour, quel est le prix ?", "Hola, ¿cuánto cuesta?"])
    assert [g.language for g in guesses] == ["fr", "es"]
    decided = await conversation_language_async(["Dzień dobry", "Ile kosztuje wycieczka?"])
    assert decided.language == "pl"
    assert threads
    assert threading.get_ident() not in threads
    # Languages without a profile are left to other plugins: here, all unknown.
    assert await detect_async(["Саламатсызбы"], languages=["ky"]) == [
        LanguageGuess(language=None)]
