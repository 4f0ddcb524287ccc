"""Where an import's chats come from, behind one small interface.

A source first lists its chats (`list_chats`), then loads them one at a time (`load`), each as a
`LoadedChat`: the client's number and names and the chat's messages as rows to store. Two kinds:

- `WhatsAppSource`: the live WhatsApp Web session. The chat list is one request; a chat's history
  comes in whole pages (`page_size` messages per request, so most chats take one); a contact card
  is asked for only when the chat tells neither the number nor a name. Every request goes
  through the `Pacer`. Messages become rows through the inbound channel's parsers
  (`wad.whatsapp.messages`), so a message imported here and the same message seen live are the same
  row.
- `PluginSource`: an importer plugin's `ImportSource` (such as the bundled "Export chat" reader),
  whose chats are read once, up front, so that the total is known.
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, Literal, Protocol

from wad.browser import events as ev
from wad.db.models import NewMessage
from wad.importer.duplicates import DERIVED_PREFIX
from wad.importer.pacing import Pacer
from wad.payloads import ImportedChat, ImportedMessage, ImportRequest, ImportSource
from wad.whatsapp import chats, ids
from wad.whatsapp import messages as parse
from wad.whatsapp.phone import InvalidPhoneNumber, normalize

ChatKind = Literal["chat", "group", "broadcast"]


class ChatFailed(Exception):
    """One chat cannot be imported; the message says why (the import goes on)."""


class SourceGone(Exception):
    """The source cannot go on at all (the WhatsApp session closed): the import stops."""


@dataclass(frozen=True)
class ChatRef:
    """A chat as listed: its key (WhatsApp chat id, or the plugin's key), what kind of chat it
    is, its title and its last activity (unix seconds, 0 when unknown)."""

    key: str
    kind: ChatKind = "chat"
    name: str | None = None
    last_activity: int = 0


@dataclass
class LoadedChat:
    """A chat ready to import: the client's number (E.164) and names, and its messages as rows
    (oldest first, without conversation or language yet)."""

    key: str
    phone: str
    wa_chat_id: str
    rows: list[NewMessage]
    saved_name: str | None = None
    push_name: str | None = None
    problems: list[str] = field(default_factory=list)
    """What the source could not read (reported as warnings; the rest is imported)."""


class ChatSource(Protocol):
    """What the engine needs of a source."""

    name: str

    @property
    def requests(self) -> int: ...
    async def list_chats(self) -> list[ChatRef]: ...
    async def load(self, ref: ChatRef, organization_id: uuid.UUID) -> LoadedChat: ...


def chat_kind(chat_id: str, *, is_group: bool = False) -> ChatKind:
    """The importer's kinds of `wad.whatsapp.chats.chat_kind`: channels count as broadcasts
    (status updates, broadcast lists, channels); the importer skips all but one-to-one chats."""
    kind = chats.chat_kind(chat_id, is_group=is_group)
    return "broadcast" if kind == "newsletter" else kind


_PHONE_LIKE = re.compile(r"^[\s+\d()\-.\u00a0\u202a-\u202e\u2068\u2069]{6,}$")


def looks_like_number(text: str | None) -> bool:
    """True for titles that are a formatted phone number (`+996 555 123 456`), which WhatsApp
    shows for contacts the phone has not saved: not a name."""
    return bool(text) and bool(_PHONE_LIKE.match(text or "")) and \
        sum(ch.isdigit() for ch in text or "") >= 6


# The live WhatsApp session --------------------------------------------------------------------


class BrowserSessionLike(Protocol):
    """The calls of `wad.browser.driver.BrowserSession` a WhatsApp import makes."""

    async def list_chats(self) -> list[ev.ChatInfo]: ...
    async def fetch_messages(self, chat: str, *, before: str | None = None,
                             limit: int = 50) -> ev.MessagePage: ...
    async def get_contact(self, wid: str) -> ev.Contact: ...


SessionGetter = Callable[[], Awaitable[BrowserSessionLike]]
"""Answers the live session for the next request, or raises `SourceGone`."""


async def _fetch(session: BrowserSessionLike, *, chat_id: str, before: str | None,
                 limit: int) -> ev.MessagePage:
    return await session.fetch_messages(chat_id, before=before, limit=limit)


async def _contact(session: BrowserSessionLike, *, wid: str) -> ev.Contact:
    return await session.get_contact(wid)


class WhatsAppSource:
    """Chats of the linked account, read through its WhatsApp Web session."""

    name = "whatsapp"

    def __init__(self, session: SessionGetter, *, pacer: Pacer, page_size: int = 200) -> None:
        self._session = session
        self.pacer = pacer
        self.page_size = page_size

    @property
    def requests(self) -> int:
        return self.pacer.requests

    async def _call(self, what: str, call: Callable[[BrowserSessionLike], Awaitable[Any]]) -> Any:
        session = await self._session()
        await self.pacer.wait()
        try:
            return await call(session)
        except Exception as exc:
            if not getattr(session, "alive", True):
                raise SourceGone(f"the WhatsApp session closed during {what}") from exc
            raise

    async def list_chats(self) -> list[ChatRef]:
        """Every chat, most recently active first (one request)."""
        chats: list[ev.ChatInfo] = await self._call("the chat list", lambda s: s.list_chats())
        refs = [ChatRef(key=c.id, kind=chat_kind(c.id, is_group=c.is_group), name=c.name,
                        last_activity=c.t) for c in chats]
        refs.sort(key=lambda r: -r.last_activity)
        return refs

    async def _history(self, chat_id: str) -> list[ev.Message]:
        """The chat's whole history, oldest first: a page per request, newest page first, until
        a page comes back short."""
        found: list[ev.Message] = []
        before: str | None = None
        while True:
            page: ev.MessagePage = await self._call(
                "a history request",
                functools.partial(_fetch, chat_id=chat_id, before=before, limit=self.page_size))
            found[:0] = page.messages
            if len(page.messages) < self.page_size or page.next_cursor is None:
                return found
            before = page.next_cursor

    async def load(self, ref: ChatRef, organization_id: uuid.UUID) -> LoadedChat:
        history = await self._history(ref.key)
        seen: set[str] = set()
        rows: list[NewMessage] = []
        push_name: str | None = None
        for message in history:
            if parse.is_system(message) or message.id in seen:
                continue
            seen.add(message.id)
            rows.append(parse.new_message(organization_id, message))
            if not message.from_me and message.push_name:
                push_name = message.push_name
        saved_name = ref.name if ref.name and not looks_like_number(ref.name) else None
        phone = ids.phone_from_chat_id(ref.key)
        hidden = phone is None and ids.is_lid(ref.key)
        if hidden or (phone is not None and not (saved_name or push_name)):
            contact: ev.Contact = await self._call(
                "a contact look-up", functools.partial(_contact, wid=ref.key))
            if phone is None and contact.number:
                phone = ids.phone_from_chat_id(ids.user_chat(contact.number))
            saved_name = saved_name or contact.saved_name
            push_name = push_name or contact.push_name or contact.verified_name
        if phone is None:
            user = ref.key.partition("@")[0]
            if user.isdigit() and not ids.is_lid(ref.key):
                raise ChatFailed(f"+{user} (chat {ref.key}) is not a valid phone number")
            raise ChatFailed(f"no phone number for chat {ref.key} (WhatsApp hides it)")
        return LoadedChat(key=ref.key, phone=phone, wa_chat_id=ref.key, rows=rows,
                          saved_name=saved_name, push_name=push_name)


# Importer plugins -----------------------------------------------------------------------------


def derived_message_id(phone: str, message: ImportedMessage, occurrence: int) -> str:
    """A stable id for a message a source gives without one: from the chat's number, the time,
    the direction, the type and the text, and how many identical messages came before it in
    the chat (so two "ok"s in the same minute stay two messages). Importing the same file
    again, or a later export of the same chat, gives the same ids."""
    text = message.body or message.caption or ""
    when = message.sent_at.astimezone(UTC).isoformat() if message.sent_at.tzinfo \
        else message.sent_at.isoformat()
    seed = "\x1f".join([phone, when, message.direction, message.type, text, str(occurrence)])
    return DERIVED_PREFIX + hashlib.sha256(seed.encode("utf-8")).hexdigest()[:32].upper()


def imported_rows(organization_id: uuid.UUID, phone: str, wa_chat_id: str,
                  messages: Sequence[ImportedMessage]) -> list[NewMessage]:
    """A plugin's messages as rows, oldest first."""
    ordered = sorted(messages, key=lambda m: m.sent_at)
    seen: dict[tuple[Any, ...], int] = {}
    rows = []
    for m in ordered:
        wa_id = m.wa_message_id
        if not wa_id:
            identity = (m.sent_at, m.direction, m.type, m.body, m.caption)
            occurrence = seen.get(identity, 0)
            seen[identity] = occurrence + 1
            wa_id = derived_message_id(phone, m, occurrence)
        incoming = m.direction == "IN"
        rows.append(NewMessage(
            organization_id=organization_id, wa_message_id=wa_id, wa_chat_id=wa_chat_id,
            direction=m.direction, sender="CLIENT" if incoming else
            (m.sender if m.sender != "CLIENT" else "HUMAN"),
            sent_at=m.sent_at if m.sent_at.tzinfo else m.sent_at.replace(tzinfo=UTC),
            status="RECEIVED" if incoming else "SENT", type=m.type, body=m.body or None,
            caption=m.caption or None, media=m.media))
    return rows


class PluginSource:
    """An importer plugin's source. Its chats are read when listed; `paths` are handed to it
    one at a time as `ImportRequest.location` (once with None when there are none).

    A chat may carry two facts `ImportedChat` has no field for (yet): `is_group` (skipped and
    counted like WhatsApp groups) and `problems` (lines it could not read, reported as
    warnings)."""

    def __init__(self, source: ImportSource, *, organization_id: uuid.UUID,
                 paths: Sequence[str] = (), options: dict[str, str] | None = None) -> None:
        self.source = source
        self.organization_id = organization_id
        self.name = source.name
        self.paths = list(paths)
        self.options = dict(options or {})
        self._chats: dict[str, ImportedChat] = {}

    @property
    def requests(self) -> int:
        return 0

    async def list_chats(self) -> list[ChatRef]:
        refs: list[ChatRef] = []
        self._chats.clear()
        locations: list[str | None] = list(self.paths) or [None]
        for location in locations:
            request = ImportRequest(organization_id=self.organization_id, location=location,
                                    options=self.options)
            async for chat in self.source.chats(request):
                if chat.key in self._chats:
                    continue
                self._chats[chat.key] = chat
                kind: ChatKind = "group" if chat.is_group else "chat"
                refs.append(ChatRef(key=chat.key, kind=kind, name=chat.name))
        return refs

    async def load(self, ref: ChatRef, organization_id: uuid.UUID) -> LoadedChat:
        chat = self._chats[ref.key]
        problems = list(chat.problems)
        if not chat.messages and problems:
            raise ChatFailed("; ".join(problems))
        if chat.phone is None:
            reason = "; ".join(problems) or "the source gives no phone number"
            raise ChatFailed(f"no phone number for this chat: {reason}")
        try:
            phone = normalize(chat.phone)
        except InvalidPhoneNumber as exc:
            raise ChatFailed(str(exc)) from None
        wa_chat_id = ids.user_chat(phone)
        rows = imported_rows(organization_id, phone, wa_chat_id, chat.messages)
        name = chat.name if chat.name and not looks_like_number(chat.name) else None
        return LoadedChat(key=chat.key, phone=phone, wa_chat_id=wa_chat_id, rows=rows,
                          saved_name=name, problems=problems)

