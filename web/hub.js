// hub.js: the hub view (#/hub): polls GET /api/hub every 2 s while open and shows
// the ingest rate (from two successive polls), devices, WebSocket clients, uptime,
// kernel drops, loss, latency, the MQTT bridge's state, the cluster link, and
// tables of drops by reason, WebSocket evictions, finished commands, MQTT
// messages by kind and the hubs of the cluster.
import { toLogin } from "/account.js";
import { hubNow } from "/stream.js";
import { DASH, el, fmtAgo, fmtBytes, fmtClock, fmtCount, fmtLatency, fmtPercent, fmtRate, fmtUptime, isNum, lossRatio, setText } from "/format.js";

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
  ["MQTT bridge", "mqtt"], ["Cluster", "cluster"],
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

/** One line for /api/hub's `cluster`: off, or this hub, the link (since when and why
 * when not up), the hubs alive, and the events shared, shared late and not shared. */
export function clusterSummary(c) {
  if (!c || typeof c !== "object") return "off";
  const parts = typeof c.hub === "string" ? [c.hub] : [];
  if (c.link === "up") {
    const alive = (Array.isArray(c.hubs) ? c.hubs : []).filter((h) => h?.alive === true).length;
    parts.push("link up", `${alive} hub${alive === 1 ? "" : "s"}`);
  } else {
    const since = isNum(c.since_ms) ? ` since ${fmtClock(c.since_ms)}` : "";
    const why = typeof c.error === "string" && c.error ? `: ${c.error}` : "";
    parts.push(`${c.link === "connecting" ? "connecting" : "link down"}${since}${why}`);
  }
  if (isNum(c.events_shared)) {
    parts.push(`events: ${fmtCount(c.events_shared)} shared, ${fmtCount(c.events_shared_late)} late, ${fmtCount(c.events_unshared)} unshared`);
  }
  if (isNum(c.datagrams_unshared) && c.datagrams_unshared > 0) parts.push(`${fmtCount(c.datagrams_unshared)} datagrams unshared`);
  return parts.join(" · ");
}

// The hubs of the cluster, one <tr data-hub="name"> each in the hub's order (by
// name), this hub marked; rows kept in place, a hub forgotten by the cluster removed.
function hubsTable() {
  const tbody = el("tbody");
  const caption = el("caption", { textContent: "Hubs of the cluster" });
  const col = (text, cls = "") => el("th", { scope: "col", className: cls, textContent: text });
  const table = el("table", { id: "cluster-hubs" }, caption,
    el("thead", {}, el("tr", {}, col("Hub"), col("Devices", "num"), col("Clients", "num"), col("Last seen"), col("State"))),
    tbody);
  const wrap = el("div", { className: "table-wrap wide", hidden: true }, table);
  const rows = new Map();
  const update = (c) => {
    const hubs = (Array.isArray(c?.hubs) ? c.hubs : []).filter((h) => h && typeof h.name === "string");
    setText(caption, c?.link === "down" ? "Hubs of the cluster (as last known: the link is down)" : "Hubs of the cluster");
    const want = [];
    for (const h of hubs) {
      let r = rows.get(h.name);
      if (!r) {
        const name = el("th", { scope: "row" }, h.name);
        if (h.name === c.hub) name.append(" ", el("span", { className: "muted", textContent: "(this\u00a0hub)" }));
        r = {
          devices: el("td", { className: "num", "data-field": "devices" }),
          clients: el("td", { className: "num", "data-field": "clients" }),
          seen: el("td", { "data-field": "seen" }),
          state: el("td", { "data-field": "state" }),
        };
        r.tr = el("tr", { "data-hub": h.name }, name, r.devices, r.clients, r.seen, r.state);
        if (h.name === c.hub) r.tr.dataset.self = "true";
        rows.set(h.name, r);
      }
      setText(r.devices, fmtCount(h.devices));
      setText(r.clients, fmtCount(h.clients));
      setText(r.seen, isNum(h.seen_ms) ? fmtAgo(hubNow() - h.seen_ms) : "never");
      r.seen.title = isNum(h.seen_ms) ? new Date(h.seen_ms).toLocaleString() : "";
      const state = h.alive === true ? "alive" : "gone";
      r.state.dataset.state = state;
      setText(r.state, state);
      want.push(r.tr);
    }
    for (const [name, r] of rows) if (!want.includes(r.tr)) rows.delete(name);
    const have = [...tbody.children];
    if (want.length !== have.length || want.some((tr, i) => tr !== have[i])) tbody.replaceChildren(...want);
  };
  return [wrap, update];
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
  const [clusterHubs, updateClusterHubs] = hubsTable();
  const section = el("section", { id: "hub-view" },
    el("div", { className: "view-head" }, el("h2", { textContent: "Hub", tabIndex: -1 }), meta), problem, dl,
    el("div", { className: "tables" }, drops, evictions, finished, mqtt, clusterHubs));
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
    const cluster = h.cluster && typeof h.cluster === "object" ? h.cluster : null;
    setText(f.cluster, clusterSummary(cluster));
    f.cluster.dataset.state = cluster ? String(cluster.link) : "disabled";
    clusterHubs.hidden = !(Array.isArray(cluster?.hubs) && cluster.hubs.length > 0); // none yet while connecting
    if (cluster) updateClusterHubs(cluster);
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
