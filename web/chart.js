// chart.js: one sensor's chart on a <canvas>, drawn by hand: a bounded ring of
// points (MAX_POINTS, default 300, page query ?points=N clamped to 10..2000),
// each a time bucket with mean, min, max and count. With a range set (the
// history view) the x axis spans the range ending now and slides, history is
// loaded first, live readings merge into buckets of range/points so the range
// stays covered, older points fall off; the min–max band keeps spikes
// visible. Without a range (or history) every reading is a point. Time ticks,
// min/max labels with the unit, booleans as a 0/1 step line. Handles
// devicePixelRatio and resizes; draws at most once per animation frame. Ring
// and tick maths are pure (usable under node).
import { fmtClock, fmtValue, isNum } from "/format.js";

export const DEFAULT_POINTS = 300;

/** The point cap from a query string ("?points=50"), clamped to 10..2000. */
export function maxPointsFrom(search) {
  const n = Number.parseInt(new URLSearchParams(search || "").get("points") ?? "", 10);
  return Number.isFinite(n) ? Math.min(2000, Math.max(10, n)) : DEFAULT_POINTS;
}
export const MAX_POINTS = maxPointsFrom(globalThis.location?.search);

/** Fixed-capacity ring of points (time, mean, min, max, count); the oldest is dropped when full. NaN mean = gap. */
export class Ring {
  constructor(cap) {
    this.cap = cap;
    this.t = new Float64Array(cap);
    this.v = new Float64Array(cap);
    this.lo = new Float64Array(cap);
    this.hi = new Float64Array(cap);
    this.n = new Float64Array(cap);
    this.start = 0;
    this.length = 0;
  }
  push(t, v, lo = v, hi = v, n = Number.isNaN(v) ? 0 : 1) {
    const i = (this.start + this.length) % this.cap;
    this.t[i] = t; this.v[i] = v; this.lo[i] = lo; this.hi[i] = hi; this.n[i] = n;
    if (this.length < this.cap) this.length += 1;
    else this.start = (this.start + 1) % this.cap;
  }
  /** Adds value v to the newest point (running mean, min, max, count). */
  merge(v) {
    if (!this.length) return;
    const i = (this.start + this.length - 1) % this.cap;
    if (!(this.n[i] > 0)) { this.v[i] = v; this.lo[i] = v; this.hi[i] = v; this.n[i] = 1; return; }
    this.n[i] += 1;
    this.v[i] += (v - this.v[i]) / this.n[i];
    this.lo[i] = Math.min(this.lo[i], v);
    this.hi[i] = Math.max(this.hi[i], v);
  }
  /** Drops the oldest point. */
  shift() {
    if (!this.length) return;
    this.start = (this.start + 1) % this.cap;
    this.length -= 1;
  }
  /** Calls fn(t, mean, min, max, k) from oldest (k = 0) to newest. */
  forEach(fn) {
    for (let k = 0; k < this.length; k += 1) {
      const i = (this.start + k) % this.cap;
      fn(this.t[i], this.v[i], this.lo[i], this.hi[i], k);
    }
  }
  first() { return this.length ? this.t[this.start] : NaN; }
  /** Time of the k-th oldest point. */
  at(k) { return k < this.length ? this.t[(this.start + k) % this.cap] : NaN; }
  last() { return this.length ? this.t[(this.start + this.length - 1) % this.cap] : NaN; }
  clear() { this.start = 0; this.length = 0; }
}

const STEPS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 259200, 604800];
/** The round tick step (ms) that puts at most maxTicks ticks between t0 and t1. */
export function tickStep(t0, t1, maxTicks) {
  const span = Math.max(1, t1 - t0);
  return (STEPS_S.find((s) => span / (s * 1000) <= maxTicks) ?? STEPS_S[STEPS_S.length - 1]) * 1000;
}
/** Tick times (ms) between t0 and t1, at most maxTicks of them, on multiples of the step in local
 *  time (offsetMs: local minus UTC, so hour and day ticks fall on local hours and midnights). */
export function timeTicks(t0, t1, maxTicks, offsetMs = 0) {
  const step = tickStep(t0, t1, maxTicks);
  const out = [];
  for (let t = Math.ceil((t0 + offsetMs) / step) * step - offsetMs; t <= t1 && out.length < maxTicks + 1; t += step) out.push(t);
  return out;
}
const DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
/** A tick label for ticks `step` ms apart: "HH:MM:SS", "HH:MM", or "Fri 21" for day steps. */
export function tickLabel(ms, step) {
  if (step < 60000) return fmtClock(ms);
  const d = new Date(ms);
  if (step < 86400000) return fmtClock(ms).slice(0, 5);
  return `${DAYS[d.getDay()]} ${d.getDate()}`;
}

// Redraw every live chart when the colour scheme or the pixel ratio changes.
const live = new Set();
let globalHooks = false;
function hookGlobals() {
  if (globalHooks) return;
  globalHooks = true;
  const redrawAll = () => live.forEach((c) => c.schedule());
  window.addEventListener("resize", redrawAll);
  window.matchMedia?.("(prefers-color-scheme: dark)").addEventListener?.("change", redrawAll);
}

export class Chart {
  /** opts: { unit, boolean, cap, now } (now: the clock a range ends at, ms) */
  constructor(canvas, opts = {}) {
    this.canvas = canvas;
    this.unit = opts.unit || "";
    this.boolean = !!opts.boolean;
    this.ring = new Ring(opts.cap ?? MAX_POINTS);
    this.now = opts.now ?? Date.now;
    this.span = 0; // ms the x axis covers, ending now (0: from the first to the last point)
    this.bucket = 0; // ms of live readings merged into one point (0: every reading its own point)
    this.lastEnd = -Infinity; // end of the newest point's bucket
    this.pending = null; // live readings [t, v] held while history loads
    this.lastMs = null; // time of the newest reading shown
    this.frame = 0;
    canvas.dataset.maxPoints = String(this.ring.cap);
    canvas.dataset.points = "0";
    this.observer = typeof ResizeObserver === "function" ? new ResizeObserver(() => this.schedule()) : null;
    this.observer?.observe(canvas);
    hookGlobals();
    live.add(this);
    this.schedule();
  }
  get cap() { return this.ring.cap; }
  /** Starts over on a range of spanMs ending now, live readings merged per bucketMs; holds
   *  live readings until load() brings the history. */
  setRange(spanMs, bucketMs) {
    this.span = spanMs;
    this.bucket = bucketMs;
    this.ring.clear();
    this.lastEnd = -Infinity;
    this.pending = [];
    this.changed();
  }
  /** History points ({ t, mean, min, max, count }, sorted by t, each covering stepMs), then the
   *  live readings held meanwhile that are newer. load([]) just lets the held readings in. */
  load(points, stepMs = 1) {
    const held = this.pending ?? [];
    this.pending = null;
    this.ring.clear();
    this.lastEnd = -Infinity;
    for (const p of points) {
      if (p.t <= this.ring.last()) continue;
      this.ring.push(p.t, p.mean, p.min, p.max, p.count);
      this.lastEnd = p.t + Math.max(1, stepMs);
      this.lastMs = p.t;
    }
    for (const [t, v] of held) this.add(t, v);
    this.changed();
  }
  /** Without history: a plain live chart again (every reading a point, axis from the first to the
   *  last), starting with the readings held while history was asked for. */
  liveOnly() {
    this.span = 0;
    this.bucket = 0;
    this.load([]);
  }
  /** Adds a reading: v is a number, a boolean (0/1) or null (a gap). */
  push(t, v) {
    if (typeof v === "boolean") { this.boolean = true; v = v ? 1 : 0; }
    if (!isNum(t)) return;
    v = isNum(v) ? v : NaN;
    if (this.pending) {
      this.pending.push([t, v]);
      if (this.pending.length > 4 * this.ring.cap) this.pending.shift();
      return;
    }
    this.add(t, v);
    this.changed();
  }
  // Readings at or before the newest point are already shown (history) or late: dropped.
  add(t, v) {
    const r = this.ring;
    if (r.length && t <= r.last()) return;
    if (t < this.lastEnd) {
      if (!Number.isNaN(v)) r.merge(v);
    } else {
      r.push(t, v);
      this.lastEnd = this.bucket > 1 ? (Math.floor(t / this.bucket) + 1) * this.bucket : t + 1;
    }
    this.lastMs = t;
  }
  // Drops points left of the range (keeping one, so the line enters from the edge).
  trim() {
    if (!this.span) return;
    const t0 = this.now() - this.span;
    while (this.ring.length > 1 && this.ring.at(1) < t0) this.ring.shift();
  }
  changed() {
    this.trim();
    this.canvas.dataset.points = String(this.ring.length);
    if (isNum(this.lastMs)) this.canvas.dataset.lastMs = String(this.lastMs);
    this.schedule();
  }
  schedule() {
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }
  destroy() {
    if (this.frame) cancelAnimationFrame(this.frame);
    this.observer?.disconnect();
    live.delete(this);
    this.ring.clear();
    this.pending = null;
  }
  draw() {
    const c = this.canvas;
    const w = c.clientWidth;
    const h = c.clientHeight;
    if (!w || !h) return;
    const dpr = window.devicePixelRatio || 1;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const ctx = c.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const css = getComputedStyle(c);
    const color = (name, fallback) => css.getPropertyValue(name).trim() || fallback;
    const muted = color("--muted", "#777");
    ctx.font = `11px ${css.fontFamily || "sans-serif"}`;
    ctx.fillStyle = muted;
    this.trim();
    c.dataset.points = String(this.ring.length);
    const ring = this.ring;

    let lo = Infinity;
    let hi = -Infinity;
    ring.forEach((_, v, min, max) => { if (!Number.isNaN(v)) { lo = Math.min(lo, min); hi = Math.max(hi, max); } });
    if (!ring.length || lo > hi) {
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      const empty = this.pending ? "loading history…" : "waiting for readings…";
      ctx.fillText(ring.length ? "no numeric values yet" : empty, w / 2, h / 2);
      return;
    }
    const unit = this.unit ? ` ${this.unit}` : "";
    const label = (v) => (this.boolean ? (v ? "true" : "false") : `${fmtValue(v)}${unit}`);
    if (this.boolean) { lo = 0; hi = 1; }
    const top = label(hi);
    const bottom = label(lo);
    if (lo === hi) { const d = Math.abs(lo) * 0.1 || 1; lo -= d; hi += d; }

    const left = Math.ceil(Math.max(ctx.measureText(top).width, ctx.measureText(bottom).width)) + 10;
    const plot = { x: left, y: 8, w: Math.max(10, w - left - 10), h: Math.max(10, h - 8 - 22) };
    const t1 = this.span ? this.now() : ring.last();
    const t0 = this.span ? t1 - this.span : ring.length > 1 ? ring.first() : t1 - 1000;
    const xOf = (t) => plot.x + ((t - t0) / Math.max(1, t1 - t0)) * plot.w;
    const yOf = (v) => plot.y + (1 - (v - lo) / (hi - lo)) * plot.h;

    // Axes: frame lines, y labels at the top and bottom, time ticks below.
    ctx.strokeStyle = color("--chart-grid", "rgba(127,127,127,0.3)");
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(plot.x, plot.y); ctx.lineTo(plot.x + plot.w, plot.y);
    ctx.moveTo(plot.x, plot.y + plot.h); ctx.lineTo(plot.x + plot.w, plot.y + plot.h);
    const maxTicks = Math.max(2, Math.floor(plot.w / 90));
    const ticks = timeTicks(t0, t1, maxTicks, -new Date(t1).getTimezoneOffset() * 60000);
    const step = tickStep(t0, t1, maxTicks);
    for (const t of ticks) { ctx.moveTo(xOf(t), plot.y); ctx.lineTo(xOf(t), plot.y + plot.h + 4); }
    ctx.stroke();
    ctx.textAlign = "right";
    ctx.textBaseline = "top";
    ctx.fillText(top, left - 6, plot.y - 2);
    ctx.textBaseline = "bottom";
    ctx.fillText(bottom, left - 6, plot.y + plot.h + 2);
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const t of ticks) {
      const x = Math.min(Math.max(xOf(t), plot.x + 24), plot.x + plot.w - 24);
      ctx.fillText(tickLabel(t, step), x, plot.y + plot.h + 6);
    }

    ctx.save();
    ctx.beginPath();
    ctx.rect(plot.x, plot.y - 4, plot.w + 4, plot.h + 8); // room for the newest point's dot
    ctx.clip();
    ctx.strokeStyle = color("--chart-line", "#2563eb");
    ctx.fillStyle = ctx.strokeStyle;
    this.drawBand(ctx, xOf, yOf);

    // The line (means): gaps at null values; booleans as steps.
    ctx.lineWidth = 1.75;
    ctx.lineJoin = "round";
    ctx.beginPath();
    let prevY = NaN;
    ring.forEach((t, v) => {
      if (Number.isNaN(v)) { prevY = NaN; return; }
      const x = xOf(t);
      const y = yOf(v);
      if (Number.isNaN(prevY)) ctx.moveTo(x, y);
      else { if (this.boolean) ctx.lineTo(x, prevY); ctx.lineTo(x, y); }
      prevY = y;
    });
    ctx.stroke();
    if (!Number.isNaN(prevY)) { // newest point
      ctx.beginPath();
      ctx.arc(xOf(ring.last()), prevY, 2.5, 0, Math.PI * 2);
      ctx.fill();
    }
    ctx.restore();
  }
  // The min–max band of aggregated points, lightly filled, one shape per run without gaps.
  drawBand(ctx, xOf, yOf) {
    let run = [];
    const flush = () => {
      if (run.some((p) => p.hi > p.lo)) {
        ctx.beginPath();
        if (run.length === 1) { // a lone bucket: a thin bar
          ctx.rect(run[0].x - 1, yOf(run[0].hi), 2, yOf(run[0].lo) - yOf(run[0].hi));
        } else { // along the maxima, back along the minima
          run.forEach((p, k) => (k ? ctx.lineTo(p.x, yOf(p.hi)) : ctx.moveTo(p.x, yOf(p.hi))));
          for (let k = run.length - 1; k >= 0; k -= 1) ctx.lineTo(run[k].x, yOf(run[k].lo));
        }
        ctx.fill();
      }
      run = [];
    };
    ctx.globalAlpha = 0.18;
    this.ring.forEach((t, v, lo, hi) => {
      if (Number.isNaN(v)) flush();
      else run.push({ x: xOf(t), lo, hi });
    });
    flush();
    ctx.globalAlpha = 1;
  }
}
