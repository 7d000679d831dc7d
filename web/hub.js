// hub.js: the hub view (#/hub): polls GET /api/hub every 2 s while open and shows
// the ingest rate (from two successive polls), devices, WebSocket clients, uptime,
// kernel drops, loss, latency, the MQTT bridge's state, and tables of drops by
// reason, WebSocket evictions, finished commands and MQTT messages by kind.
import { toLogin } from "/account.js";
import { DASH, el, fmtBytes, fmtCount, fmtLatency, fmtPercent, fmtRate, fmtUptime, isNum, lossRatio, setText } from "/format.js";

const POLL_MS = 2000;

/** Datagrams/s between two /api/hub bodies (hub uptime as the clock); null if not computable. */
export function ingestRate(prev, cur) {
  if (!prev || !cur) return null;
  const dt = cur.uptime_s - prev.uptime_s;
  const dn = cur.datagrams_received - prev.datagrams_received;
  return isNum(dt) && isNum(dn) && dt > 0 && dn >= 0 ? dn / dt : null;
}

const FACTS = [
  ["Ingest rate (datagrams/s)", "ingest-rate"], ["Devices", "devices"], ["Devices by status", "devices-by-status"],
  ["WebSocket clients", "ws-clients"], ["Uptime", "uptime"], ["Kernel drops", "kernel-drops"], ["Loss", "loss"],
  ["Latency p50 / p99", "latency"], ["Datagrams received", "datagrams"], ["Readings accepted", "readings"],
  ["Bytes received", "bytes"], ["UDP receive buffer", "udp-buffer"], ["Control sessions", "control-sessions"],
  ["WebSocket messages sent", "ws-messages"], ["WebSocket bytes queued", "ws-queued"], ["Stream seq", "stream-seq"],
  ["MQTT bridge", "mqtt"],
];

/** One line for the MQTT bridge of /api/hub's `mqtt`: off, or its state, broker and what went wrong. */
export function mqttSummary(m) {
  if (!m || typeof m !== "object" || !m.enabled) return "off";
  const parts = [`${m.state} to ${m.broker}`];
  if (isNum(m.reconnects) && m.reconnects > 0) parts.push(`${fmtCount(m.reconnects)} reconnects`);
  const dropped = Object.values(m.dropped ?? {}).filter(isNum).reduce((a, b) => a + b, 0);
  if (dropped > 0) parts.push(`${fmtCount(dropped)} dropped`);
  if (m.state !== "connected" && typeof m.last_error === "string") parts.push(m.last_error);
  return parts.join(" · ");
}

// A two-column table of name -> count, one <tr data-ATTR="name"> per entry, rows kept in place.
function countTable(id, caption, keyHeading, attr) {
  const tbody = el("tbody");
  const table = el("table", { id, className: "counts" },
    el("caption", { textContent: caption }),
    el("thead", {}, el("tr", {}, el("th", { scope: "col", textContent: keyHeading }), el("th", { scope: "col", className: "num", textContent: "Count" }))),
    tbody);
  const rows = new Map();
  const update = (obj) => {
    for (const [key, n] of Object.entries(obj && typeof obj === "object" ? obj : {})) {
      let cell = rows.get(key);
      if (!cell) {
        cell = el("td", { className: "num", "data-field": "count" });
        tbody.append(el("tr", { [`data-${attr}`]: key }, el("th", { scope: "row" }, el("code", { textContent: key })), cell));
        rows.set(key, cell);
      }
      setText(cell, fmtCount(n));
    }
  };
  return [el("div", { className: "table-wrap" }, table), update];
}

export function mount(main) {
  const [dl, f] = [el("dl", { className: "facts" }), {}];
  for (const [label, key] of FACTS) {
    f[key] = el("dd", { "data-field": key, textContent: DASH });
    dl.append(el("div", {}, el("dt", { textContent: label }), f[key]));
  }
  setText(f["ingest-rate"], "measuring…");
  const meta = el("p", { className: "summary", textContent: "Loading…" });
  const problem = el("p", { className: "problem", role: "alert", hidden: true });
  const [drops, updateDrops] = countTable("drops", "Datagrams dropped, by reason", "Reason", "reason");
  const [evictions, updateEvictions] = countTable("ws-evictions", "WebSocket clients evicted, by reason", "Reason", "reason");
  const [finished, updateFinished] = countTable("commands-finished", "Commands finished, by outcome", "Outcome", "state");
  const [mqtt, updateMqtt] = countTable("mqtt-published", "MQTT messages published, by kind", "Kind", "kind");
  mqtt.hidden = true;
  const section = el("section", { id: "hub-view" },
    el("div", { className: "view-head" }, el("h2", { textContent: "Hub", tabIndex: -1 }), meta), problem, dl,
    el("div", { className: "tables" }, drops, evictions, finished, mqtt));
  main.replaceChildren(section);

  let prev = null;
  let timer = 0;
  let stopped = false;
  const abort = new AbortController();

  function show(h) {
    const rate = ingestRate(prev, h);
    if (rate !== null || prev) setText(f["ingest-rate"], rate === null ? DASH : fmtRate(rate));
    prev = h;
    setText(f.devices, fmtCount(h.devices));
    const by = h.devices_by_status && typeof h.devices_by_status === "object" ? h.devices_by_status : {};
    setText(f["devices-by-status"], Object.entries(by).map(([k, n]) => `${fmtCount(n)} ${k}`).join(", ") || DASH);
    setText(f["ws-clients"], fmtCount(h.ws_clients));
    setText(f.uptime, fmtUptime(h.uptime_s));
    setText(f["kernel-drops"], isNum(h.kernel_drops) ? String(h.kernel_drops) : "not available");
    setText(f.loss, fmtPercent(lossRatio(h.sequence)));
    const lat = h.latency_ms ?? {};
    setText(f.latency, fmtLatency(lat.p50, lat.p99, lat.count));
    setText(f.datagrams, `${fmtCount(h.datagrams_received)} (${fmtCount(h.datagrams_accepted)} accepted)`);
    setText(f.readings, fmtCount(h.readings_accepted));
    setText(f.bytes, fmtBytes(h.bytes_received));
    setText(f["udp-buffer"], fmtBytes(h.udp_receive_buffer_bytes));
    setText(f["control-sessions"], fmtCount(h.control_sessions));
    setText(f["ws-messages"], fmtCount(h.ws_messages_sent));
    setText(f["ws-queued"], fmtBytes(h.ws_queued_bytes));
    setText(f["stream-seq"], fmtCount(h.stream_seq));
    updateDrops(h.dropped);
    updateEvictions(h.ws_evictions);
    updateFinished(h.commands_finished);
    setText(f.mqtt, mqttSummary(h.mqtt));
    f.mqtt.dataset.state = h.mqtt?.enabled ? String(h.mqtt.state) : "disabled";
    mqtt.hidden = !h.mqtt?.enabled;
    if (h.mqtt?.enabled) updateMqtt(h.mqtt.published);
    const version = typeof h.hub_version === "string" ? h.hub_version : "?";
    setText(meta, `hub v${version} · updated ${new Date().toLocaleTimeString()}`);
  }

  async function poll() {
    try {
      const res = await fetch("/api/hub", { cache: "no-store", signal: abort.signal });
      if (res.status === 401) return toLogin(); // the session ended
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const body = await res.json();
      if (stopped) return;
      if (!body || typeof body !== "object") throw new Error("unexpected body");
      show(body);
      problem.hidden = true;
    } catch (err) {
      if (stopped) return;
      setText(problem, `Could not load the hub figures (${err.message}); retrying.`);
      problem.hidden = false;
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  poll();
  return () => {
    stopped = true;
    clearTimeout(timer);
    abort.abort();
  };
}
