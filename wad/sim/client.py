"""A thin async client of the simulator's control surface (`/_sim/`), for tests and the demo.

Every method is one HTTP request; a refused request raises `SimClientError` carrying the
server's message (for example a stale QR payload)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import httpx


class SimClientError(Exception):
    """The simulator refused a control request."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


class SimClient:
    """Control the simulator at `base_url` (as handed out by `wad.sim.server.serve`)."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self._http = httpx.AsyncClient(base_url=self.base_url + "_sim/", timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> SimClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        resp = await self._http.request(method, path, json=body if body is not None else None)
        if resp.status_code >= 400:
            try:
                message = resp.json().get("error", resp.text)
            except ValueError:
                message = resp.text
            raise SimClientError(resp.status_code, message)
        return resp.json()

    @staticmethod
    def _n(number: str) -> str:
        return "".join(ch for ch in number if ch.isdigit())

    @staticmethod
    def _id(msg_id: str) -> str:
        return quote(msg_id, safe="@")

    # ---------------------------------------------------------------- world

    async def config(self, **changes: Any) -> dict[str, Any]:
        """Read the timing settings, or change some (e.g. `qr_rotate_s=1`)."""
        if changes:
            return await self._call("POST", "config", changes)
        return await self._call("GET", "config")

    async def create_account(
        self, number: str, push_name: str, *, business: bool = False,
        platform: str = "android", contacts: list[dict[str, Any]] | None = None,
        chats: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """An account (a phone). Contacts: `{number, name?, push_name?, picture?, business?}`;
        chats: `{id, name?, participants?, archive?, phone_only?, messages: [{from_me, body,
        type?, t?, author?, ack?, caption?, ...}]}`."""
        return await self._call("POST", "accounts", {
            "number": number, "push_name": push_name, "business": business,
            "platform": platform, "contacts": contacts or [], "chats": chats or []})

    async def account(self, number: str) -> dict[str, Any]:
        return await self._call("GET", f"accounts/{self._n(number)}")

    async def add_contact(self, account: str, number: str, *, name: str | None = None,
                          push_name: str | None = None, picture: bool = False,
                          business: bool = False) -> dict[str, Any]:
        return await self._call("POST", f"accounts/{self._n(account)}/contacts", _drop_none({
            "number": number, "name": name, "push_name": push_name, "picture": picture,
            "business": business}))

    async def add_chat(self, account: str, chat: dict[str, Any]) -> dict[str, Any]:
        return await self._call("POST", f"accounts/{self._n(account)}/chats", chat)

    async def chats(self, account: str) -> list[dict[str, Any]]:
        return await self._call("GET", f"accounts/{self._n(account)}/chats")

    async def chat_messages(self, account: str, chat: str) -> list[dict[str, Any]]:
        """Every message of a chat as the phone holds it, oldest first."""
        return await self._call("GET", f"accounts/{self._n(account)}/chats/{chat}/messages")

    async def update_chat(self, account: str, chat: str, *, archive: bool | None = None,
                          name: str | None = None) -> dict[str, Any]:
        return await self._call("POST", f"accounts/{self._n(account)}/chats/{chat}",
                                _drop_none({"archive": archive, "name": name}))

    async def delete_chat(self, account: str, chat: str) -> None:
        """The phone deletes a chat (`Chat` fires `remove`)."""
        await self._call("DELETE", f"accounts/{self._n(account)}/chats/{chat}")

    async def generate_history(
        self, account: str, *, chats: int = 10, messages: int = 20, seed: int | None = None,
        languages: list[str] | None = None, groups: int | None = None, statuses: int = 0,
        phone_only_chats: int = 0, media_ratio: float = 0.2,
    ) -> dict[str, Any]:
        """Seeded history: returns `{"chats": [ids], "messages": total}`."""
        return await self._call("POST", f"accounts/{self._n(account)}/history", _drop_none({
            "chats": chats, "messages": messages, "seed": seed, "languages": languages,
            "groups": groups, "statuses": statuses, "phone_only_chats": phone_only_chats,
            "media_ratio": media_ratio}))

    async def set_not_on_whatsapp(self, numbers: list[str]) -> list[str]:
        return await self._call("POST", "numbers/not_on_whatsapp", {"numbers": numbers})

    # ---------------------------------------------------------------- linking

    async def qr_payloads(self) -> list[dict[str, Any]]:
        """The QR payloads currently shown by unpaired pages: `[{device, payload, ref}]`."""
        return await self._call("GET", "qr")

    async def current_qr(self, device: str | None = None) -> str:
        """The payload an unpaired page shows right now (the only one, or that of `device`),
        as the phone's camera would read it from the screen."""
        shown = [p for p in await self.qr_payloads() if device is None or p["device"] == device]
        if len(shown) != 1:
            raise SimClientError(404 if not shown else 409,
                                 f"{len(shown)} pages show a QR code; name the device")
        return str(shown[0]["payload"])

    async def scan_qr(self, account: str, payload: str) -> str:
        """The account's phone scans `payload`; returns the linked device id."""
        r = await self._call("POST", f"accounts/{self._n(account)}/scan", {"payload": payload})
        return str(r["device"])

    async def enter_pairing_code(self, account: str, code: str) -> str:
        r = await self._call("POST", f"accounts/{self._n(account)}/pair", {"code": code})
        return str(r["device"])

    async def devices(self, account: str) -> list[dict[str, Any]]:
        """Linked devices: `[{id, linked_at, online, conflict, network_down}]`."""
        return await self._call("GET", f"accounts/{self._n(account)}/devices")

    # ---------------------------------------------------------------- traffic

    async def deliver(
        self, account: str, sender: str, body: str = "", *, type: str = "chat",
        group: str | None = None, status: bool = False, push_name: str | None = None,
        caption: str | None = None, ciphertext_s: float | None = None, id: str | None = None,
        quoted: str | None = None, **extra: Any,
    ) -> dict[str, Any]:
        """An incoming message from `sender` (known or new), optionally in `group` or as a
        status update. `ciphertext_s`: arrives as `ciphertext` first, readable after that
        many seconds (0: only on `decrypt`). Returns the message as the page will see it."""
        return await self._call("POST", f"accounts/{self._n(account)}/incoming", _drop_none({
            "sender": sender, "body": body, "type": type, "group": group, "status": status,
            "push_name": push_name, "caption": caption, "ciphertext_s": ciphertext_s,
            "id": id, "quoted": quoted, **extra}))

    async def deliver_burst(self, account: str, messages: list[dict[str, Any]]
                            ) -> list[dict[str, Any]]:
        """Many incoming messages in one call (each a `deliver` keyword set: `sender`, `body`
        ...), pushed to the page as fast as it takes them. Returns them as the page sees them."""
        found: list[dict[str, Any]] = await self._call(
            "POST", f"accounts/{self._n(account)}/incoming/burst", {"messages": messages})
        return found

    async def phone_send(self, account: str, to: str, body: str = "", *, type: str = "chat",
                         caption: str | None = None, **extra: Any) -> dict[str, Any]:
        """The phone's owner writes a message; it reaches the page with `fromMe`."""
        return await self._call("POST", f"accounts/{self._n(account)}/phone_send", _drop_none({
            "to": to, "body": body, "type": type, "caption": caption, **extra}))

    async def message(self, account: str, msg_id: str) -> dict[str, Any]:
        return await self._call("GET", f"accounts/{self._n(account)}/messages/{self._id(msg_id)}")

    async def edit(self, account: str, msg_id: str, body: str) -> dict[str, Any]:
        return await self._call(
            "POST", f"accounts/{self._n(account)}/messages/{self._id(msg_id)}/edit", {"body": body})

    async def revoke(self, account: str, msg_id: str) -> dict[str, Any]:
        return await self._call(
            "POST", f"accounts/{self._n(account)}/messages/{self._id(msg_id)}/revoke", {})

    async def delete_message(self, account: str, msg_id: str) -> None:
        """The phone deletes a message for itself (`Msg` fires `remove`)."""
        await self._call(
            "POST", f"accounts/{self._n(account)}/messages/{self._id(msg_id)}/delete", {})

    async def decrypt(self, account: str, msg_id: str) -> dict[str, Any]:
        return await self._call(
            "POST", f"accounts/{self._n(account)}/messages/{self._id(msg_id)}/decrypt", {})

    async def set_ack(self, account: str, msg_id: str, ack: int) -> dict[str, Any]:
        """Advance (or fail, -1) the ack of a sent message by hand."""
        return await self._call(
            "POST", f"accounts/{self._n(account)}/messages/{self._id(msg_id)}/ack", {"ack": ack})

    async def set_acks(self, account: str, *, auto: bool | None,
                       delays_s: tuple[float, float, float] | None = None) -> None:
        """Automatic acks on or off for this account (None: the simulator's default), with
        delays after the send for delivered, read and played."""
        await self._call("POST", f"accounts/{self._n(account)}/acks",
                         {"auto": auto, "delays_s": list(delays_s) if delays_s else None})

    async def sent(self, account: str) -> dict[str, Any]:
        """The server's record of what the page sent: `{"messages": [...], "counts": {id: n}}`."""
        return await self._call("GET", f"accounts/{self._n(account)}/sent")

    async def activity(self, account: str) -> list[dict[str, Any]]:
        """Read receipts, typing and presence the page sent: `[{kind, at, ...}]`."""
        return await self._call("GET", f"accounts/{self._n(account)}/activity")

    # ---------------------------------------------------------------- faults

    async def _fault(self, account: str, kind: str, **body: Any) -> Any:
        return await self._call("POST", f"accounts/{self._n(account)}/faults/{kind}",
                                _drop_none(body))

    async def unlink(self, account: str, device: str | None = None) -> list[str]:
        """The phone removes the linked device(s); their pages log out."""
        return (await self._fault(account, "unlink", device=device))["unlinked"]

    async def conflict(self, account: str, device: str | None = None) -> None:
        await self._fault(account, "conflict", device=device)

    async def ban(self, account: str, state: str = "TOS_BLOCK") -> None:
        await self._fault(account, "ban", state=state)

    async def unban(self, account: str) -> None:
        await self._fault(account, "unban")

    async def drop_network(self, account: str, seconds: float | None = None,
                           device: str | None = None) -> list[str]:
        """Pages go `TIMEOUT`; they reconnect after `seconds` (None: `restore_network`)."""
        return (await self._fault(account, "network_drop", seconds=seconds,
                                  device=device))["dropped"]

    async def restore_network(self, account: str, device: str | None = None) -> None:
        await self._fault(account, "network_restore", device=device)

    async def freeze(self, account: str, seconds: float | None = None,
                     device: str | None = None) -> int:
        """The page's JavaScript busy-loops for `seconds` (None: forever)."""
        return (await self._fault(account, "freeze", seconds=seconds, device=device))["pages"]

    async def page_build(self, account: str, module: str, member: str | None = None, *,
                         rename_to: str | None = None, version: str | None = None,
                         device: str | None = None) -> int:
        """A new page build: `module` (or its `member`) removed, or renamed to `rename_to`; the
        account's pages reload into it. Answers how many pages were told."""
        return (await self._fault(account, "page_build", module=module, member=member,
                                  rename_to=rename_to, version=version, device=device))["pages"]

    async def set_sends(self, account: str, *, delay_s: float = 0.0, fail_next: int = 0,
                        fail_all: bool = False, add_delay_s: float = 0.0) -> None:
        """Slow sends (the send result waits `delay_s`), failing sends (ack -1), and, with
        `add_delay_s`, open pages that add a sent message to their collections only that long
        after it was handed to them."""
        await self._fault(account, "sends", delay_s=delay_s, fail_next=fail_next,
                          fail_all=fail_all, add_delay_s=add_delay_s)

    async def add_frame(self, account: str, url: str, device: str | None = None) -> int:
        """The account's pages show an iframe of URL; answers how many pages were told."""
        return int((await self._fault(account, "frame", url=url, device=device))["pages"])

    def forged_url(self, text: str, *, host: str | None = None) -> str:
        """The simulator's page that calls wad's binding with a forged incoming message of
        TEXT; HOST (e.g. `localhost`) serves it from another origin than the WhatsApp page."""
        base = self.base_url.rstrip("/")
        if host is not None:
            scheme, _, rest = base.partition("://")
            base = f"{scheme}://{host}:{rest.rsplit(':', 1)[1]}"
        return f"{base}/_sim/forged?{urlencode({'text': text})}"

    async def forged_results(self) -> list[str]:
        """How each forged page's call of the binding ended: `called`, `rejected` or
        `no binding`, in order."""
        results: list[str] = (await self._call("GET", "forged/results"))["results"]
        return results

    async def set_deprecated(self, on: bool = True) -> None:
        """Every page (and every new load) shows `DEPRECATED_VERSION`."""
        await self._call("POST", "faults/deprecated", {"on": on})
