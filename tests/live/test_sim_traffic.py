"""Traffic on a linked simulated page: incoming messages, sends with acks, edits, history."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from wad.sim.client import SimClient
from wad.sim.server import SimServer

if TYPE_CHECKING:
    from tests.support.simfixtures import Browser, LinkFn

pytest_plugins = ["tests.support.simfixtures"]
pytestmark = pytest.mark.browser
ACCOUNT = "996555100200"  # the account the `link` fixture creates

CLIENT = "996555301122"

# A client's listeners: every Msg event the page fires, as plain data.
RECORD_MSGS_JS = """() => {
  const Msg = window.require('WAWebCollections').Msg;
  window.__ev = [];
  const plain = (m) => ({
    id: m.id._serialized, fromMe: m.id.fromMe, remote: m.id.remote._serialized,
    type: m.type, body: m.body, caption: m.caption, t: m.t, ack: m.ack,
    from: m.from && m.from._serialized, to: m.to && m.to._serialized,
    author: m.author && m.author._serialized, notifyName: m.notifyName,
    isNewMsg: m.isNewMsg, isStatusV3: m.isStatusV3, mimetype: m.mimetype });
  Msg.on('add', (m) => window.__ev.push(['add', plain(m)]));
  Msg.on('change:ack', (m, ack) => window.__ev.push(['ack', m.id._serialized, ack]));
  Msg.on('change:type', (m, type) => window.__ev.push(['type', m.id._serialized, type, m.body]));
  Msg.on('change:body', (m, body) => window.__ev.push(['body', m.id._serialized, body]));
}"""


async def events(browser: Browser, n: int, kind: str | None = None) -> list:
    return await browser.wait(
        "([n, kind]) => { const e = window.__ev.filter((x) => !kind || x[0] === kind);"
        " return e.length >= n && e; }", [n, kind])


async def test_incoming_messages_fire_add_with_fields(
        sim: SimServer, simc: SimClient, browser: Browser, link: LinkFn):
    with trio.fail_after(30):
        await link(contacts=[{"number": CLIENT, "name": "Aibek (client)", "push_name": "Aibek",
                              "picture": True}])
        await browser.js(RECORD_MSGS_JS)
        known = await simc.deliver(ACCOUNT, CLIENT, "Salam! Is there a tour to Song-Kul?")
        (_, m), = await events(browser, 1)
        assert m == {
            "id": known["id"]["_serialized"], "fromMe": False, "remote": f"{CLIENT}@c.us",
            "type": "chat", "body": "Salam! Is there a tour to Song-Kul?", "caption": None,
            "t": known["t"], "ack": 0, "from": f"{CLIENT}@c.us", "to": f"{ACCOUNT}@c.us",
            "author": None, "notifyName": "Aibek", "isNewMsg": True, "isStatusV3": False,
            "mimetype": None}
        assert m["id"] == f"false_{CLIENT}@c.us_{known['id']['id']}"
        ser = await browser.js("(id) => window.require('WAWebCollections').Msg.get(id)"
                               ".serialize()", m["id"])
        assert ser["id"]["_serialized"] == m["id"]
        assert ser["id"]["remote"]["_serialized"] == f"{CLIENT}@c.us"
        assert (ser["from"]["user"], ser["from"]["server"]) == (CLIENT, "c.us")
        assert (ser["body"], ser["isNewMsg"]) == ("Salam! Is there a tour to Song-Kul?", True)
        chat = await browser.js(f"""() => {{ const c = window.require('WAWebCollections')
          .Chat.get('{CLIENT}@c.us'); return [c.name, c.unreadCount, c.msgs.length]; }}""")
        assert chat == ["Aibek (client)", 1, 1]
        # A new number, a group message, a status update, an image.
        await simc.deliver(ACCOUNT, "79161234567", "Здравствуйте!", push_name="Ольга")
        await simc.deliver(ACCOUNT, CLIENT, "Hi all", group="120363000000000001@g.us")
        await simc.deliver(ACCOUNT, CLIENT, "Sunset", status=True)
        await simc.deliver(ACCOUNT, CLIENT, type="image", caption="Our tent")
        evs = [e[1] for e in await events(browser, 5)]
        new, grp, status, img = evs[1:5]
        assert (new["from"], new["notifyName"], new["isNewMsg"]) == (
            "79161234567@c.us", "Ольга", True)
        assert (grp["remote"], grp["author"], grp["id"].endswith(f"_{CLIENT}@c.us")) == (
            "120363000000000001@g.us", f"{CLIENT}@c.us", True)
        assert (status["remote"], status["isStatusV3"], status["author"]) == (
            "status@broadcast", True, f"{CLIENT}@c.us")
        assert (img["type"], img["caption"], img["mimetype"]) == ("image", "Our tent", "image/jpeg")
        contact = await browser.js("""async () => {
          const c = await window.require('WAWebCollections').Contact.find('79161234567@c.us');
          const G = window.require('WAWebContactGetters');
          return [G.getName(c) || null, G.getPushname(c), G.getUserid(c),
                  window.require('WAWebFrontendContactGetters').getIsMyContact(c)]; }""")
        assert contact == [None, "Ольга", "79161234567", False]
        pic = await browser.js(f"""async () => (await window.require(
          'WAWebContactProfilePicThumbBridge').requestProfilePicFromServer(
          window.require('WAWebWidFactory').createWid('{CLIENT}@c.us'))).eurl""")
        assert pic.startswith(sim.url)
        assert await browser.js("""async () => { try { await window.require(
          'WAWebContactProfilePicThumbBridge').requestProfilePicFromServer(
          window.require('WAWebWidFactory').createWid('79161234567@c.us')); return 'ok'; }
          catch (e) { return 'failed'; } }""") == "failed"


async def test_ciphertext_edit_revoke_and_phone_messages(
        sim: SimServer, simc: SimClient, browser: Browser, link: LinkFn):
    with trio.fail_after(30):
        await link()
        await browser.js(RECORD_MSGS_JS)
        enc = await simc.deliver(ACCOUNT, CLIENT, "Secret price", ciphertext_s=0)
        sid = enc["id"]["_serialized"]
        (_, first), = await events(browser, 1, "add")
        assert (first["type"], first["body"]) == ("ciphertext", "")
        await simc.decrypt(ACCOUNT, sid)
        await events(browser, 1, "type")
        assert [e for e in await browser.js("() => window.__ev") if e[0] == "type"] == [
            ["type", sid, "chat", "Secret price"]]
        await simc.edit(ACCOUNT, sid, "Secret price: 450 USD")
        # Decryption filled the body (first change:body); the edit is the second.
        assert (await events(browser, 2, "body"))[1] == ["body", sid, "Secret price: 450 USD"]
        await simc.revoke(ACCOUNT, sid)
        assert (await events(browser, 2, "type"))[1][:3] == ["type", sid, "revoked"]
        own = await simc.phone_send(ACCOUNT, CLIENT, "Written on the phone")
        adds = await events(browser, 2, "add")
        assert adds[1][1]["id"] == own["id"]["_serialized"]
        assert (adds[1][1]["fromMe"], adds[1][1]["isNewMsg"]) == (True, True)


SEND_JS = """async ([to, text]) => {
  const W = window.require('WAWebWidFactory');
  const wid = W.createWid(to);
  const Chat = window.require('WAWebCollections').Chat;
  const chat = Chat.get(wid) || (await window.require('WAWebFindChatAction')
    .findOrCreateLatestChat(wid)).chat;
  const MsgKey = window.require('WAWebMsgKey');
  const me = window.require('WAWebUserPrefsMeUser').getMaybeMePnUser();
  const id = await MsgKey.newId();
  const key = new MsgKey({from: me, to: chat.id, id, selfDir: 'out'});
  const msg = Object.assign({id: key, ack: 0, body: text, from: me, to: chat.id, local: true,
    self: 'out', t: Math.floor(Date.now() / 1000), isNewMsg: true, type: 'chat'},
    window.require('WAWebGetEphemeralFieldsMsgActionsUtils').getEphemeralFields(chat));
  const [added, sent] = window.require('WAWebSendMsgChatAction').addAndSendMsgToChat(chat, msg);
  await added;
  window.__sendResult = sent;
  return key._serialized;
}"""


async def test_send_with_chosen_id_is_recorded_once_and_acked(
        sim: SimServer, simc: SimClient, browser: Browser, link: LinkFn):
    with trio.fail_after(30):
        await link()
        await browser.js(RECORD_MSGS_JS)
        sid = await browser.js(SEND_JS, [f"{CLIENT}@c.us", "Your tour is booked for July 14."])
        assert sid.startswith(f"true_{CLIENT}@c.us_3EB0")
        assert (await browser.js("async () => (await window.__sendResult).messageSendResult")
                ) == "OK"
        acks = await events(browser, 3, "ack")
        assert [a[2] for a in acks[:3]] == [1, 2, 3]
        assert all(a[1] == sid for a in acks)
        found = await browser.js("(sid) => { const m = window.require('WAWebCollections')"
                                 ".Msg.get(sid); return m && [m.body, m.ack, m.id.fromMe]; }", sid)
        assert found == ["Your tour is booked for July 14.", 3, True]
        sent = await simc.sent(ACCOUNT)
        assert sent["counts"] == {sid: 1}
        assert sent["messages"][0]["body"] == "Your tour is booked for July 14."
        stored = await simc.message(ACCOUNT, sid)
        assert stored["ack"] == 3
        assert stored["id"]["fromMe"] is True
        # Manual acks: played (4) and an error (-1) arrive as change:ack too.
        await simc.set_ack(ACCOUNT, sid, 4)
        assert (await events(browser, 4, "ack"))[3] == ["ack", sid, 4]


async def test_paging_returns_each_message_once_in_order(
        sim: SimServer, simc: SimClient, browser: Browser, link: LinkFn):
    with trio.fail_after(40):
        await simc.create_account(ACCOUNT, "Silk Road Tours")
        long_chat = [{"from_me": i % 3 == 0, "body": f"message {i}", "t": 1_700_000_000 + i}
                     for i in range(237)]
        await simc.add_chat(ACCOUNT, {"id": CLIENT, "messages": long_chat})
        await simc.add_chat(ACCOUNT, {"id": "996700112233", "phone_only": 60,
                                      "messages": long_chat[:130]})
        await link()
        bodies = await browser.js(PAGE_ALL_JS, [f"{CLIENT}@c.us", False])
        assert bodies["pages"][-1] == 0
        assert all(0 < n <= 50 for n in bodies["pages"][:-1])
        assert bodies["bodies"] == [f"message {i}" for i in range(237)]
        # A chat whose oldest messages are still on the phone: paging stops early, then
        # sendPeerDataOperationRequest brings the rest.
        first = await browser.js(PAGE_ALL_JS, ["996700112233@c.us", True])
        assert first["end"] == 0
        assert first["bodies"] == [f"message {i}" for i in range(60, 130)]
        await browser.js("""async (id) => {
          const chat = window.require('WAWebCollections').Chat.get(id);
          await window.require('WAWebSendNonMessageDataRequest')
            .sendPeerDataOperationRequest(3, {chatId: chat.id}); }""", "996700112233@c.us")
        await browser.wait("(id) => window.require('WAWebCollections').Chat.get(id)"
                           ".endOfHistoryTransferType !== 0", "996700112233@c.us")
        rest = await browser.js(PAGE_ALL_JS, ["996700112233@c.us", True])
        assert rest["bodies"] == [f"message {i}" for i in range(130)]


PAGE_ALL_JS = """async ([id, newForm]) => {
  const chat = window.require('WAWebCollections').Chat.get(id);
  const L = window.require('WAWebChatLoadMessages');
  const pages = [];
  for (let i = 0; i < 20; i++) {
    const got = newForm ? await L.loadEarlierMsgs({chat}) : await L.loadEarlierMsgs(chat, chat.msgs);
    pages.push(got.length);
    if (!got.length) break;
  }
  return {pages, end: chat.endOfHistoryTransferType,
          bodies: chat.msgs.getModelsArray().map((m) => m.body)};
}"""


async def test_phone_side_chat_changes_fire_events(
        sim: SimServer, simc: SimClient, browser: Browser, link: LinkFn):
    with trio.fail_after(30):
        await link(chats=[{"id": CLIENT, "messages": [
            {"body": "first", "t": 1_700_000_000}, {"body": "second", "t": 1_700_000_100}]}])
        await browser.js(f"""() => {{ window.__ch = [];
          const C = window.require('WAWebCollections');
          C.Chat.on('change:archive', (c, v) => window.__ch.push(['archive', c.id._serialized, v]));
          C.Chat.on('change:unreadCount', (c, v) => window.__ch.push(['unread', v]));
          C.Chat.on('remove', (c) => window.__ch.push(['chat-remove', c.id._serialized]));
          C.Msg.on('remove', (m) => window.__ch.push(['msg-remove', m.body]));
          window.__first = C.Chat.get('{CLIENT}@c.us').msgs.head().id._serialized; }}""")
        first = await browser.js("() => window.__first")
        await simc.update_chat(ACCOUNT, CLIENT, archive=True)
        await simc.deliver(ACCOUNT, CLIENT, "third")
        await simc.delete_message(ACCOUNT, first)
        await simc.delete_chat(ACCOUNT, CLIENT)
        got = await browser.wait("() => window.__ch.some((e) => e[0] === 'chat-remove')"
                                 " && window.__ch")
        assert got[:3] == [["archive", f"{CLIENT}@c.us", True], ["unread", 1],
                           ["msg-remove", "first"]]
        assert got[-1] == ["chat-remove", f"{CLIENT}@c.us"]
        assert sorted(e[1] for e in got if e[0] == "msg-remove") == ["first", "second", "third"]
        assert await browser.js(f"() => window.require('WAWebCollections').Chat.get("
                                f"'{CLIENT}@c.us') === undefined")
