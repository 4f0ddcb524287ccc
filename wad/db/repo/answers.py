"""The time to first answer: how long a client waits for the business to write back.

In a conversation, messages are ordered by WhatsApp's time, then arrival, then id (the read
API's order). A *question* begins with a client's message (direction `IN`) that opens the
conversation or follows an outgoing message; the client's further messages before an answer
belong to the same question. Its *answer* is the next outgoing message (direction `OUT`),
whoever wrote it: a person on the phone or through the API, or an agent. The time to first
answer is the answer's time minus the question's first message's time, in seconds (WhatsApp's
times, so a message stored late, by catch-up or an import, counts from when it was written).

Everything here is read from the messages themselves with a handful of index probes per
conversation (`messages_conversation_direction`, migration 0009): nothing is stored, so late
and out-of-order messages are always counted in their place.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import msgspec

from wad.db.pool import Executor


class AnswerTimes(msgspec.Struct, frozen=True, kw_only=True):
    """A conversation's answer times: its first question's, its latest answered question's,
    and since when a question waits (None: nothing waits)."""

    first_answer_seconds: float | None
    last_answer_seconds: float | None
    awaiting_answer_since: datetime | None


def _first(direction: str, alias: str, after: str | None = None, *, before: str | None = None,
           when: str | None = None) -> str:
    """A LATERAL subquery named `alias`: the first message of `direction` of the conversation
    `c.id` after the key `after` and before the key `before` (each three SQL expressions, or
    None for no bound), when the condition `when` holds."""
    where = [f"x.conversation_id = c.id AND x.direction = '{direction}'"]
    if after is not None:
        where.append(f"(x.sent_at, x.created_at, x.id) > ({after})")
    if before is not None:
        where.append(f"(x.sent_at, x.created_at, x.id) < ({before})")
    if when is not None:
        where.append(when)
    return f"""LEFT JOIN LATERAL (
        SELECT x.sent_at, x.created_at, x.id FROM messages x WHERE {" AND ".join(where)}
        ORDER BY x.sent_at, x.created_at, x.id LIMIT 1) {alias} ON true"""


def _last(direction: str, alias: str, before: str | None = None) -> str:
    """A LATERAL subquery named `alias`: the last message of `direction` of the conversation
    `c.id` before the key `before` (None: the last one)."""
    condition = f"AND (x.sent_at, x.created_at, x.id) < ({before})" if before else ""
    return f"""LEFT JOIN LATERAL (
        SELECT x.sent_at, x.created_at, x.id FROM messages x
        WHERE x.conversation_id = c.id AND x.direction = '{direction}' {condition}
        ORDER BY x.sent_at DESC, x.created_at DESC, x.id DESC LIMIT 1) {alias} ON true"""


def _key(alias: str) -> str:
    return f"{alias}.sent_at, {alias}.created_at, {alias}.id"


def _key_or_start(alias: str) -> str:
    """The key of `alias`, or one before every message when `alias` found none."""
    return (f"coalesce({alias}.sent_at, '-infinity'), coalesce({alias}.created_at, "
            f"'-infinity'), coalesce({alias}.id, '00000000-0000-0000-0000-000000000000')")


# q1: the first question; a1: its answer. lo: the last outgoing message; w: the question that
# waits after it. li: the last client message before lo; lp: the outgoing message before li;
# lq: the question li belongs to (the first client message after lp); la: its answer.
_TIMES = f"""
SELECT c.id, q1.sent_at AS q1, a1.sent_at AS a1, w.sent_at AS waiting,
       lq.sent_at AS lq, la.sent_at AS la
FROM unnest($1::uuid[]) AS c(id)
{_first("IN", "q1")}
{_first("OUT", "a1", _key("q1"))}
{_last("OUT", "lo")}
{_first("IN", "w", _key_or_start("lo"))}
{_last("IN", "li", _key("lo"))}
{_last("OUT", "lp", _key("li"))}
{_first("IN", "lq", _key_or_start("lp"), when="li.id IS NOT NULL")}
{_first("OUT", "la", _key("li"))}
"""


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round(max(0.0, (end - start).total_seconds()), 3)


async def for_conversations(db: Executor, *, conversation_ids: Sequence[uuid.UUID]
                            ) -> dict[uuid.UUID, AnswerTimes]:
    """The answer times of these conversations."""
    if not conversation_ids:
        return {}
    rows = await db.fetch(_TIMES, list(conversation_ids))
    return {r["id"]: AnswerTimes(first_answer_seconds=_seconds(r["q1"], r["a1"]),
                                 last_answer_seconds=_seconds(r["lq"], r["la"]),
                                 awaiting_answer_since=r["waiting"] if r["waiting"] else None)
            for r in rows}


# a: the outgoing message; c: its conversation (given, else the message's, else its client's
# active WhatsApp conversation, which an outgoing message not processed yet will join); lp: the
# outgoing message before it; q: the first client message between the two, if any: the question
# that `a` answers first.
_ANSWERED = f"""
SELECT q.sent_at AS asked, a.sent_at AS answered
FROM messages a
CROSS JOIN LATERAL (SELECT coalesce($2::uuid, a.conversation_id, (
    SELECT id FROM conversations WHERE client_id = $3 AND status = 'ACTIVE'
                                   AND channel = 'WHATSAPP')) AS id) AS c
{_last("OUT", "lp", _key("a"))}
{_first("IN", "q", _key_or_start("lp"), before=_key("a"))}
WHERE a.id = $1 AND a.direction = 'OUT'
"""


async def answered_by(db: Executor, *, message_id: uuid.UUID,
                      conversation_id: uuid.UUID | None = None,
                      client_id: uuid.UUID | None = None) -> float | None:
    """When the outgoing message `message_id` is the first answer to a question of its
    conversation (`conversation_id`, else the message's, else the active conversation of
    `client_id`): the seconds the question waited for it. None when it answers nothing (an
    earlier outgoing message answered already, or no client message waits)."""
    row = await db.fetchrow(_ANSWERED, message_id, conversation_id, client_id)
    if row is None or row["asked"] is None:
        return None
    return _seconds(row["asked"], row["answered"])
