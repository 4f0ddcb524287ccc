// wad's bridge into the WhatsApp Web page.
//
// Evaluated by wad/browser/driver.py once `window.Debug.VERSION` is defined, and again after every
// main-frame navigation. It uses only the page's own modules (see WAWEB.md), reports events to
// Python through ONE exposed binding (`window.__wadEmit`: a JSON event, or an array of the events
// that queued up meanwhile; awaited one call at a time so Python's bounded channel can hold the
// page back), and answers calls made through
// `window.__wad.call(name, args)` with `{ok: true, value}` or `{ok: false, error}`.
//
// Everything that depends on the WhatsApp Web build lives in this file: module names, field
// names, which message types are system notices, how the QR payload is assembled.
(() => {
  'use strict';

  const BINDING = '__wadEmit';
  if (window.__wad && window.__wad.installed) {
    // Re-injection into the same document (a same-document navigation): keep the listeners
    // already attached, or every event would be reported twice.
    return window.__wad.describe();
  }
  if (typeof window.require !== 'function') {
    throw new Error('window.require is not available yet');
  }

  // ---------------------------------------------------------------- the page surface (canary)

  // Every module and member this bridge relies on, with its kind (`function`, `collection`,
  // `model`, `object`, `value`); a dotted member is a member of a member. A key joining module
  // names with `|` is looked up across those modules merged (the page moves these names between
  // them). A kind starting with `?` has a fallback here and is not a reason to stop. Checked on
  // every injection (`checkSurface`); read by wad/browser/surface.py, which compares it with what
  // whatsapp-web.js uses (docs/bridge.md). Keep it strict JSON.
  // surface:begin
  const SURFACE = {
    "WAWebCollections": {"Msg": "collection", "Chat": "collection", "Contact": "collection"},
    "WAWebSocketModel": {"Socket": "model", "Socket.logout": "function",
      "Socket.takeover": "function"},
    "WAWebConnModel": {"Conn": "model"},
    "WAWebCmd": {"Cmd": "model", "Cmd.refreshQR": "function"},
    "WAWebStreamModel": {"Stream": "model", "Stream.markAvailable": "function",
      "Stream.markUnavailable": "function"},
    "WAWebWidFactory": {"createWid": "function"},
    "WAWebUserPrefsMeUser": {"getMaybeMePnUser": "function", "getMaybeMeLidUser": "function"},
    "WAWebMsgKey": {"": "function"},
    "WAWebFindChatAction": {"findOrCreateLatestChat": "function"},
    "WAWebGetEphemeralFieldsMsgActionsUtils": {"getEphemeralFields": "function"},
    "WAWebSendMsgChatAction": {"addAndSendMsgToChat": "function"},
    "WAWebUpdateUnreadChatAction": {"sendSeen": "function"},
    "WAWebChatStateBridge": {"sendChatStateComposing": "function",
      "sendChatStatePaused": "function"},
    "WAWebChatLoadMessages": {"loadEarlierMsgs": "function"},
    "WAWebSendNonMessageDataRequest": {"sendPeerDataOperationRequest": "function"},
    "WAWebContactGetters": {"getName": "function", "getPushname": "function",
      "getShortName": "function", "getUserid": "function", "getVerifiedName": "function",
      "getIsEnterprise": "function", "getIsMe": "function", "getIsGroup": "function"},
    "WAWebFrontendContactGetters": {"getIsMyContact": "function"},
    "WAWebContactProfilePicThumbBridge": {"requestProfilePicFromServer": "function"},
    "WAWebQueryExistsJob": {"queryWidExists": "function"},
    "WAWebAltDeviceLinkingApi": {"setPairingType": "function",
      "initializeAltDeviceLinking": "function", "startAltLinkingFlow": "function"},
    "WABase64": {"encodeB64": "?function"},
    "WAWebCompanionRegClientUtils|WAWebAdvSignatureApi|WAWebUserPrefsInfoStore|WAWebSignalStoreApi": {
      "waNoiseInfo": "?object", "waSignalStore": "?object", "DEVICE_PLATFORM": "?value"},
    "WAWebUserPrefsMultiDevice": {"getADVSecretKey": "?function"}
  };
  // surface:end

  const KIND_TESTS = {
    function: (v) => typeof v === 'function',
    collection: (v) => v != null && typeof v.get === 'function' && typeof v.on === 'function'
      && typeof v.getModelsArray === 'function',
    model: (v) => v != null && typeof v === 'object' && typeof v.on === 'function',
    object: (v) => v != null && typeof v === 'object',
    value: (v) => v !== undefined,
  };

  function requireQuiet(name) {
    try {
      return window.require(name);
    } catch (_) {
      return undefined;
    }
  }

  // What the page lacks of SURFACE, one line each: `Module.member is missing` or
  // `Module.member is not a <kind>`. Items with a fallback (`?`) count only when `all` is set.
  function checkSurface(all) {
    const problems = [];
    for (const [key, members] of Object.entries(SURFACE)) {
      const names = key.split('|');
      const exports = names.map(requireQuiet);
      const present = exports.filter((e) => e != null);
      for (const [member, spec] of Object.entries(members)) {
        const optional = spec.startsWith('?');
        if (optional && !all) continue;
        const kind = optional ? spec.slice(1) : spec;
        const label = member ? `${key}.${member}` : key;
        if (!present.length) {
          problems.push(`${names.length > 1 ? key : names[0]} is missing`);
          break;
        }
        let value;
        let found = false;
        for (const e of present) {
          let v = e;
          for (const part of member ? member.split('.') : []) v = v == null ? undefined : v[part];
          if (v !== undefined) {
            value = v;
            found = true;
            break;
          }
        }
        if (!found) problems.push(`${label} is missing`);
        else if (!KIND_TESTS[kind](value)) problems.push(`${label} is not a ${kind}`);
      }
    }
    return problems;
  }

  function pageVersion() {
    return String((window.Debug && window.Debug.VERSION) || '');
  }

  // A page that lacks what the bridge needs is a WhatsApp Web build this bridge does not know:
  // report it instead of installing half a bridge that would hang silently.
  const missing = checkSurface(false);
  if (missing.length) {
    return {version: pageVersion(), url: String(location.href), missing};
  }

  // ---------------------------------------------------------------- modules

  const modules = new Map();
  function mod(name) {
    if (!modules.has(name)) {
      let exports;
      try {
        exports = window.require(name);
      } catch (err) {
        throw new Error(`module ${name} is unavailable: ${errText(err)}`);
      }
      if (!exports) throw new Error(`module ${name} is unavailable`);
      modules.set(name, exports);
    }
    return modules.get(name);
  }
  const collections = () => mod('WAWebCollections');
  const socket = () => mod('WAWebSocketModel').Socket;
  const conn = () => mod('WAWebConnModel').Conn;
  const cmd = () => mod('WAWebCmd').Cmd;

  function errText(err) {
    if (err instanceof Error) return err.message || String(err);
    if (typeof err === 'string') return err;
    try {
      return JSON.stringify(err);
    } catch (_) {
      return String(err);
    }
  }

  // Fail the injection (Python retries until its deadline) if the core is not there yet.
  const Msg = collections().Msg;
  const Socket = socket();
  const Conn = conn();
  const Cmd = cmd();
  if (!Msg || !Socket || !Conn || !Cmd) throw new Error('page core modules are not ready');

  // ---------------------------------------------------------------- outbox

  // Events go out in order, one binding call at a time: the next call is made when Python has
  // taken the previous one, so a full channel on the Python side holds events here instead of
  // losing them. Events that queued up meanwhile travel together in the next call (a JSON array
  // of at most EMIT_BATCH events), so a burst costs a few calls instead of one per event.
  const EMIT_BATCH = 500;
  const outbox = [];
  let pumping = false;
  function emit(event, fields) {
    outbox.push(JSON.stringify(Object.assign({event}, fields || {})));
    if (!pumping) pump();
  }
  async function pump() {
    pumping = true;
    try {
      while (outbox.length) {
        const batch = outbox.splice(0, EMIT_BATCH);
        try {
          await window[BINDING](batch.length === 1 ? batch[0] : `[${batch.join(',')}]`);
        } catch (_) {
          // Python is gone or rejected the events (it logs why); nothing to do in the page.
        }
      }
    } finally {
      pumping = false;
    }
  }
  function guard(where, fn) {
    return (...args) => {
      try {
        const result = fn(...args);
        if (result && typeof result.then === 'function') {
          result.catch((err) => emit('error', {where, message: errText(err)}));
        }
      } catch (err) {
        emit('error', {where, message: errText(err)});
      }
    };
  }

  // ---------------------------------------------------------------- ids and messages

  function widStr(w) {
    if (w == null) return null;
    if (typeof w === 'string') return w;
    if (w._serialized) return w._serialized;
    if (w.user && w.server) return `${w.user}@${w.server}`;
    return null;
  }
  function createWid(id) {
    return mod('WAWebWidFactory').createWid(id);
  }
  function serverOf(id) {
    const at = (id || '').lastIndexOf('@');
    return at < 0 ? '' : id.slice(at + 1);
  }
  function meUser() {
    const prefs = mod('WAWebUserPrefsMeUser');
    const me = prefs.getMaybeMePnUser ? prefs.getMaybeMePnUser() : null;
    return me || conn().wid || null;
  }
  function msgKey(m) {
    return m && m.id ? widStr(m.id) : null;
  }

  // Media whose `body` holds a thumbnail rather than text (the text is `caption`).
  const MEDIA_TYPES = new Set([
    'image', 'video', 'ptt', 'audio', 'document', 'sticker', 'location',
  ]);
  // Notices that are not something a person wrote; never reported as messages.
  const SYSTEM_TYPES = new Set([
    'e2e_notification', 'notification', 'notification_template', 'gp2', 'protocol',
    'revoked', 'ciphertext', 'debug', 'broadcast_notification', 'call_log', 'initial_e2e',
  ]);

  function optStr(v) {
    return v == null || v === '' ? null : String(v);
  }
  function optInt(v) {
    const n = Number(v);
    return Number.isFinite(n) ? Math.trunc(n) : null;
  }

  function quotedId(m, chat) {
    const q = m.quotedMsg;
    if (q && q.id && widStr(q.id)) return widStr(q.id);
    const stanza = m.quotedStanzaID;
    if (!stanza) return null;
    // Only the bare id travels with a reply; find the full key among the chat's loaded messages.
    const c = collections().Chat.get(chat);
    const models = c && c.msgs ? c.msgs.getModelsArray() : [];
    for (const other of models) {
      if (other.id && other.id.id === stanza) return widStr(other.id);
    }
    return null;
  }

  function msgOut(m) {
    const id = m.id;
    const chat = widStr(id.remote) || widStr(m.fromMe ? m.to : m.from) || '';
    const server = serverOf(chat);
    const type = String(m.type || '');
    const fromMe = Boolean(id.fromMe);
    const author = widStr(m.author);
    const media = m.mediaData || {};
    const isMedia = MEDIA_TYPES.has(type);
    return {
      id: widStr(id),
      from_me: fromMe,
      chat_id: chat,
      author,
      sender: fromMe ? null : author || widStr(m.from) || chat,
      type,
      body: isMedia ? '' : m.body == null ? '' : String(m.body),
      caption: optStr(m.caption),
      timestamp: optInt(m.t) || 0,
      push_name: optStr(m.notifyName),
      ack: optInt(m.ack) || 0,
      is_group: server === 'g.us',
      is_status: chat === 'status@broadcast' || Boolean(m.isStatusV3),
      is_broadcast: server === 'broadcast',
      is_newsletter: server === 'newsletter',
      has_media: isMedia || Boolean(m.mediaData),
      mimetype: optStr(m.mimetype || media.mimetype),
      filename: optStr(m.filename || media.filename),
      size: optInt(m.size != null ? m.size : media.size),
      quoted_id: quotedId(m, chat),
    };
  }

  // ---------------------------------------------------------------- message events

  // Ids already reported, so a message seen twice (re-add, late decryption) is reported once.
  const reported = new Set();
  const REPORTED_MAX = 5000;
  const pendingCipher = new Set();
  const justDecrypted = new Set();

  function reportNew(m) {
    const key = msgKey(m);
    if (!key || reported.has(key) || SYSTEM_TYPES.has(m.type)) return;
    reported.add(key);
    if (reported.size > REPORTED_MAX) reported.delete(reported.values().next().value);
    emit(m.id.fromMe ? 'own_message' : 'message', {message: msgOut(m)});
  }

  Msg.on('add', guard('Msg.add', (m) => {
    if (!m || !m.isNewMsg) return;
    if (m.type === 'ciphertext') {
      // Not readable yet; reported by `change:type` once the phone resends it.
      pendingCipher.add(msgKey(m));
      return;
    }
    reportNew(m);
  }));

  Msg.on('change:type', guard('Msg.change:type', (m) => {
    const key = msgKey(m);
    if (pendingCipher.has(key) && m.type !== 'ciphertext') {
      pendingCipher.delete(key);
      // Decryption also changes `body`; that is not an edit.
      justDecrypted.add(key);
      setTimeout(() => justDecrypted.delete(key), 0);
      if (m.type !== 'revoked') {
        reportNew(m);
        return;
      }
    }
    if (m.type === 'revoked') {
      emit('revoked', {id: key, chat_id: widStr(m.id.remote), from_me: Boolean(m.id.fromMe)});
    }
  }));

  Msg.on('change:ack', guard('Msg.change:ack', (m, ack) => {
    const value = optInt(ack != null ? ack : m.ack);
    if (value == null) return;
    emit('ack', {
      id: msgKey(m), chat_id: widStr(m.id.remote), ack: value, from_me: Boolean(m.id.fromMe),
    });
  }));

  function onEdit(m) {
    const key = msgKey(m);
    if (!key || pendingCipher.has(key) || justDecrypted.has(key)) return;
    if (m.type === 'ciphertext' || m.type === 'revoked' || SYSTEM_TYPES.has(m.type)) return;
    const out = msgOut(m);
    emit('edited', {
      id: key, chat_id: out.chat_id, from_me: out.from_me, body: out.body, caption: out.caption,
    });
  }
  Msg.on('change:body', guard('Msg.change:body', onEdit));
  Msg.on('change:caption', guard('Msg.change:caption', onEdit));

  // ---------------------------------------------------------------- connection events

  const DISCONNECT_STATES = {
    CONFLICT: 'conflict',
    TOS_BLOCK: 'banned',
    SMB_TOS_BLOCK: 'banned',
    DEPRECATED_VERSION: 'deprecated_version',
    PROXYBLOCK: 'proxy_block',
  };
  const UNPAIRED_STATES = new Set(['UNPAIRED', 'UNPAIRED_IDLE']);
  let lastState = null;
  let wasConnected = false;
  let lastDisconnect = null; // reason reported since the last CONNECTED
  let readyReported = false;

  function reportDisconnect(reason) {
    if (reason === lastDisconnect) return;
    // Going unpaired after a logout is the same event, already reported.
    if (reason === 'unpaired' && lastDisconnect) return;
    lastDisconnect = reason;
    emit('disconnected', {reason, state: String(Socket.state || '')});
  }

  function meInfo() {
    const prefs = mod('WAWebUserPrefsMeUser');
    const pn = widStr(meUser());
    const lid = widStr(prefs.getMaybeMeLidUser ? prefs.getMaybeMeLidUser() : null);
    if (!pn) throw new Error('the linked account is unknown');
    const platform = String(Conn.platform || '');
    return {
      wid: pn,
      phone: pn.split('@')[0].split(':')[0],
      push_name: String(Conn.pushname || ''),
      platform,
      is_business: platform === 'smba' || platform === 'smbi',
      lid,
    };
  }

  function checkReady() {
    if (!Socket.hasSynced) {
      readyReported = false;
      return;
    }
    if (readyReported) return;
    readyReported = true;
    emit('ready', meInfo());
  }

  function onState() {
    const state = Socket.state == null ? null : String(Socket.state);
    if (state === lastState) return;
    lastState = state;
    emit('state', {state: state || ''});
    if (state === 'CONNECTED') {
      wasConnected = true;
      lastDisconnect = null;
    }
    if (state === 'UNPAIRED_IDLE') {
      // The QR expired; ask for a fresh one so a QR stays available to show.
      Cmd.refreshQR();
    }
    if (DISCONNECT_STATES[state]) reportDisconnect(DISCONNECT_STATES[state]);
    else if (UNPAIRED_STATES.has(state) && wasConnected) reportDisconnect('unpaired');
    if (UNPAIRED_STATES.has(state)) {
      reportQr().catch((err) => emit('error', {where: 'qr', message: errText(err)}));
    }
  }

  Socket.on('change:state', guard('Socket.change:state', onState));
  Socket.on('change:hasSynced', guard('Socket.change:hasSynced', checkReady));
  Cmd.on('logout', guard('Cmd.logout', () => reportDisconnect('logout')));

  // ---------------------------------------------------------------- QR

  let lastQr = null;
  let qrSeq = 0;

  // The page's registration modules, merged when looking a name up (see SURFACE).
  const REGISTRATION_MODULES = [
    'WAWebCompanionRegClientUtils', 'WAWebAdvSignatureApi', 'WAWebUserPrefsInfoStore',
    'WAWebSignalStoreApi',
  ];

  function pick(sources, name) {
    for (const source of sources) {
      if (source && source[name] !== undefined) return source[name];
    }
    throw new Error(`${name} not found in the registration modules`);
  }

  async function buildQr(ref) {
    const sources = REGISTRATION_MODULES.map((name) => mod(name));
    const b64 = mod('WABase64');
    const noise = await pick(sources, 'waNoiseInfo').get();
    const registration = await pick(sources, 'waSignalStore').getRegistrationInfo();
    // Synchronous on the real page; awaiting also accepts a build that answers a Promise.
    const advSecret = await mod('WAWebUserPrefsMultiDevice').getADVSecretKey();
    const platform = pick(sources, 'DEVICE_PLATFORM');
    return [
      ref,
      b64.encodeB64(noise.staticKeyPair.pubKey),
      b64.encodeB64(registration.identityKeyPair.pubKey),
      advSecret,
      platform,
    ].join(',');
  }

  async function reportQr() {
    const ref = Conn.ref;
    if (!ref || Socket.state === 'CONNECTED') return;
    const seq = ++qrSeq;
    let payload;
    try {
      payload = await buildQr(ref);
    } catch (err) {
      // The page's own QR element carries the same payload; use it when the modules changed.
      const el = document.querySelector('div[data-ref]');
      payload = el && el.getAttribute('data-ref');
      if (!payload) throw err;
    }
    if (seq !== qrSeq || payload === lastQr) return;
    lastQr = payload;
    emit('qr', {payload});
  }
  Conn.on('change:ref', guard('Conn.change:ref', reportQr));

  // ---------------------------------------------------------------- calls

  async function chatFor(chatId, create) {
    const Chat = collections().Chat;
    const wid = createWid(chatId);
    let chat = Chat.get(wid) || Chat.get(chatId);
    if (!chat && create) {
      const found = await mod('WAWebFindChatAction').findOrCreateLatestChat(wid);
      chat = found && found.chat;
    }
    if (!chat) throw new Error(`no chat ${chatId}`);
    return chat;
  }


  // Sends still running, by message key id. A call retried while the first is in flight (its
  // Python side timed out, or the caller retried) must not send the message a second time:
  // before the page has added the first, the check on `Msg` below cannot see it. The retry
  // waits for the first and answers `already_existed`.
  const sending = new Map();

  function sendText(args) {
    const id = String(args.id);
    const running = sending.get(id);
    if (running) {
      return running.then((sent) => Object.assign({}, sent, {already_existed: true}));
    }
    const attempt = sendTextOnce(args);
    sending.set(id, attempt);
    const settled = () => {
      if (sending.get(id) === attempt) sending.delete(id);
    };
    attempt.then(settled, settled);
    return attempt;
  }

  async function sendTextOnce({chat_id: chatId, text, id}) {
    const chat = await chatFor(chatId, true);
    const me = meUser();
    if (!me) throw new Error('not logged in');
    const MsgKey = mod('WAWebMsgKey');
    const keyFields = {from: me, to: chat.id, id, selfDir: 'out'};
    if (chat.id.isGroup && chat.id.isGroup()) keyFields.participant = me;
    const key = new MsgKey(keyFields);
    const serialized = widStr(key);
    const existing = collections().Msg.get(serialized);
    if (existing) {
      // Same chosen id: this send already happened; sending again would duplicate it.
      return {id: serialized, chat_id: widStr(chat.id), timestamp: optInt(existing.t) || 0,
        already_existed: true};
    }
    const t = Math.floor(Date.now() / 1000);
    const ephemeral = mod('WAWebGetEphemeralFieldsMsgActionsUtils').getEphemeralFields(chat);
    const message = Object.assign({}, ephemeral, {
      id: key, ack: 0, body: text, from: me, to: chat.id, local: true, self: 'out', t,
      isNewMsg: true, type: 'chat',
    });
    let pair = mod('WAWebSendMsgChatAction').addAndSendMsgToChat(chat, message);
    if (pair && !Array.isArray(pair) && typeof pair.then === 'function') pair = await pair;
    const [added, sent] = pair;
    await added;
    Promise.resolve(sent).then(
      (result) => {
        const status = result && result.messageSendResult;
        if (status && status !== 'OK') {
          emit('error', {where: `send ${serialized}`, message: String(status)});
        }
      },
      (err) => emit('error', {where: `send ${serialized}`, message: errText(err)}),
    );
    return {id: serialized, chat_id: widStr(chat.id), timestamp: t};
  }

  function messageExists({id}) {
    if (collections().Msg.get(id)) return true;
    // `fromMe_remote_id[_participant]`: look in that chat's loaded messages too.
    const parts = id.split('_');
    if (parts.length < 3) return false;
    const chat = collections().Chat.get(parts[1]);
    if (!chat || !chat.msgs) return false;
    return chat.msgs.getModelsArray().some((m) => widStr(m.id) === id);
  }

  async function markRead({chat_id: chatId}) {
    const chat = await chatFor(chatId, false);
    const stream = mod('WAWebStreamModel').Stream;
    // The seen receipt is only sent while this device is "available".
    stream.markAvailable();
    try {
      await mod('WAWebUpdateUnreadChatAction').sendSeen({chat});
    } finally {
      stream.markUnavailable();
    }
    return true;
  }

  async function typing({chat_id: chatId, on}) {
    const states = mod('WAWebChatStateBridge');
    const wid = createWid(chatId);
    if (on) await states.sendChatStateComposing(wid);
    else await states.sendChatStatePaused(wid);
    return true;
  }

  function listChats() {
    return collections().Chat.getModelsArray().map((c) => ({
      id: widStr(c.id),
      name: optStr(c.name || (c.formattedTitle != null ? c.formattedTitle : null)),
      is_group: Boolean(c.isGroup || serverOf(widStr(c.id)) === 'g.us'),
      unread: Math.max(0, optInt(c.unreadCount) || 0),
      t: optInt(c.t) || 0,
      archived: Boolean(c.archive),
    }));
  }

  function loadedMsgs(chat) {
    // The chat's message collection keeps its messages oldest first.
    return chat.msgs.getModelsArray();
  }
  function indexOfId(models, id) {
    return models.findIndex((m) => widStr(m.id) === id);
  }
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // Whether loading an earlier page added messages to the chat (judged by the collection, not
  // by what the call answers, so a build that answers known messages cannot loop forever).
  async function loadEarlier(chat) {
    const before = chat.msgs.getModelsArray().length;
    await mod('WAWebChatLoadMessages').loadEarlierMsgs({chat});
    return chat.msgs.getModelsArray().length > before;
  }

  // The phone still holds older history: ask it, then wait (bounded) for it to arrive.
  async function askPhoneForHistory(chat) {
    await mod('WAWebSendNonMessageDataRequest').sendPeerDataOperationRequest(3, {chatId: chat.id});
    for (let attempt = 0; attempt < 20; attempt++) {
      await sleep(250);
      if (await loadEarlier(chat)) return true;
    }
    return false;
  }

  async function fetchMessages({chat_id: chatId, before, limit}) {
    const chat = await chatFor(chatId, false);
    let models = loadedMsgs(chat);
    const position = () => (before == null ? models.length : indexOfId(models, before));
    let end = position();
    let askedPhone = false;
    while (end < 0 || end < limit) {
      let grew = await loadEarlier(chat);
      if (!grew && !askedPhone && chat.endOfHistoryTransferType === 0) {
        askedPhone = true;
        grew = await askPhoneForHistory(chat);
      }
      if (!grew) break;
      models = loadedMsgs(chat);
      end = position();
    }
    if (end < 0) throw new Error(`cursor ${before} is not a message of ${chatId}`);
    const page = models.slice(Math.max(0, end - limit), end);
    return {
      messages: page.map(msgOut),
      next_cursor: page.length ? widStr(page[0].id) : null,
    };
  }

  async function getContact({wid}) {
    const Contact = collections().Contact;
    const w = createWid(wid);
    const c = Contact.get(w) || (await Contact.find(w));
    if (!c) throw new Error(`no contact ${wid}`);
    const getters = mod('WAWebContactGetters');
    const frontend = mod('WAWebFrontendContactGetters');
    const read = (source, name) => {
      try {
        return source[name] ? source[name](c) : undefined;
      } catch (_) {
        return undefined;
      }
    };
    const verified = optStr(read(getters, 'getVerifiedName'));
    return {
      id: widStr(c.id) || wid,
      number: optStr(read(getters, 'getUserid')),
      push_name: optStr(read(getters, 'getPushname')),
      saved_name: optStr(read(getters, 'getName')),
      short_name: optStr(read(getters, 'getShortName')),
      verified_name: verified,
      is_business: typeof c.isBusiness === 'boolean' ? c.isBusiness : Boolean(verified),
      is_enterprise: Boolean(read(getters, 'getIsEnterprise')),
      is_my_contact: Boolean(read(frontend, 'getIsMyContact')),
      is_me: Boolean(read(getters, 'getIsMe')),
      is_group: Boolean(read(getters, 'getIsGroup')),
    };
  }

  async function profilePictureUrl({wid}) {
    let result;
    try {
      result = await mod('WAWebContactProfilePicThumbBridge').requestProfilePicFromServer(
        createWid(wid));
    } catch (_) {
      return null; // the page fails this request when there is no picture
    }
    return (result && optStr(result.eurl)) || null;
  }

  async function numberExists({wid}) {
    const result = await mod('WAWebQueryExistsJob').queryWidExists(createWid(wid));
    return (result && widStr(result.wid)) || null;
  }

  async function requestPairingCode({phone}) {
    if (Socket.state === 'CONNECTED') throw new Error('already linked');
    const linking = mod('WAWebAltDeviceLinkingApi');
    linking.setPairingType('ALT_DEVICE_LINKING');
    await linking.initializeAltDeviceLinking();
    const code = String(await linking.startAltLinkingFlow(phone, true));
    emit('pairing_code', {code, phone});
    return code;
  }

  function refreshQr() {
    Cmd.refreshQR();
    return true;
  }

  function logout() {
    // The page navigates away during logout; answer first so the call does not die with it.
    setTimeout(guard('logout', () => Socket.logout()), 0);
    return true;
  }

  function takeover() {
    Socket.takeover();
    return true;
  }

  function state() {
    let wid = null;
    try {
      wid = widStr(meUser());
    } catch (_) {
      wid = null;
    }
    return {
      state: Socket.state == null ? null : String(Socket.state),
      has_synced: Boolean(Socket.hasSynced),
      qr: Socket.state === 'CONNECTED' ? null : lastQr,
      version: pageVersion(),
      wid,
    };
  }

  function ping() {
    return {version: pageVersion(), state: Socket.state == null ? null : String(Socket.state)};
  }

  const api = {
    ping, state, sendText, messageExists, markRead, typing, listChats, fetchMessages, getContact,
    profilePictureUrl, numberExists, requestPairingCode, refreshQr, logout, takeover,
  };

  async function call(name, args) {
    const fn = Object.prototype.hasOwnProperty.call(api, name) ? api[name] : null;
    if (!fn) return {ok: false, error: `unknown bridge call ${name}`};
    try {
      const value = await fn(args || {});
      return {ok: true, value: value === undefined ? null : value};
    } catch (err) {
      return {ok: false, error: errText(err)};
    }
  }

  function describe() {
    return {version: pageVersion(), url: String(location.href)};
  }

  window.__wad = {installed: true, call, describe};

  // First what was injected, then the current picture, so Python starts from a known state.
  emit('bridge_ready', describe());
  guard('start', () => {
    onState();
    checkReady();
  })();
  return describe();
})()
