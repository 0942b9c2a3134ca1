// quotecast dashboard: vanilla ES2020, no build step, no dependencies.
//
// Everything goes through the public contract (SPEC.md): REST under /api/v1 with
// `Authorization: Bearer TOKEN`, and one WebSocket per open watchlist panel,
// authenticated with a single-use ticket from POST /api/v1/ws-tickets (browsers
// cannot set headers on a WebSocket). All data is written with textContent, never
// innerHTML, so names and memos cannot inject markup.
'use strict';

(() => {
  const API = '/api/v1';
  const TOKEN_KEY = 'quotecast.token';
  const OPEN_KEY = 'quotecast.open';      // ids of the panels to reopen on the next visit
  const BACKOFF_BASE_MS = 1000;
  const BACKOFF_CAP_MS = 30000;
  const LIVE_RESET_MS = 10000;            // a connection must stay up this long to reset the backoff
  const STALE_AFTER_MS = 20000;           // > 3 poll intervals at the default 5 s tick
  const FLASH_MS = 1000;

  const state = { token: null, me: null, watchlists: [], panels: new Map() };

  // ---------------------------------------------------------------- DOM helpers

  const $ = (id) => document.getElementById(id);

  /** el('button', {type: 'button', testid: 'x', onclick: fn}, 'label', childNode) */
  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value == null || value === false) continue;
      if (key === 'testid') node.dataset.testid = value;
      else if (key === 'class') node.className = value;
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? '' : String(value));
    }
    for (const child of children) if (child != null) node.append(child);
    return node;
  }

  /** A labelled input with its own error line, wired with aria-describedby. */
  function field(label, id, testid, attrs = {}) {
    const error = el('span', { id: `${id}-error`, class: 'field-error', role: 'alert', testid: attrs.errorTestid });
    delete attrs.errorTestid;
    const input = el('input', { id, testid, autocomplete: 'off', 'aria-describedby': error.id, ...attrs });
    const wrap = el('div', { class: 'field' }, el('label', { for: id }, label), input, error);
    return { wrap, input, error };
  }

  function setFieldError(f, message) {
    f.error.textContent = message || '';
    if (message) f.input.setAttribute('aria-invalid', 'true');
    else f.input.removeAttribute('aria-invalid');
  }

  let noticeTimer = null;
  /** Page-level message for errors that belong to no particular field. */
  function notify(message) {
    const box = $('notice');
    box.textContent = message;
    box.hidden = !message;
    clearTimeout(noticeTimer);
    if (message) noticeTimer = setTimeout(() => { box.hidden = true; }, 10000);
  }

  // localStorage throws in some privacy modes; the page must still work (token in memory only).
  const storage = {
    get(key) { try { return localStorage.getItem(key); } catch (_) { return null; } },
    set(key, value) { try { localStorage.setItem(key, value); } catch (_) { /* memory only */ } },
    remove(key) { try { localStorage.removeItem(key); } catch (_) { /* nothing stored */ } },
  };

  // ---------------------------------------------------------------- formatting

  const DASH = '—';
  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

  /** Prices >= 1 get 2 decimals; penny prices keep up to 4 so they do not read as 0.00. */
  function digits(v) {
    return Math.abs(v) >= 1 || v === 0 ? { minimumFractionDigits: 2, maximumFractionDigits: 2 }
      : { minimumFractionDigits: 2, maximumFractionDigits: 4 };
  }

  function fmtMoney(v, currency, signed = false) {
    if (!isNum(v)) return DASH;
    const opts = { ...digits(v), signDisplay: signed ? 'exceptZero' : 'auto' };
    // Only exact ISO 4217 codes: Yahoo's "GBp" (pence) would silently become pounds.
    if (currency && /^[A-Z]{3}$/.test(currency)) {
      try { return v.toLocaleString(undefined, { ...opts, style: 'currency', currency }); } catch (_) { /* fall through */ }
    }
    const text = v.toLocaleString(undefined, opts);
    return currency ? `${text} ${currency}` : text;
  }

  function fmtPercent(v) {
    if (!isNum(v)) return DASH;
    return (v / 100).toLocaleString(undefined, {
      style: 'percent', minimumFractionDigits: 2, maximumFractionDigits: 2, signDisplay: 'exceptZero',
    });
  }

  const fmtCount = (v, max = 0) => (isNum(v) ? v.toLocaleString(undefined, { maximumFractionDigits: max }) : DASH);

  function fmtTime(iso) {
    if (!iso) return DASH;
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return DASH;
    const today = d.toDateString() === new Date().toDateString();
    return today ? d.toLocaleTimeString() : d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'short' });
  }

  const signClass = (v) => (isNum(v) && v > 0 ? 'up' : isNum(v) && v < 0 ? 'down' : '');

  /** Writes a cell's text and keeps the raw number in data-value for tests and tooling. */
  function setCell(cell, text, value, cls = '') {
    cell.textContent = text;
    if (isNum(value)) cell.dataset.value = String(value);
    else delete cell.dataset.value;
    cell.classList.toggle('up', cls === 'up');
    cell.classList.toggle('down', cls === 'down');
  }

  /** '' means "not set"; anything else must be a number (the server judges the range). */
  function parseAmount(text) {
    const t = text.trim();
    if (t === '') return { value: null };
    const n = Number(t);
    return Number.isFinite(n) ? { value: n } : { error: 'must be a number' };
  }

  const computePl = (price, qty, cost) => (isNum(price) && isNum(qty) && isNum(cost) ? (price - cost) * qty : null);

  // ---------------------------------------------------------------- HTTP API

  class ApiError extends Error {
    constructor(status, code, message, field, token) {
      super(message);
      Object.assign(this, { status, code, field, token });
    }
  }

  /** fetch wrapper: JSON in/out, bearer token, every failure becomes an ApiError. */
  async function api(method, path, body) {
    const token = state.token;
    const headers = { Accept: 'application/json' };
    if (token) headers.Authorization = `Bearer ${token}`;
    const init = { method, headers, cache: 'no-store', credentials: 'omit' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    let text = '';
    try {
      res = await fetch(path, init);
      text = await res.text();
    } catch (_) {
      throw new ApiError(0, 'network', 'cannot reach the server', null, token);
    }
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { /* non-JSON body, e.g. a proxy's error page */ }
    }
    if (!res.ok) {
      const e = (data && data.error) || {};
      const message = e.message || `${res.status} ${res.statusText}`.trim();
      throw new ApiError(res.status, e.code || `http_${res.status}`, message, e.field, token);
    }
    return data;
  }

  /** True (and the sign-in form shown) when the error is a 401 for the current token. */
  function authLost(err, message = 'Your token is no longer accepted, sign in again.') {
    if (!(err instanceof ApiError) || err.status !== 401) return false;
    // A late 401 for a token the user already replaced must not sign the new one out.
    if (err.token === state.token) onUnauthorized(message);
    return true;
  }

  const KNOWN_FIELDS = ['symbol', 'quantity', 'purchase_price', 'memo', 'name', 'description'];

  /** Which input an error belongs to: the body's `field` if any, else the "field: ..." prefix
   *  the server puts on validation messages, else the form's main input. */
  function errorField(err, fallback) {
    if (err.field && KNOWN_FIELDS.includes(err.field)) return err.field;
    const m = /^([a-z_]+):/.exec(err.message || '');
    return m && KNOWN_FIELDS.includes(m[1]) ? m[1] : fallback;
  }

  // ---------------------------------------------------------------- sign-in

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
    state.token = null;
    state.me = null;
    storage.remove(TOKEN_KEY);
  }

  async function trySignIn(token, rejectedMessage) {
    const button = document.querySelector('[data-testid="sign-in"]');
    button.disabled = true;
    state.token = token;
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
    // Stopped panels stay visible (with their reason) but nothing else is usable signed out.
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
    // Panels stopped by a 401 resume with the new token.
    for (const panel of state.panels.values()) if (panel.authStopped) panel.reconnectNow();
    loadWatchlists().then(restorePanels);
  }

  /** Any 401: stop every socket, forget the token and ask for a new one. */
  function onUnauthorized(message) {
    forgetToken();
    for (const panel of state.panels.values()) panel.stop(message, { auth: true });
    showSignIn(message);
  }

  function signOut() {
    for (const panel of [...state.panels.values()]) panel.close();
    storage.remove(OPEN_KEY);
    forgetToken();
    state.watchlists = [];
    renderWatchlists();
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
        button(`open-${id}`, 'Open', () => openPanel(id, wl), 'primary'),
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
      if (wl && wl.id != null) openPanel(wl.id, wl);
    } catch (err) {
      if (authLost(err)) return;
      error.textContent = err.message;
      input.setAttribute('aria-invalid', 'true');
    }
  }

  // ---------------------------------------------------------------- panels

  function openPanel(id, meta) {
    let panel = state.panels.get(id);
    if (!panel) {
      panel = new Panel(id, meta);
      state.panels.set(id, panel);
      $('panels').append(panel.root);
      persistOpen();
      panel.loadDetails();
      panel.connect();
    } else if (panel.stopped) {
      panel.reconnectNow();
    }
    panel.focus();
    return panel;
  }

  function persistOpen() {
    storage.set(OPEN_KEY, JSON.stringify([...state.panels.keys()]));
  }

  /** Reopens last visit's panels, but only watchlists that still exist in the caller's list. */
  function restorePanels() {
    let ids = [];
    try { ids = JSON.parse(storage.get(OPEN_KEY) || '[]'); } catch (_) { ids = []; }
    for (const id of Array.isArray(ids) ? ids : []) {
      const wl = state.watchlists.find((w) => w.id === id);
      if (wl && !state.panels.has(id)) openPanel(id, wl);
    }
  }

  const COLUMNS = [
    ['symbol', 'Symbol'], ['name', 'Name'], ['price', 'Price', 'num'], ['change', 'Change', 'num'],
    ['change-pct', 'Change %', 'num'], ['volume', 'Volume', 'num'], ['state', 'Market'], ['time', 'Market time'],
    ['qty', 'Quantity', 'num'], ['cost', 'Purchase price', 'num'], ['pl', 'P/L', 'num'], ['actions', 'Actions'],
  ];

  class Panel {
    constructor(id, meta) {
      this.id = id;
      this.meta = meta || { id, name: `Watchlist ${id}` };
      this.rows = new Map();            // symbol -> { quote, memo, tr, cells, editTr, flashTimer }
      this.order = [];                  // symbol order of the last snapshot
      this.ws = null;
      this.gen = 0;                     // bumps on every (re)connect/stop; stale callbacks compare and bail out
      this.conn = 'connecting';
      this.attempt = 0;                 // consecutive failures, drives the backoff
      this.stats = { opens: 0, reconnects: 0, messages: 0, gaps: 0, snapshotRequests: 0, latencyMs: null };
      this.lastSeq = null;
      this.snapshotPending = false;
      this.snapshotStale = false;
      this.lastMessageAt = 0;
      this.degraded = null;             // { message, until } while the upstream is failing
      this.stopped = false;
      this.authStopped = false;
      this.reconnectAt = 0;
      this.reconnectTimer = null;
      this.liveTimer = null;
      this.closed = false;
      this.build();
    }

    // ---------------- DOM

    build() {
      const id = this.id;
      this.title = el('h2', { id: `panel-title-${id}`, tabindex: -1 });
      this.visibility = el('span', { class: 'badge' });
      this.connWord = document.createTextNode('connecting');
      // The countdown ticks every second; aria-hidden keeps screen readers from reading every tick
      // (the state word itself is announced, and the stop reason is in the role=alert message).
      this.connDetail = el('span', { class: 'conn-detail', testid: `conn-detail-${id}`, 'aria-hidden': 'true' });
      this.connEl = el('span', { class: 'conn conn-connecting', testid: `conn-state-${id}`, role: 'status', 'aria-live': 'polite' },
        this.connWord, this.connDetail);
      this.reconnectBtn = el('button', { type: 'button', testid: `reconnect-${id}`, hidden: true, onclick: () => this.reconnectNow() }, 'Reconnect');
      this.message = el('p', { class: 'panel-message', testid: `panel-message-${id}`, role: 'alert' });
      this.degradedEl = el('div', { class: 'banner degraded', testid: `degraded-${id}`, hidden: true });
      this.staleEl = el('div', { class: 'banner stale', testid: `stale-${id}`, hidden: true });
      this.actionError = el('p', { class: 'field-error', role: 'alert', testid: `action-error-${id}` });
      this.tbody = el('tbody');
      this.totalValue = el('span', { testid: `total-value-${id}` }, DASH);
      this.totalPl = el('td', { class: 'num', testid: `total-pl-${id}` }, DASH);
      this.footer = el('p', { class: 'panel-foot', testid: `panel-foot-${id}` });

      const head = el('tr', {}, ...COLUMNS.map(([key, label, cls]) =>
        el('th', { scope: 'col', class: [cls, key === 'actions' ? 'actions' : ''].join(' ').trim() || null },
          key === 'actions' ? el('span', { class: 'visually-hidden' }, label) : label)));
      const totals = el('tr', { class: 'totals' },
        el('th', { scope: 'row', colspan: 8 }, 'Totals'),
        el('td', { colspan: 2, class: 'num' }, el('span', { class: 'total-label' }, 'Market value '), this.totalValue),
        this.totalPl, el('td'));
      this.table = el('table', {}, el('caption', { class: 'visually-hidden' }), el('thead', {}, head), this.tbody, el('tfoot', {}, totals));
      this.tableWrap = el('div', { class: 'table-wrap', tabindex: 0, role: 'region' }, this.table);

      this.root = el('section', { class: 'card panel', testid: `panel-${id}`, 'aria-labelledby': this.title.id },
        el('header', { class: 'panel-head' },
          el('div', { class: 'panel-name' }, this.title, this.visibility),
          el('div', { class: 'panel-actions' }, this.connEl, this.reconnectBtn,
            el('button', { type: 'button', testid: `close-${id}`, 'aria-label': 'Close panel', onclick: () => this.close() }, 'Close'))),
        this.message, this.degradedEl, this.staleEl, this.tableWrap, this.buildAddForm(), this.actionError, this.footer);
      this.setMeta(this.meta);
    }

    buildAddForm() {
      const id = this.id;
      const f = {
        symbol: field('Symbol', `add-symbol-${id}`, `add-symbol-${id}`, { maxlength: 20, spellcheck: 'false', autocapitalize: 'characters', errorTestid: `add-error-${id}` }),
        quantity: field('Quantity', `add-quantity-${id}`, `add-quantity-${id}`, { inputmode: 'decimal', errorTestid: `add-quantity-error-${id}` }),
        purchase_price: field('Purchase price', `add-price-${id}`, `add-price-${id}`, { inputmode: 'decimal', errorTestid: `add-price-error-${id}` }),
        memo: field('Memo', `add-memo-${id}`, `add-memo-${id}`, { maxlength: 500, errorTestid: `add-memo-error-${id}` }),
      };
      const submit = el('button', { type: 'submit', testid: `add-item-${id}` }, 'Add');
      const form = el('form', { class: 'add-item', novalidate: true, 'aria-label': 'Add a symbol' },
        ...Object.values(f).map((x) => x.wrap), el('div', { class: 'field submit' }, submit));
      form.addEventListener('submit', (ev) => { ev.preventDefault(); this.addItem(f, form, submit); });
      return form;
    }

    setMeta(meta) {
      this.meta = { ...this.meta, ...meta };
      this.title.textContent = this.meta.name;
      this.visibility.textContent = this.meta.is_public ? 'public' : 'private';
      this.visibility.className = `badge ${this.meta.is_public ? 'public' : 'private'}`;
      this.table.querySelector('caption').textContent = `Quotes for ${this.meta.name}`;
      this.tableWrap.setAttribute('aria-label', `Quotes for ${this.meta.name} (scrolls horizontally)`);
    }

    focus() {
      this.root.scrollIntoView({ block: 'nearest', behavior: 'smooth' });
      this.title.focus({ preventScroll: true });
    }

    setConn(conn, detail = '') {
      this.conn = conn;
      this.connWord.nodeValue = conn;
      this.connDetail.textContent = detail ? ` ${detail}` : '';
      this.connEl.className = `conn conn-${conn}`;
      this.reconnectBtn.hidden = conn !== 'offline';
    }

    setMessage(text) {
      this.message.textContent = text || '';
    }

    // ---------------- connection lifecycle

    async connect() {
      if (this.closed) return;
      const gen = ++this.gen;
      this.clearTimers();
      this.stopped = false;
      this.authStopped = false;
      this.setMessage('');
      this.setConn('connecting');
      let ticket;
      try {
        // A fresh single-use ticket per attempt; its status also tells "give up" from "retry".
        const data = await api('POST', `${API}/ws-tickets`, { watchlist_id: this.id });
        ticket = data && data.ticket;
        if (!ticket) throw new ApiError(0, 'bad_ticket', 'the server returned no ticket');
      } catch (err) {
        if (gen !== this.gen) return;
        if (!this.handleAccessError(err)) this.scheduleReconnect(`ticket request failed: ${err.message}`);
        return;
      }
      if (gen !== this.gen) return;
      const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
      const url = `${scheme}//${location.host}/ws/v1/watchlists/${encodeURIComponent(this.id)}?ticket=${encodeURIComponent(ticket)}`;
      let ws;
      try {
        ws = new WebSocket(url);
      } catch (err) {
        this.scheduleReconnect(`cannot open a WebSocket: ${err.message}`);
        return;
      }
      this.ws = ws;
      let opened = false;
      ws.onopen = () => { if (gen === this.gen) { opened = true; this.onOpen(); } };
      ws.onmessage = (ev) => { if (gen === this.gen) this.onMessage(ev.data); };
      ws.onerror = () => { /* no details are exposed to scripts; onclose follows */ };
      ws.onclose = (ev) => { if (gen === this.gen) this.onClose(ev, opened); };
    }

    onOpen() {
      this.stats.opens += 1;
      this.lastSeq = null;              // a new socket starts with a fresh snapshot
      this.snapshotPending = false;
      this.degraded = null;             // the server reports the upstream state again if it is still failing
      this.lastMessageAt = Date.now();
      this.setConn('live');
      // Reset the backoff only once the connection proved stable: a server that accepts and
      // drops at once must not be hammered at the base delay.
      this.liveTimer = setTimeout(() => { this.attempt = 0; }, LIVE_RESET_MS);
      this.renderBanners();
    }

    onClose(ev, opened) {
      this.ws = null;
      clearTimeout(this.liveTimer);
      if (ev.code === 4404) {
        this.stop('Watchlist deleted.');
        loadWatchlists();
      } else if (ev.code === 1008) {
        this.afterPolicyClose();
      } else if (!opened) {
        // A refused upgrade looks like 1006 to a browser: ask the REST API why before retrying.
        this.verifyThenRetry(`could not connect (close code ${ev.code})`);
      } else {
        this.scheduleReconnect(closeReason(ev));
      }
    }

    /** 1008 means kicked, token revoked or misbehaving; only a 401 on /me is final. */
    async afterPolicyClose() {
      const gen = this.gen;
      this.setConn('reconnecting', '(checking sign-in)');
      try {
        await api('GET', `${API}/me`);
      } catch (err) {
        if (gen !== this.gen) return;
        if (err.status === 401) {
          authLost(err, 'Your token was revoked, sign in again.');
          return;
        }
      }
      if (gen === this.gen) this.scheduleReconnect('disconnected by the server (policy)');
    }

    async verifyThenRetry(reason) {
      const gen = this.gen;
      this.setConn('reconnecting', '(checking access)');
      try {
        this.setMeta(await api('GET', `${API}/watchlists/${this.id}`) || {});
      } catch (err) {
        if (gen !== this.gen || this.handleAccessError(err)) return;
      }
      if (gen === this.gen) this.scheduleReconnect(reason);
    }

    /** 401 → sign in again; 403/404 → stop with the reason. Returns true when handled (final). */
    handleAccessError(err) {
      if (authLost(err)) return true;
      if (err.status === 403) {
        this.stop('You do not have access to this watchlist (it may have been made private).');
        return true;
      }
      if (err.status === 404) {
        this.stop('This watchlist was deleted or does not exist.');
        return true;
      }
      return false;
    }

    scheduleReconnect(reason) {
      if (this.closed || this.stopped) return;
      // Exponential backoff with "equal jitter": half fixed, half random, so many tabs
      // dropped by one server restart do not come back in lockstep.
      const exp = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
      const delay = Math.round(exp / 2 + (Math.random() * exp) / 2);
      this.attempt = Math.min(this.attempt + 1, 15);
      this.stats.reconnects += 1;
      this.lastReason = reason;
      this.reconnectAt = Date.now() + delay;
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = setTimeout(() => this.connect(), delay);
      this.setConn('reconnecting');
      this.tick();
    }

    reconnectNow() {
      if (this.closed) return;
      this.attempt = 0;
      this.connect();
    }

    /** Final stop: no more retries until the user asks (or signs in again after a 401). */
    stop(reason, { auth = false } = {}) {
      this.gen += 1;
      this.clearTimers();
      this.stopped = true;
      this.authStopped = auth;
      if (this.ws) {
        try { this.ws.close(1000); } catch (_) { /* already closing */ }
        this.ws = null;
      }
      this.setConn('offline', `— ${reason.replace(/\.$/, '')}`);
      this.setMessage(reason);
      this.renderBanners();
    }

    close() {
      this.stop('Closed.');
      this.closed = true;
      for (const row of this.rows.values()) clearTimeout(row.flashTimer);
      this.root.remove();
      state.panels.delete(this.id);
      persistOpen();
    }

    clearTimers() {
      clearTimeout(this.reconnectTimer);
      clearTimeout(this.liveTimer);
      this.reconnectTimer = null;
      this.reconnectAt = 0;
    }

    /** Called every second: countdowns and the "no message for a while" check. */
    tick() {
      if (this.conn === 'reconnecting' && this.reconnectAt) {
        const secs = Math.max(0, Math.ceil((this.reconnectAt - Date.now()) / 1000));
        this.setConn('reconnecting', `in ${secs}s`);
        this.connDetail.title = this.lastReason || '';
      }
      this.renderBanners();
    }

    // ---------------- messages

    onMessage(data) {
      this.lastMessageAt = Date.now();
      this.stats.messages += 1;
      let msg;
      try { msg = JSON.parse(data); } catch (_) { return; }   // not JSON: nothing we can use
      if (!msg || typeof msg !== 'object') return;
      if (msg.type === 'snapshot') this.onSnapshot(msg);
      else if (msg.type === 'quotes') this.onQuotes(msg);
      else if (msg.type === 'status') this.onStatus(msg);
      else if (msg.type === 'error') this.actionError.textContent = `Server: ${msg.message || msg.code}`;
      this.renderBanners();
      this.renderFooter();
    }

    onSnapshot(msg) {
      this.lastSeq = isNum(msg.seq) ? msg.seq : null;
      this.snapshotPending = false;
      this.snapshotStale = !!msg.stale;
      const quotes = Array.isArray(msg.quotes) ? msg.quotes.filter((q) => q && q.symbol) : [];
      // The snapshot is the full list: symbols missing from it were removed from the watchlist.
      const keep = new Set(quotes.map((q) => q.symbol));
      for (const symbol of [...this.rows.keys()]) if (!keep.has(symbol)) this.removeRow(symbol);
      this.order = quotes.map((q) => q.symbol);
      for (const q of quotes) this.mergeQuote(q);
      this.reorderRows();
      this.renderTotals();
    }

    onQuotes(msg) {
      if (isNum(msg.seq) && this.lastSeq != null) {
        // Older than what we already hold (queued before a snapshot we asked for): drop it.
        if (msg.seq <= this.lastSeq) return;
        if (msg.seq !== this.lastSeq + 1) {
          this.stats.gaps += 1;
          this.requestSnapshot();
        }
      }
      if (isNum(msg.seq)) this.lastSeq = msg.seq;
      this.snapshotStale = false;       // the first quotes after a stale snapshot fill the gaps in
      if (msg.ts) {
        const latency = Date.now() - Date.parse(msg.ts);
        // Only plausible values: client and server clocks may disagree.
        this.stats.latencyMs = latency >= 0 && latency < 60000 ? latency : null;
      }
      for (const q of Array.isArray(msg.quotes) ? msg.quotes : []) if (q && q.symbol) this.mergeQuote(q);
      this.renderTotals();
    }

    onStatus(msg) {
      if (msg.upstream === 'degraded') {
        const retry = isNum(msg.retry_in_ms) ? msg.retry_in_ms : 0;
        this.degraded = { message: msg.message || 'the quote source is failing', until: Date.now() + retry };
      } else if (msg.upstream === 'ok') {
        this.degraded = null;
      }
    }

    /** Asks for a full snapshot after a seq gap, to resynchronise every row. */
    requestSnapshot() {
      if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
      // One request in flight is enough; ask again if the answer is overdue.
      if (this.snapshotPending && Date.now() - this.snapshotRequestedAt < 10000) return;
      this.snapshotPending = true;
      this.snapshotRequestedAt = Date.now();
      this.stats.snapshotRequests += 1;
      this.ws.send(JSON.stringify({ type: 'snapshot' }));
    }

    renderBanners() {
      const now = Date.now();
      const d = this.degraded;
      this.degradedEl.hidden = !d || this.stopped;
      if (d) {
        const secs = Math.ceil((d.until - now) / 1000);
        const retry = secs > 0 ? `retrying in ${secs}s` : 'retrying now';
        this.degradedEl.textContent = `Quote source degraded: ${d.message} (${retry}). Prices may be out of date.`;
      }
      const silentFor = this.lastMessageAt ? now - this.lastMessageAt : 0;
      // The server only sends changes: silence is suspicious only while some symbol should move.
      const silent = silentFor > STALE_AFTER_MS && this.expectsUpdates();
      const stale = !this.stopped && this.lastMessageAt > 0 && (this.snapshotStale || silent);
      this.staleEl.hidden = !stale;
      if (stale) {
        this.staleEl.textContent = silent
          ? `Stale: no update received for ${Math.round(silentFor / 1000)}s.`
          : 'Stale: some prices are not known yet and will be filled in shortly.';
      }
    }

    /** True while some row is a real symbol whose market is not known to be closed. */
    expectsUpdates() {
      for (const { quote: q } of this.rows.values()) if (!q.error && q.market_state !== 'CLOSED') return true;
      return false;
    }

    renderFooter() {
      const parts = [];
      if (this.lastSeq != null) parts.push(`seq ${this.lastSeq}`);
      if (this.lastMessageAt) parts.push(`last update ${new Date(this.lastMessageAt).toLocaleTimeString()}`);
      if (this.stats.latencyMs != null) parts.push(`delivery ${this.stats.latencyMs} ms`);
      this.footer.textContent = parts.join(' · ');
    }

    // ---------------- rows

    ensureRow(symbol) {
      let row = this.rows.get(symbol);
      if (row) return row;
      const sid = `${this.id}-${symbol}`;
      const cells = {};
      const tds = COLUMNS.map(([key, , cls]) => {
        const cell = key === 'symbol' ? el('th', { scope: 'row' }) : el('td', { class: cls, testid: `${key}-${sid}` });
        cells[key] = cell;
        return cell;
      });
      const tr = el('tr', { testid: `row-${sid}` }, ...tds);
      row = { symbol, quote: { symbol }, memo: '', tr, cells, editTr: null, flashTimer: null };
      cells.actions.append(
        el('button', { type: 'button', testid: `edit-${sid}`, 'aria-label': `Edit ${symbol}`, onclick: () => this.toggleEdit(row) }, 'Edit'),
        el('button', { type: 'button', class: 'danger', testid: `remove-${sid}`, 'aria-label': `Remove ${symbol}`, onclick: () => this.removeItem(row) }, 'Remove'));
      this.rows.set(symbol, row);
      if (!this.order.includes(symbol)) this.order.push(symbol);
      this.tbody.append(tr);
      return row;
    }

    removeRow(symbol) {
      const row = this.rows.get(symbol);
      if (!row) return;
      clearTimeout(row.flashTimer);
      row.tr.remove();
      if (row.editTr) row.editTr.remove();
      this.rows.delete(symbol);
      this.order = this.order.filter((s) => s !== symbol);
    }

    reorderRows() {
      for (const symbol of this.order) {
        const row = this.rows.get(symbol);
        if (!row) continue;
        this.tbody.append(row.tr);
        if (row.editTr) this.tbody.append(row.editTr);
      }
    }

    /** Merges one Quote into the row's state: messages carry whole quotes, but only for changed symbols. */
    mergeQuote(q) {
      const row = this.ensureRow(q.symbol);
      const prev = row.quote.price;
      const next = { ...row.quote, ...q };
      if (!('error' in q)) delete next.error;   // the server omits `error` once a symbol resolves
      row.quote = next;
      this.renderRow(row);
      if (isNum(prev) && isNum(next.price) && next.price !== prev) this.flash(row, next.price > prev ? 'up' : 'down');
    }

    /** Applies an item from the REST API at once; the server's snapshot confirms within a tick. */
    applyItem(item) {
      const row = this.ensureRow(String(item.symbol).toUpperCase());
      const q = row.quote;
      const quantity = item.quantity ?? null;
      const cost = item.purchase_price ?? null;
      row.quote = { ...q, quantity, purchase_price: cost, unrealized_pl: computePl(q.price, quantity, cost) };
      row.memo = item.memo || '';
      this.renderRow(row);
      this.renderTotals();
    }

    /** Name, visibility and memos come from REST (quotes do not carry memos); it also shows the
     *  items before the first snapshot arrives. */
    async loadDetails() {
      try {
        const wl = await api('GET', `${API}/watchlists/${this.id}`);
        if (!wl || this.closed) return;
        this.setMeta(wl);
        for (const item of Array.isArray(wl.items) ? wl.items : []) {
          const known = this.rows.get(String(item.symbol).toUpperCase());
          if (known && this.lastSeq != null) {
            // The socket's quotes are newer than this response: take only the memo.
            known.memo = item.memo || '';
            this.renderRow(known);
          } else {
            this.applyItem(item);
          }
        }
      } catch (err) {
        if (!this.closed && !this.handleAccessError(err)) this.actionError.textContent = `Could not load items: ${err.message}.`;
      }
    }

    renderRow(row) {
      const q = row.quote;
      const c = row.cells;
      const cur = q.currency;
      const unknown = q.error === 'unknown_symbol';
      row.tr.classList.toggle('unknown', unknown);
      c.symbol.replaceChildren(el('span', { class: 'sym' }, row.symbol));
      if (row.memo) c.symbol.append(el('span', { class: 'memo', title: row.memo }, row.memo));
      c.name.textContent = q.name || DASH;
      setCell(c.price, fmtMoney(q.price, cur), q.price);
      setCell(c.change, fmtMoney(q.change, cur, true), q.change, signClass(q.change));
      setCell(c['change-pct'], fmtPercent(q.change_percent), q.change_percent, signClass(q.change_percent));
      setCell(c.volume, fmtCount(q.volume), q.volume);
      if (unknown) c.state.replaceChildren(el('span', { class: 'badge unknown', testid: `unknown-${this.id}-${row.symbol}` }, 'unknown symbol'));
      else c.state.textContent = q.market_state || DASH;
      c.time.textContent = fmtTime(q.market_time);
      setCell(c.qty, fmtCount(q.quantity, 4), q.quantity);
      setCell(c.cost, fmtMoney(q.purchase_price, cur), q.purchase_price);
      setCell(c.pl, fmtMoney(q.unrealized_pl, cur, true), q.unrealized_pl, signClass(q.unrealized_pl));
    }

    flash(row, direction) {
      const cell = row.cells.price;
      cell.classList.remove('flash-up', 'flash-down');
      void cell.offsetWidth;            // restart the animation when the price moves again within the second
      cell.classList.add(`flash-${direction}`);
      clearTimeout(row.flashTimer);
      row.flashTimer = setTimeout(() => cell.classList.remove('flash-up', 'flash-down'), FLASH_MS);
    }

    renderTotals() {
      // Totals per currency: adding yen to dollars would give a number that
      // means nothing, so a mixed watchlist shows one sum per currency.
      const value = new Map();
      const pl = new Map();
      const add = (m, cur, v) => m.set(cur, (m.get(cur) || 0) + v);
      for (const { quote: q } of this.rows.values()) {
        const cur = q.currency || '';
        if (isNum(q.price) && isNum(q.quantity)) add(value, cur, q.price * q.quantity);
        if (isNum(q.unrealized_pl)) add(pl, cur, q.unrealized_pl);
      }
      const show = (m, signed) => [...m].map(([cur, v]) => fmtMoney(v, cur || null, signed)).join(' · ');
      const single = (m) => (m.size === 1 ? [...m.values()][0] : null);
      const plSign = single(pl);
      setCell(this.totalValue, value.size ? show(value, false) : DASH, single(value));
      setCell(this.totalPl, pl.size ? show(pl, true) : DASH, plSign, isNum(plSign) ? signClass(plSign) : '');
    }

    // ---------------- item editing (REST)

    async addItem(f, form, submit) {
      for (const x of Object.values(f)) setFieldError(x, '');
      const body = { symbol: f.symbol.input.value.trim() };
      for (const key of ['quantity', 'purchase_price']) {
        const parsed = parseAmount(f[key].input.value);
        if (parsed.error) return setFieldError(f[key], parsed.error);
        if (parsed.value != null) body[key] = parsed.value;   // empty means "not set": omit
      }
      if (f.memo.input.value.trim()) body.memo = f.memo.input.value;
      submit.disabled = true;
      try {
        const item = await api('POST', `${API}/watchlists/${this.id}/items`, body);
        this.applyItem(item && item.symbol ? item : body);
        form.reset();
        f.symbol.input.focus();
      } catch (err) {
        if (!authLost(err)) setFieldError(f[errorField(err, 'symbol')] || f.symbol, err.message);
      } finally {
        submit.disabled = false;
      }
    }

    async removeItem(row) {
      this.actionError.textContent = '';
      try {
        await api('DELETE', `${API}/watchlists/${this.id}/items/${encodeURIComponent(row.symbol)}`);
        this.removeRow(row.symbol);
        this.renderTotals();
      } catch (err) {
        if (!authLost(err)) this.actionError.textContent = `Could not remove ${row.symbol}: ${err.message}`;
      }
    }

    toggleEdit(row) {
      if (row.editTr) {
        row.editTr.remove();
        row.editTr = null;
        return;
      }
      const sid = `${this.id}-${row.symbol}`;
      const q = row.quote;
      const f = {
        quantity: field('Quantity', `edit-quantity-${sid}`, `edit-quantity-${sid}`, { inputmode: 'decimal', value: q.quantity ?? '' }),
        purchase_price: field('Purchase price', `edit-price-${sid}`, `edit-price-${sid}`, { inputmode: 'decimal', value: q.purchase_price ?? '' }),
        memo: field('Memo', `edit-memo-${sid}`, `edit-memo-${sid}`, { maxlength: 500, value: row.memo }),
      };
      const error = el('span', { class: 'field-error', role: 'alert', testid: `edit-error-${sid}` });
      const cancel = () => { row.editTr.remove(); row.editTr = null; row.cells.actions.querySelector('button').focus(); };
      const form = el('form', { class: 'edit-item', novalidate: true, 'aria-label': `Edit ${row.symbol}` },
        ...Object.values(f).map((x) => x.wrap),
        el('div', { class: 'field submit' },
          el('button', { type: 'submit', testid: `edit-save-${sid}` }, 'Save'),
          el('button', { type: 'button', onclick: cancel }, 'Cancel')),
        error);
      form.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') cancel(); });
      form.addEventListener('submit', (ev) => { ev.preventDefault(); this.saveEdit(row, f, error); });
      row.editTr = el('tr', { class: 'edit-row', testid: `edit-row-${sid}` }, el('td', { colspan: COLUMNS.length }, form));
      row.tr.after(row.editTr);
      f.quantity.input.focus();
    }

    async saveEdit(row, f, error) {
      for (const x of Object.values(f)) setFieldError(x, '');
      error.textContent = '';
      // Send only what changed; a cleared number is sent as null ("not set").
      const body = {};
      for (const key of ['quantity', 'purchase_price']) {
        const parsed = parseAmount(f[key].input.value);
        if (parsed.error) return setFieldError(f[key], parsed.error);
        if (parsed.value !== (row.quote[key] ?? null)) body[key] = parsed.value;
      }
      if (f.memo.input.value !== row.memo) body.memo = f.memo.input.value;
      if (Object.keys(body).length > 0) {
        try {
          const item = await api('PATCH', `${API}/watchlists/${this.id}/items/${encodeURIComponent(row.symbol)}`, body);
          this.applyItem(item && item.symbol ? item : { symbol: row.symbol, quantity: row.quote.quantity, purchase_price: row.quote.purchase_price, memo: row.memo, ...body });
        } catch (err) {
          if (authLost(err)) return;
          const key = errorField(err, null);
          if (f[key]) setFieldError(f[key], err.message);
          else error.textContent = err.message;
          return;
        }
      }
      row.editTr.remove();
      row.editTr = null;
      row.cells.actions.querySelector('button').focus();
    }

    debug() {
      return {
        id: this.id, conn: this.conn, detail: this.connDetail.textContent.trim(), stopped: this.stopped,
        message: this.message.textContent, lastSeq: this.lastSeq, attempt: this.attempt, ...this.stats,
        degraded: !!this.degraded, stale: !this.staleEl.hidden, lastMessageAt: this.lastMessageAt,
        symbols: [...this.order],
      };
    }
  }

  function closeReason(ev) {
    const known = { 1000: 'closed by the server', 1001: 'server going away', 1006: 'connection lost', 1009: 'message too big', 1011: 'server error' };
    return `${known[ev.code] || 'disconnected'} (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ''})`;
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
      $('open-by-id-error').textContent = Number.isInteger(id) && id > 0 ? '' : 'Enter a watchlist number.';
      if (Number.isInteger(id) && id > 0) {
        openPanel(id, state.watchlists.find((w) => w.id === id));
        $('open-by-id').value = '';
      }
    });
    // A link with #token=... opened in a tab that is already showing the dashboard.
    window.addEventListener('hashchange', () => {
      const token = tokenFromFragment();
      if (token) trySignIn(token, 'The token in the link was not accepted (401).');
    });
    // Back online: skip the rest of the backoff wait.
    window.addEventListener('online', () => {
      for (const panel of state.panels.values()) if (panel.conn === 'reconnecting' && panel.reconnectTimer) panel.reconnectNow();
    });
    setInterval(() => { for (const panel of state.panels.values()) panel.tick(); }, 1000);
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
    get signedIn() { return !!state.me; },
  });

  start();
})();
