"""The simulator's in-memory world: accounts (the phones), their contacts, chats and messages,
the linked devices, and the pages (browser tabs) connected over the WebSocket.

Everything here is plain synchronous state plus a few timers scheduled on the server's nursery,
so tests may also drive it in-process through `SimServer.sim`. The wire format of the page
protocol is documented in `docs/simulator.md`.
"""

from __future__ import annotations

import base64
import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import msgspec
import segno
import trio
from msgspec import Meta

DEFAULT_VERSION = "2.3000.1017054665"
STATUS_WID = "status@broadcast"
# Page states (WAWEB.md): the ones that mean the session is gone stop live traffic.
TERMINAL_STATES = {"CONFLICT", "TOS_BLOCK", "SMB_TOS_BLOCK", "DEPRECATED_VERSION"}
PAIR_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTVWXYZ"


class SimConfig(msgspec.Struct, kw_only=True):
    """Timing and size knobs of one simulator; tests shrink the periods."""

    version: Annotated[str, Meta(min_length=1)] = DEFAULT_VERSION
    qr_rotate_s: Annotated[float, Meta(gt=0)] = 20.0
    """How often `Conn.ref` changes while a page is unpaired."""
    qr_max_rotations: Annotated[int, Meta(ge=1)] = 5
    """Rotations without a scan before the page goes `UNPAIRED_IDLE`."""
    sync_delay_s: Annotated[float, Meta(ge=0)] = 1.5
    """Delay between `CONNECTED` and the initial sync (`hasSynced`)."""
    pairing_code_ttl_s: Annotated[float, Meta(gt=0)] = 180.0
    max_devices: Annotated[int, Meta(ge=1)] = 4
    recent_msgs: Annotated[int, Meta(ge=0)] = 20
    """Messages per chat loaded into `chat.msgs` by the initial sync."""
    page_size: Annotated[int, Meta(ge=1)] = 50
    """Messages per `loadEarlierMsgs` page."""
    peer_request_delay_s: Annotated[float, Meta(ge=0)] = 0.3
    """How long the phone takes to answer `sendPeerDataOperationRequest`."""
    auto_ack: bool = True
    ack_delays_s: tuple[Annotated[float, Meta(ge=0)], Annotated[float, Meta(ge=0)],
                        Annotated[float, Meta(ge=0)]] = (0.5, 1.5, 3.0)
    """Auto acks after a send is accepted: delivered (2), read (3), played (4, voice/video)."""
    reconnect_s: Annotated[float, Meta(gt=0)] = 0.5
    """The page's delay between reconnection attempts while the network is down."""


class SimError(Exception):
    """A control request that cannot be honoured; `status` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class PageLink(Protocol):
    """One connected page (a WebSocket); the server implements it."""

    def push(self, obj: dict[str, Any]) -> None: ...

    def close(self, reason: str) -> None: ...


def wire(msg: dict[str, Any]) -> dict[str, Any]:
    """A stored message as the page receives it (private `_` keys removed)."""
    return {k: v for k, v in msg.items() if not k.startswith("_")}


def serialize_id(from_me: bool, remote: str, hex_id: str, participant: str | None = None) -> str:
    base = f"{'true' if from_me else 'false'}_{remote}_{hex_id}"
    return f"{base}_{participant}" if participant else base


def normalize_wid(value: str) -> str:
    """`+996 555 123456`, `996555123456` or a full id -> a full id (`...@c.us` for numbers)."""
    value = value.strip()
    if "@" in value:
        return value
    digits = "".join(ch for ch in value if ch.isdigit())
    if not digits:
        raise SimError(400, f"not a phone number or id: {value!r}")
    return f"{digits}@c.us"


@dataclass
class Contact:
    wid: str
    name: str | None = None
    """The saved name in the phone's address book (None: not saved)."""
    push_name: str | None = None
    picture: bool = False
    business: bool = False
    lid: str | None = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.wid, "name": self.name, "pushname": self.push_name,
            "isBusiness": self.business, "isMyContact": self.name is not None,
            "lid": self.lid, "hasPic": self.picture,
            "verifiedName": self.push_name if self.business else None,
        }


@dataclass
class Chat:
    wid: str
    name: str | None = None
    is_group: bool = False
    archive: bool = False
    unread: int = 0
    t: int = 0
    participants: list[str] = field(default_factory=list)
    msgs: list[dict[str, Any]] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    hidden_before: int = 0
    """Messages below this index are only on the phone until a peer data request."""

    def meta(self) -> dict[str, Any]:
        return {
            "id": self.wid, "name": self.name, "isGroup": self.is_group, "archive": self.archive,
            "unreadCount": self.unread, "t": self.t, "participants": self.participants,
            "endOfHistoryTransferType": 0 if self.hidden_before > 0 else 1,
        }


@dataclass
class Device:
    id: str
    account: str
    linked_at: float
    acked_seq: int
    conflict: bool = False


_PAGE_SERIALS = itertools.count(1)


@dataclass
class Page:
    """A connected page (one WebSocket) and its pairing state."""

    link: PageLink
    device_id: str
    keys: dict[str, str]
    account: str | None = None
    live: bool = False
    """Receives account events (after the initial sync or a resume)."""
    ref: str | None = None
    old_refs: set[str] = field(default_factory=set)
    rotations: int = 0
    idle: bool = False
    refresh: trio.Event = field(default_factory=trio.Event)
    serial: int = field(default_factory=lambda: next(_PAGE_SERIALS))
    """Which connection this is (two browsers on one device are two pages): in the sent log."""

    def payload(self, ref: str | None = None) -> str:
        k = self.keys
        return ",".join([ref or self.ref or "", k["noise"], k["identity"], k["adv"], k["platform"]])


@dataclass
class PairingCode:
    page: Page
    phone: str
    expires: float


@dataclass
class Account:
    number: str
    push_name: str
    business: bool = False
    platform: str = "android"
    lid: str = ""
    contacts: dict[str, Contact] = field(default_factory=dict)
    chats: dict[str, Chat] = field(default_factory=dict)
    msgs: dict[str, dict[str, Any]] = field(default_factory=dict)
    devices: dict[str, Device] = field(default_factory=dict)
    events: deque[tuple[int, dict[str, Any]]] = field(default_factory=deque)
    seq: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)
    sent_counts: dict[str, int] = field(default_factory=dict)
    activity: list[dict[str, Any]] = field(default_factory=list)
    send_delay_s: float = 0.0
    sends_in_progress: int = 0
    """Sends the server has received and not answered yet (held by `send_delay_s`)."""
    fail_next: int = 0
    fail_all: bool = False
    auto_ack: bool | None = None
    ack_delays_s: tuple[float, float, float] | None = None
    banned: str | None = None

    @property
    def wid(self) -> str:
        return f"{self.number}@c.us"

    def me(self) -> dict[str, Any]:
        return {
            "wid": self.wid, "lid": f"{self.lid}@lid", "pushname": self.push_name,
            "platform": ("smba" if self.platform == "android" else "smbi")
            if self.business else self.platform,
            "business": self.business,
        }


class Simulator:
    """The whole simulated world. Methods raise `SimError` for bad control requests."""

    def __init__(self, *, seed: int | None = None, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.rng = random.Random(seed)
        self.seed = seed
        self.accounts: dict[str, Account] = {}
        self.pages: list[Page] = []
        self.pair_codes: dict[str, PairingCode] = {}
        self.network_down: dict[str, float] = {}
        """device id -> monotonic time when its network comes back (inf: until restored)."""
        self.deprecated = False
        self.not_on_whatsapp: set[str] = set()
        self.nursery: trio.Nursery | None = None
        self.base_url = ""
        self._together: dict[str, list[dict[str, Any]]] = {}
        """Account number -> its events kept for one frame (`together`)."""

    # ------------------------------------------------------------------ helpers

    def after(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` after `delay` seconds on the server's nursery."""
        if self.nursery is None:
            return

        async def _later() -> None:
            await trio.sleep(delay)
            fn(*args)

        self.nursery.start_soon(_later)

    def new_hex(self, n: int = 20) -> str:
        return "".join(self.rng.choice("0123456789ABCDEF") for _ in range(n))

    def new_ref(self) -> str:
        chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        return "2@" + "".join(self.rng.choice(chars) for _ in range(40))

    def account(self, number: str) -> Account:
        digits = "".join(ch for ch in number if ch.isdigit())
        acc = self.accounts.get(digits)
        if acc is None:
            raise SimError(404, f"no account {number}")
        return acc

    def exists(self, wid: str) -> bool:
        """Whether a user id is on WhatsApp: everyone except numbers marked otherwise."""
        user, _, server = wid.partition("@")
        if server == "lid":
            return True
        return server == "c.us" and 7 <= len(user) <= 15 and user.isdigit() and (
            user not in self.not_on_whatsapp)

    # ------------------------------------------------------------------ accounts

    def create_account(
        self, *, number: str, push_name: str, business: bool = False, platform: str = "android",
        contacts: list[dict[str, Any]] | None = None, chats: list[dict[str, Any]] | None = None,
    ) -> Account:
        digits = "".join(ch for ch in number if ch.isdigit())
        if not 7 <= len(digits) <= 15:
            raise SimError(400, f"bad phone number {number!r}")
        if digits in self.accounts:
            raise SimError(409, f"account {digits} exists")
        acc = Account(number=digits, push_name=push_name, business=business, platform=platform,
                      lid=str(self.rng.randrange(10**13, 10**15)))
        self.accounts[digits] = acc
        for c in contacts or []:
            self.add_contact(acc, **c)
        for ch in chats or []:
            self.add_chat(acc, **ch)
        return acc

    def add_contact(
        self, acc: Account, *, number: str, name: str | None = None,
        push_name: str | None = None, picture: bool = False, business: bool = False,
    ) -> Contact:
        wid = normalize_wid(number)
        c = acc.contacts.get(wid)
        if c is None:
            c = Contact(wid=wid, lid=str(self.rng.randrange(10**13, 10**15)))
            acc.contacts[wid] = c
        c.name = name if name is not None else c.name
        c.push_name = push_name if push_name is not None else c.push_name
        c.picture = picture or c.picture
        c.business = business or c.business
        return c

    def add_chat(
        self, acc: Account, *, id: str, name: str | None = None, is_group: bool | None = None,
        participants: list[str] | None = None, archive: bool = False,
        messages: list[dict[str, Any]] | None = None, phone_only: int = 0,
    ) -> Chat:
        """A chat with history. `phone_only`: how many of its oldest messages stay on the phone
        until `sendPeerDataOperationRequest` (the chat then has `endOfHistoryTransferType` 0)."""
        wid = normalize_wid(id)
        chat = self._chat(acc, wid)
        chat.name = name or chat.name
        chat.is_group = wid.endswith("@g.us") if is_group is None else is_group
        chat.participants = [normalize_wid(p) for p in participants or chat.participants]
        chat.archive = archive
        for m in messages or []:
            self._history_msg(acc, chat, m)
        chat.hidden_before = min(phone_only, len(chat.msgs))
        return chat

    def _chat(self, acc: Account, wid: str) -> Chat:
        chat = acc.chats.get(wid)
        if chat is None:
            chat = Chat(wid=wid, is_group=wid.endswith("@g.us"))
            if wid == STATUS_WID:
                chat.name = "Status"
            acc.chats[wid] = chat
            if wid.endswith("@c.us") and wid not in acc.contacts and wid != acc.wid:
                acc.contacts[wid] = Contact(wid=wid, lid=str(self.rng.randrange(10**13, 10**15)))
        return chat

    def _build_msg(
        self, acc: Account, chat: Chat, *, from_me: bool, type: str = "chat", body: str = "",
        t: int | None = None, author: str | None = None, ack: int | None = None,
        caption: str | None = None, id: str | None = None, notify_name: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        hex_id = id or ("3EB0" + self.new_hex(16) if from_me else self.new_hex(20))
        author_wid = normalize_wid(author) if author else None
        participant = None
        if chat.is_group or chat.wid == STATUS_WID:
            participant = acc.wid if from_me else author_wid
            if participant is None:
                raise SimError(400, "a group or status message needs an author")
        sid = serialize_id(from_me, chat.wid, hex_id, participant)
        if sid in acc.msgs:
            raise SimError(409, f"message {sid} exists")
        sender = participant or chat.wid
        if notify_name is None:
            if from_me:
                notify_name = acc.push_name
            else:
                c = acc.contacts.get(sender)
                notify_name = c.push_name if c else None
        msg: dict[str, Any] = {
            "id": {"fromMe": from_me, "remote": chat.wid, "id": hex_id,
                   "participant": participant, "_serialized": sid},
            "type": type, "body": body, "t": int(t if t is not None else time.time()),
            "from": acc.wid if from_me else chat.wid,
            "to": chat.wid if from_me else acc.wid,
            "author": participant, "ack": (1 if from_me else 0) if ack is None else ack,
            "notifyName": notify_name or "",
            "isStatusV3": chat.wid == STATUS_WID, "broadcast": chat.wid == STATUS_WID,
            "_chat": chat.wid,
        }
        if caption is not None:
            msg["caption"] = caption
        msg.update(media_fields(type, extra))
        return msg

    def _store(self, acc: Account, chat: Chat, msg: dict[str, Any]) -> None:
        msg["rowId"] = len(chat.msgs)
        chat.index[msg["id"]["_serialized"]] = len(chat.msgs)
        chat.msgs.append(msg)
        acc.msgs[msg["id"]["_serialized"]] = msg
        chat.t = max(chat.t, msg["t"])

    def _history_msg(self, acc: Account, chat: Chat, spec: dict[str, Any]) -> dict[str, Any]:
        spec = dict(spec)
        from_me = bool(spec.pop("from_me", False))
        if not from_me and not chat.is_group and chat.wid != STATUS_WID:
            spec.pop("author", None)
        ack = spec.pop("ack", 3 if from_me else 0)
        msg = self._build_msg(acc, chat, from_me=from_me, ack=ack, **spec)
        msg["_seq"] = 0
        self._store(acc, chat, msg)
        return msg

    # ------------------------------------------------------------------ events

    def emit(self, acc: Account, event: dict[str, Any]) -> int:
        """Append an account event and push it to the account's live pages (or, inside
        `together`, keep it for the batch)."""
        acc.seq += 1
        acc.events.append((acc.seq, event))
        frame = {"t": "ev", "seq": acc.seq, "e": event}
        if acc.number in self._together:
            self._together[acc.number].append(frame)
        else:
            self._push_live(acc, frame)
        self._trim(acc)
        return acc.seq

    def _push_live(self, acc: Account, frame: dict[str, Any]) -> None:
        for page in self.pages:
            if page.account == acc.number and page.live:
                page.link.push(frame)

    @contextmanager
    def together(self, number: str) -> Iterator[None]:
        """The account's events made inside the block reach its pages in one frame at its end
        (a `batch` of them, in order), as WhatsApp hands a device what queued up for it while
        it was away: a burst costs the page one WebSocket message, not one per message."""
        acc = self.account(number)
        frames: list[dict[str, Any]] = []
        self._together[acc.number] = frames
        try:
            yield
        finally:
            del self._together[acc.number]
            if frames:
                self._push_live(acc, frames[0] if len(frames) == 1 else
                                {"t": "batch", "frames": frames})

    def _trim(self, acc: Account) -> None:
        """Forget events every linked device has processed (kept while any device lags)."""
        if len(acc.events) < 2000:
            return
        floor = min((d.acked_seq for d in acc.devices.values()), default=acc.seq)
        while acc.events and acc.events[0][0] <= floor:
            acc.events.popleft()

    def replay(self, acc: Account, page: Page, after: int) -> None:
        for seq, event in acc.events:
            if seq > after:
                page.link.push({"t": "ev", "seq": seq, "e": event})

    def _msg_event(self, acc: Account, chat: Chat, msg: dict[str, Any]) -> None:
        ev: dict[str, Any] = {"k": "msg", "m": wire(msg), "chat": chat.meta()}
        sender = msg["author"] or (None if msg["id"]["fromMe"] else chat.wid)
        if sender and sender in acc.contacts:
            ev["contact"] = acc.contacts[sender].to_wire()
        msg["_seq"] = self.emit(acc, ev)

    def _upd(self, acc: Account, msg: dict[str, Any], **fields: Any) -> None:
        msg.update(fields)
        self.emit(acc, {"k": "upd", "id": msg["id"]["_serialized"], "f": fields})

    # ------------------------------------------------------------------ traffic (control)

    def incoming(
        self, number: str, *, sender: str, body: str = "", type: str = "chat",
        group: str | None = None, status: bool = False, push_name: str | None = None,
        caption: str | None = None, ciphertext_s: float | None = None, id: str | None = None,
        quoted: str | None = None, **extra: Any,
    ) -> dict[str, Any]:
        """A message from someone else arrives. `ciphertext_s`: deliver it first as
        `ciphertext` and make it readable after that many seconds (0: only on `decrypt`)."""
        acc = self.account(number)
        sender_wid = normalize_wid(sender)
        contact = acc.contacts.get(sender_wid)
        if contact is None:
            contact = self.add_contact(acc, number=sender_wid, push_name=push_name)
        elif push_name:
            contact.push_name = push_name
        chat_wid = STATUS_WID if status else normalize_wid(group) if group else sender_wid
        chat = self._chat(acc, chat_wid)
        if chat.is_group and sender_wid not in chat.participants:
            chat.participants.append(sender_wid)
        msg = self._build_msg(
            acc, chat, from_me=False, type=type, body=body, caption=caption, id=id,
            author=sender_wid if (chat.is_group or status) else None, **extra)
        if quoted:
            msg["quotedStanzaID"] = quoted.rsplit("_", 1)[-1]
            msg["quotedMsgId"] = quoted
        if ciphertext_s is not None:
            readable = {k: msg[k] for k in ("type", "body", "caption") if k in msg}
            msg["_readable"] = readable
            msg.update(type="ciphertext", body="")
            msg.pop("caption", None)
            if ciphertext_s > 0:
                self.after(ciphertext_s, self._decrypt_quietly, acc, msg["id"]["_serialized"])
        self._store(acc, chat, msg)
        if not status:
            chat.unread += 1
        self._msg_event(acc, chat, msg)
        return wire(msg)

    def _decrypt_quietly(self, acc: Account, sid: str) -> None:
        msg = acc.msgs.get(sid)
        if msg is not None and "_readable" in msg:
            self._upd(acc, msg, **msg.pop("_readable"))

    def decrypt(self, number: str, msg_id: str) -> dict[str, Any]:
        acc = self.account(number)
        msg = self._find_msg(acc, msg_id)
        if "_readable" not in msg:
            raise SimError(409, f"message {msg_id} is not waiting for decryption")
        self._upd(acc, msg, **msg.pop("_readable"))
        return wire(msg)

    def phone_send(
        self, number: str, *, to: str, body: str = "", type: str = "chat",
        caption: str | None = None, **extra: Any,
    ) -> dict[str, Any]:
        """The phone's owner writes a message; the page sees it arrive with `fromMe`."""
        acc = self.account(number)
        chat = self._chat(acc, normalize_wid(to))
        msg = self._build_msg(acc, chat, from_me=True, type=type, body=body, caption=caption,
                              ack=1, **extra)
        self._store(acc, chat, msg)
        chat.unread = 0
        self._msg_event(acc, chat, msg)
        self._schedule_acks(acc, msg)
        return wire(msg)

    def _find_msg(self, acc: Account, msg_id: str) -> dict[str, Any]:
        msg = acc.msgs.get(msg_id)
        if msg is None:
            matches = [m for sid, m in acc.msgs.items() if m["id"]["id"] == msg_id]
            if len(matches) != 1:
                raise SimError(404, f"no message {msg_id}")
            msg = matches[0]
        return msg

    def edit(self, number: str, msg_id: str, body: str) -> dict[str, Any]:
        acc = self.account(number)
        msg = self._find_msg(acc, msg_id)
        if msg["type"] == "chat":
            self._upd(acc, msg, body=body)
        else:
            self._upd(acc, msg, caption=body)
        return wire(msg)

    def revoke(self, number: str, msg_id: str) -> dict[str, Any]:
        acc = self.account(number)
        msg = self._find_msg(acc, msg_id)
        self._upd(acc, msg, type="revoked", body="")
        return wire(msg)

    def set_ack(self, number: str, msg_id: str, ack: int) -> dict[str, Any]:
        if ack not in (-1, 0, 1, 2, 3, 4):
            raise SimError(400, f"bad ack {ack}")
        acc = self.account(number)
        msg = self._find_msg(acc, msg_id)
        self._upd(acc, msg, ack=ack)
        return wire(msg)

    def update_chat(self, number: str, chat_id: str, *, archive: bool | None = None,
                    name: str | None = None) -> dict[str, Any]:
        acc = self.account(number)
        chat = acc.chats.get(normalize_wid(chat_id))
        if chat is None:
            raise SimError(404, f"no chat {chat_id}")
        if archive is not None:
            chat.archive = archive
        if name is not None:
            chat.name = name
        self.emit(acc, {"k": "chat", "chat": chat.meta()})
        return chat.meta()

    def delete_message(self, number: str, msg_id: str) -> None:
        """The phone deletes a message for itself: the page's `Msg` fires `remove`."""
        acc = self.account(number)
        msg = self._find_msg(acc, msg_id)
        sid = msg["id"]["_serialized"]
        chat = acc.chats[msg["_chat"]]
        self._forget(acc, chat, [sid])
        self.emit(acc, {"k": "msg_remove", "ids": [sid]})

    def delete_chat(self, number: str, chat_id: str) -> None:
        """The phone deletes a chat: the page's `Chat` fires `remove`."""
        acc = self.account(number)
        chat = acc.chats.get(normalize_wid(chat_id))
        if chat is None:
            raise SimError(404, f"no chat {chat_id}")
        for m in chat.msgs:
            acc.msgs.pop(m["id"]["_serialized"], None)
        del acc.chats[chat.wid]
        self.emit(acc, {"k": "chat_remove", "id": chat.wid})

    @staticmethod
    def _forget(acc: Account, chat: Chat, sids: list[str]) -> None:
        gone = set(sids)
        chat.msgs = [m for m in chat.msgs if m["id"]["_serialized"] not in gone]
        chat.index = {m["id"]["_serialized"]: i for i, m in enumerate(chat.msgs)}
        for sid in gone:
            acc.msgs.pop(sid, None)

    def _schedule_acks(self, acc: Account, msg: dict[str, Any]) -> None:
        auto = self.config.auto_ack if acc.auto_ack is None else acc.auto_ack
        if not auto:
            return
        delays = acc.ack_delays_s or self.config.ack_delays_s
        sid = msg["id"]["_serialized"]
        levels = [2, 3, 4] if msg["type"] in ("ptt", "video") else [2, 3]
        for level, delay in zip(levels, delays, strict=False):
            self.after(delay, self._auto_ack, acc, sid, level)

    def _auto_ack(self, acc: Account, sid: str, level: int) -> None:
        msg = acc.msgs.get(sid)
        if msg is not None and 0 <= msg["ack"] < level:
            self._upd(acc, msg, ack=level)

    # ------------------------------------------------------------------ faults (control)

    def _pages_of(self, acc: Account, device: str | None) -> list[Page]:
        return [p for p in self.pages if p.account == acc.number
                and (device is None or p.device_id == device)]

    def _devices_of(self, acc: Account, device: str | None) -> list[Device]:
        if device is not None and device not in acc.devices:
            raise SimError(404, f"device {device} is not linked to {acc.number}")
        return [d for d in acc.devices.values() if device is None or d.id == device]

    def unlink(self, number: str, device: str | None = None) -> list[str]:
        """The phone removes linked device(s): their pages log out."""
        acc = self.account(number)
        gone = self._devices_of(acc, device)
        for d in gone:
            del acc.devices[d.id]
            self.network_down.pop(d.id, None)
        ids = {d.id for d in gone}
        for page in self.pages:
            if page.account == acc.number and page.device_id in ids:
                page.live = False
                page.account = None
                page.link.push({"t": "unlinked", "reason": "phone"})
        return sorted(ids)

    def conflict(self, number: str, device: str | None = None) -> None:
        acc = self.account(number)
        for d in self._devices_of(acc, device):
            d.conflict = True
            for page in self._pages_of(acc, d.id):
                page.live = False
                page.link.push({"t": "state", "state": "CONFLICT"})

    def ban(self, number: str, state: str = "TOS_BLOCK") -> None:
        if state not in ("TOS_BLOCK", "SMB_TOS_BLOCK"):
            raise SimError(400, f"bad ban state {state}")
        acc = self.account(number)
        acc.banned = state
        for page in self._pages_of(acc, None):
            page.live = False
            page.link.push({"t": "state", "state": state})

    def unban(self, number: str) -> None:
        self.account(number).banned = None

    def set_deprecated(self, on: bool) -> None:
        self.deprecated = on
        if on:
            for page in self.pages:
                page.live = False
                page.link.push({"t": "state", "state": "DEPRECATED_VERSION"})

    def drop_network(self, number: str, seconds: float | None = None,
                     device: str | None = None) -> list[str]:
        """Cut the network of linked device(s): their pages go `TIMEOUT` and reconnect after
        `seconds` (None: until `restore_network`)."""
        acc = self.account(number)
        until = float("inf") if seconds is None else trio.current_time() + seconds
        ids = [d.id for d in self._devices_of(acc, device)]
        for dev_id in ids:
            self.network_down[dev_id] = until
        for page in list(self.pages):
            if page.device_id in ids:
                page.live = False
                page.link.close("network down")
        return ids

    def restore_network(self, number: str, device: str | None = None) -> None:
        acc = self.account(number)
        for d in self._devices_of(acc, device):
            self.network_down.pop(d.id, None)

    def is_down(self, device_id: str) -> bool:
        until = self.network_down.get(device_id)
        if until is None:
            return False
        if trio.current_time() >= until:
            del self.network_down[device_id]
            return False
        return True

    def freeze(self, number: str, seconds: float | None = None,
               device: str | None = None) -> int:
        """Make the page's JavaScript busy-loop (None: forever)."""
        acc = self.account(number)
        pages = self._pages_of(acc, device)
        for page in pages:
            page.link.push({"t": "freeze", "seconds": seconds})
        return len(pages)

    def page_build(self, number: str, module: str, member: str | None = None, *,
                   rename_to: str | None = None, version: str | None = None,
                   device: str | None = None) -> int:
        """A new WhatsApp Web build for the account's pages: `module` (or its `member`, dotted
        for deeper ones) is removed, or renamed to `rename_to`; the page reloads into it and
        keeps it (in its profile's storage) from then on. Answers how many pages were told."""
        if not module:
            raise SimError(400, "module is required")
        acc = self.account(number)
        pages = self._pages_of(acc, device)
        change = {"module": module, "member": member, "rename_to": rename_to, "version": version}
        for page in pages:
            page.link.push({"t": "build", "change": change})
        return len(pages)

    def set_send_behaviour(self, number: str, *, delay_s: float = 0.0, fail_next: int = 0,
                           fail_all: bool = False, add_delay_s: float = 0.0) -> None:
        """Slow (`delay_s`: the send's result) and failing sends; `add_delay_s` > 0 makes the
        open pages add a message to their collections that long after it was handed to them,
        answering a Promise meanwhile (as some WhatsApp Web builds do)."""
        acc = self.account(number)
        acc.send_delay_s, acc.fail_next, acc.fail_all = delay_s, fail_next, fail_all
        for page in self._pages_of(acc, None):
            page.link.push({"t": "sends", "add_delay_s": add_delay_s})

    def add_frame(self, number: str, url: str, device: str | None = None) -> int:
        """The account's pages show an iframe of URL (as a crafted message could make them);
        answers how many pages were told."""
        if not url.startswith(("http://", "https://")):
            raise SimError(400, "url must be http(s)")
        pages = self._pages_of(self.account(number), device)
        for page in pages:
            page.link.push({"t": "frame", "url": url})
        return len(pages)

    def set_acks(self, number: str, *, auto: bool | None,
                 delays_s: tuple[float, float, float] | None = None) -> None:
        acc = self.account(number)
        acc.auto_ack = auto
        acc.ack_delays_s = delays_s

    # ------------------------------------------------------------------ linking

    def page_hello(self, page: Page, hello: dict[str, Any]) -> None:
        """A page (re)connected: answer with its state, and sync or replay if it is linked."""
        self.pages.append(page)
        if self.deprecated:
            page.link.push({"t": "state", "state": "DEPRECATED_VERSION"})
            return
        claimed = hello.get("linked")
        acc = self._account_of_device(page.device_id)
        if claimed and acc is None:
            page.link.push({"t": "unlinked", "reason": "gone"})
            return
        if acc is None:
            self.start_unpaired(page)
            return
        page.account = acc.number
        dev = acc.devices[page.device_id]
        if acc.banned:
            page.link.push({"t": "state", "state": acc.banned})
            return
        if dev.conflict:
            page.link.push({"t": "state", "state": "CONFLICT"})
            return
        resume = hello.get("resume")
        if resume is not None:
            page.link.push({"t": "resumed", "me": acc.me()})
            page.live = True
            self.replay(acc, page, int(resume))
        else:
            page.link.push({"t": "linked", "me": acc.me()})
            self.after(self.config.sync_delay_s, self._sync, page)

    def _account_of_device(self, device_id: str) -> Account | None:
        for acc in self.accounts.values():
            if device_id in acc.devices:
                return acc
        return None

    def page_gone(self, page: Page) -> None:
        if page in self.pages:
            self.pages.remove(page)
        for code, pc in list(self.pair_codes.items()):
            if pc.page is page:
                del self.pair_codes[code]

    def start_unpaired(self, page: Page) -> None:
        page.account = None
        page.live = False
        page.rotations = 0
        page.idle = False
        self._new_ref(page)

    def _new_ref(self, page: Page) -> None:
        if page.ref:
            page.old_refs.add(page.ref)
        page.ref = self.new_ref()
        qr = segno.make(page.payload(), error="l")
        matrix = ["".join("1" if cell else "0" for cell in row) for row in qr.matrix]
        page.link.push({"t": "ref", "ref": page.ref, "matrix": matrix})

    def rotate(self, page: Page) -> bool:
        """One QR rotation tick; False once the page went idle."""
        if page.account is not None or page.idle or page not in self.pages:
            return False
        page.rotations += 1
        if page.rotations >= self.config.qr_max_rotations:
            page.idle = True
            if page.ref:
                page.old_refs.add(page.ref)
            page.ref = None
            page.link.push({"t": "idle"})
            return False
        self._new_ref(page)
        return True

    def refresh_qr(self, page: Page) -> None:
        if page.account is not None:
            return
        page.rotations = 0
        page.idle = False
        self._new_ref(page)
        self._kick(page)

    @staticmethod
    def _kick(page: Page) -> None:
        """Wake the page's QR timer (restart its period)."""
        page.refresh.set()
        page.refresh = trio.Event()

    def unpaired_payloads(self) -> list[dict[str, Any]]:
        return [{"device": p.device_id, "payload": p.payload(), "ref": p.ref}
                for p in self.pages if p.account is None and p.ref]

    def scan(self, number: str, payload: str) -> str:
        """The account's phone scans a QR payload; returns the linked device id."""
        acc = self.account(number)
        ref = payload.split(",", 1)[0]
        for page in self.pages:
            if page.account is None and page.ref == ref:
                if payload != page.payload():
                    raise SimError(400, "QR payload does not match the page's keys")
                self._link(acc, page)
                return page.device_id
        for page in self.pages:
            if ref in page.old_refs:
                raise SimError(409, "stale QR code: this payload is no longer shown")
        raise SimError(404, "no page shows this QR code")

    def request_code(self, page: Page, phone: str) -> str:
        if page.account is not None:
            raise SimError(409, "already linked")
        digits = "".join(ch for ch in phone if ch.isdigit())
        for code, pc in list(self.pair_codes.items()):
            if pc.page is page:
                del self.pair_codes[code]
        code = "".join(self.rng.choice(PAIR_ALPHABET) for _ in range(8))
        self.pair_codes[code] = PairingCode(
            page=page, phone=digits, expires=trio.current_time() + self.config.pairing_code_ttl_s)
        return code

    def enter_code(self, number: str, code: str) -> str:
        """The account's phone enters a pairing code shown by a page."""
        acc = self.account(number)
        code = code.replace("-", "").strip().upper()
        pc = self.pair_codes.get(code)
        if pc is None:
            raise SimError(404, "unknown pairing code")
        if trio.current_time() > pc.expires:
            del self.pair_codes[code]
            raise SimError(410, "pairing code expired")
        if pc.phone != acc.number:
            raise SimError(409, "this code was requested for another phone number")
        del self.pair_codes[code]
        self._link(acc, pc.page)
        return pc.page.device_id

    def _link(self, acc: Account, page: Page) -> None:
        if acc.banned:
            raise SimError(403, f"account {acc.number} is banned")
        if len(acc.devices) >= self.config.max_devices:
            raise SimError(409, f"account {acc.number} already has "
                                f"{self.config.max_devices} linked devices")
        acc.devices[page.device_id] = Device(
            id=page.device_id, account=acc.number, linked_at=time.time(), acked_seq=acc.seq)
        if page.ref:
            page.old_refs.add(page.ref)
        page.ref = None
        page.account = acc.number
        self._kick(page)
        page.link.push({"t": "pairing"})
        page.link.push({"t": "linked", "me": acc.me()})
        self.after(self.config.sync_delay_s, self._sync, page)

    def _sync(self, page: Page) -> None:
        """The initial sync: contacts, chats with their recent messages, then live traffic."""
        if page not in self.pages or page.account is None:
            return
        acc = self.accounts[page.account]
        dev = acc.devices.get(page.device_id)
        if dev is None or dev.conflict or acc.banned:
            return
        floor = dev.acked_seq
        chats = []
        for chat in acc.chats.values():
            meta = chat.meta()
            visible = [m for m in chat.msgs[chat.hidden_before:] if m.get("_seq", 0) <= floor]
            meta["msgs"] = [wire(m) for m in visible[-self.config.recent_msgs:]]
            chats.append(meta)
        contacts = [c.to_wire() for c in acc.contacts.values()]
        page.link.push({"t": "sync", "seq": floor, "me": acc.me(), "contacts": contacts,
                        "chats": chats})
        page.live = True
        self.replay(acc, page, floor)

    def page_seq(self, page: Page, seq: int) -> None:
        if page.account is None:
            return
        dev = self.accounts[page.account].devices.get(page.device_id)
        if dev is not None and seq > dev.acked_seq:
            dev.acked_seq = seq

    # ------------------------------------------------------------------ page requests (rpc)

    def page_account(self, page: Page) -> Account:
        if page.account is None:
            raise SimError(409, "not logged in")
        return self.accounts[page.account]

    def load_earlier(self, page: Page, chat_id: str, before: str | None) -> list[dict[str, Any]]:
        acc = self.page_account(page)
        chat = acc.chats.get(chat_id)
        if chat is None:
            return []
        end = chat.index.get(before, len(chat.msgs)) if before else len(chat.msgs)
        if not before:
            dev = acc.devices.get(page.device_id)
            floor = dev.acked_seq if dev else acc.seq
            while end > 0 and chat.msgs[end - 1].get("_seq", 0) > floor:
                end -= 1
        start = max(chat.hidden_before, end - self.config.page_size)
        return [wire(m) for m in chat.msgs[start:end]] if start < end else []

    def peer_request(self, page: Page, chat_id: str) -> None:
        acc = self.page_account(page)
        chat = acc.chats.get(chat_id)
        if chat is None or chat.hidden_before == 0:
            return
        chat.hidden_before = 0
        self.emit(acc, {"k": "chat", "chat": chat.meta()})

    def find_chat(self, page: Page, wid: str) -> dict[str, Any]:
        acc = self.page_account(page)
        wid = normalize_wid(wid)
        if wid not in acc.chats:
            if wid.endswith("@c.us") and not self.exists(wid):
                raise SimError(404, f"{wid} is not on WhatsApp")
            chat = self._chat(acc, wid)
            chat.t = int(time.time())
            ev: dict[str, Any] = {"k": "chat", "chat": chat.meta()}
            if wid in acc.contacts:
                ev["contact"] = acc.contacts[wid].to_wire()
            self.emit(acc, ev)
        return acc.chats[wid].meta()

    def record_send(self, page: Page, m: dict[str, Any]) -> tuple[Account, dict[str, Any] | None,
                                                                   bool]:
        """Record a send from the page; returns (account, stored message or None, failed)."""
        acc = self.page_account(page)
        hex_id = str(m.get("id", ""))
        remote = normalize_wid(str(m.get("remote", "")))
        if not hex_id or not remote:
            raise SimError(400, "a sent message needs an id and a chat")
        participant = m.get("participant") or None
        sid = serialize_id(True, remote, hex_id, participant)
        acc.sent_counts[sid] = acc.sent_counts.get(sid, 0) + 1
        failed = acc.fail_all or acc.fail_next > 0
        if acc.fail_next > 0:
            acc.fail_next -= 1
        acc.sent.append({"id": sid, "remote": remote, "type": m.get("type", "chat"),
                         "body": m.get("body", ""), "caption": m.get("caption"),
                         "device": page.device_id, "page": page.serial, "at": time.time(),
                         "result": "ERROR" if failed else "OK"})
        if failed or sid in acc.msgs:
            return acc, acc.msgs.get(sid), failed
        chat = self._chat(acc, remote)
        extra = {k: v for k, v in m.items() if k in ("mimetype", "filename", "quotedMsgId")}
        msg = self._build_msg(acc, chat, from_me=True, type=str(m.get("type", "chat")),
                              body=str(m.get("body", "")), caption=m.get("caption"),
                              t=int(m.get("t") or time.time()), id=hex_id, ack=1, **extra)
        # The key is the sender's: keep it exactly as the page built it.
        msg["id"].update(participant=participant, _serialized=sid)
        msg["author"] = participant
        self._store(acc, chat, msg)
        chat.unread = 0
        self._msg_event(acc, chat, msg)
        self._schedule_acks(acc, msg)
        return acc, msg, False

    def seen(self, page: Page, chat_id: str) -> None:
        acc = self.page_account(page)
        chat = acc.chats.get(chat_id)
        acc.activity.append({"kind": "seen", "chat": chat_id, "at": time.time()})
        if chat is not None and chat.unread:
            chat.unread = 0
            self.emit(acc, {"k": "chat", "chat": chat.meta()})

    def note(self, page: Page, kind: str, **data: Any) -> None:
        if page.account is None:
            return
        self.accounts[page.account].activity.append({"kind": kind, "at": time.time(), **data})

    def contact_pic(self, page: Page, wid: str) -> str:
        acc = self.page_account(page)
        c = acc.contacts.get(wid)
        if c is None or not c.picture:
            raise SimError(404, "no profile picture")
        return f"{self.base_url}_sim/pp/{wid.split('@')[0]}.svg"

    def biz_profile(self, page: Page, wid: str) -> dict[str, Any] | None:
        acc = self.page_account(page)
        c = acc.contacts.get(wid)
        if wid == acc.wid and acc.business:
            name = acc.push_name
        elif c is not None and c.business:
            name = c.push_name or wid
        else:
            return None
        return {"id": wid, "description": f"{name}: tours and travel", "email": None,
                "website": [], "categories": [{"id": "travel", "localized_display_name":
                                               "Travel Company"}], "address": "Bishkek",
                "profileOptions": {"commerceExperience": "none", "cartEnabled": False}}

    def devices(self, number: str) -> list[dict[str, Any]]:
        acc = self.account(number)
        return [{"id": d.id, "linked_at": d.linked_at, "conflict": d.conflict,
                 "online": any(p.device_id == d.id for p in self.pages),
                 "network_down": d.id in self.network_down,
                 "unconfirmed": max(0, acc.seq - d.acked_seq)} for d in acc.devices.values()]


_FAKE_JPEG = base64.b64encode(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00simulated-thumbnail").decode()
_MEDIA = {
    "image": {"mimetype": "image/jpeg", "size": 48213, "width": 1280, "height": 960},
    "video": {"mimetype": "video/mp4", "size": 1834211, "duration": 14},
    "ptt": {"mimetype": "audio/ogg; codecs=opus", "size": 9210, "duration": 6},
    "audio": {"mimetype": "audio/mpeg", "size": 912345, "duration": 95},
    "document": {"mimetype": "application/pdf", "size": 120034, "filename": "document.pdf",
                 "pageCount": 2},
    "sticker": {"mimetype": "image/webp", "size": 22104},
}


def media_fields(type: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The media-specific fields of a message of `type` (WhatsApp-like defaults)."""
    out: dict[str, Any] = {}
    if type in _MEDIA:
        out.update(_MEDIA[type])
        out["mediaData"] = {"type": type, "mediaStage": "RESOLVED", "size": out["size"]}
        out["filehash"] = base64.b64encode(random.Random(str(extra)).randbytes(32)).decode()
        out["directPath"] = "/v/t62.7118-24/sim"
    if type == "location":
        out.update(lat=42.8746, lng=74.5698, loc="")
    out.update(extra)
    return out
