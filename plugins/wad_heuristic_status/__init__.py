"""wad's built-in status detector: keywords and patterns in seven languages for each stage of
the sales funnel, read over the whole conversation, both sides, with the words that decided it
as the reason.

The conversation is read from its first message to its last, as a funnel moves: each message is
evidence for a stage, from the client (a greeting, the party and the dates, questions, an
objection, "I paid", a complaint during the trip, "we'll go elsewhere") or from us (an offer with a
price or a day-by-day plan, a lower price after an objection, the payment details, "received,
your booking is confirmed", the driver's time, "hope to see you next season"). A message's best
stage (a tie goes to the later stage) moves the conversation forward; it moves back only to
CLOSED (a negotiation can close unsold, a booking can be cancelled) and out of CLOSED (a client
who writes again with a new question is a lead again). Three readings need context: a client's
"done" / "c'est fait" / "listo" right after we asked for a payment means paid (SOLD); a
client's question after we answered once means interest (WARMED); and a price we quote after
the client answered our first one (not the amount of a payment we ask for) is a revised price
(NEGOTIATION).

The decision is where the reading ends, its confidence the strength of the message that put it
there (a greeting alone is weak). It never moves a client backwards, except to and out of
CLOSED, so a window that no longer holds the early evidence does not undo it. It runs last
(`trylast`), so that smarter detectors decide when they can.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from typing import Annotated, Any

import msgspec
import trio
from msgspec import Meta

from wad import hookimpl
from wad.payloads import FUNNEL, Client, ClientStatus, Message, StatusDecision, funnel_index
from wad.plugins import PluginContext
from wad_heuristic_status.keywords import (
    AGENT,
    AGENT_MORE,
    CLIENT,
    DONE,
    PAYMENT_REQUEST,
    PRICE,
    WEAK,
)

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
AGENT_RULES = _compile({**AGENT, **AGENT_MORE})
PAYMENT_RULES = _compile({"SOLD": PAYMENT_REQUEST})
PRICE_RULES = _compile({"NEGOTIATION": PRICE})
DONE_RULES = _compile({"SOLD": DONE})


class Config(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`[plugins.config.heuristic_status]`."""

    window: Annotated[int, Meta(ge=1, le=500)] = 30
    """How many of the latest messages to read (as many as the inbound channel passes)."""
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


def find_matches(text: str, *, ours: bool, languages: Sequence[str] = (), age: int = 0,
                 rules: Sequence[_Rule] | None = None) -> list[Match]:
    """Every rule that matches `text` (a client's message, or ours when `ours`; or `rules`)."""
    folded, origin = fold_with_map(text)
    found = []
    if rules is None:
        rules = AGENT_RULES if ours else CLIENT_RULES
    for rule in rules:
        if languages and rule.language not in languages and rule.language != "*":
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


class _Step(msgspec.Struct):
    stage: ClientStatus
    strength: float
    words: list[str]


def _read_in(message: Message, languages: Sequence[str]) -> Sequence[str]:
    """The languages whose patterns read `message`: its own when it is known (and allowed),
    else `languages` (empty: all)."""
    if message.language and (not languages or message.language in languages):
        return (message.language,)
    return languages


def _evidence(message: Message, *, asked_payment: bool, answered: bool, requoted: bool,
              languages: Sequence[str], age: int) -> _Step | None:
    """The stage one message points at, with its strength and the words that said so. A
    message whose language is known is read with that language's patterns only."""
    ours = message.direction == "OUT"
    languages = _read_in(message, languages)
    matches = find_matches(message.text, ours=ours, languages=languages, age=age)
    if not ours and asked_payment:
        matches += find_matches(message.text, ours=False, languages=languages, age=age,
                                rules=DONE_RULES)
    if ours and requoted and not find_matches(message.text, ours=True, languages=languages,
                                              rules=PAYMENT_RULES):
        # A new price once the client answered our first one (not the amount of a payment we
        # ask for): the price is being negotiated.
        matches += find_matches(message.text, ours=True, languages=languages, age=age,
                                rules=PRICE_RULES)
    scores: dict[ClientStatus, float] = {}
    words: dict[ClientStatus, list[str]] = {}
    for match in matches:
        scores[match.stage] = scores.get(match.stage, 0.0) + (
            0.5 if match.stage in WEAK else 1.0)
        said = f"«{match.words}»"
        if said not in words.setdefault(match.stage, []):
            words[match.stage].append(said)
    if not scores and not ours and answered and "?" in message.text:
        # A client's own question once the conversation has started: interest in the trip.
        return _Step("WARMED", 0.5, [f"«{message.text.strip()[:40]}»"])
    if not scores:
        return None
    best = max(scores, key=lambda stage: (scores[stage], funnel_index(stage)))
    return _Step(best, scores[best], words[best])


def decide(messages: Sequence[Message], current_status: ClientStatus | None, *,
           window: int = 30, languages: Sequence[str] = ()) -> StatusDecision | None:
    """Where the conversation (its latest `window` messages with text) ends in the funnel, or
    None when nothing in it points anywhere (or only backwards from `current_status`)."""
    recent = [m for m in messages if m.text][-window:]
    path: list[_Step] = []
    asked_payment = answered = quoted = requoted = False
    for age, message in zip(range(len(recent) - 1, -1, -1), recent, strict=True):
        step = _evidence(message, asked_payment=asked_payment, answered=answered,
                         requoted=requoted and not asked_payment, languages=languages, age=age)
        if message.direction == "OUT":
            answered = True
            own = _read_in(message, languages)
            asked_payment = bool(find_matches(message.text, ours=True, languages=own,
                                              rules=PAYMENT_RULES))
            quoted = quoted or bool(find_matches(message.text, ours=True, languages=own,
                                                 rules=PRICE_RULES))
        else:
            requoted = quoted
        if step is None:
            continue
        if not path or _allowed(step.stage, path[-1].stage):
            if path and path[-1].stage == step.stage:
                path[-1].strength = max(path[-1].strength, step.strength)
                path[-1].words += [w for w in step.words if w not in path[-1].words]
            else:
                path.append(step)
    if not path:
        return None
    final = path[-1]
    if not _allowed(final.stage, current_status):
        return None
    confidence = round(min(0.95, 0.45 + 0.2 * final.strength), 3)
    reason = f"{final.stage}: matched {', '.join(final.words[:6])}"
    if len(path) > 1:
        before = path[-2]
        reason += f" (also {before.stage}: {', '.join(before.words[:3])})"
    return StatusDecision(status=final.stage, confidence=confidence, reason=reason,
                          detector=NAME)


@hookimpl
def wad_plugin_config_type() -> type[Any]:
    return Config


@hookimpl(trylast=True)
async def wad_detect_status(ctx: PluginContext, client: Client, messages: Sequence[Message],
                            current_status: ClientStatus | None) -> StatusDecision | None:
    """Keyword and pattern detection, in a worker thread: a few hundred regular expressions
    over up to `window` messages take milliseconds, which the event loop should not wait."""
    config = ctx.plugin_config(NAME)
    if not isinstance(config, Config):
        config = Config()
    return await trio.to_thread.run_sync(functools.partial(
        decide, list(messages), current_status, window=config.window,
        languages=config.languages))


__all__ = ["FUNNEL", "NAME", "Config", "Match", "decide", "find_matches", "fold"]
