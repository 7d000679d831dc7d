// chart.js: one sensor's line chart on a <canvas>, drawn by hand: a bounded ring
// of points (MAX_POINTS, default 300, page query ?points=N clamped to 10..2000),
// a time axis with HH:MM:SS ticks, min/max labels with the unit, booleans as a
// 0/1 step line. Handles devicePixelRatio and resizes; draws at most once per
// animation frame. Ring and tick maths are pure (usable under node).
import { fmtClock, fmtValue, isNum } from "/format.js";

export const DEFAULT_POINTS = 300;

/** The point cap from a query string ("?points=50"), clamped to 10..2000. */
export function maxPointsFrom(search) {
  const n = Number.parseInt(new URLSearchParams(search || "").get("points") ?? "", 10);
  return Number.isFinite(n) ? Math.min(2000, Math.max(10, n)) : DEFAULT_POINTS;
}
export const MAX_POINTS = maxPointsFrom(globalThis.location?.search);

/** Fixed-capacity ring of (time, value) points; the oldest is dropped when full. NaN value = gap. */
export class Ring {
  constructor(cap) {
    this.cap = cap;
    this.t = new Float64Array(cap);
    this.v = new Float64Array(cap);
    this.start = 0;
    this.length = 0;
  }
  push(t, v) {
    const i = (this.start + this.length) % this.cap;
    this.t[i] = t;
    this.v[i] = v;
    if (this.length < this.cap) this.length += 1;
    else this.start = (this.start + 1) % this.cap;
  }
  /** Calls fn(t, v, k) from oldest (k = 0) to newest. */
  forEach(fn) {
    for (let k = 0; k < this.length; k += 1) {
      const i = (this.start + k) % this.cap;
      fn(this.t[i], this.v[i], k);
    }
  }
  first() { return this.length ? this.t[this.start] : NaN; }
  last() { return this.length ? this.t[(this.start + this.length - 1) % this.cap] : NaN; }
  clear() { this.start = 0; this.length = 0; }
}

const STEPS_S = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
/** Tick times (ms, multiples of a round step) between t0 and t1, at most maxTicks of them. */
export function timeTicks(t0, t1, maxTicks) {
  const span = Math.max(1, t1 - t0);
  const step = (STEPS_S.find((s) => span / (s * 1000) <= maxTicks) ?? STEPS_S[STEPS_S.length - 1]) * 1000;
  const out = [];
  for (let t = Math.ceil(t0 / step) * step; t <= t1 && out.length < maxTicks + 1; t += step) out.push(t);
  return out;
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
  /** opts: { unit, boolean, cap } */
  constructor(canvas, opts = {}) {
    this.canvas = canvas;
    this.unit = opts.unit || "";
    this.boolean = !!opts.boolean;
    this.ring = new Ring(opts.cap ?? MAX_POINTS);
    this.frame = 0;
    canvas.dataset.maxPoints = String(this.ring.cap);
    canvas.dataset.points = "0";
    this.observer = typeof ResizeObserver === "function" ? new ResizeObserver(() => this.schedule()) : null;
    this.observer?.observe(canvas);
    hookGlobals();
    live.add(this);
    this.schedule();
  }
  /** Adds a point: v is a number, a boolean (0/1) or null (a gap). */
  push(t, v) {
    if (typeof v === "boolean") { this.boolean = true; v = v ? 1 : 0; }
    this.ring.push(t, isNum(v) ? v : NaN);
    this.canvas.dataset.points = String(this.ring.length);
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
    const ring = this.ring;

    let lo = Infinity;
    let hi = -Infinity;
    ring.forEach((_, v) => { if (!Number.isNaN(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); } });
    if (!ring.length || lo > hi) {
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText(ring.length ? "no numeric values yet" : "waiting for readings…", w / 2, h / 2);
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
    const t1 = ring.last();
    const t0 = ring.length > 1 ? ring.first() : t1 - 1000;
    const xOf = (t) => plot.x + ((t - t0) / Math.max(1, t1 - t0)) * plot.w;
    const yOf = (v) => plot.y + (1 - (v - lo) / (hi - lo)) * plot.h;

    // Axes: frame lines, y labels at the top and bottom, time ticks below.
    ctx.strokeStyle = color("--chart-grid", "rgba(127,127,127,0.3)");
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(plot.x, plot.y); ctx.lineTo(plot.x + plot.w, plot.y);
    ctx.moveTo(plot.x, plot.y + plot.h); ctx.lineTo(plot.x + plot.w, plot.y + plot.h);
    const ticks = timeTicks(t0, t1, Math.max(2, Math.floor(plot.w / 90)));
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
      ctx.fillText(fmtClock(t), x, plot.y + plot.h + 6);
    }

    // The line: gaps at null values; booleans as steps.
    ctx.strokeStyle = color("--chart-line", "#2563eb");
    ctx.fillStyle = ctx.strokeStyle;
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
      ctx.arc(xOf(t1), prevY, 2.5, 0, Math.PI * 2);
      ctx.fill();
    }
  }
}
