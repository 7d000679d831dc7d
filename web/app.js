// app.js: live readings page logic: subscribes on /ws (snapshot, then readings),
// resumes without gaps after a reconnect (or reloads the snapshot on resync),
// and renders the header counters and device table. Device data is untrusted:
// the DOM is built with textContent only.

const $ = (id) => document.getElementById(id);
const tbody = $("devices").tBodies[0];
const devices = new Map(); // id -> { id, name, addr, lastSeen, datagrams, lastSeq, sensors: Map, row, cells }
let clockOffset = 0; // hub clock minus local clock, ms
let wsMessages = 0;
const rateBuckets = [0]; // datagrams per 1 s tick, last 5 ticks (bounded)
let ws = null;
let backoff = 500;
let retryAt = 0; // local ms of the next reconnect attempt, 0 when none pending
let everConnected = false;
let lastRefetch = 0;
let refetchTimer = 0;
let streamEpoch = null; // from hello: resume only within the same hub run
let streamSeq = null; // seq of the last stream message applied
const SUBSCRIPTION = { devices: "all", sensors: "all", mode: "live" };

const hubNow = () => Date.now() + clockOffset;
const isNum = (v) => typeof v === "number" && Number.isFinite(v);
const strOrNull = (v) => (typeof v === "string" ? v : null);
const valueOf = (v) => (typeof v === "boolean" || isNum(v) ? v : null); // null: NaN/inf or malformed
const syncClock = (hubMs) => { if (isNum(hubMs)) clockOffset = hubMs - Date.now(); };

function formatValue(v) {
  if (typeof v === "boolean") return String(v);
  if (isNum(v)) return String(Number(v.toFixed(2)) || 0); // at most 2 decimals, no "-0"
  return "—"; // null: NaN/inf reported by the device
}

function formatAgo(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function sensorText(ch, s) {
  const label = s.name ?? `ch${ch}`;
  return s.unit ? `${label} ${formatValue(s.value)} ${s.unit}` : `${label} ${formatValue(s.value)}`;
}

// Highlight a changed value; CSS fades it out when the class goes (instantly under reduced motion).
function flash(el) {
  clearTimeout(el.flashTimer);
  el.classList.add("changed");
  el.flashTimer = setTimeout(() => el.classList.remove("changed"), 600);
}

// --- model -----------------------------------------------------------------

function getDevice(id) {
  let d = devices.get(id);
  if (d) return d;
  d = { id, name: null, addr: null, lastSeen: null, datagrams: 0, lastSeq: null, sensors: new Map() };
  const row = document.createElement("tr");
  row.dataset.deviceId = String(id);
  const idCell = Object.assign(document.createElement("th"), { scope: "row", className: "num", textContent: String(id) });
  const cells = {};
  row.append(idCell);
  for (const [key, cls] of [["name", ""], ["seen", "seen"], ["datagrams", "num"], ["seq", "num"], ["sensors", "sensors"]]) {
    cells[key] = document.createElement("td");
    if (cls) cells[key].className = cls;
    row.append(cells[key]);
  }
  Object.assign(d, { row, cells, spans: new Map() }); // spans: channel -> value span
  const after = [...devices.values()].filter((o) => o.id > id).sort((a, b) => a.id - b.id)[0];
  tbody.insertBefore(row, after ? after.row : null);
  devices.set(id, d);
  return d;
}

// Set a sensor's latest value if newer than what we hold; returns true if the channel is new.
function setSensor(d, ch, fields, receivedMs) {
  let s = d.sensors.get(ch);
  const isNew = !s;
  if (isNew) { s = { name: null, unit: null, value: undefined, received: -Infinity }; d.sensors.set(ch, s); }
  if (fields.name !== undefined) s.name = fields.name;
  if (fields.unit !== undefined) s.unit = fields.unit;
  if ("value" in fields && receivedMs >= s.received) {
    const changed = s.value !== undefined && s.value !== fields.value;
    s.value = fields.value;
    s.received = receivedMs;
    s.changed = s.changed || changed;
  }
  return isNew;
}

// --- rendering ---------------------------------------------------------------

function renderDevice(d) {
  const c = d.cells;
  c.name.textContent = d.name ?? `device ${d.id}`;
  c.name.classList.toggle("muted", d.name == null);
  c.name.title = d.addr ? `address ${d.addr}` : "";
  c.datagrams.textContent = String(d.datagrams);
  c.seq.textContent = d.lastSeq == null ? "—" : String(d.lastSeq);
  renderSeen(d);
  const channels = [...d.sensors.keys()].sort((a, b) => a - b);
  if (channels.length !== d.spans.size) { // channel set changed: rebuild in order
    c.sensors.replaceChildren();
    channels.forEach((ch, i) => {
      if (i > 0) c.sensors.append(" · ");
      const span = d.spans.get(ch) ?? document.createElement("span");
      span.className = "value";
      span.dataset.channel = String(ch);
      d.spans.set(ch, span);
      c.sensors.append(span);
    });
  }
  for (const ch of channels) {
    const s = d.sensors.get(ch);
    const span = d.spans.get(ch);
    const text = sensorText(ch, s);
    if (span.textContent !== text) span.textContent = text;
    if (s.changed) { s.changed = false; flash(span); }
  }
}

function renderSeen(d) {
  d.cells.seen.textContent = d.lastSeen == null ? "never" : formatAgo(hubNow() - d.lastSeen);
  d.cells.seen.title = d.lastSeen == null ? "" : new Date(d.lastSeen).toLocaleString();
}

function renderSummary() {
  const any = devices.size > 0;
  $("empty").hidden = any;
  $("table-wrap").hidden = !any;
  $("device-count").textContent = String(devices.size);
  $("ws-count").textContent = String(wsMessages);
}

function setConnection(state, text, detail = "") {
  $("connection").dataset.state = state;
  $("connection-text").textContent = text;
  $("connection-detail").textContent = detail;
}

// --- data sources ------------------------------------------------------------

async function loadDevices() {
  lastRefetch = Date.now();
  try {
    const res = await fetch("/api/devices", { cache: "no-store" });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    applyDevices(await res.json());
  } catch (err) {
    console.warn("sensor hub: loading /api/devices failed:", err);
  }
  renderSummary();
}

// Applies a device list: the body of /api/devices, or a snapshot/resync message.
function applyDevices(body) {
  {
    if (!body || !Array.isArray(body.devices)) throw new Error("unexpected device list shape");
    syncClock(body.hub_time_ms);
    const seen = new Set();
    for (const x of body.devices) {
      if (!x || !isNum(x.id)) continue;
      seen.add(x.id);
      const d = getDevice(x.id);
      d.name = strOrNull(x.name);
      d.addr = strOrNull(x.addr);
      if (isNum(x.datagrams)) d.datagrams = Math.max(d.datagrams, x.datagrams);
      if (isNum(x.last_seen_ms) && (d.lastSeen == null || x.last_seen_ms >= d.lastSeen)) {
        d.lastSeen = x.last_seen_ms;
        if (isNum(x.last_seq)) d.lastSeq = x.last_seq;
      }
      for (const s of Array.isArray(x.sensors) ? x.sensors : []) {
        if (!s || !isNum(s.channel)) continue;
        const fields = { name: strOrNull(s.name), unit: strOrNull(s.unit), value: valueOf(s.value) };
        setSensor(d, s.channel, fields, isNum(s.received_ms) ? s.received_ms : 0);
      }
      renderDevice(d);
    }
    // Drop devices the hub no longer reports (evicted), unless we heard of them after the snapshot.
    for (const d of devices.values()) {
      if (!seen.has(d.id) && (d.lastSeen == null || !isNum(body.hub_time_ms) || d.lastSeen <= body.hub_time_ms)) {
        d.row.remove();
        devices.delete(d.id);
      }
    }
  }
}

function send(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
}

function onReadings(msg) {
  syncClock(msg.hub_time_ms);
  let unknown = false;
  for (const dg of Array.isArray(msg.datagrams) ? msg.datagrams : []) {
    if (!dg || !isNum(dg.device)) continue;
    unknown ||= !devices.has(dg.device);
    const d = getDevice(dg.device);
    const received = isNum(dg.received_ms) ? dg.received_ms : hubNow();
    d.datagrams += 1;
    rateBuckets[rateBuckets.length - 1] += 1;
    if (d.lastSeen == null || received >= d.lastSeen) {
      d.lastSeen = received;
      if (isNum(dg.seq)) d.lastSeq = dg.seq;
    }
    for (const r of Array.isArray(dg.readings) ? dg.readings : []) {
      if (!r || !isNum(r.channel)) continue;
      unknown = setSensor(d, r.channel, { value: valueOf(r.value) }, received) || unknown;
    }
    renderDevice(d);
  }
  // New device or channel: fetch its names/units, at most once per 5 s.
  if (unknown && !refetchTimer) {
    refetchTimer = setTimeout(() => { refetchTimer = 0; loadDevices(); }, Math.max(0, lastRefetch + 5000 - Date.now()));
  }
}

function onMessage(ev) {
  wsMessages += 1;
  let msg;
  try { msg = JSON.parse(ev.data); } catch { return console.warn("sensor hub: non-JSON message ignored"); }
  if (!msg || typeof msg !== "object") return;
  if (msg.type !== "hello" && isNum(msg.seq)) streamSeq = msg.seq;
  if (msg.type === "hello") {
    syncClock(msg.server_time_ms);
    $("hub-version").textContent = `hub v${String(msg.hub_version ?? "?")}`;
    $("hub-protocol").textContent = `protocol ${String(msg.protocol ?? "?")}`;
    backoff = 500;
    setConnection("live", "live");
    if (streamEpoch !== null && streamSeq !== null) {
      // Same request whatever the epoch: the hub answers resync if it restarted.
      send({ type: "resume", epoch: streamEpoch, last_seq: streamSeq, ...SUBSCRIPTION });
    } else {
      send({ type: "subscribe", ...SUBSCRIPTION });
    }
    streamEpoch = typeof msg.epoch === "string" ? msg.epoch : null;
    everConnected = true;
  } else if (msg.type === "snapshot" || msg.type === "resync") {
    try { applyDevices(msg); } catch (err) { console.warn("sensor hub: bad snapshot:", err); }
  } else if (msg.type === "readings") {
    onReadings(msg);
  } else if (msg.type === "error") {
    console.error(`sensor hub error ${msg.code}: ${msg.message}`);
  } // unknown types: ignored on purpose
  renderSummary();
}

function connect() {
  retryAt = 0;
  if (everConnected || backoff > 500) setConnection("reconnecting", "reconnecting…");
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const sock = new WebSocket(`${proto}//${location.host}/ws`);
  ws = sock;
  sock.addEventListener("message", onMessage);
  sock.addEventListener("close", () => {
    if (ws !== sock) return;
    ws = null;
    retryAt = Date.now() + backoff;
    setTimeout(connect, backoff);
    backoff = Math.min(backoff * 2, 10000);
    renderCountdown();
  });
}

function renderCountdown() {
  if (!retryAt) return;
  const s = Math.max(1, Math.ceil((retryAt - Date.now()) / 1000));
  setConnection("reconnecting", "reconnecting", ` in ${s} s`);
}

// --- timers --------------------------------------------------------------------

setInterval(() => {
  for (const d of devices.values()) renderSeen(d);
  const rate = rateBuckets.reduce((a, b) => a + b, 0) / rateBuckets.length;
  $("rate").textContent = rate >= 10 ? String(Math.round(rate)) : String(Number(rate.toFixed(1)));
  rateBuckets.push(0);
  if (rateBuckets.length > 5) rateBuckets.shift();
  renderCountdown();
}, 1000);

renderSummary();
connect();
