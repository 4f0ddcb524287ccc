"""wad's built-in status detector: keywords and patterns in seven languages for each stage of
the sales funnel, with the words that decided it as the reason.

It looks at the last few messages of the conversation, the newest weighing most (each older
message counts half as much as the one after it). Each stage scores the matches it finds; the
best stage wins (a tie goes to the later stage: "hello, how much?" is about the price, not the
greeting). Confidence grows with the score, so a match in an old message alone is not
convincing, and wad then keeps the current status. The detector only moves a client forward in
the funnel, except to CLOSED (always possible) and out of CLOSED (a closed client who writes again
is a lead again). It runs last (`trylast`), so that smarter detectors decide when they can.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from wad import hookimpl
from wad.payloads import FUNNEL, Client, ClientStatus, Message, StatusDecision, funnel_index
from wad.plugins import PluginContext
from wad_heuristic_status.keywords import AGENT, CLIENT, WEAK

NAME = "heuristic_status"

_TRANSLATE = str.maketrans({
    "ł": "l", "Ł": "l", "ß": "ss", "ø": "o", "đ": "d", "æ": "ae", "œ": "oe", "’": "'", "ʼ": "'",
    "ة": "ه", "ى": "ي",
})


def fold(text: str) -> str:
    """Text without accents, Arabic diacritics or letter variants, so that "Réduction",
    "reduction" and "REDUCTION" look alike. Keeps one character per input character where it
    can; `fold_with_map` says which."""
    return fold_with_map(text)[0]


def fold_with_map(text: str) -> tuple[str, list[int]]:
    """The folded text and, for each folded character, the index of the original one."""
    out: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        for piece in unicodedata.normalize("NFD", char.lower()).translate(_TRANSLATE):
            if unicodedata.category(piece) == "Mn":
                continue
            out.append(piece)
            origin.append(index)
    return "".join(out), origin


def _fold_pattern(pattern: str) -> str:
    # Patterns are lower case already; only accents and letter variants are folded, so that
    # escapes such as \w and \d keep their meaning.
    return "".join(
        piece
        for char in pattern
        for piece in unicodedata.normalize("NFD", char).translate(_TRANSLATE)
        if unicodedata.category(piece) != "Mn"
    )


class _Rule(msgspec.Struct, frozen=True):
    stage: ClientStatus
    language: str
    regex: re.Pattern[str]


def _compile(table: dict[ClientStatus, dict[str, list[str]]]) -> list[_Rule]:
    rules = []
    for stage, by_language in table.items():
        for language, patterns in by_language.items():
            for pattern in patterns:
                body = _fold_pattern(pattern)
                # Arabic glues articles and prepositions to words: match inside them.
                source = f"(?:{body})" if language == "ar" else rf"(?<!\w)(?:{body})(?!\w)"
                rules.append(_Rule(stage, language, re.compile(source)))
    return rules


CLIENT_RULES = _compile(CLIENT)
AGENT_RULES = _compile(AGENT)


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[plugins.config.heuristic_status]`."""

    window: Annotated[int, Meta(ge=1, le=50)] = 8
    """How many of the latest messages to read."""
    languages: list[str] = []
    """Only these languages' patterns (empty: all seven)."""


class Match(msgspec.Struct, frozen=True):
    stage: ClientStatus
    language: str
    words: str
    """The matched words as the client (or we) wrote them."""
    age: int
    """0 for the newest message read, 1 for the one before, ..."""
    start: int
    end: int
    """Where the words are in the text."""


def find_matches(text: str, *, ours: bool, languages: Sequence[str] = (), age: int = 0
                 ) -> list[Match]:
    """Every rule that matches `text` (a client's message, or ours when `ours`)."""
    folded, origin = fold_with_map(text)
    found = []
    for rule in AGENT_RULES if ours else CLIENT_RULES:
        if languages and rule.language not in languages:
            continue
        for hit in rule.regex.finditer(folded):
            if hit.end() == hit.start():
                continue
            start, end = origin[hit.start()], origin[hit.end() - 1] + 1
            found.append(Match(rule.stage, rule.language, text[start:end], age, start, end))
    return _distinct(found)


def _distinct(matches: list[Match]) -> list[Match]:
    """One match per stretch of text and stage: the same words found by several languages'
    patterns ("hotel"), or by a phrase and a word inside it, count once (the longest wins)."""
    kept: list[Match] = []
    for match in sorted(matches, key=lambda m: (m.start - m.end, m.start)):
        if not any(k.stage == match.stage and k.start < match.end and match.start < k.end
                   for k in kept):
            kept.append(match)
    return sorted(kept, key=lambda m: m.start)


def _allowed(stage: ClientStatus, current: ClientStatus | None) -> bool:
    if current is None or current == "CLOSED" or stage == "CLOSED":
        return True
    return funnel_index(stage) >= funnel_index(current)


def decide(messages: Sequence[Message], current_status: ClientStatus | None, *,
           window: int = 8, languages: Sequence[str] = ()) -> StatusDecision | None:
    """The stage the latest messages point at, or None when no pattern matched (or the only
    matches would move the client backwards)."""
    recent = [m for m in messages if m.text][-window:]
    scores: dict[ClientStatus, float] = {}
    words: dict[ClientStatus, list[str]] = {}
    for age, message in enumerate(reversed(recent)):
        ours = message.direction == "OUT"
        for match in find_matches(message.text, ours=ours, languages=languages, age=age):
            weight = (0.5 if match.stage in WEAK else 1.0) * 0.5 ** age
            scores[match.stage] = scores.get(match.stage, 0.0) + weight
            said = f"«{match.words}»"
            if said not in words.setdefault(match.stage, []):
                words[match.stage].append(said)
    candidates = [stage for stage in scores if _allowed(stage, current_status)]
    if not candidates:
        return None
    best = max(candidates, key=lambda stage: (round(scores[stage], 6), funnel_index(stage)))
    confidence = round(min(0.95, 0.45 + 0.2 * scores[best]), 3)
    runner_up = sorted((s for s in candidates if s != best), key=lambda s: -scores[s])[:1]
    reason = f"{best}: matched {', '.join(words[best][:6])}"
    if runner_up:
        reason += f" (also {runner_up[0]}: {', '.join(words[runner_up[0]][:3])})"
    return StatusDecision(status=best, confidence=confidence, reason=reason, detector=NAME)


@hookimpl
def wad_plugin_config_type() -> type[Any]:
    return Config


@hookimpl(trylast=True)
def wad_detect_status(ctx: PluginContext, client: Client, messages: Sequence[Message],
                      current_status: ClientStatus | None) -> StatusDecision | None:
    """Keyword and pattern detection; synchronous because it is a few regular expressions."""
    config = ctx.plugin_config(NAME)
    if not isinstance(config, Config):
        config = Config()
    return decide(messages, current_status, window=config.window, languages=config.languages)


__all__ = ["FUNNEL", "NAME", "Config", "Match", "decide", "find_matches", "fold"]
