"""WhatsApp's ids, as WhatsApp Web writes them (WAWEB.md, "Ids"):

- users `NUMBER@c.us` (phone digits, no plus; older pages and the protocol say
  `NUMBER@s.whatsapp.net`), hidden-number users `ID@lid`;
- groups `ID@g.us`, broadcast lists `ID@broadcast`, the status broadcast `status@broadcast`,
  channels `ID@newsletter`;
- a message's serialized id `true_CHAT_KEY` (own) or `false_CHAT_KEY`, with `_PARTICIPANT`
  after the key in groups; `KEY` alone is the message's key id.
"""

from __future__ import annotations

import re

from wad.errors import WadError
from wad.whatsapp.phone import InvalidPhoneNumber, normalize

USER = "c.us"
USER_LEGACY = "s.whatsapp.net"
LID = "lid"
GROUP = "g.us"
BROADCAST = "broadcast"
NEWSLETTER = "newsletter"
STATUS_CHAT = "status@broadcast"


class InvalidChatId(WadError, ValueError):
    """Not a phone number or a WhatsApp chat id."""


def server(wa_id: str) -> str:
    """The part after `@` (`c.us`, `g.us`, `lid`, ...); empty for a text without one."""
    return wa_id.partition("@")[2]


def is_lid(wa_id: str) -> bool:
    """True for hidden-number ids (`ID@lid`): the number behind them is not in the id."""
    return server(wa_id) == LID


def user_chat(number: str) -> str:
    """The one-to-one chat of a phone number, where wad sends to it and files its messages: `+996555123456` -> `996555123456@c.us`
    (the number is E.164 or bare digits; it is not checked here, see `chat_id`)."""
    return f"{number.lstrip('+')}@{USER}"


def phone_from_chat_id(chat_id: str) -> str | None:
    """`996555123456@c.us` -> `+996555123456`; None for groups, broadcasts, channels, `@lid`
    ids (which hide the number) and numbers that are not valid."""
    user, _, where = chat_id.partition("@")
    if where not in (USER, USER_LEGACY) or not user.isdigit():
        return None
    try:
        return normalize("+" + user)
    except InvalidPhoneNumber:
        return None


def chat_id(chat_or_phone: str) -> str:
    """`+996 555 123456`, `996555123456` or `996555123456@c.us` -> `996555123456@c.us`.
    Ids of other kinds (`...@g.us`, `...@lid`, `status@broadcast`) pass unchanged."""
    text = chat_or_phone.strip()
    if "@" in text:
        user, _, where = text.partition("@")
        if not user or not where or " " in text:
            raise InvalidChatId(f"not a WhatsApp chat id: {chat_or_phone!r}")
        return text
    return user_chat(phone_digits(text))


def phone_digits(phone: str) -> str:
    """`+996 (555) 12-34-56` -> `996555123456`: digits only; raises `InvalidChatId`."""
    text = phone.strip()
    if text.endswith(f"@{USER}"):
        text = text[: -len(USER) - 1]
    digits = re.sub(r"[\s\-().]", "", text)
    if digits.startswith("+"):
        digits = digits[1:]
    if not digits.isdigit() or not 7 <= len(digits) <= 15 or digits.startswith("0"):
        raise InvalidChatId(f"not a phone number in international form: {phone!r}")
    return digits


def bare_id(serialized: str) -> str:
    """The key id of a serialized message id: `true_996555123456@c.us_3EB0ABC` -> `3EB0ABC`
    (also for group ids, which end with `_PARTICIPANT`). An id that is not serialized is
    answered as it is."""
    parts = serialized.split("_")
    if len(parts) >= 3 and parts[0] in ("true", "false") and "@" in parts[1]:
        return parts[2]
    return serialized


def serialized_id(chat: str, key: str, *, from_me: bool = True) -> str:
    """The serialized id of the message `key` in `chat`: `true_996555123456@c.us_3EB0ABC`."""
    return f"{'true' if from_me else 'false'}_{chat}_{key}"

