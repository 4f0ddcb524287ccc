// wad's status page: organizations with their state, linked number, queue and today's
// messages, a live QR for an organization waiting to be linked, and (for admins) connect,
// disconnect and pairing code. No dependencies, no build step.
//
// The token lives in this tab's sessionStorage only, and goes to the API in the Authorization
// header (never in a URL). Live updates come from the event stream, read with fetch() because
// EventSource cannot send that header; it resumes with Last-Event-ID after a disconnect.
"use strict";

(() => {
  const TOKEN_KEY = "wad.token";
  const RANK = { VIEWER: 1, AGENT: 2, ADMIN: 3, SUPER_ADMIN: 4 };
  const RECONNECT_MS = 2000;
  const REFRESH_MS = 30000;
  const STATE_TEXT = {
    DISCONNECTED: "disconnected", CONNECTING: "connecting", QR_CODE_PENDING: "waiting for a scan",
    PAIRING_CODE_PENDING: "waiting for the pairing code", CONNECTED: "connected",
    ERROR: "error", LOGGED_OUT: "logged out", BANNED: "banned",
  };

  const $ = (id) => document.getElementById(id);
  const page = {
    token: sessionStorage.getItem(TOKEN_KEY),
    only: null, // the organization of /org/{id}
    caller: null,
    orgs: new Map(), // id -> {data, card, qrDrawn, qrUrl}
    lastEventId: null,
    stream: null, // AbortController of the open stream
    refreshTimer: null,
    generation: 0, // bumps on sign-out so that old loops stop
  };

  const match = location.pathname.match(/^\/org\/([0-9a-fA-F-]{36})\/?$/);
  if (match) page.only = match[1].toLowerCase();

  function canAdmin() {
    return page.caller !== null && RANK[page.caller.role] >= RANK.ADMIN;
  }

  async function api(method, path, body) {
    const headers = { Authorization: "Bearer " + page.token };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      signOut("That token was not accepted (unknown or revoked). Paste another one.");
      throw new Error("unauthenticated");
    }
    return response;
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      return body.error.message;
    } catch (e) {
      return "HTTP " + response.status;
    }
  }

  // -- signing in and out ----------------------------------------------------------------------

  function showLogin(message) {
    $("login").hidden = false;
    $("signout").hidden = true;
    $("orgs").replaceChildren();
    $("login-error").textContent = message || "";
    $("token").focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    page.token = null;
    page.caller = null;
    page.generation += 1;
    if (page.stream) page.stream.abort();
    for (const entry of page.orgs.values()) if (entry.qrUrl) URL.revokeObjectURL(entry.qrUrl);
    page.orgs.clear();
    page.lastEventId = null;
    setLive(false);
    showLogin(message);
  }

  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    page.token = value;
    $("token").value = "";
    start();
  });
  $("signout").addEventListener("click", () => signOut(""));

  // -- the overview ------------------------------------------------------------------------------

  async function loadOverview() {
    const path = "/api/overview" + (page.only ? "?organizationId=" + page.only : "");
    const response = await api("GET", path);
    if (!response.ok) {
      notice(await errorText(response));
      return false;
    }
    const body = await response.json();
    page.caller = body.caller;
    notice("");
    $("scope").textContent = page.only && body.organizations.length
      ? "· " + body.organizations[0].name : "";
    const seen = new Set();
    for (const org of body.organizations) {
      seen.add(org.organizationId);
      upsert(org);
    }
    for (const [id, entry] of page.orgs) {
      if (!seen.has(id)) {
        entry.card.remove();
        page.orgs.delete(id);
      }
    }
    if (!body.organizations.length) notice("No organizations yet (wad org create NAME).");
    return true;
  }

  function scheduleRefresh(delay) {
    clearTimeout(page.refreshTimer);
    page.refreshTimer = setTimeout(async () => {
      try {
        if (page.token) await loadOverview();
      } catch (e) { /* the next event or timer tries again */ }
      scheduleRefresh(REFRESH_MS);
    }, delay);
  }

  function notice(text) {
    $("notice").textContent = text;
    $("notice").hidden = !text;
  }

  function upsert(org) {
    let entry = page.orgs.get(org.organizationId);
    if (!entry) {
      const card = $("org-card").content.firstElementChild.cloneNode(true);
      card.dataset.org = org.organizationId;
      entry = { data: org, card, qrDrawn: null, qrUrl: null };
      page.orgs.set(org.organizationId, entry);
      if (canAdmin()) addActions(entry);
      $("orgs").append(card);
    }
    entry.data = Object.assign(entry.data, org);
    render(entry);
  }

  function render(entry) {
    const org = entry.data;
    const card = entry.card;
    const link = card.querySelector(".name");
    link.textContent = org.name;
    link.href = "/org/" + org.organizationId;
    const state = card.querySelector(".state");
    state.textContent = STATE_TEXT[org.status] || org.status;
    state.dataset.state = org.status;
    card.dataset.state = org.status;
    card.querySelector(".phone").textContent = org.phoneNumber || "—";
    const oldest = org.oldestQueuedS ? " (oldest " + duration(org.oldestQueuedS) + ")" : "";
    card.querySelector(".queue").textContent = org.queueDepth + " waiting" + oldest;
    card.querySelector(".today").textContent =
      org.messagesToday.received + " in · " + org.messagesToday.sent + " out";
    card.querySelector(".last-error").textContent = org.errorMessage || "—";
    const pending = org.status === "QR_CODE_PENDING";
    card.querySelector(".waiting").hidden = !(pending && !canAdmin());
    if (pending && canAdmin()) {
      drawQr(entry, org.qr || "current");
    } else {
      clearQr(entry);
    }
    const pairing = card.querySelector(".pairing");
    pairing.hidden = !(org.status === "PAIRING_CODE_PENDING" && org.pairingCode);
    card.querySelector(".pairing-code").textContent = org.pairingCode || "";
  }

  function duration(seconds) {
    if (seconds < 90) return Math.round(seconds) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    return Math.round(seconds / 3600) + " h";
  }

  // -- the QR code -------------------------------------------------------------------------------

  async function drawQr(entry, payload) {
    if (entry.qrDrawn === payload) return;
    entry.qrDrawn = payload;
    const id = entry.data.organizationId;
    let response;
    try {
      response = await api("GET", "/api/whatsapp/qr/" + id + "?format=svg");
    } catch (e) {
      entry.qrDrawn = null;
      return;
    }
    if (entry.qrDrawn !== payload) return; // a newer payload is being drawn already
    if (!response.ok) {
      // 409: linked (or stopped) meanwhile; the stream brings the new state.
      entry.qrDrawn = null;
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    if (entry.qrDrawn !== payload || entry.data.status !== "QR_CODE_PENDING") {
      URL.revokeObjectURL(url);
      return;
    }
    const image = entry.card.querySelector(".qr-image");
    image.onload = () => {
      if (entry.qrUrl && entry.qrUrl !== url) URL.revokeObjectURL(entry.qrUrl);
      entry.qrUrl = url;
    };
    image.src = url;
    entry.card.querySelector(".qr").hidden = false;
  }

  function clearQr(entry) {
    entry.qrDrawn = null;
    entry.card.querySelector(".qr").hidden = true;
    const image = entry.card.querySelector(".qr-image");
    image.removeAttribute("src");
    if (entry.qrUrl) {
      URL.revokeObjectURL(entry.qrUrl);
      entry.qrUrl = null;
    }
  }

  // -- actions (admins only) ---------------------------------------------------------------------

  function addActions(entry) {
    const id = entry.data.organizationId;
    const bar = document.createElement("div");
    bar.className = "actions";
    const message = entry.card.querySelector(".message");

    const button = (label, cls, handler) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = label;
      b.className = cls;
      b.addEventListener("click", async () => {
        b.disabled = true;
        message.textContent = "";
        try {
          await handler();
        } catch (e) {
          if (e.message !== "unauthenticated") message.textContent = String(e.message || e);
        } finally {
          b.disabled = false;
        }
      });
      bar.append(b);
      return b;
    };

    button("Connect", "connect", async () => {
      const r = await api("POST", "/api/whatsapp/connect", { organizationId: id });
      message.textContent = r.ok ? "Connecting…" : await errorText(r);
    });
    button("Disconnect", "disconnect", async () => {
      const r = await api("POST", "/api/whatsapp/disconnect/" + id);
      message.textContent = r.ok ? "Disconnected; the login is kept." : await errorText(r);
    });

    const form = document.createElement("form");
    form.className = "pair-form";
    form.hidden = true;
    const phone = document.createElement("input");
    phone.type = "tel";
    phone.placeholder = "+996555123456";
    phone.required = true;
    phone.setAttribute("aria-label", "The account's phone number");
    const ask = document.createElement("button");
    ask.type = "submit";
    ask.textContent = "Get code";
    form.append(phone, ask);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      ask.disabled = true;
      try {
        const r = await api("POST", "/api/whatsapp/pairing-code/" + id,
                            { phoneNumber: phone.value });
        if (r.ok) {
          const body = await r.json();
          entry.data.pairingCode = body.code;
          entry.data.status = "PAIRING_CODE_PENDING";
          render(entry);
          message.textContent = "Type the code on the phone: Linked devices › Link a device › " +
            "Link with phone number instead.";
          form.hidden = true;
        } else {
          message.textContent = await errorText(r);
        }
      } catch (e) { /* signed out */ } finally {
        ask.disabled = false;
      }
    });
    button("Pairing code", "pair", async () => {
      form.hidden = !form.hidden;
      if (!form.hidden) phone.focus();
    });
    entry.card.append(bar, form);
  }

  // -- the event stream --------------------------------------------------------------------------

  function setLive(on) {
    const el = $("live");
    el.textContent = on ? "live" : "offline";
    el.className = "live " + (on ? "on" : "off");
  }

  function streamPath() {
    if (page.only) return "/api/whatsapp/events/" + page.only;
    if (page.caller && page.caller.role === "SUPER_ADMIN") return "/api/whatsapp/events";
    return "/api/whatsapp/events/" + page.caller.organizationId;
  }

  async function follow(generation) {
    while (generation === page.generation && page.token) {
      const controller = new AbortController();
      page.stream = controller;
      try {
        const headers = { Authorization: "Bearer " + page.token };
        if (page.lastEventId) headers["Last-Event-ID"] = page.lastEventId;
        const response = await fetch(streamPath(), { headers, cache: "no-store",
                                                      signal: controller.signal });
        if (response.status === 401) {
          signOut("That token was not accepted (unknown or revoked). Paste another one.");
          return;
        }
        if (response.status === 410) {
          // Our position is older than the change feed keeps: start again from the present.
          page.lastEventId = null;
          scheduleRefresh(0);
          continue;
        }
        if (!response.ok) throw new Error(await errorText(response));
        const reader = response.body.getReader();
        const decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            onBlock(block);
          }
        }
      } catch (e) {
        if (generation !== page.generation) return;
      }
      setLive(false);
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
    }
  }

  function onBlock(block) {
    let kind = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") page.lastEventId = value;
      else if (field === "event") kind = value;
      else if (field === "data") data.push(value);
    }
    if (!data.length) return;
    let body;
    try {
      body = JSON.parse(data.join("\n"));
    } catch (e) {
      return;
    }
    onEvent(kind, body);
  }

  function onEvent(kind, body) {
    if (kind === "stream.start") {
      setLive(true);
      if (!body.resumed) scheduleRefresh(0); // catch up with what happened before the stream
      return;
    }
    if (kind === "stream.end") {
      if (body.reason === "cursor_expired") page.lastEventId = null;
      scheduleRefresh(0);
      return;
    }
    const entry = page.orgs.get(body.organizationId);
    if (!entry) {
      if (kind === "session.state") scheduleRefresh(500); // a new organization
      return;
    }
    // The change feed's names (see docs/api.md, "The change feed"); the entry keeps the
    // overview's (camelCase, as GET /api/overview answers).
    const data = body.data || {};
    if (kind === "session.state") {
      // The feed never carries the QR payload or pairing code: a new one is fetched.
      entry.data.status = data.status;
      if ("phoneNumber" in data) entry.data.phoneNumber = data.phoneNumber;
      if ("errorMessage" in data) entry.data.errorMessage = data.errorMessage;
      entry.data.qr = data.status === "QR_CODE_PENDING" ? (data.qrIssuedAt || "current") : null;
      if (data.status !== "PAIRING_CODE_PENDING") entry.data.pairingCode = null;
      else if (data.pairingCodeIssuedAt !== entry.pairingIssuedAt) scheduleRefresh(0);
      entry.pairingIssuedAt = data.pairingCodeIssuedAt;
      if (data.status === "CONNECTED") entry.card.querySelector(".message").textContent = "";
      render(entry);
    } else if (kind === "message.stored" && !body.snapshot) {
      if (data.direction === "IN") entry.data.messagesToday.received += 1;
      else entry.data.messagesToday.sent += 1;
      render(entry);
      scheduleRefresh(1500);
    }
  }

  // -- start -------------------------------------------------------------------------------------

  async function start() {
    $("login").hidden = true;
    $("signout").hidden = false;
    const generation = page.generation;
    let ok = false;
    try {
      ok = await loadOverview();
    } catch (e) {
      if (e.message !== "unauthenticated") notice("The daemon does not answer: " + e.message);
      return;
    }
    if (!ok || generation !== page.generation) return;
    scheduleRefresh(REFRESH_MS);
    follow(generation);
  }

  if (page.token) start();
  else showLogin("");
})();
