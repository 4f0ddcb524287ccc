"""The simulator's HTTP server: the page at `/`, its WebSocket at `/ws`, the control surface
under `/_sim/` (documented in `docs/simulator.md`).

`serve()` runs it in-process (tests, `wad demo`); `run_standalone()` backs `wad sim`.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import hypercorn.config
import hypercorn.trio
import msgspec
import trio
from quart import Response, request, websocket
from quart_trio import QuartTrio

from wad.sim import history
from wad.sim.model import Page, SimConfig, SimError, Simulator, normalize_wid
from wad.sim.tls import self_signed

STATIC = Path(__file__).parent / "static"
OUTBOX_SIZE = 10_000


@dataclass
class SimServer:
    """What `serve()` hands to its starter: the page URL and the in-process simulator."""

    url: str
    sim: Simulator
    tls_url: str | None = None  # "https://127.0.0.1:PORT/" when served with `tls_port`


class _WsLink:
    """A page's WebSocket as the model sees it: a bounded outbox and a close request."""

    def __init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel[dict[str, Any] | None](OUTBOX_SIZE)
        self.closed = False

    def push(self, obj: dict[str, Any]) -> None:
        if self.closed:
            return
        try:
            self.send.send_nowait(obj)
        except trio.WouldBlock:
            # A page that does not read its traffic is treated as disconnected.
            self.close("outbox full")

    def close(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            try:
                self.send.send_nowait(None)
            except (trio.WouldBlock, trio.ClosedResourceError):
                pass


def _json(obj: Any, status: int = 200) -> Response:
    return Response(json.dumps(obj), status=status, mimetype="application/json")


FORGED_PAGE = """<!doctype html><title>forged</title><script>
(async () => {
  const report = (result) => fetch('/_sim/forged/results', {method: 'POST',
    headers: {'Content-Type': 'application/json'}, body: JSON.stringify({result})});
  for (let i = 0; i < 200 && typeof window.__wadEmit !== 'function'; i++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  if (typeof window.__wadEmit !== 'function') return report('no binding');
  try {
    await window.__wadEmit(EVENT);
    await report('called');
  } catch (err) {
    await report('rejected');
  }
})();
</script>"""


def create_app(sim: Simulator) -> QuartTrio:
    """The Quart-Trio app of one simulator."""
    app = QuartTrio(__name__, static_folder=str(STATIC), static_url_path="/static")
    forged_results: list[str] = []

    @app.errorhandler(SimError)
    async def _sim_error(err: SimError) -> Response:
        return _json({"error": err.message}, err.status)

    @app.errorhandler(TypeError)
    async def _type_error(err: TypeError) -> Response:
        return _json({"error": f"bad request: {err}"}, 400)

    async def body() -> dict[str, Any]:
        data = await request.get_data()
        if not data:
            return {}
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise SimError(400, f"body is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise SimError(400, "body must be a JSON object")
        return obj

    @app.get("/")
    async def index() -> Response:
        html = (STATIC / "index.html").read_text()
        return Response(html, mimetype="text/html",
                        headers={"Cache-Control": "no-store"})

    @app.get("/_sim/pp/<user>.svg")
    async def profile_pic(user: str) -> Response:
        hue = sum(map(ord, user)) % 360
        svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96">'
               f'<rect width="96" height="96" fill="hsl({hue},60%,55%)"/>'
               f'<text x="48" y="58" font-size="28" text-anchor="middle" fill="#fff">'
               f'{user[-2:]}</text></svg>')
        return Response(svg, mimetype="image/svg+xml")

    @app.get("/_sim/forged")
    async def forged() -> Response:
        """A page that is not WhatsApp's (shown in an iframe, or at another origin) and calls
        wad's binding with a forged incoming message whose text is `?text=`; it reports to
        `/_sim/forged/results` whether the call was made and how it ended."""
        text = request.args.get("text", "forged")
        event = {"event": "message", "message": {
            "id": "false_996555300400@c.us_3EB0F0F0F0F0F0F0F0F0", "from_me": False,
            "chat_id": "996555300400@c.us", "type": "chat", "body": text, "timestamp": 1}}
        html = FORGED_PAGE.replace("EVENT", json.dumps(json.dumps(event)).replace("<", "\\u003c"))
        return Response(html, mimetype="text/html", headers={"Cache-Control": "no-store"})

    @app.post("/_sim/forged/results")
    async def forged_report() -> Response:
        forged_results.append(str((await body()).get("result")))
        return _json({"ok": True})

    @app.get("/_sim/forged/results")
    async def forged_list() -> Response:
        return _json({"results": forged_results})

    # ---------------------------------------------------------------- control: world

    @app.get("/_sim/config")
    async def get_config() -> Response:
        return _json(msgspec.to_builtins(sim.config))

    @app.post("/_sim/config")
    async def set_config() -> Response:
        merged = msgspec.to_builtins(sim.config) | await body()
        try:
            sim.config = msgspec.convert(merged, SimConfig)
        except msgspec.ValidationError as exc:
            raise SimError(400, str(exc)) from None
        return _json(msgspec.to_builtins(sim.config))

    @app.post("/_sim/accounts")
    async def create_account() -> Response:
        acc = sim.create_account(**await body())
        return _json(summary(acc.number), 201)

    def summary(number: str) -> dict[str, Any]:
        acc = sim.account(number)
        return {"number": acc.number, "wid": acc.wid, "push_name": acc.push_name,
                "business": acc.business, "platform": acc.me()["platform"],
                "lid": acc.me()["lid"], "chats": len(acc.chats),
                "messages": len(acc.msgs), "contacts": len(acc.contacts),
                "devices": sim.devices(number), "banned": acc.banned}

    @app.get("/_sim/accounts/<number>")
    async def get_account(number: str) -> Response:
        return _json(summary(number))

    @app.post("/_sim/accounts/<number>/contacts")
    async def add_contact(number: str) -> Response:
        c = sim.add_contact(sim.account(number), **await body())
        return _json(c.to_wire(), 201)

    @app.post("/_sim/accounts/<number>/chats")
    async def add_chat(number: str) -> Response:
        chat = sim.add_chat(sim.account(number), **await body())
        return _json({**chat.meta(), "messages": len(chat.msgs)}, 201)

    @app.get("/_sim/accounts/<number>/chats")
    async def list_chats(number: str) -> Response:
        acc = sim.account(number)
        return _json([{**c.meta(), "messages": len(c.msgs)} for c in acc.chats.values()])

    @app.get("/_sim/accounts/<number>/chats/<chat_id>/messages")
    async def chat_messages(number: str, chat_id: str) -> Response:
        acc = sim.account(number)
        chat = acc.chats.get(normalize_wid(chat_id))
        if chat is None:
            raise SimError(404, f"no chat {chat_id}")
        return _json([{k: v for k, v in m.items() if not k.startswith("_")} for m in chat.msgs])

    @app.post("/_sim/accounts/<number>/chats/<chat_id>")
    async def update_chat(number: str, chat_id: str) -> Response:
        return _json(sim.update_chat(number, chat_id, **await body()))

    @app.delete("/_sim/accounts/<number>/chats/<chat_id>")
    async def delete_chat(number: str, chat_id: str) -> Response:
        sim.delete_chat(number, chat_id)
        return _json({"ok": True})

    @app.post("/_sim/accounts/<number>/messages/<msg_id>/delete")
    async def delete_message(number: str, msg_id: str) -> Response:
        sim.delete_message(number, msg_id)
        return _json({"ok": True})

    @app.post("/_sim/accounts/<number>/history")
    async def gen_history(number: str) -> Response:
        stats = history.generate(sim, sim.account(number), **await body())
        return _json(stats, 201)

    @app.post("/_sim/numbers/not_on_whatsapp")
    async def not_on_whatsapp() -> Response:
        nums = (await body()).get("numbers", [])
        sim.not_on_whatsapp.update("".join(ch for ch in n if ch.isdigit()) for n in nums)
        return _json(sorted(sim.not_on_whatsapp))

    # ---------------------------------------------------------------- control: linking

    @app.get("/_sim/qr")
    async def qr_payloads() -> Response:
        return _json(sim.unpaired_payloads())

    @app.post("/_sim/accounts/<number>/scan")
    async def scan(number: str) -> Response:
        payload = (await body()).get("payload", "")
        return _json({"device": sim.scan(number, str(payload))})

    @app.post("/_sim/accounts/<number>/pair")
    async def pair(number: str) -> Response:
        code = (await body()).get("code", "")
        return _json({"device": sim.enter_code(number, str(code))})

    @app.get("/_sim/accounts/<number>/devices")
    async def devices(number: str) -> Response:
        return _json(sim.devices(number))

    # ---------------------------------------------------------------- control: traffic

    @app.post("/_sim/accounts/<number>/incoming")
    async def incoming(number: str) -> Response:
        return _json(sim.incoming(number, **await body()), 201)

    @app.post("/_sim/accounts/<number>/incoming/burst")
    async def incoming_burst(number: str) -> Response:
        data = await body()
        batch = data.get("messages")
        if not isinstance(batch, list) or not all(isinstance(m, dict) for m in batch):
            raise SimError(400, "`messages`: expected a list of incoming messages")
        with sim.together(number):  # one frame for the page, as an offline batch arrives
            return _json([sim.incoming(number, **m) for m in batch], 201)

    @app.post("/_sim/accounts/<number>/phone_send")
    async def phone_send(number: str) -> Response:
        return _json(sim.phone_send(number, **await body()), 201)

    @app.get("/_sim/accounts/<number>/messages/<msg_id>")
    async def get_message(number: str, msg_id: str) -> Response:
        msg = sim._find_msg(sim.account(number), msg_id)
        return _json({k: v for k, v in msg.items() if not k.startswith("_")})

    @app.post("/_sim/accounts/<number>/messages/<msg_id>/edit")
    async def edit(number: str, msg_id: str) -> Response:
        return _json(sim.edit(number, msg_id, str((await body())["body"])))

    @app.post("/_sim/accounts/<number>/messages/<msg_id>/revoke")
    async def revoke(number: str, msg_id: str) -> Response:
        return _json(sim.revoke(number, msg_id))

    @app.post("/_sim/accounts/<number>/messages/<msg_id>/decrypt")
    async def decrypt(number: str, msg_id: str) -> Response:
        return _json(sim.decrypt(number, msg_id))

    @app.post("/_sim/accounts/<number>/messages/<msg_id>/ack")
    async def ack(number: str, msg_id: str) -> Response:
        return _json(sim.set_ack(number, msg_id, int((await body())["ack"])))

    @app.post("/_sim/accounts/<number>/acks")
    async def acks(number: str) -> Response:
        b = await body()
        delays = b.get("delays_s")
        sim.set_acks(number, auto=b.get("auto"), delays_s=tuple(delays) if delays else None)
        return _json({"ok": True})

    @app.get("/_sim/accounts/<number>/sent")
    async def sent(number: str) -> Response:
        acc = sim.account(number)
        return _json({"messages": acc.sent, "counts": acc.sent_counts,
                      "in_progress": acc.sends_in_progress})

    @app.get("/_sim/accounts/<number>/activity")
    async def activity(number: str) -> Response:
        return _json(sim.account(number).activity)

    # ---------------------------------------------------------------- control: faults

    @app.post("/_sim/accounts/<number>/faults/<kind>")
    async def fault(number: str, kind: str) -> Response:
        b = await body()
        device = b.get("device")
        result: Any = {"ok": True}
        if kind == "unlink":
            result = {"unlinked": sim.unlink(number, device)}
        elif kind == "conflict":
            sim.conflict(number, device)
        elif kind == "ban":
            sim.ban(number, b.get("state", "TOS_BLOCK"))
        elif kind == "unban":
            sim.unban(number)
        elif kind == "network_drop":
            result = {"dropped": sim.drop_network(number, b.get("seconds"), device)}
        elif kind == "network_restore":
            sim.restore_network(number, device)
        elif kind == "freeze":
            result = {"pages": sim.freeze(number, b.get("seconds"), device)}
        elif kind == "page_build":
            result = {"pages": sim.page_build(
                number, str(b.get("module") or ""), b.get("member"), rename_to=b.get("rename_to"),
                version=b.get("version"), device=device)}
        elif kind == "sends":
            sim.set_send_behaviour(number, delay_s=float(b.get("delay_s", 0)),
                                   fail_next=int(b.get("fail_next", 0)),
                                   fail_all=bool(b.get("fail_all", False)),
                                   add_delay_s=float(b.get("add_delay_s", 0)))
        elif kind == "frame":
            result = {"pages": sim.add_frame(number, str(b.get("url") or ""), device)}
        else:
            raise SimError(404, f"unknown fault {kind}")
        return _json(result)

    @app.post("/_sim/faults/deprecated")
    async def deprecated() -> Response:
        sim.set_deprecated(bool((await body()).get("on", True)))
        return _json({"ok": True})

    # ---------------------------------------------------------------- the page's WebSocket

    @app.websocket("/ws")
    async def ws() -> None:
        await websocket.accept()
        link = _WsLink()
        page: Page | None = None
        try:
            async with trio.open_nursery() as nursery:

                async def sender() -> None:
                    async for frame in link.recv:
                        if frame is None:
                            await websocket.close(4000, "closed by simulator")
                            nursery.cancel_scope.cancel()
                            return
                        await websocket.send(json.dumps(frame))

                nursery.start_soon(sender)
                hello = json.loads(await websocket.receive())
                if hello.get("t") != "hello" or not hello.get("device"):
                    return
                if sim.is_down(str(hello["device"])):
                    link.close("network down")
                    await trio.sleep_forever()
                page = Page(link=link, device_id=str(hello["device"]), keys=hello["keys"])
                sim.page_hello(page, hello)
                nursery.start_soon(_qr_loop, sim, page)
                # Requests are answered one at a time, in the order the page made them (a slow
                # send holds back what follows it, as on a slow connection).
                requests, pending = trio.open_memory_channel[dict[str, Any]](1000)
                nursery.start_soon(_rpc_worker, sim, page, pending)
                while True:
                    frame = json.loads(await websocket.receive())
                    if frame.get("t") == "seq":
                        sim.page_seq(page, int(frame["seq"]))
                    elif frame.get("t") == "rpc":
                        requests.send_nowait(frame)
        finally:
            link.closed = True
            if page is not None:
                sim.page_gone(page)

    return app


async def _qr_loop(sim: Simulator, page: Page) -> None:
    """Rotate the page's QR while it is unpaired; park while idle or linked."""
    while True:
        woken = page.refresh
        with trio.move_on_after(sim.config.qr_rotate_s) as scope:
            await woken.wait()
        if not scope.cancelled_caught:
            continue
        if not sim.rotate(page):
            await page.refresh.wait()


async def _rpc_worker(sim: Simulator, page: Page,
                      pending: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
    async for frame in pending:
        await _rpc(sim, page, frame)


async def _rpc(sim: Simulator, page: Page, frame: dict[str, Any]) -> None:
    rid, op, a = frame.get("rid"), frame.get("op"), frame.get("a") or {}
    try:
        result = await _op(sim, page, str(op), a)
    except SimError as exc:
        page.link.push({"t": "res", "rid": rid, "ok": False, "err": exc.message})
    except (KeyError, TypeError, ValueError) as exc:
        page.link.push({"t": "res", "rid": rid, "ok": False, "err": f"bad request: {exc!r}"})
    else:
        page.link.push({"t": "res", "rid": rid, "ok": True, "r": result})


async def _op(sim: Simulator, page: Page, op: str, a: dict[str, Any]) -> Any:
    if op == "refresh_qr":
        sim.refresh_qr(page)
        return None
    if op == "pair_code":
        return sim.request_code(page, str(a["phone"]))
    if op == "send":
        acc = sim.page_account(page)
        if acc.send_delay_s > 0:
            acc.sends_in_progress += 1
            try:
                await trio.sleep(acc.send_delay_s)
            finally:
                acc.sends_in_progress -= 1
        _, msg, failed = sim.record_send(page, a["m"])
        if failed:
            return {"messageSendResult": "ERROR_UNKNOWN"}
        return {"messageSendResult": "OK", "t": msg["t"] if msg else None}
    if op == "load_earlier":
        return sim.load_earlier(page, str(a["chat"]), a.get("before"))
    if op == "peer_request":
        await trio.sleep(sim.config.peer_request_delay_s)
        sim.peer_request(page, str(a["chat"]))
        return None
    if op == "find_chat":
        return sim.find_chat(page, str(a["wid"]))
    if op == "exists":
        wid = normalize_wid(str(a["wid"]))
        return {"wid": wid} if sim.exists(wid) else None
    if op == "pic":
        return {"eurl": sim.contact_pic(page, str(a["wid"]))}
    if op == "biz":
        return sim.biz_profile(page, str(a["wid"]))
    if op == "seen":
        sim.seen(page, str(a["chat"]))
        return None
    if op in ("chatstate", "presence", "stream"):
        sim.note(page, op, **a)
        return None
    if op == "logout":
        acc = sim.page_account(page)
        sim.unlink(acc.number, page.device_id)
        return None
    if op == "takeover":
        acc = sim.page_account(page)
        dev = acc.devices.get(page.device_id)
        if dev is None:
            raise SimError(409, "device is not linked")
        dev.conflict = False
        page.live = True
        sim.replay(acc, page, int(a.get("seq", dev.acked_seq)))
        return None
    raise SimError(400, f"unknown operation {op}")


async def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int | None = None,
    config: SimConfig | None = None,
    tls_port: int | None = None,
    task_status: trio.TaskStatus[SimServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a simulator until cancelled; `task_status.started(SimServer(url, sim, tls_url))`.

    With `tls_port` (0: any free port) the same simulator is also served over HTTPS/WSS there,
    with a throwaway self-signed certificate (`wad.sim.tls`), for clients whose URL is fixed to
    `https://web.whatsapp.com/` (docs/simulator.md, "TLS routing")."""
    sim = Simulator(seed=seed, config=config)
    app = create_app(sim)
    hc = hypercorn.config.Config()
    hc.bind = [f"{host}:{port}"]
    hc.accesslog = None
    hc.errorlog = None
    hc.graceful_timeout = 0.5
    with tempfile.TemporaryDirectory(prefix="wad-sim-tls-") as certdir:
        if tls_port is not None:
            certfile, keyfile = self_signed(Path(certdir))
            hc.certfile, hc.keyfile = str(certfile), str(keyfile)
            hc.bind, hc.insecure_bind = [f"{host}:{tls_port}"], hc.bind
            # HTTP/1.1 only: the page's WebSocket then needs no HTTP/2 extended CONNECT.
            hc.alpn_protocols = ["http/1.1"]
        async with trio.open_nursery() as nursery:
            sim.nursery = nursery
            binds = await nursery.start(
                partial(hypercorn.trio.serve, app, hc, shutdown_trigger=trio.sleep_forever))
            urls = {b.split(":", 1)[0]: b.rstrip("/") + "/" for b in binds}
            sim.base_url = urls["http"]
            task_status.started(SimServer(url=urls["http"], sim=sim, tls_url=urls.get("https")))


def run_standalone(port: int, seed: int | None, tls_port: int | None = None) -> None:
    """Blocking: serve a simulator on `127.0.0.1:port` (and over TLS on `tls_port` if given)
    until interrupted (`wad sim`)."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(partial(serve, port=port, seed=seed, tls_port=tls_port))
            print(f"WhatsApp Web simulator at {handle.url} (control surface {handle.url}_sim/)",
                  flush=True)
            if handle.tls_url:
                print(f"also over TLS (self-signed) at {handle.tls_url}", flush=True)

    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass

