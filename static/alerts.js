// Price alerts on the dashboard (SPEC "Price alerts"): the form that creates
// one from a watchlist row, the list of the user's alerts, the recent events,
// and a toast for each `alert` frame.
//
// Alerts belong to the user, not to a watchlist: an `alert` frame comes on
// the page's one socket whatever panels are open, so this module owns its own
// part of the sidebar and the toasts, and the app routes the frame here. The
// panels only ask it for a form (`form()`), which they put under a row.
//
// Events are fetched with `GET /api/v1/alerts/events?after=CURSOR`, oldest
// first, as the contract pages them: the cursor is the last event id seen, so
// a refresh after a frame, or after the socket was down, fetches only what is
// new and misses nothing.

import { API, api } from './api.js';
import { $, el, field, setFieldError, fmtTime, isNum } from './dom.js';

const EVENTS_SHOWN = 8;                 // the newest events kept in the sidebar
const EVENTS_PAGE = 500;                // the server's largest page
const TOAST_MS = 20000;
const MAX_TOASTS = 4;

export const CONDITIONS = [
  ['above', 'Price at or above'],
  ['below', 'Price at or below'],
  ['cross_above', 'Price crosses above'],
  ['cross_below', 'Price crosses below'],
  ['change_pct_above', 'Day change % at or above'],
  ['change_pct_below', 'Day change % at or below'],
];
const SHORT = {
  above: 'above', below: 'below', cross_above: 'crosses above', cross_below: 'crosses below',
  change_pct_above: 'change ≥', change_pct_below: 'change ≤',
};
const FORM_FIELDS = ['condition', 'threshold', 'repeat', 'note'];

const onPct = (condition) => String(condition).startsWith('change_pct');

/** A threshold as people read it: a plain price, or a signed percentage. */
export function fmtThreshold(condition, v) {
  if (!isNum(v)) return String(v);
  if (onPct(condition)) return `${v > 0 ? '+' : ''}${v.toLocaleString(undefined, { maximumFractionDigits: 4 })}%`;
  return v.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 6 });
}

/** "AAPL crosses above 105.00" */
export const describe = (a) => `${a.symbol} ${SHORT[a.condition] || a.condition} ${fmtThreshold(a.condition, a.threshold)}`;

const fmtPrice = (v) => (isNum(v) ? v.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 6 }) : '—');

/** What a form starts with for a condition: the current price, or the current change. */
function prefill(condition, quote) {
  const v = onPct(condition) ? quote.change_percent : quote.price;
  return isNum(v) ? String(Math.round(v * 10000) / 10000) : '';
}

export class Alerts {
  /** ctx, from the app: { authLost(err), onChange() } — onChange when the set of enabled alerts may have changed. */
  constructor(ctx) {
    this.ctx = ctx;
    this.alerts = [];
    this.events = [];                   // newest first, at most EVENTS_SHOWN
    this.cursor = 0;                    // the last event id fetched
    this.loaded = false;
    this.eventsLoading = null;          // the fetch in flight; another one waits for it
    this.eventsAgain = false;
    this.stats = { frames: 0, toasts: 0, eventLoads: 0 };
  }

  /** Whether some alert may still fire (the page then keeps its socket for the frames). */
  get anyEnabled() { return this.alerts.some((a) => a.enabled); }

  // ---------------- loading

  /** After signing in (perhaps as someone else): everything from the start. */
  async load() {
    this.events = [];
    this.cursor = 0;
    await Promise.all([this.loadAlerts(), this.loadEvents()]);
  }

  async loadAlerts() {
    try {
      const data = await api('GET', `${API}/alerts`);
      this.alerts = Array.isArray(data) ? data : [];
      this.loaded = true;
      $('alerts-error').textContent = '';
      this.renderAlerts();
      this.ctx.onChange();
    } catch (err) {
      if (!this.ctx.authLost(err)) $('alerts-error').textContent = `Could not load your alerts: ${err.message}.`;
    }
  }

  /** Fetches the events after the cursor, page by page; one fetch at a time (a frame
   *  arriving during one asks for another after it, so none is missed). */
  loadEvents() {
    if (this.eventsLoading) {
      this.eventsAgain = true;
      return this.eventsLoading;
    }
    this.eventsLoading = (async () => {
      try {
        do {
          this.eventsAgain = false;
          await this.fetchEvents();
        } while (this.eventsAgain);
      } finally {
        this.eventsLoading = null;
      }
    })();
    return this.eventsLoading;
  }

  async fetchEvents() {
    this.stats.eventLoads += 1;
    try {
      for (;;) {
        const page = await api('GET', `${API}/alerts/events?after=${this.cursor}&limit=${EVENTS_PAGE}`);
        const list = Array.isArray(page) ? page : [];
        for (const e of list) {
          if (isNum(e.event_id) && e.event_id > this.cursor) this.cursor = e.event_id;
        }
        this.events = [...list.reverse(), ...this.events].slice(0, EVENTS_SHOWN);
        if (list.length < EVENTS_PAGE) break;
      }
      $('events-error').textContent = '';
      this.renderEvents();
    } catch (err) {
      if (!this.ctx.authLost(err)) $('events-error').textContent = `Could not load recent alerts: ${err.message}.`;
    }
  }

  /** Signed out: nothing of the last user stays on the page. */
  clear() {
    this.alerts = [];
    this.events = [];
    this.cursor = 0;
    this.loaded = false;
    this.renderAlerts();
    this.renderEvents();
    $('toasts').replaceChildren();
    for (const id of ['alerts-error', 'events-error', 'alerts-status']) $(id).textContent = '';
  }

  // ---------------- the socket

  /** An `alert` frame: tell the user, then bring the events and the alert's state up to date. */
  onFrame(msg) {
    this.stats.frames += 1;
    this.toast(msg);
    this.loadEvents();
    this.loadAlerts();                  // a `once` alert is now disabled, a `rearm` one fired
  }

  /** The socket is back: events stored while it was down are fetched (no toast for them). */
  onReconnect() {
    if (this.loaded) this.loadEvents();
  }

  toast(msg) {
    const box = $('toasts');
    const text = `Alert: ${describe(msg)} — now ${fmtPrice(msg.price)}`;
    const item = el('div', { class: 'toast', testid: `toast-${msg.event_id}` },
      el('span', { class: 'toast-text' }, text),
      el('button', { type: 'button', testid: `toast-dismiss-${msg.event_id}`, 'aria-label': `Dismiss: ${text}`, onclick: () => item.remove() }, 'Dismiss'));
    box.append(item);
    while (box.children.length > MAX_TOASTS) box.firstElementChild.remove();
    this.stats.toasts += 1;
    setTimeout(() => item.remove(), TOAST_MS);
  }

  // ---------------- the list

  renderAlerts() {
    const list = $('alert-list');
    list.replaceChildren(...this.alerts.map((a) => this.alertItem(a)));
    $('alerts-empty').hidden = this.alerts.length > 0;
  }

  alertItem(a) {
    const what = describe(a);
    const slot = el('div', { class: 'wl-slot' });
    const word = !a.enabled ? 'off' : a.state;
    const repeat = a.repeat === 'rearm' ? 'repeats' : 'once';
    const fired = a.last_fired_at ? `last fired ${fmtTime(a.last_fired_at)}` : null;
    return el('li', { class: `alert-item${a.enabled ? '' : ' disabled'}`, testid: `alert-item-${a.id}` },
      el('div', { class: 'wl-title' },
        el('span', { class: 'wl-name', testid: `alert-text-${a.id}` }, what),
        el('span', { class: `badge alert-${word}`, testid: `alert-state-${a.id}` }, word)),
      el('div', { class: 'hint alert-meta' }, [repeat, fired, a.note || null].filter(Boolean).join(' · ')),
      el('div', { class: 'wl-actions' },
        el('button', {
          type: 'button', testid: `alert-toggle-${a.id}`, 'aria-label': `${a.enabled ? 'Disable' : 'Enable'} alert: ${what}`,
          onclick: (ev) => this.setEnabled(a, !a.enabled, slot, ev.currentTarget),
        }, a.enabled ? 'Disable' : 'Enable'),
        el('button', {
          type: 'button', class: 'danger', testid: `alert-delete-${a.id}`, 'aria-label': `Delete alert: ${what}`,
          onclick: () => this.askDelete(a, slot),
        }, 'Delete')),
      slot);
  }

  async setEnabled(a, enabled, slot, button) {
    button.disabled = true;
    try {
      await api('PATCH', `${API}/alerts/${a.id}`, { enabled });
      this.status(`Alert ${describe(a)} ${enabled ? 'enabled' : 'disabled'}.`);
      await this.loadAlerts();
      document.querySelector(`[data-testid="alert-toggle-${a.id}"]`)?.focus();
    } catch (err) {
      button.disabled = false;
      if (!this.ctx.authLost(err)) slotError(slot, a.id, `Could not ${enabled ? 'enable' : 'disable'}: ${err.message}`);
    }
  }

  /** In-page confirmation, as for watchlists. */
  askDelete(a, slot) {
    const cancel = el('button', { type: 'button', testid: `alert-cancel-delete-${a.id}`, onclick: () => slot.replaceChildren() }, 'Cancel');
    const confirmBtn = el('button', {
      type: 'button', class: 'danger', testid: `alert-confirm-delete-${a.id}`,
      onclick: async () => {
        confirmBtn.disabled = true;
        try {
          await api('DELETE', `${API}/alerts/${a.id}`);
          this.status(`Alert ${describe(a)} deleted.`);
          await this.loadAlerts();
          $('alerts-title').focus();
        } catch (err) {
          if (!this.ctx.authLost(err)) slotError(slot, a.id, `Could not delete: ${err.message}`);
        }
      },
    }, 'Yes, delete');
    slot.replaceChildren(el('div', { class: 'confirm', role: 'group', 'aria-label': 'Confirm deletion' },
      el('p', {}, `Delete the alert “${describe(a)}”?`), el('div', { class: 'row' }, confirmBtn, cancel)));
    cancel.focus();
  }

  status(message) {
    $('alerts-status').textContent = message;
  }

  renderEvents() {
    const list = $('alert-events');
    list.replaceChildren(...this.events.map((e) => {
      const hook = e.webhook ? el('span', { class: 'hint' }, ` · webhook ${e.webhook.status}`) : null;
      return el('li', { class: 'event-item', testid: `alert-event-${e.event_id}` },
        el('span', { class: 'wl-name' }, describe(e)),
        el('span', { class: 'event-meta' },
          el('span', { class: 'num' }, `at ${fmtPrice(e.price)}`), ', ',
          el('time', { datetime: e.fired_at }, fmtTime(e.fired_at)), hook));
    }));
    $('events-empty').hidden = this.events.length > 0;
  }

  // ---------------- the form under a row

  /**
   * The form that creates an alert on `symbol`, prefilled from `quote`; `close()` is called
   * when it is done with (created or cancelled).
   */
  form(sid, symbol, quote, close) {
    const ids = (name) => `alert-${name}-${sid}`;
    const conditionError = el('span', { id: `${ids('condition')}-error`, class: 'field-error', role: 'alert' });
    const condition = el('select', { id: ids('condition'), testid: ids('condition'), 'aria-describedby': conditionError.id },
      ...CONDITIONS.map(([value, label]) => el('option', { value }, label)));
    const f = {
      condition: { input: condition, error: conditionError },
      threshold: field('Threshold', ids('threshold'), ids('threshold'),
        { inputmode: 'decimal', value: prefill('above', quote), errorTestid: `${ids('threshold')}-error` }),
      note: field('Note (optional)', ids('note'), ids('note'), { maxlength: 500 }),
    };
    // Switching between a price and a percent condition swaps the prefilled value,
    // unless the user typed one.
    let typed = false;
    f.threshold.input.addEventListener('input', () => { typed = true; });
    condition.addEventListener('change', () => {
      if (!typed) f.threshold.input.value = prefill(condition.value, quote);
    });
    const repeatName = ids('repeat');
    const radio = (value, label, hint) => {
      const id = `${repeatName}-${value}`;
      const input = el('input', { type: 'radio', name: repeatName, id, value, testid: id, checked: value === 'once' });
      return el('div', { class: 'radio' }, input, el('label', { for: id }, label, el('span', { class: 'hint' }, ` ${hint}`)));
    };
    const repeat = el('fieldset', { class: 'field repeat' },
      el('legend', {}, 'Repeat'),
      radio('once', 'Once', '(then it is disabled)'),
      radio('rearm', 'Rearm', '(again after the price moves back)'));
    const error = el('p', { class: 'field-error', role: 'alert', testid: ids('error') });
    const submit = el('button', { type: 'submit', testid: ids('save') }, 'Create alert');
    const form = el('form', { class: 'alert-form edit-item', novalidate: true, 'aria-label': `New alert on ${symbol}` },
      el('div', { class: 'field' }, el('label', { for: condition.id }, 'Condition'), condition, conditionError),
      f.threshold.wrap, repeat, f.note.wrap,
      el('div', { class: 'field submit' }, submit,
        el('button', { type: 'button', testid: ids('cancel'), onclick: () => close() }, 'Cancel')),
      error);
    form.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') close(); });
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      for (const key of Object.keys(f)) setFieldError(f[key], '');
      error.textContent = '';
      const raw = f.threshold.input.value.trim();
      const threshold = Number(raw);
      if (raw === '' || !Number.isFinite(threshold)) {
        setFieldError(f.threshold, 'Enter a number.');
        f.threshold.input.focus();
        return;
      }
      const body = {
        symbol, condition: condition.value, threshold,
        repeat: form.querySelector(`input[name="${repeatName}"]:checked`)?.value || 'once',
      };
      if (f.note.input.value.trim()) body.note = f.note.input.value;
      submit.disabled = true;
      try {
        const created = await api('POST', `${API}/alerts`, body);
        this.status(`Alert created: ${describe(created || body)}.`);
        close(true);
        await this.loadAlerts();
      } catch (err) {
        if (this.ctx.authLost(err)) return;
        const key = errorKey(err);
        if (key && f[key]) {
          setFieldError(f[key], err.message);
          f[key].input.focus();
        } else {
          error.textContent = `Could not create the alert: ${err.message}`;
        }
      } finally {
        submit.disabled = false;
      }
    });
    return { form, focus: () => condition.focus() };
  }

  debug() {
    return {
      alerts: this.alerts.map((a) => ({ id: a.id, symbol: a.symbol, enabled: a.enabled, state: a.state })),
      events: this.events.map((e) => e.event_id), cursor: this.cursor, ...this.stats,
    };
  }
}

/** Which form field a 422 is about: the body's `field`, else the "field: ..." prefix. */
function errorKey(err) {
  if (err.field && FORM_FIELDS.includes(err.field)) return err.field;
  const m = /^([a-z_]+):/.exec(err.message || '');
  return m && FORM_FIELDS.includes(m[1]) ? m[1] : null;
}

function slotError(slot, id, message) {
  slot.replaceChildren(el('span', { class: 'field-error', role: 'alert', testid: `alert-error-${id}` }, message));
}
