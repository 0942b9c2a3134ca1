// The page's one WebSocket (`GET /ws/v1`), as a small state machine:
//
//   idle ──want──▶ connecting ──open──▶ live
//    ▲              │     ▲               │
//    │        ticket or   backoff     close, or silence
//    │        upgrade     timer       past a ping
//    │        failed      │               │
//    │              ▼     │               ▼
//    └─── unwant ── reconnecting ◀────────┘
//
//   any ── 401 on a ticket, or close 1008 "token revoked" ──▶ stopped
//   (until restart(): signing in again)
//
// It owns the socket, its timers and the backoff, and knows nothing of
// panels: when it goes live it calls `onOpen` (the app subscribes every open
// panel, with `since` where it has one), every frame goes to `onFrame` (the
// app's one dispatcher), and losing a live socket calls `onDown`. Each
// attempt takes a fresh single-use ticket from POST /api/v1/ws-tickets, whose
// status also tells "give up" (401) from "retry" (anything else).

import { API, ApiError, api } from './api.js';

const BACKOFF_BASE_MS = 1000;
const BACKOFF_CAP_MS = 30000;
const LIVE_RESET_MS = 10000;     // a socket must stay up this long to reset the backoff
const PING_AFTER_MS = 20000;     // silence after which we ask the server whether it is there
const DEAD_AFTER_MS = 10000;     // no answer to that ping this long: the connection is gone
const REVOKED_REASON = 'token revoked';

export function closeReason(ev) {
  const known = {
    1000: 'closed by the server', 1001: 'server going away', 1006: 'connection lost',
    1008: 'disconnected by the server', 1009: 'message too big', 1011: 'server error',
  };
  return `${known[ev.code] || 'disconnected'} (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`;
}

export class Connection {
  /** hooks: { onOpen(), onFrame(msg), onDown(), onChange(conn), onAuthLost(err, message) } */
  constructor(hooks) {
    this.hooks = hooks;
    this.state = 'idle';
    this.reason = '';              // why it is reconnecting or stopped
    this.wanted = false;           // the app wants a socket (some panel needs one)
    this.ws = null;
    this.gen = 0;                  // bumps whenever a socket or attempt is abandoned; late callbacks bail out
    this.attempt = 0;              // consecutive failures, drives the backoff
    this.reconnectAt = 0;
    this.reconnectTimer = null;
    this.liveTimer = null;
    this.lastMessageAt = 0;
    this.pingSentAt = 0;
    this.stats = { opens: 0, reconnects: 0, messages: 0 };
  }

  get live() { return this.state === 'live'; }

  /** The app says whether it needs a socket; the machine follows. */
  want(wanted) {
    this.wanted = wanted;
    if (wanted && this.state === 'idle') this.connect();
    else if (!wanted && this.state !== 'idle' && this.state !== 'stopped') this.enter('idle');
  }

  /** After signing in again (or signing out): forget a stop and start over if wanted. */
  restart() {
    this.attempt = 0;
    if (this.wanted) this.connect();
    else this.enter('idle');
  }

  /** Signed out by a 401: no socket until restart(), and panels say why. */
  halt(reason) {
    if (this.state !== 'stopped') this.enter('stopped', reason);
  }

  /** Skip the rest of the backoff wait (the browser is back online, or the user asked). */
  reconnectNow() {
    if (this.state !== 'reconnecting') return;
    this.attempt = 0;
    this.connect();
  }

  /** Sends a client message if the socket is open; false when it is not. */
  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.state !== 'live') return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  /** Abandons the current socket and timers and enters `state`. */
  enter(state, reason = '') {
    const wasLive = this.state === 'live';
    this.gen += 1;
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.liveTimer);
    this.reconnectTimer = null;
    this.reconnectAt = 0;
    if (this.ws) {
      try { this.ws.close(1000); } catch (_) { /* already closing */ }
      this.ws = null;
    }
    this.state = state;
    this.reason = reason;
    if (wasLive) this.hooks.onDown();
    this.hooks.onChange(this);
  }

  async connect() {
    this.enter('connecting');
    const gen = this.gen;
    let ticket;
    try {
      const data = await api('POST', `${API}/ws-tickets`, {});
      ticket = data && data.ticket;
      if (!ticket) throw new ApiError(0, 'bad_ticket', 'the server returned no ticket');
    } catch (err) {
      if (gen !== this.gen) return;
      if (err.status === 401) {
        this.enter('stopped', 'your token is no longer accepted');
        this.hooks.onAuthLost(err, 'Your token is no longer accepted (it may have been revoked), sign in again.');
      } else {
        this.retry(`ticket request failed: ${err.message}`);
      }
      return;
    }
    if (gen !== this.gen) return;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let ws;
    try {
      ws = new WebSocket(`${scheme}//${location.host}/ws/v1?ticket=${encodeURIComponent(ticket)}`);
    } catch (err) {
      this.retry(`cannot open a WebSocket: ${err.message}`);
      return;
    }
    this.ws = ws;
    ws.onopen = () => { if (gen === this.gen) this.opened(); };
    ws.onmessage = (ev) => { if (gen === this.gen) this.received(ev.data); };
    ws.onerror = () => { /* no details are exposed to scripts; onclose follows */ };
    ws.onclose = (ev) => { if (gen === this.gen) this.closed(ev); };
  }

  opened() {
    this.stats.opens += 1;
    this.lastMessageAt = Date.now();
    this.pingSentAt = 0;
    this.state = 'live';
    this.reason = '';
    // Reset the backoff only once the connection proved stable: a server that accepts and
    // drops at once must not be hammered at the base delay.
    this.liveTimer = setTimeout(() => { this.attempt = 0; }, LIVE_RESET_MS);
    this.hooks.onChange(this);
    this.hooks.onOpen();
  }

  received(data) {
    this.lastMessageAt = Date.now();
    this.pingSentAt = 0;
    this.stats.messages += 1;
    let msg;
    try { msg = JSON.parse(data); } catch (_) { return; }   // not JSON: nothing we can use
    if (msg && typeof msg === 'object' && typeof msg.type === 'string') this.hooks.onFrame(msg);
  }

  closed(ev) {
    this.ws = null;
    if (ev.code === 1008 && ev.reason === REVOKED_REASON) {
      this.enter('stopped', 'your token was revoked');
      this.hooks.onAuthLost(null, 'Your token was revoked, sign in again.');
    } else {
      // Kicked by an admin, a server restart, a lost network: come back. A refused
      // upgrade also lands here (browsers show it as 1006); the next ticket request
      // tells a revoked token (401) from a passing refusal.
      this.retry(closeReason(ev));
    }
  }

  retry(reason) {
    if (!this.wanted) {
      this.enter('idle');
      return;
    }
    // Exponential backoff with "equal jitter": half fixed, half random, so many tabs
    // dropped by one server restart do not come back in lockstep.
    const exp = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const delay = Math.round(exp / 2 + (Math.random() * exp) / 2);
    this.attempt = Math.min(this.attempt + 1, 15);
    this.stats.reconnects += 1;
    this.enter('reconnecting', reason);
    this.reconnectAt = Date.now() + delay;
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  /** Every second: a silent socket is asked for a pong, and given up if none comes. */
  tick() {
    if (this.state !== 'live') return;
    const now = Date.now();
    if (this.pingSentAt && now - this.pingSentAt > DEAD_AFTER_MS) {
      this.retry('no answer from the server');
    } else if (!this.pingSentAt && now - this.lastMessageAt > PING_AFTER_MS) {
      this.pingSentAt = now;
      this.send({ type: 'ping' });
    }
  }

  debug() {
    return {
      state: this.state, reason: this.reason, wanted: this.wanted, attempt: this.attempt,
      ...this.stats, lastMessageAt: this.lastMessageAt,
    };
  }
}
