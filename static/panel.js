// One open watchlist: its table, its subscription on the page's shared
// socket, and the REST editing of its items.
//
// A panel owns its rows and its subscription state; it does not own the
// socket. The app hands it the frames of its watchlist (after the one
// dispatcher in app.js has routed them by `watchlist_id`) and tells it when
// the socket went live or down. Subscription states:
//
//   idle ──socket live──▶ pending ──subscribed──▶ active
//     ▲                     │                      │
//     └──── socket down ────┴──────────────────────┘
//   pending/active ──refusal "unavailable"──▶ retrying ──timer──▶ pending
//   any ──refused, deleted, access lost──▶ stopped (until Reconnect)
//
// Frames count only while `active`: anything about this watchlist that
// arrives before the `subscribed` answer belongs to an earlier subscription
// (a panel closed and opened again) and is dropped. The panel keeps the epoch
// and seq of the last message it applied, and subscribes with them as `since`
// after a reconnect: the server then replays what was missed and the rows are
// updated in place, never rebuilt (no flicker).

import { API, api, errorField } from './api.js';
import {
  el, field, setFieldError, DASH, isNum, fmtMoney, fmtPercent, fmtCount, fmtTime, signClass, setCell,
  parseAmount, computePl,
} from './dom.js';
import { Sparkline, IntradayChart } from './charts.js';

const STALE_AFTER_MS = 20000;           // > 3 poll intervals at the default 5 s tick
const FLASH_MS = 1000;
const RESUBSCRIBE_MS = 3000;            // after an "unavailable" refusal (plus jitter)
const SNAPSHOT_OVERDUE_MS = 10000;

export const COLUMNS = [
  ['symbol', 'Symbol'], ['name', 'Name'], ['trend', 'Today'], ['price', 'Price', 'num'], ['change', 'Change', 'num'],
  ['change-pct', 'Change %', 'num'], ['volume', 'Volume', 'num'], ['state', 'Market'],
  ['qty', 'Quantity', 'num'], ['cost', 'Purchase price', 'num'], ['value', 'Value', 'num'], ['pl', 'P/L', 'num'],
  ['actions', 'Actions'],
];
const col = (key) => COLUMNS.findIndex(([k]) => k === key);

const REFUSALS = {
  not_found: 'This watchlist was deleted or does not exist.',
  forbidden: 'You do not have access to this watchlist (it may have been made private).',
  limit_exceeded: 'Too many watchlists open on one connection. Close a panel, then press Reconnect.',
};

export class Panel {
  /**
   * ctx, from the app: { conn, series, alerts, upstream(), send(msg), authLost(err), reconnectNow(),
   *   onDeleted(panel), onClosed(panel), onWantChanged() }
   */
  constructor(id, meta, ctx) {
    this.id = id;
    this.ctx = ctx;
    this.meta = meta || { id, name: `Watchlist ${id}` };
    this.rows = new Map();            // symbol -> { symbol, quote, memo, tr, cells, spark, editTr, flashTimer }
    this.order = [];                  // symbol order of the last snapshot
    this.totalRows = new Map();       // currency -> { tr, day, cost, value, pl }
    this.sub = 'idle';
    this.since = null;                // { epoch, seq } of the last message applied
    this.stopReason = '';
    this.retryTimer = null;
    this.snapshotPending = false;
    this.snapshotRequestedAt = 0;
    this.snapshotStale = false;
    this.lastMessageAt = 0;
    this.chartSymbol = null;
    this.closed = false;
    this.stats = {
      subscribes: 0, recovered: null, snapshots: 0, messages: 0, rowsCreated: 0, gaps: 0,
      snapshotRequests: 0, latencyMs: null,
    };
    this.build();
  }

  get stopped() { return this.sub === 'stopped'; }

  /** Whether this panel needs the socket (a stopped panel waits for the user). */
  get wantsSocket() { return !this.closed && !this.stopped; }

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
    this.reconnectBtn = el('button', { type: 'button', testid: `reconnect-${id}`, hidden: true, onclick: () => this.reconnect() }, 'Reconnect');
    this.message = el('p', { class: 'panel-message', testid: `panel-message-${id}`, role: 'alert' });
    this.degradedEl = el('div', { class: 'banner degraded', testid: `degraded-${id}`, hidden: true });
    this.staleEl = el('div', { class: 'banner stale', testid: `stale-${id}`, hidden: true });
    this.actionError = el('p', { class: 'field-error', role: 'alert', testid: `action-error-${id}` });
    this.tbody = el('tbody');
    this.tfoot = el('tfoot');
    this.footer = el('p', { class: 'panel-foot', testid: `panel-foot-${id}` });

    const head = el('tr', {}, ...COLUMNS.map(([key, label, cls]) =>
      el('th', { scope: 'col', class: [cls, key].join(' ').trim() },
        key === 'actions' ? el('span', { class: 'visually-hidden' }, label) : label)));
    this.caption = el('caption', { class: 'visually-hidden' });
    this.table = el('table', {}, this.caption, el('thead', {}, head), this.tbody, this.tfoot);
    this.tableWrap = el('div', { class: 'table-wrap', tabindex: 0, role: 'region' }, this.table);

    this.root = el('section', { class: 'card panel', testid: `panel-${id}`, 'aria-labelledby': this.title.id },
      el('header', { class: 'panel-head' },
        el('div', { class: 'panel-name' }, this.title, this.visibility),
        el('div', { class: 'panel-actions' }, this.connEl, this.reconnectBtn,
          el('button', { type: 'button', testid: `close-${id}`, 'aria-label': 'Close panel', onclick: () => this.close() }, 'Close'))),
      this.message, this.degradedEl, this.staleEl, this.tableWrap, this.buildChart(), this.buildAddForm(),
      this.actionError, this.footer);
    this.renderTotals([]);
    this.setMeta(this.meta);
  }

  buildChart() {
    const id = this.id;
    this.chart = new IntradayChart(`chart-svg-${id}`);
    this.chartTitle = el('strong', { testid: `chart-title-${id}` });
    this.chartQuote = el('span', { class: 'chart-quote' });
    this.chartBox = el('figure', { class: 'chart', testid: `chart-${id}`, hidden: true },
      el('figcaption', { class: 'chart-head' },
        el('span', {}, this.chartTitle, ' ', el('span', { class: 'hint' }, 'today'), ' ', this.chartQuote),
        el('button', { type: 'button', testid: `chart-close-${id}`, 'aria-label': 'Close chart', onclick: () => this.hideChart() }, 'Close chart')),
      this.chart.root);
    return this.chartBox;
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
    this.caption.textContent = `Quotes for ${this.meta.name}`;
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
    // Offline by a refusal: the user may try again. Reconnecting: the user may skip the wait.
    this.reconnectBtn.hidden = !(this.stopped || (conn === 'reconnecting' && this.ctx.conn.state === 'reconnecting'));
    this.reconnectBtn.textContent = this.stopped ? 'Reconnect' : 'Reconnect now';
  }

  setMessage(text) {
    this.message.textContent = text || '';
  }

  /** The state word: this panel's subscription seen through the socket's state. */
  renderConn() {
    const c = this.ctx.conn;
    if (this.stopped) {
      this.setConn('offline', `— ${this.stopReason.replace(/\.$/, '')}`);
    } else if (c.state === 'stopped') {
      this.setConn('offline', `— ${c.reason}`);
    } else if (c.state === 'reconnecting') {
      const secs = Math.max(0, Math.ceil((c.reconnectAt - Date.now()) / 1000));
      this.setConn('reconnecting', `in ${secs}s`);
      this.connDetail.title = c.reason;
    } else if (c.state === 'live' && this.sub === 'active') {
      this.setConn('live');
    } else if (this.sub === 'retrying') {
      this.setConn('reconnecting', '(the server is busy)');
    } else {
      this.setConn('connecting');
    }
  }

  // ---------------- subscription

  /** Sends `subscribe` (with `since` when it has a position) if the socket is live. */
  subscribe() {
    if (this.closed || this.stopped || this.sub === 'pending' || this.sub === 'active') return;
    clearTimeout(this.retryTimer);
    const msg = { type: 'subscribe', watchlist_id: this.id, intraday: true };
    if (this.since) msg.since = this.since;
    this.sub = this.ctx.send(msg) ? 'pending' : 'idle';
    this.snapshotPending = false;
    this.renderConn();
  }

  /** The socket is gone: the subscription with it. Rows, epoch and seq stay for `since`. */
  connectionDown() {
    clearTimeout(this.retryTimer);
    if (!this.stopped) this.sub = 'idle';
    this.renderConn();
    this.renderBanners();
  }

  onSubscribed(msg) {
    if (this.sub !== 'pending') return;
    this.sub = 'active';
    this.stats.subscribes += 1;
    this.stats.recovered = !!msg.recovered;
    this.root.dataset.recovered = String(!!msg.recovered);
    this.touch();
    this.renderConn();
  }

  onUnsubscribed(msg) {
    // Without a reason it answers our own `unsubscribe` of an earlier panel of this watchlist.
    if (!msg.reason || (this.sub !== 'active' && this.sub !== 'pending')) return;
    this.sub = 'idle';                  // the server ended it: nothing to unsubscribe
    if (msg.reason === 'deleted') {
      this.stop('Watchlist deleted.');
      this.ctx.onDeleted(this);
    } else if (msg.reason === 'forbidden') {
      this.stop('You no longer have access to this watchlist (it was made private).');
    } else {
      this.stop(`The server ended this subscription (${msg.reason}).`);
    }
  }

  /** An `error` about this watchlist: a refused subscribe, unsubscribe or snapshot request. */
  onRefusal(msg) {
    if (this.stopped) return;
    if (REFUSALS[msg.code]) {
      this.stop(REFUSALS[msg.code]);
    } else if (msg.code === 'already_subscribed') {
      // The server holds a subscription we lost track of: take it and ask for the whole state.
      this.sub = 'active';
      this.requestSnapshot();
      this.renderConn();
    } else if (msg.code === 'not_subscribed') {
      if (this.sub === 'active') {
        this.sub = 'idle';
        this.subscribe();
      }
    } else {
      // `unavailable` (the server could not check access now) and anything unknown: try again.
      this.sub = 'retrying';
      clearTimeout(this.retryTimer);
      this.retryTimer = setTimeout(() => {
        if (this.sub !== 'retrying') return;
        this.sub = 'idle';
        this.subscribe();
      }, RESUBSCRIBE_MS + Math.random() * RESUBSCRIBE_MS);
      this.renderConn();
    }
  }

  /** Final stop: no more subscribing until the user asks. */
  stop(reason) {
    if (this.sub === 'pending' || this.sub === 'active') {
      this.ctx.send({ type: 'unsubscribe', watchlist_id: this.id });
    }
    clearTimeout(this.retryTimer);
    this.sub = 'stopped';
    this.stopReason = reason;
    this.setMessage(reason);
    this.renderConn();
    this.renderBanners();
    this.ctx.onWantChanged();
  }

  /** The Reconnect button: a stopped panel tries again; otherwise skip the backoff wait. */
  reconnect() {
    if (!this.stopped) {
      this.ctx.reconnectNow();
      return;
    }
    this.sub = 'idle';
    this.stopReason = '';
    this.setMessage('');
    this.loadDetails();
    this.subscribe();
    this.ctx.onWantChanged();
    this.renderConn();
  }

  close() {
    if (this.closed) return;
    if (this.sub === 'pending' || this.sub === 'active') {
      this.ctx.send({ type: 'unsubscribe', watchlist_id: this.id });
    }
    this.closed = true;
    this.sub = 'stopped';
    clearTimeout(this.retryTimer);
    for (const row of this.rows.values()) clearTimeout(row.flashTimer);
    this.chart.dispose();
    this.root.remove();
    this.ctx.onClosed(this);
  }

  /** Called every second: countdowns and the "no message for a while" check. */
  tick() {
    this.renderConn();
    this.renderBanners();
  }

  // ---------------- frames (only while active)

  touch() {
    this.lastMessageAt = Date.now();
    this.stats.messages += 1;
  }

  /** Remembers the position of the last applied message, for `since`. */
  advance(msg) {
    if (typeof msg.epoch === 'string' && msg.epoch && isNum(msg.seq)) this.since = { epoch: msg.epoch, seq: msg.seq };
  }

  onSnapshot(msg) {
    if (this.sub !== 'active') return;
    this.touch();
    this.stats.snapshots += 1;
    this.advance(msg);
    this.snapshotPending = false;
    this.snapshotStale = !!msg.stale;
    const quotes = Array.isArray(msg.quotes) ? msg.quotes.filter((q) => q && q.symbol) : [];
    // The snapshot is the full list: symbols missing from it were removed from the watchlist.
    const keep = new Set(quotes.map((q) => q.symbol));
    for (const symbol of [...this.rows.keys()]) if (!keep.has(symbol)) this.removeRow(symbol);
    this.order = quotes.map((q) => q.symbol);
    for (const q of quotes) {
      if (Array.isArray(q.intraday)) this.ctx.series.set(q.symbol, q.intraday);
      this.mergeQuote(q);
    }
    this.reorderRows();
    if (Array.isArray(msg.totals)) this.renderTotals(msg.totals);
    if (this.chartSymbol && !this.rows.has(this.chartSymbol)) this.hideChart();
    this.renderBanners();
    this.renderFooter();
  }

  onQuotes(msg) {
    if (this.sub !== 'active') return;
    this.touch();
    const seq = msg.seq;
    if (this.since && isNum(seq)) {
      if (msg.epoch !== this.since.epoch) {
        // Another history than ours: only a snapshot can say what the state is.
        this.stats.gaps += 1;
        this.requestSnapshot();
      } else if (seq <= this.since.seq) {
        return;                         // older than what we hold (queued before a snapshot we asked for)
      } else if (seq !== this.since.seq + 1) {
        this.stats.gaps += 1;
        this.requestSnapshot();
      }
    }
    this.advance(msg);
    this.snapshotStale = false;       // the first quotes after a stale snapshot fill the gaps in
    if (msg.ts) {
      const latency = Date.now() - Date.parse(msg.ts);
      // Only plausible values: client and server clocks may disagree.
      this.stats.latencyMs = latency >= 0 && latency < 60000 ? latency : null;
    }
    const now = (Date.parse(msg.ts) || Date.now()) / 1000;
    for (const q of Array.isArray(msg.quotes) ? msg.quotes : []) {
      if (!q || !q.symbol) continue;
      // The server appends the same tick to its own series: at the quote's market time.
      const at = q.market_time ? Date.parse(q.market_time) / 1000 : now;
      if (isNum(q.price)) this.ctx.series.addTick(q.symbol, Math.floor(at), q.price);
      this.mergeQuote(q);
    }
    if (Array.isArray(msg.totals)) this.renderTotals(msg.totals);
    this.renderBanners();
    this.renderFooter();
  }

  /** Asks for a full snapshot after a seq gap, to resynchronise every row. */
  requestSnapshot() {
    // One request in flight is enough; ask again if the answer is overdue.
    if (this.snapshotPending && Date.now() - this.snapshotRequestedAt < SNAPSHOT_OVERDUE_MS) return;
    if (!this.ctx.send({ type: 'snapshot', watchlist_id: this.id })) return;
    this.snapshotPending = true;
    this.snapshotRequestedAt = Date.now();
    this.stats.snapshotRequests += 1;
  }

  // ---------------- banners and footer

  renderBanners() {
    const now = Date.now();
    const d = this.ctx.upstream();
    const showDegraded = !!d && !this.stopped;
    this.degradedEl.hidden = !showDegraded;
    if (showDegraded) {
      const secs = Math.ceil((d.until - now) / 1000);
      const retry = secs > 0 ? ` (retrying in ${secs}s)` : '';
      this.degradedEl.textContent = `Quote source degraded: ${d.message}${retry}. Prices may be out of date.`;
    }
    const active = this.sub === 'active' && this.ctx.conn.state === 'live';
    const silentFor = this.lastMessageAt ? now - this.lastMessageAt : 0;
    // The server only sends changes: silence is suspicious only while some symbol should move.
    const silent = silentFor > STALE_AFTER_MS && this.expectsUpdates();
    const stale = active && this.lastMessageAt > 0 && (this.snapshotStale || silent);
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
    if (this.since) parts.push(`seq ${this.since.seq}`);
    if (this.lastMessageAt) parts.push(`last update ${new Date(this.lastMessageAt).toLocaleTimeString()}`);
    if (this.stats.latencyMs != null) parts.push(`delivery ${this.stats.latencyMs} ms`);
    if (this.stats.recovered) parts.push('resumed after a reconnect without a reload');
    this.footer.textContent = parts.join(' · ');
  }

  // ---------------- rows

  ensureRow(symbol) {
    let row = this.rows.get(symbol);
    if (row) return row;
    const sid = `${this.id}-${symbol}`;
    const cells = {};
    const tds = COLUMNS.map(([key, , cls]) => {
      const cell = key === 'symbol' ? el('th', { scope: 'row' }) : el('td', { class: [cls, key].join(' ').trim(), testid: `${key}-${sid}` });
      cells[key] = cell;
      return cell;
    });
    const tr = el('tr', { testid: `row-${sid}` }, ...tds);
    const spark = new Sparkline();
    spark.svg.dataset.testid = `spark-${sid}`;
    // editTr: the form row open under this one (editKind 'edit' or 'alert'), at most one.
    row = { symbol, quote: { symbol }, memo: '', tr, cells, spark, editTr: null, editKind: null, flashTimer: null };
    cells.trend.append(el('button', {
      type: 'button', class: 'spark-button', testid: `chart-open-${sid}`, 'aria-label': `Intraday chart of ${symbol}`,
      'aria-expanded': 'false', onclick: () => this.toggleChart(symbol),
    }, spark.svg));
    cells.actions.append(el('div', { class: 'row-actions' },
      el('button', { type: 'button', testid: `edit-${sid}`, 'aria-label': `Edit ${symbol}`, onclick: () => this.toggleEdit(row) }, 'Edit'),
      el('button', {
        type: 'button', class: 'alert-button', testid: `alert-new-${sid}`, 'aria-label': `Create a price alert for ${symbol}`,
        'aria-expanded': 'false', onclick: () => this.toggleAlert(row),
      }, 'Alert'),
      el('button', { type: 'button', class: 'danger', testid: `remove-${sid}`, 'aria-label': `Remove ${symbol}`, onclick: () => this.removeItem(row) }, 'Remove')));
    // A click anywhere else on the row opens its chart too (the button is there for keyboards).
    tr.addEventListener('click', (ev) => {
      if (!ev.target.closest('button, input, a, form, .memo')) this.toggleChart(symbol);
    });
    this.rows.set(symbol, row);
    this.stats.rowsCreated += 1;
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

  /** Puts rows in snapshot order, moving only those out of place (a moved row would lose its focus). */
  reorderRows() {
    let prev = null;
    for (const symbol of this.order) {
      const row = this.rows.get(symbol);
      if (!row) continue;
      const want = prev ? (prev.editTr || prev.tr).nextSibling : this.tbody.firstChild;
      if (want !== row.tr) {
        this.tbody.insertBefore(row.tr, want);
        if (row.editTr) row.tr.after(row.editTr);
      }
      prev = row;
    }
  }

  /** Merges one Quote into the row's state: messages carry whole quotes, but only for changed symbols. */
  mergeQuote(q) {
    const row = this.ensureRow(q.symbol);
    const prev = row.quote.price;
    const { intraday, ...fields } = q;     // the series lives in the shared store, not in the row
    const next = { ...row.quote, ...fields };
    if (!('error' in q)) delete next.error;   // the server omits `error` once a symbol resolves
    row.quote = next;
    this.renderRow(row);
    this.renderSpark(row);
    if (isNum(prev) && isNum(next.price) && next.price !== prev) this.flash(row, next.price > prev ? 'up' : 'down');
    if (isNum(next.price) && !next.error && this.ctx.series.get(row.symbol).length < 2) this.ctx.series.backfill(row.symbol);
  }

  /** A series changed outside a message (a REST backfill). */
  seriesChanged(symbol) {
    const row = this.rows.get(symbol);
    if (row) this.renderSpark(row);
  }

  renderSpark(row) {
    row.spark.draw(this.ctx.series.get(row.symbol), row.quote.previous_close);
    if (this.chartSymbol === row.symbol) this.renderChart();
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
        if (known && this.since) {
          // The socket's quotes are newer than this response: take only the memo.
          known.memo = item.memo || '';
          this.renderRow(known);
        } else {
          this.applyItem(item);
        }
      }
    } catch (err) {
      if (this.closed || this.ctx.authLost(err)) return;
      if (err.status === 403) this.stop(REFUSALS.forbidden);
      else if (err.status === 404) this.stop(REFUSALS.not_found);
      else this.actionError.textContent = `Could not load items: ${err.message}.`;
    }
  }

  renderRow(row) {
    const q = row.quote;
    const c = row.cells;
    const cur = q.currency;
    const unknown = q.error === 'unknown_symbol';
    row.tr.classList.toggle('unknown', unknown);
    if (cur) row.tr.dataset.currency = cur;
    c.symbol.replaceChildren(el('span', { class: 'sym' }, row.symbol));
    if (row.memo) c.symbol.append(el('span', { class: 'memo', title: row.memo }, row.memo));
    c.name.textContent = q.name || DASH;
    setCell(c.price, fmtMoney(q.price, cur), q.price);
    setCell(c.change, fmtMoney(q.change, cur, true), q.change, signClass(q.change));
    setCell(c['change-pct'], fmtPercent(q.change_percent), q.change_percent, signClass(q.change_percent));
    setCell(c.volume, fmtCount(q.volume), q.volume);
    // The market's state, and under it the time of the quote (as the memo sits under the symbol).
    if (unknown) c.state.replaceChildren(el('span', { class: 'badge unknown', testid: `unknown-${this.id}-${row.symbol}` }, 'unknown symbol'));
    else {
      c.state.replaceChildren(el('span', { class: 'market-state' }, q.market_state || DASH),
        el('span', { class: 'market-time', testid: `time-${this.id}-${row.symbol}` }, fmtTime(q.market_time)));
    }
    setCell(c.qty, fmtCount(q.quantity, 4), q.quantity);
    setCell(c.cost, fmtMoney(q.purchase_price, cur), q.purchase_price);
    const value = isNum(q.price) && isNum(q.quantity) ? q.price * q.quantity : null;
    setCell(c.value, fmtMoney(value, cur), value);
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

  /** The server's totals, one row per currency (adding yen to dollars would mean nothing).
   *  Rows are kept and updated in place, like the quote rows. */
  renderTotals(totals) {
    const seen = new Set();
    for (const t of totals) {
      if (!t || typeof t.currency !== 'string') continue;
      seen.add(t.currency);
      const r = this.totalRows.get(t.currency) || this.totalRow(t.currency);
      const cur = t.currency;
      setCell(r.day, fmtMoney(t.day_change, cur, true), t.day_change, signClass(t.day_change));
      setCell(r.cost, fmtMoney(t.cost, cur), t.cost);
      setCell(r.value, fmtMoney(t.market_value, cur), t.market_value);
      setCell(r.pl, fmtMoney(t.unrealized_pl, cur, true), t.unrealized_pl, signClass(t.unrealized_pl));
    }
    for (const [cur, r] of [...this.totalRows]) {
      if (!seen.has(cur)) {
        r.tr.remove();
        this.totalRows.delete(cur);
      }
    }
    if (!this.emptyTotals) {
      this.emptyTotals = el('tr', { class: 'totals', testid: `totals-empty-${this.id}` },
        el('th', { scope: 'row', colspan: col('change') }, 'Totals'),
        el('td', { colspan: COLUMNS.length - col('change'), class: 'hint' }, 'No positions: give a symbol a quantity to see its value here.'));
    }
    if (this.totalRows.size === 0) this.tfoot.replaceChildren(this.emptyTotals);
    else this.emptyTotals.remove();
  }

  totalRow(currency) {
    const tid = `${this.id}-${currency}`;
    const num = (key, title) => el('td', { class: 'num', testid: `total-${key}-${tid}`, title });
    const r = {
      day: num('day', 'Day change'),
      cost: el('span', { testid: `total-cost-${tid}` }),
      value: num('value', 'Market value'),
      pl: num('pl', 'Unrealized P/L'),
    };
    // Under the columns they sum: day change under Change, cost beside Purchase price,
    // value under Value, P/L under P/L.
    r.tr = el('tr', { class: 'totals', testid: `totals-${tid}` },
      el('th', { scope: 'row', colspan: col('change') }, `Total ${currency}`),
      r.day,
      el('td', { class: 'num', colspan: col('value') - col('change') - 1, title: 'Cost' }, el('span', { class: 'total-label' }, 'cost '), r.cost),
      r.value, r.pl, el('td'));
    this.totalRows.set(currency, r);
    this.tfoot.append(r.tr);
    return r;
  }

  // ---------------- intraday chart

  toggleChart(symbol) {
    if (this.chartSymbol === symbol) this.hideChart();
    else this.showChart(symbol);
  }

  showChart(symbol) {
    if (!this.rows.has(symbol)) return;
    this.markCharted(false);
    this.chartSymbol = symbol;
    this.markCharted(true);
    this.chartBox.hidden = false;
    this.renderChart();
    this.chartBox.scrollIntoView({ block: 'nearest' });
  }

  hideChart() {
    this.markCharted(false);
    this.chartSymbol = null;
    this.chartBox.hidden = true;
  }

  markCharted(on) {
    const row = this.chartSymbol && this.rows.get(this.chartSymbol);
    if (!row) return;
    row.tr.classList.toggle('charted', on);
    row.cells.trend.firstChild.setAttribute('aria-expanded', String(on));
  }

  renderChart() {
    const row = this.rows.get(this.chartSymbol);
    if (!row) return;
    const q = row.quote;
    this.chartTitle.textContent = q.name ? `${row.symbol} · ${q.name}` : row.symbol;
    this.chartQuote.textContent = `${fmtMoney(q.price, q.currency)} ${fmtPercent(q.change_percent)}`;
    this.chartQuote.className = `chart-quote ${signClass(q.change)}`;
    this.chart.update(this.ctx.series.get(row.symbol), {
      label: `Intraday prices of ${row.symbol}`, previousClose: q.previous_close, currency: q.currency,
    });
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
      if (!this.ctx.authLost(err)) setFieldError(f[errorField(err, 'symbol')] || f.symbol, err.message);
    } finally {
      submit.disabled = false;
    }
    return undefined;
  }

  async removeItem(row) {
    this.actionError.textContent = '';
    try {
      await api('DELETE', `${API}/watchlists/${this.id}/items/${encodeURIComponent(row.symbol)}`);
      if (this.chartSymbol === row.symbol) this.hideChart();
      this.removeRow(row.symbol);
    } catch (err) {
      if (!this.ctx.authLost(err)) this.actionError.textContent = `Could not remove ${row.symbol}: ${err.message}`;
    }
  }

  /** Removes the form row under `row`, whichever it is. */
  closeForm(row) {
    if (!row.editTr) return;
    row.editTr.remove();
    row.editTr = null;
    row.editKind = null;
    row.cells.actions.querySelector('.alert-button').setAttribute('aria-expanded', 'false');
  }

  /** The new-alert form under a row, prefilled from its quote; the alerts module builds it. */
  toggleAlert(row) {
    const wasOpen = row.editKind === 'alert';
    this.closeForm(row);
    if (wasOpen) return;
    const sid = `${this.id}-${row.symbol}`;
    const button = row.cells.actions.querySelector('.alert-button');
    const { form, focus } = this.ctx.alerts.form(sid, row.symbol, row.quote, () => {
      if (row.editKind !== 'alert') return;
      this.closeForm(row);
      button.focus();
    });
    row.editTr = el('tr', { class: 'edit-row', testid: `alert-row-${sid}` }, el('td', { colspan: COLUMNS.length }, form));
    row.editKind = 'alert';
    button.setAttribute('aria-expanded', 'true');
    row.tr.after(row.editTr);
    focus();
  }

  toggleEdit(row) {
    const wasOpen = row.editKind === 'edit';
    this.closeForm(row);
    if (wasOpen) return;
    const sid = `${this.id}-${row.symbol}`;
    const q = row.quote;
    const f = {
      quantity: field('Quantity', `edit-quantity-${sid}`, `edit-quantity-${sid}`, { inputmode: 'decimal', value: q.quantity ?? '' }),
      purchase_price: field('Purchase price', `edit-price-${sid}`, `edit-price-${sid}`, { inputmode: 'decimal', value: q.purchase_price ?? '' }),
      memo: field('Memo', `edit-memo-${sid}`, `edit-memo-${sid}`, { maxlength: 500, value: row.memo }),
    };
    const error = el('span', { class: 'field-error', role: 'alert', testid: `edit-error-${sid}` });
    const cancel = () => { this.closeForm(row); row.cells.actions.querySelector('button').focus(); };
    const form = el('form', { class: 'edit-item', novalidate: true, 'aria-label': `Edit ${row.symbol}` },
      ...Object.values(f).map((x) => x.wrap),
      el('div', { class: 'field submit' },
        el('button', { type: 'submit', testid: `edit-save-${sid}` }, 'Save'),
        el('button', { type: 'button', onclick: cancel }, 'Cancel')),
      error);
    form.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') cancel(); });
    form.addEventListener('submit', (ev) => { ev.preventDefault(); this.saveEdit(row, f, error); });
    row.editTr = el('tr', { class: 'edit-row', testid: `edit-row-${sid}` }, el('td', { colspan: COLUMNS.length }, form));
    row.editKind = 'edit';
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
        if (this.ctx.authLost(err)) return undefined;
        const key = errorField(err, null);
        if (f[key]) setFieldError(f[key], err.message);
        else error.textContent = err.message;
        return undefined;
      }
    }
    this.closeForm(row);
    row.cells.actions.querySelector('button').focus();
    return undefined;
  }

  /** Read-only state for automated browser tests (window.quotecast.panels). */
  debug() {
    return {
      id: this.id, conn: this.conn, detail: this.connDetail.textContent.trim(), sub: this.sub,
      stopped: this.stopped || this.ctx.conn.state === 'stopped', message: this.message.textContent,
      epoch: this.since && this.since.epoch, lastSeq: this.since ? this.since.seq : null, ...this.stats,
      degraded: !this.degradedEl.hidden, stale: !this.staleEl.hidden, lastMessageAt: this.lastMessageAt,
      symbols: [...this.order], chart: this.chartSymbol,
    };
  }
}
