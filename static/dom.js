// DOM building and number formatting shared by every part of the dashboard.
//
// Everything the page shows is written with textContent or attributes, never
// parsed as HTML, so names and memos cannot inject markup; and nothing here sets an
// inline style or handler, so the page runs under a CSP without 'unsafe-inline'.

const SVG_NS = 'http://www.w3.org/2000/svg';

export const $ = (id) => document.getElementById(id);

function applyProps(node, props) {
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === 'testid') node.dataset.testid = value;
    else if (key === 'class') node.setAttribute('class', value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? '' : String(value));
  }
}

/** el('button', {type: 'button', testid: 'x', onclick: fn}, 'label', childNode) */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  applyProps(node, props);
  for (const child of children) if (child != null) node.append(child);
  return node;
}

/** The same for SVG elements (charts). */
export function svgEl(tag, props = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  applyProps(node, props);
  for (const child of children) if (child != null) node.append(child);
  return node;
}

/** A labelled input with its own error line, wired with aria-describedby. */
export function field(label, id, testid, attrs = {}) {
  const error = el('span', { id: `${id}-error`, class: 'field-error', role: 'alert', testid: attrs.errorTestid });
  const inputAttrs = { ...attrs };
  delete inputAttrs.errorTestid;
  const input = el('input', { id, testid, autocomplete: 'off', 'aria-describedby': error.id, ...inputAttrs });
  const wrap = el('div', { class: 'field' }, el('label', { for: id }, label), input, error);
  return { wrap, input, error };
}

export function setFieldError(f, message) {
  f.error.textContent = message || '';
  if (message) f.input.setAttribute('aria-invalid', 'true');
  else f.input.removeAttribute('aria-invalid');
}

// localStorage throws in some privacy modes; the page must still work (token in memory only).
export const storage = {
  get(key) { try { return localStorage.getItem(key); } catch (_) { return null; } },
  set(key, value) { try { localStorage.setItem(key, value); } catch (_) { /* memory only */ } },
  remove(key) { try { localStorage.removeItem(key); } catch (_) { /* nothing stored */ } },
};

// ---------------------------------------------------------------- formatting

export const DASH = '—';
export const isNum = (v) => typeof v === 'number' && Number.isFinite(v);

/** Prices >= 1 get 2 decimals; penny prices keep up to 4 so they do not read as 0.00. */
function digits(v) {
  return Math.abs(v) >= 1 || v === 0 ? { minimumFractionDigits: 2, maximumFractionDigits: 2 }
    : { minimumFractionDigits: 2, maximumFractionDigits: 4 };
}

export function fmtMoney(v, currency, signed = false) {
  if (!isNum(v)) return DASH;
  const opts = { ...digits(v), signDisplay: signed ? 'exceptZero' : 'auto' };
  // Only exact ISO 4217 codes: Yahoo's "GBp" (pence) would silently become pounds.
  if (currency && /^[A-Z]{3}$/.test(currency)) {
    try { return v.toLocaleString(undefined, { ...opts, style: 'currency', currency }); } catch (_) { /* fall through */ }
  }
  const text = v.toLocaleString(undefined, opts);
  return currency ? `${text} ${currency}` : text;
}

/** A plain number with as many decimals as `step` needs (chart axes). */
export function fmtStep(v, step) {
  const decimals = Math.max(0, Math.min(6, -Math.floor(Math.log10(step) + 1e-9)));
  return v.toLocaleString(undefined, { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

export function fmtPercent(v) {
  if (!isNum(v)) return DASH;
  return (v / 100).toLocaleString(undefined, {
    style: 'percent', minimumFractionDigits: 2, maximumFractionDigits: 2, signDisplay: 'exceptZero',
  });
}

export const fmtCount = (v, max = 0) => (isNum(v) ? v.toLocaleString(undefined, { maximumFractionDigits: max }) : DASH);

export function fmtTime(iso) {
  if (!iso) return DASH;
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return DASH;
  const today = d.toDateString() === new Date().toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'short' });
}

/** Hours and minutes of a unix time, in the browser's zone (chart axes). */
export const fmtClock = (unixS) => new Date(unixS * 1000).toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });

export const signClass = (v) => (isNum(v) && v > 0 ? 'up' : isNum(v) && v < 0 ? 'down' : '');

/** Writes a cell's text and keeps the raw number in data-value for tests and tooling. */
export function setCell(cell, text, value, cls = '') {
  cell.textContent = text;
  if (isNum(value)) cell.dataset.value = String(value);
  else delete cell.dataset.value;
  cell.classList.toggle('up', cls === 'up');
  cell.classList.toggle('down', cls === 'down');
}

/** '' means "not set"; anything else must be a number (the server judges the range). */
export function parseAmount(text) {
  const t = text.trim();
  if (t === '') return { value: null };
  const n = Number(t);
  return Number.isFinite(n) ? { value: n } : { error: 'must be a number' };
}

export const computePl = (price, qty, cost) => (isNum(price) && isNum(qty) && isNum(cost) ? (price - cost) * qty : null);
