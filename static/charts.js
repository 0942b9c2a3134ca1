// Today's price series per symbol and the two ways the page draws them: a
// sparkline in each row and a larger intraday chart for one row at a time.
// Hand-drawn SVG: a few dozen lines do what a chart library would, with no
// dependency to vendor, and nothing that needs inline styles (colours come
// from classes in style.css, so the CSP needs no 'unsafe-inline').
//
// The series come from the server: `intraday` in each snapshot (the page
// subscribes with `intraday:true`), the ticks of each `quotes` message
// appended the way the server appends them (one point a minute), and
// GET /api/v1/quotes/{symbol}/intraday for a symbol whose snapshot came
// before its first upstream answer.

import { API, api } from './api.js';
import { el, svgEl, isNum, fmtStep, fmtClock, fmtMoney } from './dom.js';

const MAX_POINTS = 600;          // as the server keeps: a trading day at one a minute, plus bars
const TICK_BUCKET_S = 60;        // ticks in the same minute share one point
const BACKFILL_EVERY_MS = 60000; // at most one REST request a minute per symbol

const validPoint = (p) => Array.isArray(p) && isNum(p[0]) && isNum(p[1]);

/** Series by symbol, shared by every panel (a symbol in two watchlists has one series). */
export class SeriesStore {
  /** onChange(symbol) is called when a series changes outside a message (a REST backfill). */
  constructor(onChange) {
    this.series = new Map();
    this.onChange = onChange;
    this.askedAt = new Map();
  }

  get(symbol) {
    return this.series.get(symbol) || [];
  }

  /** A snapshot's series: the server's whole view, replacing ours. */
  set(symbol, points) {
    if (!Array.isArray(points)) return;
    this.series.set(symbol, points.filter(validPoint).slice(-MAX_POINTS));
  }

  /** A tick at `at` (unix seconds); out-of-order ticks are ignored, as on the server. */
  addTick(symbol, at, price) {
    if (!isNum(at) || !isNum(price)) return;
    let s = this.series.get(symbol);
    if (!s) {
      s = [];
      this.series.set(symbol, s);
    }
    const last = s[s.length - 1];
    if (last && at < last[0]) return;
    if (last && Math.floor(at / TICK_BUCKET_S) === Math.floor(last[0] / TICK_BUCKET_S)) {
      s[s.length - 1] = [at, price];
    } else {
      s.push([at, price]);
      if (s.length > MAX_POINTS) s.splice(0, s.length - MAX_POINTS);
    }
  }

  /** Fetches the series over REST when it has too few points to draw. */
  async backfill(symbol) {
    if (this.get(symbol).length >= 2) return;
    const asked = this.askedAt.get(symbol) || 0;
    if (Date.now() - asked < BACKFILL_EVERY_MS) return;
    this.askedAt.set(symbol, Date.now());
    try {
      const data = await api('GET', `${API}/quotes/${encodeURIComponent(symbol)}/intraday`);
      const points = data && Array.isArray(data.points) ? data.points.filter(validPoint) : [];
      // Ticks that arrived meanwhile are newer than the answer: keep them after it.
      const mine = this.get(symbol);
      const lastRest = points.length ? points[points.length - 1][0] : -Infinity;
      const merged = points.concat(mine.filter((p) => p[0] > lastRest));
      if (merged.length > mine.length) {
        this.series.set(symbol, merged.slice(-MAX_POINTS));
        this.onChange(symbol);
      }
    } catch (_) {
      // The sparkline fills in from ticks anyway; a 401 is noticed by the next request that matters.
    }
  }
}

/** Extent of the prices, widened to include `base` when it is not far off. */
function extent(points, base) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const [, p] of points) {
    if (p < lo) lo = p;
    if (p > hi) hi = p;
  }
  const span = hi - lo;
  const showBase = isNum(base) && base >= lo - Math.max(span, Math.abs(lo) * 0.02) && base <= hi + Math.max(span, Math.abs(hi) * 0.02);
  if (showBase) {
    lo = Math.min(lo, base);
    hi = Math.max(hi, base);
  }
  if (hi - lo < 1e-9) {
    const pad = Math.abs(hi) * 0.005 || 1;
    lo -= pad;
    hi += pad;
  }
  return { lo, hi, showBase };
}

/** Up or down against the previous close, else against the first point. */
function trend(points, base) {
  const last = points[points.length - 1][1];
  const ref = isNum(base) ? base : points[0][1];
  return last > ref ? 'up' : last < ref ? 'down' : 'flat';
}

/** The small chart in a row. */
export class Sparkline {
  constructor() {
    this.base = svgEl('line', { class: 'spark-base', 'vector-effect': 'non-scaling-stroke' });
    this.line = svgEl('polyline', { class: 'spark-line', 'vector-effect': 'non-scaling-stroke' });
    this.svg = svgEl('svg', {
      class: 'spark', viewBox: '0 0 100 28', preserveAspectRatio: 'none',
      width: 100, height: 28, 'aria-hidden': 'true', focusable: 'false',
    }, this.base, this.line);
  }

  draw(points, base) {
    const svg = this.svg;
    svg.dataset.points = String(points.length);
    if (points.length === 0) {
      delete svg.dataset.last;
      this.line.setAttribute('points', '');
      this.base.setAttribute('visibility', 'hidden');
      return;
    }
    svg.dataset.last = String(points[points.length - 1][1]);
    const { lo, hi, showBase } = extent(points, base);
    const t0 = points[0][0];
    const tSpan = Math.max(points[points.length - 1][0] - t0, 1);
    const x = (t) => (points.length === 1 ? 100 : ((t - t0) / tSpan) * 100);
    const y = (p) => 26 - ((p - lo) / (hi - lo)) * 24;
    this.line.setAttribute('points', points.map(([t, p]) => `${x(t).toFixed(2)},${y(p).toFixed(2)}`).join(' '));
    svg.setAttribute('class', `spark ${trend(points, base)}`);
    if (showBase) {
      const yb = y(base).toFixed(2);
      Object.entries({ x1: 0, x2: 100, y1: yb, y2: yb }).forEach(([k, v]) => this.base.setAttribute(k, v));
      this.base.removeAttribute('visibility');
    } else {
      this.base.setAttribute('visibility', 'hidden');
    }
  }
}

/** 1, 2 or 5 times a power of ten, near `raw`. */
function niceStep(raw) {
  const pow = 10 ** Math.floor(Math.log10(raw));
  const f = raw / pow;
  return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * pow;
}

const TIME_STEPS_S = [300, 900, 1800, 3600, 7200, 10800, 21600, 43200];
const HEIGHT = 220;
const PAD = { l: 8, r: 78, t: 14, b: 26 };

/** The larger chart of one symbol: price grid, time axis, previous close, hover read-out. */
export class IntradayChart {
  constructor(testid) {
    this.svg = svgEl('svg', { class: 'chart-svg', height: HEIGHT, width: '100%', role: 'img', testid });
    this.root = el('div', { class: 'chart-canvas' }, this.svg);
    this.points = [];
    this.opts = {};
    this.width = 0;
    this.svg.addEventListener('pointermove', (ev) => this.hover(ev));
    this.svg.addEventListener('pointerleave', () => this.unhover());
    // Redraw at the new width when the panel resizes; only on a width change, so drawing
    // (which never changes the box's width) cannot loop.
    if ('ResizeObserver' in window) {
      this.resizes = new ResizeObserver(() => {
        if (this.root.clientWidth && this.root.clientWidth !== this.width) this.draw();
      });
      this.resizes.observe(this.root);
    }
  }

  /** Stops watching the size (the panel is closing). */
  dispose() {
    if (this.resizes) this.resizes.disconnect();
  }

  /** opts: { label, previousClose, currency } */
  update(points, opts) {
    this.points = points;
    this.opts = opts;
    this.draw();
  }

  draw() {
    const W = this.root.clientWidth;
    if (!W) return;                 // hidden: drawn when shown
    this.width = W;
    const H = HEIGHT;
    const svg = this.svg;
    const pts = this.points;
    const { previousClose: base, currency, label } = this.opts;
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('aria-label', label || 'intraday chart');
    svg.dataset.points = String(pts.length);
    if (pts.length < 2) {
      svg.replaceChildren(svgEl('text', { x: W / 2, y: H / 2, class: 'chart-empty', 'text-anchor': 'middle' }, 'No intraday data yet'));
      this.geometry = null;
      return;
    }
    const plotW = W - PAD.l - PAD.r;
    const plotH = H - PAD.t - PAD.b;
    const range = extent(pts, base);
    const step = niceStep((range.hi - range.lo) / 4);
    const lo = Math.floor(range.lo / step) * step;
    const hi = Math.ceil(range.hi / step) * step;
    const t0 = pts[0][0];
    const t1 = Math.max(pts[pts.length - 1][0], t0 + 60);
    const x = (t) => PAD.l + ((t - t0) / (t1 - t0)) * plotW;
    const y = (p) => PAD.t + ((hi - p) / (hi - lo)) * plotH;
    const parts = [];

    for (let v = lo, i = 0; v <= hi + step / 2 && i < 20; v += step, i += 1) {
      const yv = y(v).toFixed(1);
      parts.push(svgEl('line', { class: 'chart-grid', x1: PAD.l, x2: PAD.l + plotW, y1: yv, y2: yv }));
      parts.push(svgEl('text', { class: 'chart-axis', x: W - PAD.r + 6, y: yv, 'dominant-baseline': 'middle' }, fmtStep(v, step)));
    }
    const tStep = TIME_STEPS_S.find((s) => (t1 - t0) / s <= 6) || TIME_STEPS_S[TIME_STEPS_S.length - 1];
    for (let t = Math.ceil(t0 / tStep) * tStep; t <= t1; t += tStep) {
      const xt = x(t).toFixed(1);
      parts.push(svgEl('line', { class: 'chart-tick', x1: xt, x2: xt, y1: PAD.t + plotH, y2: PAD.t + plotH + 4 }));
      parts.push(svgEl('text', { class: 'chart-axis', x: xt, y: H - 6, 'text-anchor': 'middle' }, fmtClock(t)));
    }

    const dir = trend(pts, base);
    const line = pts.map(([t, p], i) => `${i ? 'L' : 'M'}${x(t).toFixed(1)},${y(p).toFixed(1)}`).join('');
    const bottom = (PAD.t + plotH).toFixed(1);
    parts.push(svgEl('path', { class: `chart-area ${dir}`, d: `${line}L${x(pts[pts.length - 1][0]).toFixed(1)},${bottom}L${x(t0).toFixed(1)},${bottom}Z` }));
    parts.push(svgEl('path', { class: `chart-line ${dir}`, d: line, testid: 'chart-line' }));
    if (range.showBase) {
      const yb = y(base).toFixed(1);
      parts.push(svgEl('line', { class: 'chart-base', x1: PAD.l, x2: PAD.l + plotW, y1: yb, y2: yb }));
      parts.push(svgEl('text', { class: 'chart-note', x: PAD.l + 4, y: Number(yb) - 4 }, `previous close ${fmtMoney(base, currency)}`));
    }
    const [lt, lp] = pts[pts.length - 1];
    parts.push(svgEl('circle', { class: `chart-dot ${dir}`, cx: x(lt).toFixed(1), cy: y(lp).toFixed(1), r: 3 }));

    this.cursor = svgEl('line', { class: 'chart-cursor', y1: PAD.t, y2: PAD.t + plotH, visibility: 'hidden' });
    this.cursorDot = svgEl('circle', { class: 'chart-cursor-dot', r: 3.5, visibility: 'hidden' });
    this.readout = svgEl('text', { class: 'chart-readout', y: PAD.t - 2, visibility: 'hidden', testid: 'chart-readout' });
    parts.push(this.cursor, this.cursorDot, this.readout);
    svg.replaceChildren(...parts);
    this.geometry = { x, y, t0, t1, plotW, W };
  }

  /** Shows the point nearest the pointer: its time and price. */
  hover(ev) {
    const g = this.geometry;
    if (!g) return;
    const box = this.svg.getBoundingClientRect();
    if (!box.width) return;
    const vx = ((ev.clientX - box.left) / box.width) * g.W;
    const t = g.t0 + ((vx - PAD.l) / g.plotW) * (g.t1 - g.t0);
    const pts = this.points;
    let lo = 0;
    let hi = pts.length - 1;
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (pts[mid][0] < t) lo = mid; else hi = mid;
    }
    const [pt, pp] = Math.abs(pts[lo][0] - t) <= Math.abs(pts[hi][0] - t) ? pts[lo] : pts[hi];
    const px = g.x(pt);
    for (const [node, attrs] of [[this.cursor, { x1: px, x2: px }], [this.cursorDot, { cx: px, cy: g.y(pp) }]]) {
      for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v.toFixed(1));
      node.removeAttribute('visibility');
    }
    this.readout.textContent = `${fmtClock(pt)}  ${fmtMoney(pp, this.opts.currency)}`;
    const anchorEnd = px > g.W / 2;
    this.readout.setAttribute('x', (anchorEnd ? px - 6 : px + 6).toFixed(1));
    this.readout.setAttribute('text-anchor', anchorEnd ? 'end' : 'start');
    this.readout.removeAttribute('visibility');
  }

  unhover() {
    if (!this.geometry) return;
    for (const node of [this.cursor, this.cursorDot, this.readout]) node.setAttribute('visibility', 'hidden');
  }
}
