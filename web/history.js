// history.js: a sensor's stored history for the device view: the ranges the
// page offers (15 min, 1 h, 24 h, 7 d) and their selector, and fetching one
// range — as a WebSocket `history` request on the page's socket (answer
// matched by id), or over GET /api/devices/ID/sensors/CH/history when the
// socket is closed, the request budget (kept under the hub's per-client
// message limit) is spent, the hub refuses it, or no answer comes within 8 s.
// Answers are checked field by field; nothing from them reaches innerHTML.
import { on, send } from "/stream.js";
import { el, isNum, str } from "/format.js";
import { toLogin } from "/account.js";

export const RANGES = [
  { key: "15m", label: "15 min", ms: 15 * 60_000 },
  { key: "1h", label: "1 h", ms: 3_600_000 },
  { key: "24h", label: "24 h", ms: 24 * 3_600_000 },
  { key: "7d", label: "7 d", ms: 7 * 24 * 3_600_000 },
];

/** The range buttons (#history-range, aria-pressed on the chosen one); onChange(range) on a new choice. */
export function rangeSelector(current, onChange) {
  const group = el("div", { id: "history-range", className: "ranges", role: "group", "aria-label": "History range" });
  for (const r of RANGES) {
    const b = el("button", { type: "button", textContent: r.label, "data-range": r.key, "aria-pressed": String(r.key === current) });
    b.addEventListener("click", () => {
      if (b.getAttribute("aria-pressed") === "true") return;
      for (const x of group.children) x.setAttribute("aria-pressed", String(x === b));
      onChange(r);
    });
    group.append(b);
  }
  return group;
}

/** Thrown when the hub keeps no history (storage disabled). */
export class HistoryOff extends Error {}
class Fallback extends Error {} // try HTTP instead

// --- over the WebSocket ----------------------------------------------------------
const WS_TIMEOUT_MS = 8000;
const IN_FLIGHT = 4; // the hub runs at most 4 history requests per client
let running = 0;
const queued = []; // resolvers waiting for one of the IN_FLIGHT slots

async function slot() {
  if (running >= IN_FLIGHT) await new Promise((resolve) => queued.push(resolve));
  running += 1;
}

function release() {
  running -= 1;
  const next = queued.shift();
  if (next) next();
}
const BUDGET = 16; // requests in a burst; refilled at 8 per second
let tokens = BUDGET;
let refilled = Date.now();
let nextId = 1;
const waiting = new Map(); // id -> { resolve, reject, timer }

function takeToken() {
  const now = Date.now();
  tokens = Math.min(BUDGET, tokens + ((now - refilled) / 1000) * 8);
  refilled = now;
  if (tokens < 1) return false;
  tokens -= 1;
  return true;
}

function settle(id, fn) {
  const w = waiting.get(id);
  if (!w) return;
  waiting.delete(id);
  clearTimeout(w.timer);
  fn(w);
}
on("history", (msg) => settle(msg.id, (w) => w.resolve(msg)));
on("error", (msg) => settle(msg.id, (w) => {
  const message = str(msg.message) ?? "refused";
  if (msg.code === "history_unavailable") w.reject(new HistoryOff(message));
  else if (msg.code === "unknown_type" || msg.code === "rate_limited" || msg.code === "history_busy") w.reject(new Fallback(message));
  else w.reject(new Error(message));
}));

function viaSocket(req) {
  return new Promise((resolve, reject) => {
    const id = `h-${nextId++}`;
    if (!takeToken() || !send({ type: "history", id, ...req })) return reject(new Fallback("socket not used"));
    const timer = setTimeout(() => settle(id, (w) => w.reject(new Fallback("no answer"))), WS_TIMEOUT_MS);
    waiting.set(id, { resolve, reject, timer });
  });
}

// --- over HTTP -------------------------------------------------------------------
const HTTP_RETRIES = 4; // a 429 (this address's history queries are all running) is retried after a pause
const HTTP_IN_FLIGHT = 2; // the hub's default http.history_queries_per_address
let httpRunning = 0;
const httpQueued = [];

async function viaHttp(req) {
  if (httpRunning >= HTTP_IN_FLIGHT) await new Promise((resolve) => httpQueued.push(resolve));
  httpRunning += 1;
  try {
    return await httpQuery(req);
  } finally {
    httpRunning -= 1;
    const next = httpQueued.shift();
    if (next) next();
  }
}

async function httpQuery({ device, sensor, from, to, max_points }) {
  const q = new URLSearchParams({ from: String(from), to: String(to), max_points: String(max_points) });
  let res = await fetch(`/api/devices/${device}/sensors/${sensor}/history?${q}`, { cache: "no-store" });
  for (let attempt = 0; res.status === 429 && attempt < HTTP_RETRIES; attempt++) {
    // Another tab (or the socket being down at load) can take this address's slots for a moment.
    await new Promise((resolve) => setTimeout(resolve, 250 * 2 ** attempt));
    res = await fetch(`/api/devices/${device}/sensors/${sensor}/history?${q}`, { cache: "no-store" });
  }
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  if (res.status === 401) toLogin(); // the session ended
  if (res.status === 503) throw new HistoryOff(str(body?.error) ?? "history is not kept");
  if (res.status === 429) throw new Error("the hub is busy answering other history requests; change the range to retry");
  if (!res.ok) throw new Error(str(body?.error) ?? `HTTP ${res.status}`);
  return body;
}

/** The checked answer: points { t, mean, min, max, count } with increasing t, and step (ms each covers).
 *  Raw readings that share a millisecond become one point (counts and extremes kept); points out of
 *  order or without a value are skipped. */
function clean(body) {
  const points = [];
  for (const p of Array.isArray(body?.points) ? body.points : []) {
    if (!p || !isNum(p.t)) continue;
    const mean = isNum(p.mean) ? p.mean : isNum(p.last) ? p.last : null;
    if (mean === null) continue;
    const point = { t: p.t, mean, min: isNum(p.min) ? Math.min(p.min, mean) : mean,
      max: isNum(p.max) ? Math.max(p.max, mean) : mean, count: isNum(p.count) && p.count > 0 ? p.count : 1 };
    const last = points[points.length - 1];
    if (last && point.t < last.t) continue;
    if (last && point.t === last.t) {
      const count = last.count + point.count;
      last.mean = (last.mean * last.count + point.mean * point.count) / count;
      last.min = Math.min(last.min, point.min);
      last.max = Math.max(last.max, point.max);
      last.count = count;
      continue;
    }
    points.push(point);
  }
  return { points, step: isNum(body?.step_ms) && body.step_ms > 0 ? body.step_ms : 1 };
}

/** History of one sensor: { device, sensor (channel), from, to, max_points } -> { points, step }.
 *  Rejects with HistoryOff when the hub keeps none, with Error on any other failure. */
export async function fetchHistory(req) {
  let body;
  await slot();
  try {
    body = await viaSocket(req);
  } catch (err) {
    if (!(err instanceof Fallback)) throw err;
    body = await viaHttp(req);
  } finally {
    release();
  }
  return clean(body);
}
