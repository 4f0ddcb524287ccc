#!/usr/bin/env node
/* Drive unmodified whatsapp-web.js Clients against a WhatsApp Web (the real one, or wad's
 * simulator served over TLS) and report everything as JSON lines on stdout.
 *
 * Commands, one JSON object per line on stdin (or one per argv argument):
 *   {"id": 1, "op": "start", "client": "a", "port": 8443, "dataPath": "/tmp/x",
 *    "auth": "local" | "none", "pair": "996555100200"?, "clientId": "a"?}
 *       creates a Client (LocalAuth under dataPath, or NoAuth with its profile in dataPath),
 *       maps web.whatsapp.com to 127.0.0.1:port if `port` is given, and calls initialize();
 *       answered at once, progress comes as events.
 *   {"id": 2, "op": "eval", "client": "a", "js": "async (client) => ..."}
 *       answers the JSON of what the function returns (or throws).
 *   {"id": 3, "op": "stop", "client": "a"}   destroy() the client.
 *   {"id": 4, "op": "exit"}                  destroy every client and exit.
 * Output lines:
 *   {"id": 1, "ok": true, "result": ...} or {"id": 1, "ok": false, "error": "..."}
 *   {"event": "qr", "client": "a", "args": [...], "at": <ms since epoch>}
 * Messages and other structures in event arguments are reduced to their plain fields.
 */
'use strict';

const readline = require('readline');
const path = require('path');
const fs = require('fs');
const { Client, LocalAuth, NoAuth } = require('whatsapp-web.js');

const EVENTS = [
  'qr', 'code', 'authenticated', 'auth_failure', 'ready', 'loading_screen', 'change_state',
  'disconnected', 'message', 'message_create', 'message_ack', 'message_edit',
  'message_revoke_everyone', 'message_revoke_me', 'message_ciphertext', 'media_uploaded',
  'group_join', 'group_leave', 'group_update', 'contact_changed', 'chat_removed',
  'chat_archived', 'unread_count', 'incoming_call',
];

const clients = new Map();

function out(obj) { process.stdout.write(JSON.stringify(obj) + '\n'); }

/** A plain-data view of what whatsapp-web.js hands out (Message, Chat, Contact, ...). */
function plain(v, depth = 0) {
  if (v === null || v === undefined) return v ?? null;
  if (typeof v !== 'object') return typeof v === 'function' ? undefined : v;
  if (depth > 4) return '[deep]';
  if (Array.isArray(v)) return v.map((x) => plain(x, depth + 1));
  if (typeof v._serialized === 'string') return v._serialized;
  if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [k, plain(x, depth + 1)]));
  const o = {};
  for (const [k, x] of Object.entries(v)) {
    if (k === 'client' || (k.startsWith('_') && k !== '_data')) continue;
    const p = plain(x, depth + 1);
    if (p !== undefined) o[k] = p;
  }
  return o;
}

function chromiumArgs(port) {
  const args = ['--no-first-run', '--disable-background-networking', '--disable-component-update',
    '--disable-sync', '--disable-quic', '--disable-dev-shm-usage'];
  if (typeof process.getuid === 'function' && process.getuid() === 0) args.push('--no-sandbox');
  if (port) {
    // The network-level routing: web.whatsapp.com resolves to the simulator's TLS port, whose
    // certificate is self-signed. Nothing in whatsapp-web.js is changed.
    args.push(`--host-resolver-rules=MAP web.whatsapp.com 127.0.0.1:${port}`,
      '--ignore-certificate-errors');
  }
  return args;
}

function start(cmd) {
  if (clients.has(cmd.client)) throw new Error(`client ${cmd.client} exists`);
  fs.mkdirSync(cmd.dataPath, { recursive: true });
  const tmp = path.join(cmd.dataPath, 'tmp');
  fs.mkdirSync(tmp, { recursive: true });
  const puppeteer = {
    headless: true,
    executablePath: cmd.executablePath || '/usr/bin/chromium',
    args: chromiumArgs(cmd.port),
    env: Object.assign({}, process.env, { TMPDIR: tmp }),
  };
  let authStrategy;
  if (cmd.auth === 'none') {
    authStrategy = new NoAuth();
    puppeteer.userDataDir = path.join(cmd.dataPath, 'profile');
  } else {
    authStrategy = new LocalAuth({ clientId: cmd.clientId || cmd.client, dataPath: cmd.dataPath });
  }
  const options = { authStrategy, puppeteer, webVersionCache: { type: 'none' } };
  if (cmd.pair) options.pairWithPhoneNumber = { phoneNumber: cmd.pair, showNotification: false };
  if (cmd.options) Object.assign(options, cmd.options);
  const client = new Client(options);
  clients.set(cmd.client, client);
  for (const name of EVENTS) {
    client.on(name, (...args) => out({ event: name, client: cmd.client, args: plain(args), at: Date.now() }));
  }
  client.initialize().catch((err) => out({ event: 'initialize_failed', client: cmd.client, args: [String(err && err.stack || err)], at: Date.now() }));
  return null;
}

async function stop(name) {
  const client = clients.get(name);
  if (!client) throw new Error(`no client ${name}`);
  clients.delete(name);
  await client.destroy();
  return null;
}

async function run(cmd) {
  switch (cmd.op) {
    case 'start': return start(cmd);
    case 'eval': {
      const client = clients.get(cmd.client);
      if (!client) throw new Error(`no client ${cmd.client}`);
      // eslint-disable-next-line no-eval
      const fn = eval(`(${cmd.js})`);
      return plain(await fn(client, cmd.arg));
    }
    case 'stop': return stop(cmd.client);
    case 'exit':
      await Promise.allSettled([...clients.keys()].map(stop));
      process.exit(0);
      return null;
    default: throw new Error(`unknown op ${cmd.op}`);
  }
}

async function handle(line) {
  if (!line.trim()) return;
  let cmd;
  try { cmd = JSON.parse(line); } catch (err) { out({ ok: false, error: `bad JSON: ${err.message}` }); return; }
  try {
    const result = await run(cmd);
    out({ id: cmd.id, ok: true, result: result === undefined ? null : result });
  } catch (err) {
    out({ id: cmd.id, ok: false, error: String(err && err.stack || err) });
  }
}

process.on('unhandledRejection', (err) => out({ event: 'unhandled_rejection', args: [String(err && err.stack || err)], at: Date.now() }));

for (const arg of process.argv.slice(2)) handle(arg);
readline.createInterface({ input: process.stdin }).on('line', handle).on('close', async () => {
  await Promise.allSettled([...clients.keys()].map(stop));
  process.exit(0);
});
