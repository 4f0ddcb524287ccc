/* The simulated WhatsApp Web page.
 *
 * It offers exactly the interface described in WAWEB.md (window.Debug.VERSION, window.require
 * of the named modules, Backbone-style collections and events) and talks to the simulator's
 * server over one WebSocket (/ws). The protocol is documented in docs/simulator.md.
 * Nothing here is specific to wad.
 */
(function () {
  'use strict';

  const VERSION = '2.3000.1017054665';
  const TERMINAL = new Set(['CONFLICT', 'TOS_BLOCK', 'SMB_TOS_BLOCK', 'DEPRECATED_VERSION']);

  function hidden(obj, name, value) {
    Object.defineProperty(obj, name, { value, writable: true, configurable: true, enumerable: false });
  }

  // ------------------------------------------------------------------ events, models, collections

  class Events {
    constructor() { hidden(this, '_ev', new Map()); }
    on(names, fn, ctx) { return this._listen(names, fn, ctx, false); }
    once(names, fn, ctx) { return this._listen(names, fn, ctx, true); }
    addListener(names, fn) { return this.on(names, fn); }
    removeListener(names, fn) { return this.off(names, fn); }
    _listen(names, fn, ctx, once) {
      for (const n of String(names).split(/\s+/)) {
        if (!n) continue;
        if (!this._ev.has(n)) this._ev.set(n, []);
        this._ev.get(n).push({ fn, ctx, once });
      }
      return this;
    }
    off(names, fn) {
      if (!names) {
        if (!fn) { this._ev.clear(); return this; }
        for (const [n, l] of this._ev) this._ev.set(n, l.filter((h) => h.fn !== fn));
        return this;
      }
      for (const n of String(names).split(/\s+/)) {
        if (!fn) this._ev.delete(n);
        else if (this._ev.has(n)) this._ev.set(n, this._ev.get(n).filter((h) => h.fn !== fn));
      }
      return this;
    }
    trigger(name, ...args) {
      const list = this._ev.get(name);
      if (!list || !list.length) return this;
      for (const h of list.slice()) {
        if (h.once) this.off(name, h.fn);
        try { h.fn.apply(h.ctx || this, args); } catch (e) { console.error('listener of', name, e); }
      }
      return this;
    }
    emit(name, ...args) { return this.trigger(name, ...args); }
  }

  function sameValue(a, b) {
    if (a === b) return true;
    if (a && b && typeof a === 'object' && typeof b === 'object' && a._serialized !== undefined) {
      return a._serialized === b._serialized;
    }
    return false;
  }

  class Model extends Events {
    constructor(attrs) {
      super();
      hidden(this, '_a', {});
      hidden(this, '_cols', []);
      for (const k of Object.keys(attrs || {})) { this._define(k); this._a[k] = attrs[k]; }
    }
    _define(k) {
      if (Object.prototype.hasOwnProperty.call(this, k)) return;
      Object.defineProperty(this, k, {
        get() { return this._a[k]; },
        set(v) { this.set(k, v); },
        enumerable: true, configurable: true,
      });
    }
    get(k) { return this._a[k]; }
    set(k, v) {
      const attrs = typeof k === 'object' ? k : { [k]: v };
      const changed = [];
      const before = {};
      for (const key of Object.keys(attrs)) {
        this._define(key);
        if (!sameValue(this._a[key], attrs[key])) {
          before[key] = this._a[key];
          this._a[key] = attrs[key];
          changed.push(key);
        }
      }
      // `change:FIELD` carries (model, value, previous value), as on the real page (clients read
      // the previous body of an edit and the previous archive state from it).
      for (const key of changed) this.trigger('change:' + key, this, this._a[key], before[key]);
      if (changed.length) this.trigger('change', this);
      return this;
    }
    serialize() {
      // Nested collections (a group's participants) serialize to arrays of plain objects.
      const out = Object.assign({}, this._a);
      for (const k of Object.keys(out)) if (out[k] instanceof Collection) out[k] = out[k].serialize();
      return out;
    }
    toJSON() { return this.serialize(); }
    trigger(name, ...args) {
      super.trigger(name, ...args);
      // Backbone: collections re-fire the events of their models.
      for (const c of this._cols) c.trigger(name, ...args);
      return this;
    }
  }

  function keyOf(id) {
    if (id === null || id === undefined) return undefined;
    if (typeof id === 'object') {
      if (id._serialized !== undefined) return id._serialized;
      if (id.id && typeof id.id === 'object') return keyOf(id.id);
    }
    return String(id);
  }

  class Collection extends Events {
    constructor(ModelClass, comparator) {
      super();
      hidden(this, '_models', []);
      hidden(this, '_index', new Map());
      hidden(this, 'modelClass', ModelClass || Model);
      hidden(this, 'comparator', comparator || null);
    }
    get length() { return this._models.length; }
    get models() { return this._models; }
    get(id) { return this._index.get(keyOf(id)); }
    has(id) { return this._index.has(keyOf(id)); }
    find(id) { return Promise.resolve(this.get(id)); }
    getModelsArray() { return this._models.slice(); }
    serialize() { return this._models.map((m) => m.serialize()); }
    toArray() { return this._models.slice(); }
    at(i) { return this._models[i < 0 ? this._models.length + i : i]; }
    head() { return this._models[0]; }
    last() { return this._models[this._models.length - 1]; }
    forEach(fn) { this._models.slice().forEach(fn); }
    map(fn) { return this._models.map(fn); }
    filter(fn) { return this._models.filter(fn); }
    some(fn) { return this._models.some(fn); }
    where(attrs) { return this._models.filter((m) => Object.keys(attrs).every((k) => m[k] === attrs[k])); }
    add(items, opts) {
      opts = opts || {};
      const many = Array.isArray(items);
      const out = [];
      const fresh = [];
      for (const it of many ? items : [items]) {
        const isModel = it instanceof Model;
        const existing = this.get(isModel ? it.id : it.id);
        if (existing) {
          if (!isModel && opts.merge !== false) {
            const upd = Object.assign({}, it);
            delete upd.id;
            delete upd.isNewMsg;
            existing.set(upd);
          }
          out.push(existing);
          continue;
        }
        const m = isModel ? it : new this.modelClass(it);
        this._insert(m);
        m._cols.push(this);
        out.push(m);
        fresh.push(m);
      }
      if (!opts.silent) for (const m of fresh) this.trigger('add', m, this, opts);
      return many ? out : out[0];
    }
    _insert(m) {
      this._index.set(keyOf(m.id), m);
      const arr = this._models;
      if (!this.comparator) { arr.push(m); return; }
      let lo = 0, hi = arr.length;
      while (lo < hi) {
        const mid = (lo + hi) >> 1;
        if (this.comparator(arr[mid], m) <= 0) lo = mid + 1; else hi = mid;
      }
      arr.splice(lo, 0, m);
    }
    remove(items, opts) {
      const many = Array.isArray(items);
      const out = [];
      for (const it of many ? items : [items]) {
        const m = this.get(it instanceof Model ? it.id : it);
        if (!m) continue;
        this._index.delete(keyOf(m.id));
        this._models.splice(this._models.indexOf(m), 1);
        m._cols.splice(m._cols.indexOf(this), 1);
        out.push(m);
        if (!(opts && opts.silent)) this.trigger('remove', m, this, opts || {});
      }
      return many ? out : out[0];
    }
  }

  // ------------------------------------------------------------------ ids

  class Wid {
    constructor(s) {
      const str = String(s);
      const at = str.lastIndexOf('@');
      this.server = at >= 0 ? str.slice(at + 1) : 'c.us';
      this.user = at >= 0 ? str.slice(0, at) : str;
      this._serialized = this.user + '@' + this.server;
    }
    toString() { return this._serialized; }
    toJSON() { return this._serialized; }
    equals(o) { return !!o && keyOf(o) === this._serialized; }
    isUser() { return this.server === 'c.us' || this.server === 'lid'; }
    isLid() { return this.server === 'lid'; }
    isGroup() { return this.server === 'g.us'; }
    isStatus() { return this._serialized === 'status@broadcast'; }
    isBroadcast() { return this.server === 'broadcast'; }
    isNewsletter() { return this.server === 'newsletter'; }
    isServer() { return this.server === 'c.us' && this.user === 'server'; }
  }

  function toWid(x) {
    if (x === null || x === undefined || x === '') return undefined;
    if (x instanceof Wid) return x;
    if (typeof x === 'object') {
      if (x._serialized) return new Wid(x._serialized);
      if (x.user !== undefined) return new Wid(x.user + '@' + (x.server || 'c.us'));
    }
    return new Wid(String(x));
  }

  function randomHex(n) {
    const b = new Uint8Array(Math.ceil(n / 2));
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('').slice(0, n).toUpperCase();
  }

  class MsgKey {
    constructor(o) {
      o = o || {};
      const fromMe = o.fromMe !== undefined ? !!o.fromMe : o.selfDir === 'out';
      this.fromMe = fromMe;
      this.remote = toWid(o.remote !== undefined ? o.remote : (fromMe ? o.to : o.from));
      this.id = String(o.id);
      if (o.participant) this.participant = toWid(o.participant);
      this._serialized = `${fromMe}_${this.remote}_${this.id}` + (this.participant ? '_' + this.participant : '');
    }
    toString() { return this._serialized; }
    equals(o) { return !!o && keyOf(o) === this._serialized; }
    static newId() {
      // A string that can also be awaited: callers of both the old (sync) and new (async) form work.
      // eslint-disable-next-line no-new-wrappers
      const s = new String('3EB0' + randomHex(16));
      const v = s.valueOf();
      Object.defineProperty(s, 'then', { value: (res) => res(v), enumerable: false });
      return s;
    }
    static newId_DEPRECATED() { return '3EB0' + randomHex(16); }
    static fromString(str) {
      const parts = String(str).split('_');
      return new MsgKey({ fromMe: parts[0] === 'true', remote: parts[1], id: parts[2], participant: parts[3] });
    }
  }

  // ------------------------------------------------------------------ page state

  const Socket = new Model({ state: 'OPENING', hasSynced: false, stream: 'DISCONNECTED' });
  const Conn = new Model({ ref: null, platform: null, pushname: null, wid: null, battery: 100, plugged: true, isSMB: false });
  const Cmd = new Events();
  const Stream = new Model({ available: false, displayInfo: 'NORMAL' });

  const MsgCollection = new Collection(Model);
  const ChatCollection = new Collection(Model, (a, b) => (b.t || 0) - (a.t || 0));
  const ContactCollection = new Collection(Model);
  const GroupMetadataCollection = new Collection(Model);
  const BusinessProfileCollection = new Collection(Model);
  const CallCollection = new Collection(Model);
  hidden(CallCollection, 'CallCollection', CallCollection);
  // As on the real page, the map of calls is an enumerable own property: clients find it with
  // Object.keys(module).find(k => module[k] instanceof Map) and wrap its `set`.
  Object.defineProperty(CallCollection, '_index', { enumerable: true });
  const BlocklistCollection = new Collection(Model);

  // The device's keys come from IndexedDB a moment after the modules exist.
  let identLoaded;
  const identReady = new Promise((resolve) => { identLoaded = resolve; });
  const page = {
    me: null, // {wid, lid, pushname, platform, business}
    ident: null,
    link: null,
    synced: false,
    offlineProgress: 0,
    leaving: false,
  };

  // ------------------------------------------------------------------ storage (IndexedDB)

  const idb = {
    _db: null,
    open() {
      if (this._db) return Promise.resolve(this._db);
      return new Promise((resolve, reject) => {
        const rq = indexedDB.open('wawc', 1);
        rq.onupgradeneeded = () => rq.result.createObjectStore('user');
        rq.onsuccess = () => { this._db = rq.result; resolve(rq.result); };
        rq.onerror = () => reject(rq.error);
      });
    },
    async tx(mode, fn) {
      const db = await this.open();
      return new Promise((resolve, reject) => {
        const t = db.transaction('user', mode);
        const rq = fn(t.objectStore('user'));
        t.oncomplete = () => resolve(rq && rq.result);
        t.onerror = () => reject(t.error);
      });
    },
    get(key) { return this.tx('readonly', (s) => s.get(key)); },
    put(key, val) { return this.tx('readwrite', (s) => s.put(val, key)); },
    clear() { return this.tx('readwrite', (s) => s.clear()); },
  };

  function b64(bytes) {
    const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
    let s = '';
    for (const x of u8) s += String.fromCharCode(x);
    return btoa(s);
  }
  function unb64(str) { return Uint8Array.from(atob(str), (c) => c.charCodeAt(0)); }
  function randomBytes(n) { const b = new Uint8Array(n); crypto.getRandomValues(b); return b; }

  function newIdentity() {
    return {
      device: randomHex(16).toLowerCase(),
      noise: b64(randomBytes(32)),
      identity: b64(randomBytes(32)),
      adv: b64(randomBytes(32)),
      platform: 'WEB',
    };
  }

  // ------------------------------------------------------------------ the WebSocket

  const net = {
    ws: null, rid: 0, pending: new Map(), lastSeq: 0, seqTimer: null,
    retryTimer: null, retryDelay: 500,
  };

  function wsUrl() {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
  }

  function connect() {
    clearTimeout(net.retryTimer);
    net.retryTimer = null;
    if (net.ws || page.leaving) return;
    const ws = new WebSocket(wsUrl());
    net.ws = ws;
    ws.onopen = () => {
      net.retryDelay = 500;
      const i = page.ident;
      ws.send(JSON.stringify({
        t: 'hello', device: i.device, version: VERSION,
        keys: { noise: i.noise, identity: i.identity, adv: i.adv, platform: i.platform },
        linked: page.link ? page.link.number : null,
        resume: page.synced && page.link ? net.lastSeq : null,
      }));
      // Requests not answered yet (sent before a drop, or while offline) go out again.
      for (const p of net.pending.values()) ws.send(JSON.stringify(p.frame));
    };
    ws.onmessage = (e) => {
      try { handle(JSON.parse(e.data)); } catch (err) { console.error('frame', err); }
    };
    ws.onclose = () => {
      if (net.ws !== ws) return;
      net.ws = null;
      if (page.leaving) return;
      if (!TERMINAL.has(Socket.state)) {
        Socket.set({ state: page.link ? 'TIMEOUT' : 'OPENING', stream: 'DISCONNECTED' });
      }
      net.retryTimer = setTimeout(connect, net.retryDelay);
      net.retryDelay = Math.min(net.retryDelay * 2, 2000);
    };
  }

  function rpc(op, a) {
    return new Promise((resolve, reject) => {
      const rid = ++net.rid;
      const frame = { t: 'rpc', rid, op, a: a || {} };
      net.pending.set(rid, { resolve, reject, frame });
      if (net.ws && net.ws.readyState === WebSocket.OPEN) net.ws.send(JSON.stringify(frame));
    });
  }

  function ackSeq(seq) {
    if (seq > net.lastSeq) net.lastSeq = seq;
    if (net.seqTimer) return;
    net.seqTimer = setTimeout(() => {
      net.seqTimer = null;
      if (net.ws && net.ws.readyState === WebSocket.OPEN) {
        net.ws.send(JSON.stringify({ t: 'seq', seq: net.lastSeq }));
      }
    }, 100);
  }

  function handle(f) {
    switch (f.t) {
      case 'batch':  // what queued up for the device, in order (Simulator.together)
        for (const one of f.frames) handle(one);
        return;
      case 'res': {
        const p = net.pending.get(f.rid);
        if (!p) return;
        net.pending.delete(f.rid);
        if (f.ok) p.resolve(f.r); else p.reject(new Error(f.err));
        return;
      }
      case 'ref':
        Conn.set('ref', f.ref);
        Socket.set('state', 'UNPAIRED');
        render.qr(f.matrix);
        return;
      case 'idle':
        Socket.set('state', 'UNPAIRED_IDLE');
        render.idle();
        return;
      case 'pairing':
        Socket.set('state', 'PAIRING');
        return;
      case 'linked':
        onLinked(f.me);
        return;
      case 'resumed':
        setMe(f.me);
        Socket.set({ state: 'CONNECTED', stream: 'CONNECTED' });
        return;
      case 'sync':
        onSync(f);
        return;
      case 'ev':
        applyEvent(f.e);
        ackSeq(f.seq);
        return;
      case 'state':
        Socket.set('state', f.state);
        render.notice(f.state);
        return;
      case 'unlinked':
        onUnlinked();
        return;
      case 'freeze': {
        // A page whose JavaScript stops answering: nothing runs until the loop ends.
        const end = f.seconds === null || f.seconds === undefined ? Infinity : Date.now() + f.seconds * 1000;
        while (Date.now() < end) { /* busy */ }
        return;
      }
      case 'sends':
        // The `sends` fault's `add_delay_s`: messages are added that long after being handed
        // over, and addAndSendMsgToChat answers a Promise meanwhile.
        page.addDelayMs = Math.max(0, Number(f.add_delay_s) || 0) * 1000;
        return;
      case 'frame': {
        // The `frame` fault: the page shows an iframe (as a crafted message could make it).
        const frame = document.createElement('iframe');
        frame.src = f.url;
        document.body.appendChild(frame);
        return;
      }
      case 'build':
        // The `page_build` fault: WhatsApp ships a new build; the page reloads into it.
        try { localStorage.setItem(BUILD_KEY, JSON.stringify(buildChanges().concat([f.change]))); } catch (e) { console.error('build', e); }
        location.reload();
        return;
      default:
        console.warn('unknown frame', f.t);
    }
  }

  function setMe(me) {
    page.me = me;
    Conn.set({ wid: toWid(me.wid), pushname: me.pushname, platform: me.platform, isSMB: !!me.business });
  }

  async function onLinked(me) {
    setMe(me);
    page.link = { number: toWid(me.wid).user, wid: me.wid, linkedAt: Date.now() };
    Conn.set('ref', Conn.ref);
    render.loading();
    Socket.set({ state: 'CONNECTED', stream: 'CONNECTED' });
    try { await idb.put('link', page.link); } catch (e) { console.error('idb', e); }
  }

  function onSync(f) {
    setMe(f.me);
    ContactCollection.add(f.contacts.map(contactAttrs));
    const me = ContactCollection.get(f.me.wid);
    if (!me) ContactCollection.add(contactAttrs({ id: f.me.wid, name: null, pushname: f.me.pushname, isBusiness: f.me.business }));
    for (const c of f.chats) {
      const chat = upsertChat(c);
      const msgs = c.msgs.map((w) => msgAttrs(w, false));
      chat.msgs.add(MsgCollection.add(msgs));
    }
    net.lastSeq = Math.max(net.lastSeq, f.seq);
    ackSeq(f.seq);
    page.offlineProgress = 100;
    Cmd.trigger('offline_progress_update_from_bridge');
    // hasSynced comes after the collections are filled, in a later task than CONNECTED.
    setTimeout(() => {
      page.synced = true;
      Socket.set('hasSynced', true);
      render.main();
    }, 0);
  }

  async function onUnlinked() {
    page.leaving = true;
    Cmd.trigger('logout');
    try { await idb.clear(); } catch (e) { console.error('idb', e); }
    if (net.ws) net.ws.close();
    setTimeout(() => { location.replace(location.origin + location.pathname + '?post_logout=1'); }, 50);
  }

  // ------------------------------------------------------------------ wire -> models

  const CC2 = new Set(['20', '27', '30', '31', '32', '33', '34', '36', '39', '40', '41', '43', '44', '45', '46', '47', '48', '49',
    '51', '52', '53', '54', '55', '56', '57', '58', '60', '61', '62', '63', '64', '65', '66', '81', '82', '84', '86',
    '90', '91', '92', '93', '94', '95', '98']);
  function formatNumber(user) {
    const cc = user[0] === '1' || user[0] === '7' ? 1 : CC2.has(user.slice(0, 2)) ? 2 : 3;
    const rest = user.slice(cc).replace(/(\d{3})(?=\d{3,})/g, '$1 ');
    return '+' + user.slice(0, cc) + ' ' + rest;
  }

  function contactAttrs(c) {
    const id = toWid(c.id);
    const isMe = page.me && id._serialized === page.me.wid;
    return {
      id, name: c.name || undefined, pushname: c.pushname || undefined,
      shortName: c.name ? c.name.split(' ')[0] : undefined,
      isBusiness: !!c.isBusiness, isEnterprise: false, verifiedName: c.verifiedName || undefined,
      verifiedLevel: c.isBusiness ? 2 : 0, isMe: !!isMe, isUser: id.isUser(), isGroup: id.isGroup(),
      isWAContact: true, isMyContact: !!c.isMyContact, statusMute: false, type: 'in',
      lid: c.lid ? toWid(c.lid + '@lid') : undefined, hasPic: !!c.hasPic,
    };
  }

  function msgAttrs(w, isNew) {
    const a = Object.assign({}, w);
    a.id = new MsgKey(w.id);
    a.from = toWid(w.from);
    a.to = toWid(w.to);
    a.author = toWid(w.author);
    a.isNewMsg = isNew;
    a.self = w.id.fromMe ? 'out' : 'in';
    if (w.quotedMsgId) {
      const q = MsgCollection.get(w.quotedMsgId);
      a.quotedStanzaID = a.quotedStanzaID || MsgKey.fromString(w.quotedMsgId).id;
      a.quotedMsg = q ? { type: q.type, body: q.body, caption: q.caption } : { type: 'chat', body: '' };
    }
    delete a.quotedMsgId;
    return a;
  }

  function newMsgCollection() {
    const col = new Collection(Model, (x, y) => (x.rowId === undefined ? Infinity : x.rowId) - (y.rowId === undefined ? Infinity : y.rowId));
    hidden(col, 'msgLoadState', { noEarlierMsgs: false, isLoadingEarlierMsgs: false });
    return col;
  }

  function chatFields(c) {
    const id = toWid(c.id);
    let name = c.name;
    if (!name && id.server === 'c.us') {
      const contact = ContactCollection.get(id);
      name = (contact && contact.name) || formatNumber(id.user);
    }
    return {
      name: name || undefined, formattedTitle: name || id.user, isGroup: !!c.isGroup,
      unreadCount: c.unreadCount, t: c.t, archive: !!c.archive,
      endOfHistoryTransferType: c.endOfHistoryTransferType,
    };
  }

  function upsertChat(c) {
    const id = toWid(c.id);
    let chat = ChatCollection.get(id);
    if (!chat) {
      const attrs = Object.assign({ id, pin: 0, muteExpiration: 0, isReadOnly: false, notSpam: true }, chatFields(c));
      chat = new Model(attrs);
      hidden(chat, 'msgs', newMsgCollection());
      if (id.isGroup()) {
        GroupMetadataCollection.add({
          id, subject: c.name, owner: undefined,
          participants: participantsCol(c.participants || []),
        });
        hidden(chat, 'groupMetadata', GroupMetadataCollection.get(id));
      }
      hidden(chat, 'contact', ContactCollection.get(id));
      ChatCollection.add(chat);
    } else {
      chat.set(chatFields(c));
      if (id.isGroup() && c.participants) {
        const gm = GroupMetadataCollection.get(id);
        if (gm) gm.participants.add(c.participants.map((p) => ({ id: toWid(p), isAdmin: false, isSuperAdmin: false })));
      }
    }
    return chat;
  }

  function participantsCol(list) {
    const col = new Collection(Model);
    col.add(list.map((p) => ({ id: toWid(p), isAdmin: false, isSuperAdmin: false })));
    return col;
  }

  function applyEvent(e) {
    if (e.contact) {
      const attrs = contactAttrs(e.contact);
      const existing = ContactCollection.get(attrs.id);
      if (existing) { delete attrs.id; existing.set(attrs); } else ContactCollection.add(attrs);
    }
    if (e.k === 'msg') {
      const chat = ChatCollection.get(e.chat.id) || upsertChat(e.chat);
      const before = MsgCollection.get(e.m.id._serialized);
      const m = MsgCollection.add(msgAttrs(e.m, !before));
      if (!chat.msgs.get(m.id)) chat.msgs.add(m);
      upsertChat(e.chat);
      render.soon();
    } else if (e.k === 'upd') {
      const m = MsgCollection.get(e.id);
      if (m) m.set(e.f);
    } else if (e.k === 'chat') {
      upsertChat(e.chat);
      render.soon();
    } else if (e.k === 'msg_remove') {
      for (const id of e.ids) {
        const m = MsgCollection.get(id);
        if (!m) continue;
        const chat = ChatCollection.get(m.id.remote);
        if (chat) chat.msgs.remove(m);
        MsgCollection.remove(m);
      }
    } else if (e.k === 'chat_remove') {
      const chat = ChatCollection.get(e.id);
      if (chat) {
        MsgCollection.remove(chat.msgs.getModelsArray());
        ChatCollection.remove(chat);
        render.soon();
      }
    }
  }

  // ------------------------------------------------------------------ actions

  function chatOf(arg) {
    if (!arg) return undefined;
    if (arg.msgs && arg.id) return arg;
    if (arg.chat) return chatOf(arg.chat);
    return ChatCollection.get(arg);
  }

  async function findOrCreateLatestChat(wid) {
    const w = toWid(wid);
    const existing = ChatCollection.get(w);
    if (existing) return { chat: existing, created: false };
    const meta = await rpc('find_chat', { wid: w._serialized });
    return { chat: ChatCollection.get(meta.id) || upsertChat(meta), created: true };
  }

  function addAndSendMsgToChat(chatArg, msg) {
    if (page.addDelayMs > 0) {
      const wait = page.addDelayMs;
      return new Promise((resolve) => setTimeout(() => resolve(addNow(chatArg, msg)), wait));
    }
    return addNow(chatArg, msg);
  }

  function addNow(chatArg, msg) {
    const chat = chatOf(chatArg);
    const attrs = Object.assign({}, msg);
    attrs.id = msg.id instanceof MsgKey ? msg.id : new MsgKey(msg.id);
    attrs.from = toWid(msg.from);
    attrs.to = toWid(msg.to || chat.id);
    attrs.ack = msg.ack === undefined ? 0 : msg.ack;
    attrs.isNewMsg = true;
    attrs.t = msg.t || Math.floor(Date.now() / 1000);
    attrs.type = msg.type || 'chat';
    const model = MsgCollection.add(attrs);
    if (chat && !chat.msgs.get(model.id)) chat.msgs.add(model);
    if (chat) chat.set('t', attrs.t);
    const key = model.id;
    const wireMsg = {
      id: key.id, sid: key._serialized, remote: key.remote._serialized,
      participant: key.participant ? key.participant._serialized : undefined,
      type: attrs.type, body: attrs.body || '', caption: attrs.caption, t: attrs.t,
      mimetype: attrs.mimetype, filename: attrs.filename,
      quotedMsgId: attrs.quotedMsg && attrs.quotedMsg.id ? keyOf(attrs.quotedMsg.id) : undefined,
    };
    const added = Promise.resolve(model);
    const sent = rpc('send', { m: wireMsg }).then((r) => {
      if (r.messageSendResult === 'OK') { if (model.ack < 1) model.set('ack', 1); } else model.set('ack', -1);
      return r;
    }, (err) => { model.set('ack', -1); return { messageSendResult: 'ERROR_UNKNOWN', error: String(err) }; });
    return [added, sent];
  }

  async function loadEarlierMsgs(a, b) {
    const chat = chatOf(a);
    if (!chat) return [];
    const col = (b && b.getModelsArray) ? b : chat.msgs;
    const state = col.msgLoadState || {};
    while (state.isLoadingEarlierMsgs) await new Promise((r) => setTimeout(r, 20));
    state.isLoadingEarlierMsgs = true;
    try {
      const oldest = col.head();
      const loaded = await rpc('load_earlier', { chat: chat.id._serialized, before: oldest ? oldest.id._serialized : null });
      const models = MsgCollection.add(loaded.map((w) => msgAttrs(w, false)));
      col.add(models);
      state.noEarlierMsgs = loaded.length === 0;
      return models;
    } finally {
      state.isLoadingEarlierMsgs = false;
    }
  }

  function sendSeen(a) {
    const chat = chatOf(a);
    if (!chat) return Promise.resolve();
    chat.set('unreadCount', 0);
    return rpc('seen', { chat: chat.id._serialized }).then(() => undefined);
  }

  function findLinks(text) {
    const out = [];
    const re = /\b((?:https?:\/\/|www\.)[^\s<>"]+|[a-z0-9.-]+\.(?:com|org|net|ru|kg|de|fr|es|pl|io)(?:\/[^\s<>"]*)?)/gi;
    let m;
    while ((m = re.exec(String(text || '')))) {
      const url = m[1].replace(/[.,!?;:)]+$/, '');
      const href = /^https?:\/\//i.test(url) ? url : 'http://' + url;
      out.push({ url, href, index: m.index, isHttp: /^http:/i.test(href), domain: href.replace(/^https?:\/\//i, '').split(/[/?#]/)[0] });
    }
    return out;
  }

  function contactGetter(field) { return (c) => (c ? c[field] : undefined); }

  function pnForLid(wid) {
    const w = toWid(wid);
    if (page.me && page.me.lid === w._serialized) return toWid(page.me.wid);
    const c = ContactCollection.getModelsArray().find((x) => x.lid && x.lid._serialized === w._serialized);
    return c ? c.id : undefined;
  }
  function lidForPn(wid) {
    const w = toWid(wid);
    if (page.me && page.me.wid === w._serialized) return toWid(page.me.lid);
    const c = ContactCollection.get(w);
    return c ? c.lid : undefined;
  }

  ContactCollection.find = function (wid) {
    const w = toWid(wid);
    let c = this.get(w);
    if (!c) c = this.add(contactAttrs({ id: w._serialized, isMyContact: false }));
    return Promise.resolve(c);
  };
  ChatCollection.find = function (wid) {
    const c = this.get(wid);
    return c ? Promise.resolve(c) : findOrCreateLatestChat(wid).then((r) => r.chat);
  };
  // The metadata is kept current by the server's events; `update` is a refetch.
  GroupMetadataCollection.update = function (wid) { return Promise.resolve(this.get(wid)); };
  BusinessProfileCollection.fetchBizProfile = async function (wid) {
    const w = toWid(wid);
    const p = await rpc('biz', { wid: w._serialized });
    if (!p) return undefined;
    return this.add(Object.assign({}, p, { id: w }));
  };
  // `find` fetches a profile the page does not hold yet (resolves to a model without fields
  // for an account that is not a business, as the real page does).
  BusinessProfileCollection.find = async function (wid) {
    const w = toWid(wid);
    return this.get(w) || (await this.fetchBizProfile(w)) || new Model({ id: w });
  };
  // Resolves once the server has unlinked the device (Cmd `logout`), before the page navigates
  // away: the answer to the request itself would arrive on a socket that is being closed.
  Socket.logout = () => new Promise((resolve, reject) => {
    Cmd.once('logout', () => resolve());
    rpc('logout').then(() => resolve(), reject);
  });
  Socket.reconnect = () => { if (!net.ws) connect(); };
  Socket.takeover = async () => {
    await rpc('takeover', { seq: net.lastSeq });
    Socket.set({ state: 'CONNECTED', stream: 'CONNECTED' });
    render.main();
  };
  Cmd.refreshQR = () => { rpc('refresh_qr').catch(() => undefined); };
  Stream.markAvailable = () => { Stream.set('available', true); rpc('stream', { available: true }).catch(() => undefined); };
  Stream.markUnavailable = () => { Stream.set('available', false); rpc('stream', { available: false }).catch(() => undefined); };

  let pairingType = null;
  const modules = {
    WAWebSocketModel: { Socket },
    WAWebConnModel: { Conn },
    WAWebCmd: { Cmd },
    WAWebStreamModel: { Stream },
    WAWebCollections: {
      Msg: MsgCollection, Chat: ChatCollection, Contact: ContactCollection,
      GroupMetadata: GroupMetadataCollection, BusinessProfile: BusinessProfileCollection,
      Call: CallCollection, Blocklist: BlocklistCollection,
    },
    WAWebCallCollection: CallCollection,
    WAWebMsgKey: MsgKey,
    WAWebWidFactory: {
      createWid: (s) => toWid(s),
      createWidFromWidLike: (o) => toWid(o),
      createUserWid: (user, server) => new Wid(user + '@' + (server || 'c.us')),
      isWidlike: (o) => !!o && typeof o === 'object' && 'server' in o && 'user' in o,
    },
    WAWebFindChatAction: { findOrCreateLatestChat },
    WAWebSendMsgChatAction: { addAndSendMsgToChat },
    WAWebGetEphemeralFieldsMsgActionsUtils: {
      getEphemeralFields: () => ({ ephemeralDuration: 0, ephemeralSettingTimestamp: 0, disappearingModeInitiator: 'chat' }),
    },
    WAWebUpdateUnreadChatAction: { sendSeen },
    WAWebChatStateBridge: {
      sendChatStateComposing: (w) => rpc('chatstate', { wid: keyOf(w), state: 'composing' }),
      sendChatStateRecording: (w) => rpc('chatstate', { wid: keyOf(w), state: 'recording' }),
      sendChatStatePaused: (w) => rpc('chatstate', { wid: keyOf(w), state: 'paused' }),
    },
    WAWebPresenceChatAction: {
      sendPresenceAvailable: () => rpc('presence', { available: true }),
      sendPresenceUnavailable: () => rpc('presence', { available: false }),
    },
    WAWebChatLoadMessages: { loadEarlierMsgs },
    WAWebSendNonMessageDataRequest: {
      sendPeerDataOperationRequest: (type, opts) => rpc('peer_request', { type, chat: keyOf(opts && opts.chatId) }),
    },
    WAWebQueryExistsJob: {
      queryWidExists: async (wid) => {
        const r = await rpc('exists', { wid: keyOf(wid) });
        return r ? { wid: toWid(r.wid), biz: false } : null;
      },
    },
    WAWebContactProfilePicThumbBridge: {
      requestProfilePicFromServer: async (wid) => {
        let r;
        try {
          r = await rpc('pic', { wid: keyOf(wid) });
        } catch (e) {
          // The real page's error for "no picture" (clients treat it as "none", not a failure).
          const err = new Error(e.message);
          err.name = 'ServerStatusCodeError';
          err.statusCode = 404;
          throw err;
        }
        return { eurl: r.eurl, tag: String(r.eurl.length), id: toWid(wid) };
      },
    },
    WAWebContactGetters: {
      getName: contactGetter('name'), getPushname: contactGetter('pushname'),
      getShortName: contactGetter('shortName'), getUserid: (c) => (c && c.id ? c.id.user : undefined),
      getIsMe: contactGetter('isMe'), getIsUser: contactGetter('isUser'), getIsGroup: contactGetter('isGroup'),
      getIsWAContact: contactGetter('isWAContact'), getVerifiedName: contactGetter('verifiedName'),
      getIsEnterprise: contactGetter('isEnterprise'), getVerifiedLevel: contactGetter('verifiedLevel'),
      getStatusMute: contactGetter('statusMute'), getIsBusiness: contactGetter('isBusiness'),
    },
    WAWebFrontendContactGetters: { getIsMyContact: contactGetter('isMyContact') },
    WAWebUserPrefsMeUser: {
      getMaybeMePnUser: () => (page.me ? toWid(page.me.wid) : undefined),
      getMaybeMeLidUser: () => (page.me ? toWid(page.me.lid) : undefined),
      getMePnUserOrThrow: () => { if (!page.me) throw new Error('not logged in'); return toWid(page.me.wid); },
      getMeUser: () => (page.me ? toWid(page.me.wid) : undefined),
    },
    WAWebApiContact: {
      getPhoneNumber: (w) => pnForLid(w),
      getCurrentLid: (w) => lidForPn(w),
      getAlternateUserWid: (w) => { const x = toWid(w); return x.isLid() ? pnForLid(x) : lidForPn(x); },
    },
    WAWebAltDeviceLinkingApi: {
      setPairingType: (t) => { pairingType = t; },
      initializeAltDeviceLinking: () => Promise.resolve(),
      startAltLinkingFlow: async (phone, showNotification) => {
        void showNotification;
        if (pairingType !== 'ALT_DEVICE_LINKING') console.warn('pairing type not set');
        const code = await rpc('pair_code', { phone: String(phone) });
        render.code(code);
        return code;
      },
    },
    // Asking the phone to resend messages the page could not decrypt: accepted, never answered
    // (the simulated phone makes them readable on its own schedule, `ciphertext_s`).
    WAWebNonMessageDataRequestPlaceholderMessageResendUtils: {
      handlePlaceholderMsgsSeen: () => Promise.resolve(),
    },
    WAWebLidMigrationUtils: {
      toPn: (w) => { const x = toWid(w); return x && x.isLid() ? (pnForLid(x) || null) : null; },
      toLid: (w) => { const x = toWid(w); return x && !x.isLid() ? (lidForPn(x) || null) : null; },
    },
    WABase64: { encodeB64: b64, decodeB64: unb64 },
    WAWebUserPrefsInfoStore: {
      waNoiseInfo: { get: async () => { await identReady; return { staticKeyPair: { pubKey: unb64(page.ident.noise), privKey: new Uint8Array(32) } }; } },
    },
    WAWebSignalStoreApi: {
      waSignalStore: {
        getRegistrationInfo: async () => { await identReady; return { registrationId: 1, identityKeyPair: { pubKey: unb64(page.ident.identity), privKey: new Uint8Array(32) } }; },
      },
    },
    // Synchronous, as on the real page: clients concatenate its result into the QR string.
    // The keys are loaded before the page leaves OPENING, so clients waiting for UNPAIRED see it.
    WAWebUserPrefsMultiDevice: { getADVSecretKey: () => (page.ident ? page.ident.adv : undefined) },
    WAWebAdvSignatureApi: { getADVSecretKey: async () => { await identReady; return page.ident.adv; } },
    WAWebCompanionRegClientUtils: { DEVICE_PLATFORM: 'WEB' },
    WAWebOfflineHandler: {
      OfflineMessageHandler: { getOfflineDeliveryProgress: () => page.offlineProgress },
    },
    WAWebSyncGatingUtils: {},
    WALinkify: { findLink: (t) => findLinks(t)[0] || null, findLinks },
    WAWebChatGetters: {
      getIsNewsletter: (c) => !!(c && c.id && toWid(c.id).isNewsletter()),
      getIsBroadcast: (c) => !!(c && c.id && toWid(c.id).isBroadcast()),
      getIsGroup: (c) => !!(c && c.id && toWid(c.id).isGroup()),
    },
  };

  window.require = function (name) {
    if (Object.prototype.hasOwnProperty.call(modules, name)) return modules[name];
    throw new Error(`Requiring unknown module "${name}"`);
  };

  // ------------------------------------------------------------------ DOM

  const app = document.getElementById('app');
  const render = {
    rows: new Map(),  // the chat list's rows by chat id (`main`)
    timer: null,
    landing(inner) {
      app.innerHTML = '<div class="landing"><div><h1>Use WhatsApp on your computer</h1><ol>' +
        '<li>Open WhatsApp on your phone</li><li>Tap Menu or Settings and select Linked Devices</li>' +
        '<li>Tap on Link a device</li><li>Point your phone to this screen to capture the QR code</li></ol></div>' +
        '<div id="qr"></div></div>';
      const box = document.getElementById('qr');
      if (inner) box.appendChild(inner);
      return box;
    },
    qr(matrix) {
      const ref = Conn.ref;
      const i = page.ident;
      const payload = [ref, i.noise, i.identity, i.adv, i.platform].join(',');
      const div = document.createElement('div');
      div.setAttribute('data-ref', payload);
      const canvas = document.createElement('canvas');
      const scale = 5, quiet = 4, n = matrix.length;
      canvas.width = canvas.height = (n + 2 * quiet) * scale;
      canvas.setAttribute('aria-label', 'Scan this QR code to link a device!');
      const ctx = canvas.getContext('2d');
      ctx.fillStyle = '#fff';
      ctx.fillRect(0, 0, canvas.width, canvas.height);
      ctx.fillStyle = '#000';
      for (let y = 0; y < n; y++) {
        for (let x = 0; x < n; x++) {
          if (matrix[y][x] === '1') ctx.fillRect((x + quiet) * scale, (y + quiet) * scale, scale, scale);
        }
      }
      div.appendChild(canvas);
      const box = document.getElementById('qr') || render.landing();
      box.innerHTML = '';
      box.appendChild(div);
    },
    idle() {
      const btn = document.createElement('button');
      btn.textContent = 'Click to reload QR code';
      btn.onclick = () => Cmd.refreshQR();
      const box = document.getElementById('qr') || render.landing();
      box.innerHTML = '';
      box.appendChild(btn);
    },
    code(code) {
      const div = document.createElement('div');
      div.setAttribute('data-link-code', code);
      div.textContent = code.slice(0, 4) + '-' + code.slice(4);
      const box = document.getElementById('qr') || render.landing();
      box.innerHTML = '';
      box.appendChild(div);
    },
    loading() { app.innerHTML = '<div class="notice">Loading your chats</div>'; },
    notice(state) {
      const texts = {
        CONFLICT: 'WhatsApp is open on another computer or browser. Click "Use here" to use WhatsApp in this window.',
        TOS_BLOCK: 'This account is not allowed to use WhatsApp.',
        SMB_TOS_BLOCK: 'This account is not allowed to use WhatsApp Business.',
        DEPRECATED_VERSION: 'WhatsApp needs to be updated. Reload the page.',
      };
      if (texts[state]) app.innerHTML = '<div class="notice"></div>', app.firstChild.textContent = texts[state];
    },
    // The chat list, as a real page keeps it: one row for each of the first 100 chats, kept
    // from one render to the next; a render moves the rows whose chat moved and rewrites only
    // the text that changed (rebuilding every row on each message cost the browser more than
    // everything else the page does with it).
    main() {
      if (!page.synced || Socket.state !== 'CONNECTED') return;
      if (!document.getElementById('side')) {
        app.innerHTML = '<div id="side"><header><span></span><span data-icon="search" title="Search">&#128269;</span></header><div id="pane-side"></div></div>';
        app.querySelector('header span').textContent = page.me ? page.me.pushname : '';
        render.rows = new Map();
      }
      const list = document.getElementById('pane-side');
      const shown = new Set();
      let next = list.firstChild;
      for (const chat of ChatCollection.getModelsArray().slice(0, 100)) {
        const key = chat.id._serialized;
        shown.add(key);
        let row = render.rows.get(key);
        if (!row) {
          row = document.createElement('div');
          row.className = 'chat';
          row.innerHTML = '<div><span class="unread"></span><b></b></div><div class="last"></div>';
          row.cells = [row.querySelector('b'), row.querySelector('.unread'), row.querySelector('.last')];
          row.texts = ['', '', ''];
          render.rows.set(key, row);
        }
        const last = chat.msgs.last();
        render.text(row, 0, chat.name || chat.formattedTitle);
        render.text(row, 1, chat.unreadCount ? String(chat.unreadCount) : '');
        render.text(row, 2, last ? (last.body || last.caption || last.type) : '');
        if (row === next) next = next.nextSibling;
        else list.insertBefore(row, next);
      }
      for (const [key, row] of render.rows) {
        if (!shown.has(key)) { row.remove(); render.rows.delete(key); }
      }
    },
    text(row, cell, value) {  // a row's cell, written only when its text changed
      const text = value == null ? '' : String(value);
      if (row.texts[cell] !== text) row.texts[cell] = row.cells[cell].textContent = text;
    },
    soon() {
      if (render.timer) return;
      render.timer = setTimeout(() => { render.timer = null; render.main(); }, 250);
    },
  };

  // ------------------------------------------------------------------ start

  window.Debug = { VERSION };

  // A page build changed by the `page_build` fault (kept in localStorage, so it survives the
  // reload as a real update would): modules or members removed or renamed, maybe a new version.
  const BUILD_KEY = 'sim-build';
  function buildChanges() {
    try { return JSON.parse(localStorage.getItem(BUILD_KEY) || '[]'); } catch (e) { return []; }
  }
  function applyBuild(c) {
    if (c.version) window.Debug.VERSION = c.version;
    const path = c.member ? [c.module].concat(c.member.split('.')) : [c.module];
    let owner = modules;
    for (const part of path.slice(0, -1)) owner = owner == null ? undefined : owner[part];
    const name = path[path.length - 1];
    if (owner == null || !(name in owner)) return;
    const value = owner[name];
    delete owner[name];
    if (c.rename_to) owner[c.rename_to] = value;
  }
  for (const c of buildChanges()) applyBuild(c);

  (async function boot() {
    try {
      page.ident = await idb.get('identity');
      page.link = await idb.get('link');
      if (!page.ident) {
        page.ident = newIdentity();
        await idb.put('identity', page.ident);
      }
    } catch (e) {
      console.error('storage unavailable', e);
      page.ident = page.ident || newIdentity();
    }
    identLoaded();
    connect();
  }());

}());
