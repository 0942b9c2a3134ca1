// quotecast dashboard: vanilla ES2020 modules, no build step, no dependencies.
//
// Everything goes through the public contract (SPEC.md): REST under /api/v1 with
// `Authorization: Bearer TOKEN`, and ONE WebSocket for the whole page
// (`GET /ws/v1`), authenticated with a single-use ticket, on which every open
// panel subscribes to its watchlist.
//
// Who owns what:
// - app.js (this file): sign-in, the sidebar, the set of open panels, and the
//   one dispatcher that routes every server frame by its `type` (and, for
//   watchlist frames, its `watchlist_id`). A new kind of frame is one more
//   `onFrame(type, handler)` line.
// - connection.js: the socket's state machine (tickets, backoff, liveness).
// - panel.js: one watchlist's table and subscription.
// - alerts.js: price alerts (the form under a row, the list, recent events,
//   and the toast of an `alert` frame).
// - charts.js: intraday series, sparklines and the larger chart.
// - api.js, dom.js: REST calls; DOM building and formatting.

import { API, api, credentials, ApiError } from './api.js';
import { $, el, field, setFieldError, storage } from './dom.js';
import { Connection } from './connection.js';
import { SeriesStore } from './charts.js';
import { Panel } from './panel.js';
import { Alerts } from './alerts.js';

const TOKEN_KEY = 'quotecast.token';
const OPEN_KEY = 'quotecast.open';      // ids of the panels to reopen on the next visit
const MAX_AUTO_OPEN = 4;                // watchlists opened by themselves on a first visit

const state = {
  me: null,
  watchlists: [],
  panels: new Map(),                    // watchlist id -> Panel
  upstream: null,                       // { message, until } while the quote source is failing
};

// ---------------------------------------------------------------- page-level messages

let noticeTimer = null;
/** Page-level message for errors that belong to no particular field. */
function notify(message) {
  const box = $('notice');
  box.textContent = message;
  box.hidden = !message;
  clearTimeout(noticeTimer);
  if (message) noticeTimer = setTimeout(() => { box.hidden = true; }, 10000);
}

// ---------------------------------------------------------------- frames

const frameHandlers = new Map();

/** Registers the handler of one server frame type; the one place frames are routed. */
function onFrame(type, handler) {
  frameHandlers.set(type, handler);
}

function dispatch(msg) {
  const handler = frameHandlers.get(msg.type);
  if (handler) handler(msg);          // unknown types: a newer server; ignore them
}

/** The open panel a watchlist frame is about, if any (frames may trail a closed panel). */
const panelOf = (msg) => state.panels.get(msg.watchlist_id);

onFrame('subscribed', (m) => panelOf(m)?.onSubscribed(m));
onFrame('unsubscribed', (m) => panelOf(m)?.onUnsubscribed(m));
onFrame('snapshot', (m) => {
  noteUpstream(m.upstream);
  panelOf(m)?.onSnapshot(m);
});
onFrame('quotes', (m) => panelOf(m)?.onQuotes(m));
onFrame('status', onStatus);
onFrame('error', (m) => {
  if (m.watchlist_id != null) panelOf(m)?.onRefusal(m);
  else notify(`Server: ${m.message || m.code}`);
});
onFrame('pong', () => { /* liveness only: connection.js saw it arrive */ });
// About the user, not a watchlist: it comes on the page's socket whatever panels are open.
onFrame('alert', (m) => alerts.onFrame(m));

/** `status` is about the upstream, shared by every watchlist: it applies to all panels. */
function onStatus(msg) {
  if (msg.upstream === 'degraded') {
    const retry = typeof msg.retry_in_ms === 'number' ? msg.retry_in_ms : 0;
    state.upstream = { message: msg.message || 'the quote source is failing', until: Date.now() + retry };
  } else if (msg.upstream === 'ok') {
    state.upstream = null;
  }
  for (const panel of state.panels.values()) panel.renderBanners();
}

/** A snapshot says the upstream state too (a client that was away missed the `status`). */
function noteUpstream(word) {
  if (word === 'ok' && state.upstream) onStatus({ upstream: 'ok' });
  else if (word === 'degraded' && !state.upstream) onStatus({ upstream: 'degraded' });
}

// ---------------------------------------------------------------- the socket

const conn = new Connection({
  onOpen: () => {
    for (const panel of state.panels.values()) panel.subscribe();
    alerts.onReconnect();
  },
  onFrame: dispatch,
  onDown: () => { for (const panel of state.panels.values()) panel.connectionDown(); },
  onChange: () => {
    renderSocketState();
    for (const panel of state.panels.values()) panel.renderConn();
  },
  onAuthLost: (err, message) => {
    if (err) authLost(err, message);
    else onUnauthorized(message);
  },
});

/** The socket is wanted while signed in with some panel that wants its watchlist, or with
 *  an alert that may fire (its frames come only on an open socket). */
function syncSocket() {
  const panels = [...state.panels.values()].some((p) => p.wantsSocket);
  conn.want(!!state.me && (panels || alerts.anyEnabled));
}

function renderSocketState() {
  const box = $('socket-state');
  box.hidden = conn.state === 'idle';
  const word = conn.state === 'stopped' ? 'offline' : conn.state;
  box.className = `conn conn-${word}`;
  box.textContent = `stream ${word}`;
  box.title = conn.reason || 'One connection carries every open watchlist';
}

const alerts = new Alerts({
  authLost: (err) => authLost(err),
  onChange: () => syncSocket(),
});

const series = new SeriesStore((symbol) => {
  for (const panel of state.panels.values()) panel.seriesChanged(symbol);
});

// ---------------------------------------------------------------- sign-in

/** True (and the sign-in form shown) when the error is a 401 for the current token. */
function authLost(err, message = 'Your token is no longer accepted, sign in again.') {
  if (!(err instanceof ApiError) || err.status !== 401) return false;
  // A late 401 for a token the user already replaced must not sign the new one out.
  if (err.token === credentials.token) onUnauthorized(message);
  return true;
}

/** Takes `#token=...` from the address bar (then removes it so it is not bookmarked or shared). */
function tokenFromFragment() {
  if (!location.hash.includes('token=')) return null;
  const params = new URLSearchParams(location.hash.slice(1));
  const token = (params.get('token') || '').trim();
  params.delete('token');
  const rest = params.toString();
  history.replaceState(history.state, '', location.pathname + location.search + (rest ? `#${rest}` : ''));
  return token || null;
}

function forgetToken() {
  credentials.token = null;
  state.me = null;
  storage.remove(TOKEN_KEY);
}

async function trySignIn(token, rejectedMessage) {
  const button = document.querySelector('[data-testid="sign-in"]');
  button.disabled = true;
  credentials.token = token;
  try {
    state.me = await api('GET', `${API}/me`);
  } catch (err) {
    if (err.status === 401) {
      forgetToken();
      showSignIn(rejectedMessage);
    } else {
      // Keep the token: the server may just be unreachable. Submitting the form retries.
      state.me = null;
      $('token-input').value = token;
      showSignIn(`Could not sign in: ${err.message}.`);
    }
    return;
  } finally {
    button.disabled = false;
  }
  storage.set(TOKEN_KEY, token);
  $('token-input').value = '';
  enterApp();
}

function showSignIn(message) {
  $('signin').hidden = false;
  $('who').hidden = true;
  $('signin-error').textContent = message || '';
  // Panels stopped by a 401 stay visible (with their reason) but nothing else is usable signed out.
  $('app').hidden = state.panels.size === 0;
  $('app').classList.add('signed-out');
  $('token-input').focus();
}

function enterApp() {
  $('signin').hidden = true;
  $('signin-error').textContent = '';
  $('who').hidden = false;
  $('who-name').textContent = (state.me && (state.me.name || state.me.username)) || 'you';
  $('app').hidden = false;
  $('app').classList.remove('signed-out');
  // Panels left from a 401 resume with the new token on a new socket.
  syncSocket();
  conn.restart();
  loadWatchlists().then(restorePanels);
  alerts.load();
}

/** Any 401: forget the token, stop the socket and ask for a new one. */
function onUnauthorized(message) {
  forgetToken();
  conn.want(false);
  conn.halt('signed out, sign in again');
  showSignIn(message);
}

function signOut() {
  for (const panel of [...state.panels.values()]) panel.close();
  storage.remove(OPEN_KEY);
  forgetToken();
  syncSocket();
  conn.restart();
  state.watchlists = [];
  renderWatchlists();
  alerts.clear();
  showSignIn('');
}

// ---------------------------------------------------------------- watchlist list

async function loadWatchlists() {
  try {
    const data = await api('GET', `${API}/watchlists`);
    state.watchlists = Array.isArray(data) ? data : (data && data.watchlists) || [];
    renderWatchlists();
  } catch (err) {
    if (!authLost(err)) notify(`Could not load your watchlists: ${err.message}.`);
  }
}

function renderWatchlists() {
  const list = $('watchlist-list');
  list.replaceChildren(...state.watchlists.map(watchlistItem));
  $('watchlist-empty').hidden = state.watchlists.length > 0;
}

function watchlistItem(wl) {
  const id = wl.id;
  const slot = el('div', { class: 'wl-slot' });   // rename form, delete confirmation, errors
  const button = (testid, label, onclick, cls) =>
    el('button', { type: 'button', testid, class: cls, 'aria-label': `${label}: ${wl.name}`, onclick }, label);
  return el('li', { class: 'wl-item', testid: `watchlist-item-${id}` },
    el('div', { class: 'wl-title' },
      el('span', { class: 'wl-name' }, wl.name),
      el('span', { class: `badge ${wl.is_public ? 'public' : 'private'}` }, wl.is_public ? 'public' : 'private')),
    el('div', { class: 'wl-actions' },
      button(`open-${id}`, 'Open', () => openPanel(id, wl, { focus: true }), 'primary'),
      button(`rename-${id}`, 'Rename', () => showRename(slot, wl)),
      button(`toggle-public-${id}`, wl.is_public ? 'Make private' : 'Make public', () => togglePublic(slot, wl)),
      button(`delete-${id}`, 'Delete', () => askDelete(slot, wl), 'danger')),
    slot);
}

function slotError(slot, id, message) {
  slot.replaceChildren(el('span', { class: 'field-error', role: 'alert', testid: `wl-error-${id}` }, message));
}

function showRename(slot, wl) {
  const f = field('New name', `rename-input-${wl.id}`, `rename-input-${wl.id}`,
    { value: wl.name, maxlength: 100, errorTestid: `rename-error-${wl.id}` });
  const form = el('form', { class: 'stack', novalidate: true }, f.wrap,
    el('div', { class: 'row' },
      el('button', { type: 'submit', testid: `rename-save-${wl.id}` }, 'Save'),
      el('button', { type: 'button', onclick: () => slot.replaceChildren() }, 'Cancel')));
  form.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') slot.replaceChildren(); });
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    try {
      const updated = await api('PATCH', `${API}/watchlists/${wl.id}`, { name: f.input.value });
      slot.replaceChildren();
      state.panels.get(wl.id)?.setMeta(updated || { ...wl, name: f.input.value.trim() });
      await loadWatchlists();
    } catch (err) {
      if (!authLost(err)) setFieldError(f, err.message);
    }
  });
  slot.replaceChildren(form);
  f.input.focus();
  f.input.select();
}

async function togglePublic(slot, wl) {
  try {
    const updated = await api('PATCH', `${API}/watchlists/${wl.id}`, { is_public: !wl.is_public });
    state.panels.get(wl.id)?.setMeta(updated || { ...wl, is_public: !wl.is_public });
    await loadWatchlists();
  } catch (err) {
    if (!authLost(err)) slotError(slot, wl.id, `Could not change visibility: ${err.message}`);
  }
}

/** In-page confirmation instead of window.confirm(): keyboard friendly and scriptable. */
function askDelete(slot, wl) {
  const cancel = el('button', { type: 'button', testid: `cancel-delete-${wl.id}`, onclick: () => slot.replaceChildren() }, 'Cancel');
  const confirmBtn = el('button', {
    type: 'button', class: 'danger', testid: `confirm-delete-${wl.id}`,
    onclick: async () => {
      confirmBtn.disabled = true;
      try {
        await api('DELETE', `${API}/watchlists/${wl.id}`);
        state.panels.get(wl.id)?.stop('Watchlist deleted.');
        await loadWatchlists();
      } catch (err) {
        if (!authLost(err)) slotError(slot, wl.id, `Could not delete: ${err.message}`);
      }
    },
  }, 'Yes, delete');
  slot.replaceChildren(el('div', { class: 'confirm', role: 'group', 'aria-label': 'Confirm deletion' },
    el('p', {}, `Delete “${wl.name}” and all its items?`), el('div', { class: 'row' }, confirmBtn, cancel)));
  cancel.focus();
}

async function createWatchlist(ev) {
  ev.preventDefault();
  const input = $('new-watchlist-name');
  const error = $('create-error');
  error.textContent = '';
  input.removeAttribute('aria-invalid');
  try {
    const wl = await api('POST', `${API}/watchlists`, { name: input.value });
    input.value = '';
    await loadWatchlists();
    if (wl && wl.id != null) openPanel(wl.id, wl, { focus: true });
  } catch (err) {
    if (authLost(err)) return;
    error.textContent = err.message;
    input.setAttribute('aria-invalid', 'true');
  }
}

// ---------------------------------------------------------------- panels

/** What a panel may ask of the app: the socket, the series, and its own removal. */
const panelCtx = {
  conn,
  series,
  alerts,
  upstream: () => state.upstream,
  send: (msg) => conn.send(msg),
  authLost,
  reconnectNow: () => conn.reconnectNow(),
  onDeleted: () => loadWatchlists(),
  onClosed: (panel) => {
    state.panels.delete(panel.id);
    persistOpen();
    syncSocket();
  },
  onWantChanged: () => syncSocket(),
};

function openPanel(id, meta, { focus = false } = {}) {
  let panel = state.panels.get(id);
  if (!panel) {
    panel = new Panel(id, meta, panelCtx);
    state.panels.set(id, panel);
    $('panels').append(panel.root);
    persistOpen();
    panel.loadDetails();
    panel.renderConn();
    panel.subscribe();                  // at once if the socket is live; else when it opens
    syncSocket();
  } else if (panel.stopped) {
    panel.reconnect();
  }
  if (focus) panel.focus();
  return panel;
}

function persistOpen() {
  storage.set(OPEN_KEY, JSON.stringify([...state.panels.keys()]));
}

/** Reopens last visit's panels, but only watchlists that still exist in the caller's list.
 *  On a first visit in this browser (nothing saved, as after following the demo link) the
 *  watchlists open by themselves, so a newcomer sees prices move rather than a list of buttons. */
function restorePanels() {
  const saved = storage.get(OPEN_KEY);
  let ids = [];
  if (saved === null) {
    ids = state.watchlists.slice(0, MAX_AUTO_OPEN).map((w) => w.id);
  } else {
    try { ids = JSON.parse(saved); } catch (_) { ids = []; }
  }
  for (const id of Array.isArray(ids) ? ids : []) {
    const wl = state.watchlists.find((w) => w.id === id);
    if (wl && !state.panels.has(id)) openPanel(id, wl);
  }
}

// ---------------------------------------------------------------- start-up

function wireStaticUi() {
  $('signin-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const token = $('token-input').value.trim();
    if (!token) {
      $('signin-error').textContent = 'Enter your API token.';
      return;
    }
    trySignIn(token, 'That token was not accepted (401). Check it and try again.');
  });
  $('sign-out').addEventListener('click', signOut);
  $('create-form').addEventListener('submit', createWatchlist);
  $('open-by-id-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const raw = $('open-by-id').value.trim();
    const id = Number(raw);
    const valid = Number.isInteger(id) && id > 0;
    $('open-by-id-error').textContent = valid ? '' : 'Enter a watchlist number.';
    if (valid) {
      openPanel(id, state.watchlists.find((w) => w.id === id), { focus: true });
      $('open-by-id').value = '';
    }
  });
  // A link with #token=... opened in a tab that is already showing the dashboard.
  window.addEventListener('hashchange', () => {
    const token = tokenFromFragment();
    if (token) trySignIn(token, 'The token in the link was not accepted (401).');
  });
  // Back online: skip the rest of the backoff wait.
  window.addEventListener('online', () => conn.reconnectNow());
  setInterval(() => {
    conn.tick();
    renderSocketState();
    for (const panel of state.panels.values()) panel.tick();
  }, 1000);
}

function start() {
  wireStaticUi();
  const fromUrl = tokenFromFragment();
  const token = fromUrl || storage.get(TOKEN_KEY);
  if (!token) {
    showSignIn('');
    return;
  }
  trySignIn(token, fromUrl ? 'The token in the link was not accepted (401).' : 'Your saved token is no longer valid, sign in again.');
}

// Read-only debug view for automated browser tests.
window.quotecast = Object.freeze({
  get panels() { return Object.fromEntries([...state.panels].map(([id, p]) => [id, p.debug()])); },
  get connection() { return conn.debug(); },
  get alerts() { return alerts.debug(); },
  get signedIn() { return !!state.me; },
});

start();
