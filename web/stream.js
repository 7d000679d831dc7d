// stream.js: the page's single WebSocket (/ws) and the device model it feeds.
// Subscribes on the first hello, resumes with epoch + last seq after a reconnect,
// rebuilds the model from snapshot/resync, applies readings, device_status,
// device_stats, device_removed; relays command_status/history/error; reconnects
// with backoff (0.5 s doubling to 10 s). The session's end is the end of the page:
// a close with 4401 (logged out, token revoked), or a connection refused while
// GET /api/me says 401, leads to the login page instead of another attempt. Also
// the throttled GET /api/devices refresh (names, adopted/keyed of new devices,
// window stats). Each device is adopted (true), discovered (false), or not known
// yet (null: it appeared on the stream, the next refresh says; new devices make
// that refresh come within NEW_DEVICE_REFRESH_MS). Memory: per device only latest
// values and stats.
import { isNum, str } from "/format.js";
import { loadMe, me, toLogin } from "/account.js";

const SUBSCRIPTION = { devices: "all", sensors: "all", mode: "live" };
const REFRESH_MS = 5000;
const NEW_DEVICE_REFRESH_MS = 1000; // spacing of refreshes asked for by new devices
const PENDING_MS = 5000; // a new device no refresh lists after this long is dropped

/** id -> device: { id, hub (the hub holding it, in a cluster; else null), name, firmware, interval_ms, adopted, keyed, status, status_since_ms, last_seen_ms, last_seq, stats, sensors: Map<channel, sensor>, created, adoptedAt? } */
export const devices = new Map();
/** id -> hub time it was removed: device lists older than that do not bring it back. */
const removedAt = new Map();
let clockOffset = 0; // hub clock minus local clock, ms
export const hubNow = () => Date.now() + clockOffset;
const syncClock = (ms) => { if (isNum(ms)) clockOffset = ms - Date.now(); };

// --- events ------------------------------------------------------------------
// "model" (all devices may have changed), "device" (id), "removed" (id, after it
// left the model; a "model" follows), "readings" (msg),
// "command" (command_status msg), "history" (history answer), "error" (error msg),
// "connection" ({state, text}), "account" (GET /api/me answered again).
const listeners = new Map();
export function on(type, fn) {
  if (!listeners.has(type)) listeners.set(type, new Set());
  listeners.get(type).add(fn);
  return () => listeners.get(type).delete(fn);
}
function emit(type, arg) {
  for (const fn of listeners.get(type) ?? []) {
    try { fn(arg); } catch (err) { console.error(`sensor hub: ${type} listener failed:`, err); }
  }
}

// --- model -------------------------------------------------------------------
function newDevice(id) {
  return { id, hub: null, name: null, firmware: null, interval_ms: null, adopted: null, keyed: null, status: null,
    status_since_ms: null, last_seen_ms: null, last_seq: null, stats: null, sensors: new Map(), created: hubNow() };
}
function getDevice(id) {
  let d = devices.get(id);
  if (!d) { // names, adopted and keyed come from /api/devices
    d = newDevice(id);
    devices.set(id, d);
    requestRefresh(NEW_DEVICE_REFRESH_MS);
  }
  return d;
}
function cleanStats(s) {
  if (!s || typeof s !== "object") return null;
  const lat = s.latency_ms && typeof s.latency_ms === "object" ? s.latency_ms : {};
  const n = (v) => (isNum(v) ? v : null);
  return { received: n(s.received), lost: n(s.lost), reordered: n(s.reordered), duplicated: n(s.duplicated),
    restarts: n(s.restarts), loss_ratio: n(s.loss_ratio), rate_per_s: n(s.rate_per_s),
    latency: { p50: n(lat.p50_ms), p99: n(lat.p99_ms), count: n(lat.count) } };
}
const valueOf = (v) => (typeof v === "boolean" || isNum(v) ? v : null);
const windowsOf = (w) => (Array.isArray(w) ? w.filter((x) => x && typeof x === "object").slice(0, 4) : []);

// Applies one device of a snapshot/resync (replace) or of /api/devices (merge: newer
// wins; `asOf` is the list's hub time).
function applyDevice(x, merge, asOf) {
  const old = devices.get(x.id);
  const d = merge ? old ?? newDevice(x.id) : newDevice(x.id);
  d.hub = str(x.hub);
  d.name = str(x.name);
  d.firmware = str(x.firmware);
  d.interval_ms = isNum(x.interval_ms) ? x.interval_ms : null;
  if (!merge || !(asOf < d.adoptedAt)) { // a list from before this page adopted it is out of date there
    d.adopted = typeof x.adopted === "boolean" ? x.adopted : true; // a hub without the field adopts every device
    d.keyed = x.keyed === true;
  }
  const since = isNum(x.status_since_ms) ? x.status_since_ms : 0;
  if (!merge || d.status == null || since >= (d.status_since_ms ?? 0)) {
    d.status = str(x.status);
    d.status_since_ms = since;
  }
  const stats = cleanStats(x.stats);
  if (!merge || !d.stats || (stats && (stats.received ?? 0) >= (d.stats.received ?? 0))) d.stats = stats;
  if (isNum(x.last_seen_ms) && (d.last_seen_ms == null || x.last_seen_ms >= d.last_seen_ms)) {
    d.last_seen_ms = x.last_seen_ms;
    if (isNum(x.last_seq)) d.last_seq = x.last_seq;
  }
  for (const s of Array.isArray(x.sensors) ? x.sensors : []) {
    if (!s || !isNum(s.channel)) continue;
    const prev = d.sensors.get(s.channel);
    const received = isNum(s.received_ms) ? s.received_ms : 0;
    const keepValue = merge && prev && prev.received_ms > received;
    d.sensors.set(s.channel, {
      channel: s.channel, name: str(s.name), unit: str(s.unit), kind: str(s.kind),
      min: isNum(s.min) ? s.min : null, max: isNum(s.max) ? s.max : null,
      value: keepValue ? prev.value : valueOf(s.value), received_ms: keepValue ? prev.received_ms : received,
      windows: windowsOf(s.windows),
    });
  }
  devices.set(d.id, d);
}

function applyDevices(body, merge) {
  if (!body || !Array.isArray(body.devices)) throw new Error("unexpected device list shape");
  syncClock(body.hub_time_ms);
  const asOf = isNum(body.hub_time_ms) ? body.hub_time_ms : -Infinity;
  if (!merge) devices.clear();
  const listed = new Set();
  for (const x of body.devices) {
    if (!x || !isNum(x.id)) continue;
    if (merge && asOf <= (removedAt.get(x.id) ?? -Infinity)) continue; // listed before it was removed
    listed.add(x.id);
    applyDevice(x, merge, asOf);
  }
  if (merge) {
    for (const [id, at] of removedAt) if (asOf > at) removedAt.delete(id);
    // Devices that appeared on the stream and the hub does not list: asked again
    // while new (the list may predate them), then dropped (e.g. stats of a device
    // removed since).
    for (const d of [...devices.values()]) {
      if (d.adopted !== null || listed.has(d.id)) continue;
      if (asOf - d.created < PENDING_MS) requestRefresh(NEW_DEVICE_REFRESH_MS);
      else devices.delete(d.id);
    }
  }
  emit("model");
}

/** After the owner adopted a device: moves it to the adopted ones at once (the hub sends no event for it). */
export function setAdopted(id, keyed) {
  const d = devices.get(id);
  if (d) {
    d.adopted = true;
    d.keyed = keyed;
    d.adoptedAt = hubNow();
    emit("device", id);
  }
  requestRefresh(NEW_DEVICE_REFRESH_MS); // its name, if it said hello
}

function onReadings(msg) {
  syncClock(msg.hub_time_ms);
  for (const dg of Array.isArray(msg.datagrams) ? msg.datagrams : []) {
    if (!dg || !isNum(dg.device)) continue;
    const d = getDevice(dg.device);
    const received = isNum(dg.received_ms) ? dg.received_ms : hubNow();
    if (d.last_seen_ms == null || received >= d.last_seen_ms) {
      d.last_seen_ms = received;
      if (isNum(dg.seq)) d.last_seq = dg.seq;
    }
    for (const r of Array.isArray(dg.readings) ? dg.readings : []) {
      if (!r || !isNum(r.channel)) continue;
      let s = d.sensors.get(r.channel);
      if (!s) {
        s = { channel: r.channel, name: null, unit: null, kind: null, min: null, max: null, value: null, received_ms: -Infinity, windows: [] };
        d.sensors.set(r.channel, s);
        requestRefresh();
      }
      if (received >= s.received_ms) { s.value = valueOf(r.value); s.received_ms = received; }
    }
  }
  emit("readings", msg);
}

function onStatus(msg) {
  if (!isNum(msg.device)) return;
  const d = getDevice(msg.device);
  d.status = str(msg.status);
  if (isNum(msg.at_ms)) d.status_since_ms = msg.at_ms;
  emit("device", d.id);
}

function onStats(msg) {
  for (const s of Array.isArray(msg.devices) ? msg.devices : []) {
    if (!s || !isNum(s.device)) continue;
    getDevice(s.device).stats = cleanStats(s);
    emit("device", s.device);
  }
}

function onRemoved(msg) {
  if (!isNum(msg.device)) return;
  removedAt.set(msg.device, isNum(msg.at_ms) ? msg.at_ms : hubNow());
  if (!devices.delete(msg.device)) return;
  emit("removed", msg.device);
  emit("model");
}

// --- /api/devices refresh (at most every 5 s; every 1 s for new devices) ------
let lastRefresh = -Infinity;
let refreshTimer = 0;
let refreshDue = 0; // local ms the pending refresh runs at
/** Asks for a refresh at least `gap` ms after the previous one (sooner than a pending one, if so). */
export function requestRefresh(gap = REFRESH_MS) {
  const due = Math.max(Date.now(), lastRefresh + gap);
  if (refreshTimer) {
    if (due >= refreshDue) return;
    clearTimeout(refreshTimer);
  }
  refreshDue = due;
  refreshTimer = setTimeout(loadDevices, due - Date.now());
}
async function loadDevices() {
  refreshTimer = 0; // a request while this one is under way schedules the next
  lastRefresh = Date.now();
  try {
    const res = await fetch("/api/devices", { cache: "no-store" });
    if (res.status === 401) return toLogin();
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    applyDevices(await res.json(), true);
  } catch (err) {
    console.warn("sensor hub: loading /api/devices failed:", err);
  }
}

// --- connection ----------------------------------------------------------------
let ws = null;
let backoff = 500;
let retryAt = 0; // local ms of the next attempt, 0 when none pending
let everConnected = false;
export let epoch = null; // of the snapshot/resync the model comes from (command ids are unique within one)
let lastSeq = null; // seq of the last message applied
export const connection = { state: "connecting", text: "connecting…" };

function setConnection(state, text) {
  if (connection.state === state && connection.text === text) return;
  Object.assign(connection, { state, text });
  emit("connection", connection);
}

/** Sends a message; false when the socket is not open. */
export function send(obj) {
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(obj));
  return true;
}

function onMessage(ev) {
  let msg;
  try { msg = JSON.parse(ev.data); } catch { return console.warn("sensor hub: non-JSON message ignored"); }
  if (!msg || typeof msg !== "object") return;
  if (msg.type !== "hello" && isNum(msg.seq)) lastSeq = msg.seq;
  switch (msg.type) {
    case "hello":
      syncClock(msg.server_time_ms);
      backoff = 500;
      everConnected = true;
      setConnection("live", "live");
      // The page loaded while the hub was away: who is logged in is still unknown.
      if (me.role === null) loadMe().then((answer) => { if (answer === "ok") emit("account"); });
      if (epoch !== null && lastSeq !== null) {
        // Whatever the hub's epoch: it answers resync when it cannot honour the resume.
        send({ type: "resume", id: "resume", epoch, last_seq: lastSeq, ...SUBSCRIPTION });
      } else {
        send({ type: "subscribe", id: "subscribe", ...SUBSCRIPTION });
      }
      break;
    case "snapshot":
    case "resync":
      if (typeof msg.epoch === "string") epoch = msg.epoch;
      try { applyDevices(msg, false); } catch (err) { console.warn("sensor hub: bad snapshot:", err); }
      break;
    case "renumbered": // the stream goes on, nothing missed, in a new numbering (a cluster hub's link changed)
      if (typeof msg.epoch === "string") epoch = msg.epoch;
      break;
    case "readings": onReadings(msg); break;
    case "device_status": onStatus(msg); break;
    case "device_removed": onRemoved(msg); break;
    case "device_stats": onStats(msg); break;
    case "command_status": emit("command", msg); break;
    case "history": emit("history", msg); break;
    case "error": console.warn(`sensor hub error ${msg.code}: ${msg.message}`); emit("error", msg); break;
    default: break; // unknown types (and ack, pong, aggregates) are ignored on purpose
  }
}

/** The close code that says the session ended or its token was revoked. */
export const LOGGED_OUT = 4401;

function retry() {
  retryAt = Date.now() + backoff;
  setTimeout(connect, backoff);
  backoff = Math.min(backoff * 2, 10000);
  tick();
}

function connect() {
  retryAt = 0;
  if (everConnected) setConnection("reconnecting", "reconnecting…");
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const sock = new WebSocket(`${proto}//${location.host}/ws`);
  let opened = false;
  ws = sock;
  sock.addEventListener("open", () => { opened = true; });
  sock.addEventListener("message", onMessage);
  sock.addEventListener("close", (ev) => {
    if (ws !== sock) return;
    ws = null;
    everConnected = true; // from now on every attempt is a reconnect
    if (ev.code === LOGGED_OUT) {
      setConnection("logged-out", "logged out");
      toLogin();
      return;
    }
    if (opened) {
      retry();
      return;
    }
    // The upgrade was refused (or the hub is away): a browser is not told
    // why, so ask whether the session is still there before trying again.
    setConnection("reconnecting", "reconnecting…");
    loadMe().then((answer) => {
      if (answer === "logged-out") {
        setConnection("logged-out", "logged out");
        toLogin();
        return;
      }
      if (answer === "ok") emit("account");
      retry();
    });
  });
}

// Called every second by app.js: the reconnect countdown.
export function tick() {
  if (!retryAt) return;
  const s = Math.max(1, Math.ceil((retryAt - Date.now()) / 1000));
  setConnection("reconnecting", `reconnecting in ${s} s`);
}

export function start() { if (!ws && !retryAt) connect(); }
