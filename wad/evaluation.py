"""Labelled sets and how wad's detectors score on them, for the accuracy tests and the bench
scripts (`bench/language.py`, `bench/status.py`): one reading of the files and one way of
counting, so the tests assert what the benches print.

Language sets (`tests/data/language/*.tsv`): a conversation id, a language (or "-" for a text no
language claims), a text. Status sets (`tests/data/status/*.txt`): conversations between a tour
company and its clients, each labelled with the funnel stage it ends at (see the files' heads).
Status is replayed as the inbound channel decides it: `replay_status`.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast, get_args

import msgspec

from wad.config import DEFAULT_LANGUAGES
from wad.language import conversation_language
from wad.payloads import Client, ClientStatus, LanguageGuess, Message, StatusDecision
from wad.plugins import PluginManager, detect_languages, detect_status

DATA = Path(__file__).resolve().parent.parent / "tests" / "data"
"""Where the labelled sets live in a source checkout."""


# Language -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelledText:
    conversation: str
    language: str | None
    """None for a text no language claims ("ok", "👍", "10:30")."""
    text: str


def load_texts(path: Path) -> list[LabelledText]:
    """The rows of a language set, in file order."""
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#") or line.startswith("conversation\t"):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{path}:{number}: expected 3 tab-separated columns")
        conversation, language, text = parts
        rows.append(LabelledText(conversation, None if language == "-" else language, text))
    return rows


@dataclass
class Tally:
    right: int = 0
    wrong: int = 0
    unknown: int = 0

    @property
    def total(self) -> int:
        return self.right + self.wrong + self.unknown

    def add(self, truth: str | None, guess: str | None) -> None:
        if guess == truth:
            self.right += 1
        elif guess is None:
            self.unknown += 1
        else:
            self.wrong += 1


@dataclass
class LanguageScore:
    per_message: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    """By true language, over the texts that have one."""
    neutral: Tally = field(default_factory=Tally)
    """The texts no language claims: right when unknown."""
    per_conversation: dict[str, Tally] = field(default_factory=lambda: defaultdict(Tally))
    misses: list[tuple[str, str | None, str]] = field(default_factory=list)
    """(truth, guess, text) of each message not told right."""

    @staticmethod
    def overall(tallies: dict[str, Tally]) -> Tally:
        total = Tally()
        for tally in tallies.values():
            total.right += tally.right
            total.wrong += tally.wrong
            total.unknown += tally.unknown
        return total


def score_languages(rows: Sequence[LabelledText], guesses: Sequence[LanguageGuess]
                    ) -> LanguageScore:
    """Per message, per neutral text and per conversation (the client's preferred language,
    decided by `wad.language.conversation_language` as the inbound channel decides it)."""
    score = LanguageScore()
    by_conversation: dict[str, list[int]] = defaultdict(list)
    for index, (row, guess) in enumerate(zip(rows, guesses, strict=True)):
        by_conversation[row.conversation].append(index)
        if row.language is None:
            score.neutral.add(None, guess.language)
        else:
            score.per_message[row.language].add(row.language, guess.language)
        if guess.language != row.language:
            score.misses.append((row.language or "-", guess.language, row.text))
    for indexes in by_conversation.values():
        truth = {rows[i].language for i in indexes} - {None}
        if len(truth) != 1:
            raise ValueError(f"conversation {rows[indexes[0]].conversation}: one language each")
        decided = conversation_language([rows[i].text for i in indexes],
                                        [guesses[i] for i in indexes])
        language = truth.pop()
        score.per_conversation[cast(str, language)].add(language, decided.language)
    return score


# Status ---------------------------------------------------------------------------------------

STAGES: tuple[ClientStatus, ...] = get_args(ClientStatus)


@dataclass(frozen=True)
class LabelledConversation:
    id: str
    stage: ClientStatus
    plain: bool
    """Its stage shows without giveaway keywords."""
    messages: tuple[tuple[str, str], ...]
    """(direction "IN" or "OUT", text), oldest first."""

    @property
    def language(self) -> str:
        return self.id.split("-")[0]


def load_conversations(path: Path) -> list[LabelledConversation]:
    """The conversations of a status set, in file order."""
    found: list[LabelledConversation] = []
    head: tuple[str, ClientStatus, bool] | None = None
    messages: list[tuple[str, str]] = []

    def close() -> None:
        if head is not None:
            if not messages:
                raise ValueError(f"{path}: conversation {head[0]} has no messages")
            found.append(LabelledConversation(*head, tuple(messages)))

    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("=== "):
            close()
            parts = [part.strip() for part in line[4:].split("|")]
            if len(parts) != 3 or parts[1] not in STAGES or parts[2] not in {"plain", "keywords"}:
                raise ValueError(f"{path}:{number}: expected '=== id | STAGE | plain|keywords'")
            head, messages = (parts[0], cast(ClientStatus, parts[1]), parts[2] == "plain"), []
            continue
        direction, _, text = line.partition(":")
        if head is None or direction not in {"IN", "OUT"} or not text.strip():
            raise ValueError(f"{path}:{number}: expected 'IN: text' or 'OUT: text'")
        messages.append((direction, text.strip()))
    close()
    return found


_ORG = uuid.UUID("00000000-0000-4000-8000-00000000e7a1")


def as_messages(conversation: LabelledConversation) -> list[Message]:
    """The conversation as stored message payloads, a minute apart."""
    start = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    return [
        Message(id=uuid.uuid4(), organization_id=_ORG, wa_message_id=f"eval.{index}",
                wa_chat_id="996555000000@c.us", direction="IN" if direction == "IN" else "OUT",
                sender="CLIENT" if direction == "IN" else "HUMAN",
                sent_at=start + timedelta(minutes=index),
                status="RECEIVED" if direction == "IN" else "SENT", body=text)
        for index, (direction, text) in enumerate(conversation.messages)
    ]


@dataclass(frozen=True)
class Replay:
    final: ClientStatus
    changes: tuple[StatusDecision, ...]
    """Each decision that changed the status, in order."""


async def replay_status(pm: PluginManager, conversation: LabelledConversation, *,
                        window: int = 30, languages: Sequence[str] = DEFAULT_LANGUAGES
                        ) -> Replay:
    """The status the client ends at when the inbound channel processes the conversation one
    stored message at a time: after each, the status detectors (`wad.plugins.detect_status`,
    decisions under `plugins.status_min_confidence` ignored) judge the latest `window` messages
    (`inbound.conversation_window`) with the current status carried forward, and a decision
    changes it as `wad.org.inbound.actor` applies one. Each message carries the language the
    language detectors (`wad.plugins.detect_languages`, the configured `languages`) gave it, as
    stored messages do."""
    client = Client(id=uuid.uuid4(), organization_id=_ORG, phone="+996555000000")
    stored = as_messages(conversation)
    guesses = await detect_languages(pm, [m.text for m in stored], languages=list(languages))
    stored = [msgspec.structs.replace(m, language=g.language)
              for m, g in zip(stored, guesses, strict=True)]
    changes = []
    for index in range(len(stored)):
        latest = stored[max(0, index + 1 - window):index + 1]
        decision = await detect_status(pm, client=client, messages=latest,
                                       current_status=client.status)
        if decision is None or decision.status == client.status:
            continue
        changes.append(decision)
        client = Client(id=client.id, organization_id=_ORG, phone=client.phone,
                        status=decision.status)
    return Replay(final=client.status, changes=tuple(changes))
