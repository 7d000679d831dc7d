// device.js: the device view (#/device/ID): status line, packet counters, one
// figure per sensor (latest value, 10 s window stats, a chart of the chosen
// history range — loaded when the figure appears and when the range changes,
// then continued live; data-history="loading|ready|off|error" on the figure),
// and the command panel with its log (<= 20 lines, lifecycle from
// command_status). The log shows this tab's commands only: their request ids
// are "ui-<random per tab>-N", and the hub puts the id only in the statuses it
// sends to the client that submitted the command; a status is taken by its id,
// or by the command_id its first status told (after a reconnect this tab is a
// new client and gets its commands' statuses without id). Statuses of other
// clients' commands are ignored, but for commands from the MQTT bridge
// (source "mqtt", e.g. Home Assistant's buttons), which every tab lists,
// marked "via MQTT". Windows are refetched from /api/devices every
// 5 s while open. A viewer (role below operator) gets no command panel, only a
// note saying who may send commands. The owner also gets "Forget device"
// (confirmed, then DELETE /api/devices/ID, back to the fleet). A device that
// leaves the hub (device_removed) sends the view back to the fleet with a notice.
import { devices, epoch, hubNow, on, requestRefresh, send } from "/stream.js";
import { api, isOwner, me, mayCommand } from "/account.js";
import { showNotice } from "/fleet.js";
import { DASH, displayName, el, fmtAgo, fmtCount, fmtInterval, fmtLatency, fmtPercent, fmtValue, isNum, setText, statusOf } from "/format.js";
import { Chart } from "/chart.js";
import { HistoryOff, RANGES, fetchHistory, rangeSelector } from "/history.js";

// --- command log (module-wide so statuses land even while the view is closed) ---
const LOG_MAX = 20;
const log = []; // { cid, device, kind, args, states: [], state, detail, command, epoch }
// Request ids unique to this tab, so two tabs never take each other's statuses.
const TAB = [...crypto.getRandomValues(new Uint8Array(6))].map((b) => b.toString(16).padStart(2, "0")).join("");
let nextId = 1;
let logView = null; // { ol, device } of the open view

function renderLog() {
  if (!logView) return;
  const items = log.filter((e) => e.device === logView.device).map((e) => {
    const states = e.state === "error" ? [...e.states, "error"] : e.states;
    const lifecycle = states.length ? states.join(" → ") : "waiting for the hub…";
    return el("li", { "data-command-id": e.cid ?? `mqtt-${e.command}`, "data-state": e.state },
      el("span", { className: "kind", textContent: e.args ? `${e.kind} ${e.args}` : e.kind }), " ",
      el("span", { className: "lifecycle", textContent: lifecycle }),
      e.detail ? el("span", { className: "detail", textContent: ` — ${e.detail}` }) : "");
  });
  logView.ol.replaceChildren(...items);
  logView.empty.hidden = items.length > 0;
}

function sendCommand(device, kind, fields = {}, args = "") {
  const entry = { cid: `ui-${TAB}-${nextId++}`, device, kind, args, states: [], state: "pending", detail: "",
    command: null, epoch: null };
  log.push(entry);
  if (log.length > LOG_MAX) log.splice(0, log.length - LOG_MAX);
  if (!send({ type: "command", id: entry.cid, device, command: { kind, ...fields } })) {
    Object.assign(entry, { state: "error", detail: "not connected, not sent" });
  }
  renderLog();
}

/** This tab's log entry of a command_status, if the command is one of ours. */
function entryOf(msg) {
  if (msg.id !== undefined) { // only the submitting client gets an id: ours if it is one of our ids
    const entry = log.find((e) => e.cid === msg.id && e.device === msg.device);
    if (entry && isNum(msg.command_id)) Object.assign(entry, { command: msg.command_id, epoch });
    return entry;
  }
  // Without id: another client's command, or ours seen from a newer connection.
  return log.find((e) => e.command !== null && e.command === msg.command_id && e.epoch === epoch && e.device === msg.device);
}

/** A log entry for a command from the MQTT bridge, made at its first status. */
function mqttEntryOf(msg) {
  if (msg.source !== "mqtt" || !isNum(msg.command_id) || typeof msg.kind !== "string") return undefined;
  let entry = log.find((e) => e.cid === null && e.command === msg.command_id && e.epoch === epoch);
  if (!entry) {
    entry = { cid: null, device: msg.device, kind: msg.kind, args: "via MQTT", states: [], state: "pending",
      detail: "", command: msg.command_id, epoch };
    log.push(entry);
    if (log.length > LOG_MAX) log.splice(0, log.length - LOG_MAX);
  }
  return entry;
}

on("command", (msg) => {
  const entry = entryOf(msg) ?? mqttEntryOf(msg);
  if (!entry || typeof msg.state !== "string") return;
  if (entry.states[entry.states.length - 1] !== msg.state) entry.states.push(msg.state);
  entry.state = msg.state;
  if (typeof msg.detail === "string") entry.detail = msg.detail;
  renderLog();
});
on("error", (msg) => {
  const entry = log.find((e) => e.cid === msg.id);
  if (!entry) return;
  Object.assign(entry, { state: "error", detail: typeof msg.message === "string" ? msg.message : "refused" });
  renderLog();
});

// --- the view -------------------------------------------------------------------
function facts(pairs, cls) { // [[label, key]] -> <dl> and its value elements by key
  const dl = el("dl", { className: cls });
  const f = {};
  for (const [label, key] of pairs) {
    f[key] = el("dd", { "data-field": key });
    dl.append(el("div", {}, el("dt", { textContent: label }), f[key]));
  }
  return [dl, f];
}

function commandPanel(id) {
  const ms = el("input", { name: "ms", type: "number", min: "1", max: "86400000", step: "1", required: true,
    inputMode: "numeric", "aria-label": "Report interval in milliseconds" });
  const setInterval_ = el("form", { id: "command-set-interval", className: "command" },
    el("label", {}, "Interval (ms) ", ms), el("button", { type: "submit", textContent: "Set interval" }));
  setInterval_.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const n = Number(ms.value);
    if (Number.isInteger(n) && n >= 1) sendCommand(id, "set_interval", { ms: n }, `${n} ms`);
  });
  const key = el("input", { name: "key", required: true, maxLength: 32, autocomplete: "off", "aria-label": "Config key" });
  const value = el("input", { name: "value", maxLength: 128, autocomplete: "off", "aria-label": "Config value" });
  const setConfig = el("form", { id: "command-set-config", className: "command" },
    el("label", {}, "Key ", key), el("label", {}, "Value ", value), el("button", { type: "submit", textContent: "Set config" }));
  setConfig.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (key.value) sendCommand(id, "set_config", { key: key.value, value: value.value }, `${key.value}=${value.value}`);
  });
  const identify = el("button", { type: "button", textContent: "Identify", "data-command": "identify" });
  identify.addEventListener("click", () => sendCommand(id, "identify"));
  const reboot = el("button", { type: "button", textContent: "Reboot", className: "danger", "data-command": "reboot" });
  const hint = el("span", { className: "hint", role: "status" });
  let confirmTimer = 0;
  const disarm = () => { clearTimeout(confirmTimer); confirmTimer = 0; reboot.textContent = "Reboot"; delete reboot.dataset.confirm; hint.textContent = ""; };
  reboot.addEventListener("click", () => {
    if (confirmTimer) { disarm(); sendCommand(id, "reboot"); return; }
    reboot.textContent = "Confirm reboot";
    reboot.dataset.confirm = "pending";
    hint.textContent = "Click again within 5 s to reboot the device.";
    confirmTimer = setTimeout(disarm, 5000);
  });
  const ol = el("ol", { id: "command-log" });
  const empty = el("p", { className: "muted", textContent: "No commands sent from this page yet." });
  const section = el("section", { id: "commands", "aria-label": "Commands" },
    el("h3", { textContent: "Commands" }), setInterval_,
    el("div", { className: "command" }, identify, reboot, hint), setConfig,
    el("h4", { textContent: "Command log" }), empty, ol);
  return [section, { ol, empty, device: id }, disarm];
}

/** What a viewer sees where the command panel would be. */
function noCommands() {
  const text = me.role
    ? `Sending commands needs the operator role; you are logged in as a ${me.role}.`
    : "Sending commands needs the operator role; the hub has not said yet which role you have.";
  const section = el("section", { id: "commands-off", "aria-label": "Commands" },
    el("p", { className: "muted", textContent: text }));
  return [section, null, () => {}];
}

function sensorFigure(s) {
  const fig = el("figure", { className: "sensor", "data-channel": String(s.channel) });
  const caption = el("figcaption");
  const value = el("span", { "data-field": "value" });
  const unit = el("span", { className: "unit" });
  const windowLabel = el("p", { className: "window-label" });
  const [stats, f] = facts([["min", "min"], ["mean", "mean"], ["max", "max"]], "window");
  const canvas = el("canvas", { className: "chart", role: "img" });
  const note = el("p", { className: "history-note", "data-field": "history-note", hidden: true });
  fig.append(caption, el("p", { className: "reading" }, value, " ", unit), windowLabel, stats, note, canvas);
  const chart = new Chart(canvas, { boolean: s.kind === "bool", now: hubNow });
  return { fig, caption, value, unit, windowLabel, f, note, canvas, chart, channel: s.channel, load: 0 };
}

/** Loads `range` of the figure's sensor into its chart (which then continues live). */
function loadHistory(p, device, range) {
  const load = ++p.load; // a newer load (or closing the view) makes this one stale
  const maxPoints = Math.min(p.chart.cap, Math.max(10, Math.round(p.canvas.clientWidth) || p.chart.cap));
  p.chart.setRange(range.ms, Math.ceil(range.ms / maxPoints));
  const state = (s, note, points = 0) => {
    p.fig.dataset.historyPoints = String(points);
    p.fig.dataset.history = s;
    p.fig.setAttribute("aria-busy", String(s === "loading"));
    setText(p.note, note);
    p.note.hidden = !note;
  };
  p.fig.dataset.range = range.key;
  state("loading", "");
  const to = Math.round(hubNow());
  fetchHistory({ device, sensor: p.channel, from: to - range.ms, to, max_points: maxPoints }).then((h) => {
    if (load !== p.load) return;
    p.chart.load(h.points, h.step);
    state("ready", "", h.points.length);
  }, (err) => {
    if (load !== p.load) return;
    p.chart.liveOnly();
    if (err instanceof HistoryOff) return state("off", "history off — live only");
    console.warn("sensor hub: history failed:", err);
    state("error", `history failed (${String(err?.message ?? err).slice(0, 100)}) — live only`);
  });
}

/** What a device's trust is: adopted with a key, without one, or only discovered. */
function trustOf(d) {
  if (!d || d.adopted === null) return ["", DASH];
  if (!d.adopted) return ["discovered", "discovered — not stored"];
  return d.keyed ? ["key", "adopted, with a key"] : ["no-key", "no key — unauthenticated"];
}

/** The owner's "Forget device" button, with its confirm step and problem line. */
function forgetPanel(id, forgetting) {
  const button = el("button", { type: "button", id: "device-forget", className: "danger", textContent: "Forget device",
    "data-action": "forget" });
  const problem = el("p", { className: "problem", role: "alert", hidden: true });
  button.addEventListener("click", async () => {
    const d = devices.get(id);
    const name = d ? displayName(d) : `device ${id}`;
    const sure = window.confirm(`Forget ${name}? The hub drops it and its key; its stored readings stay until ` +
      "they expire. If it sends again it shows up as a discovered device.");
    if (!sure) return;
    button.disabled = true;
    problem.hidden = true;
    forgetting.name = name;
    try {
      await api("DELETE", `/api/devices/${encodeURIComponent(id)}`);
      // Unless device_removed came first and the page is on the fleet already.
      if (location.hash.replace(/\/$/, "") === `#/device/${id}`) {
        showNotice(`${name} forgotten.`);
        location.hash = "#/";
      }
    } catch (err) {
      forgetting.name = null;
      button.disabled = false;
      setText(problem, `Forgetting ${name} failed: ${String(err?.message ?? err)}`);
      problem.hidden = false;
    }
  });
  return el("section", { id: "device-admin", "aria-label": "Device administration" },
    el("h3", { textContent: "Device" }),
    el("div", { className: "command" }, button,
      el("span", { className: "hint", textContent: "Removes it from the hub and the device file (its key stops working)." })),
    problem);
}

export function mount(main, id) {
  const heading = el("h2", { tabIndex: -1 });
  const missing = el("p", { className: "empty", hidden: true, textContent: `The hub has not reported device ${id} (yet).` });
  const [status, sf] = facts([["Status", "status"], ["Trust", "trust"], ["Firmware", "firmware"], ["Last seen", "last-seen"],
    ["Interval", "interval"]], "status-line");
  sf.status.append(el("span", { className: "dot", "aria-hidden": "true" }), el("span"));
  const [counters, cf] = facts([["Received", "received"], ["Lost", "lost"], ["Reordered", "reordered"], ["Duplicated", "duplicated"],
    ["Restarts", "restarts"], ["Loss", "loss"], ["Latency p50 / p99", "latency"]], "counters");
  const grid = el("div", { className: "sensors" });
  const [commands, view, disarm] = mayCommand() ? commandPanel(id) : noCommands();
  let range = RANGES[0];
  const ranges = rangeSelector(range.key, (r) => {
    range = r;
    for (const p of sensors.values()) loadHistory(p, id, range);
  });
  const forgetting = { name: null }; // set while this page forgets the device
  const section = el("section", { id: "device-view", "data-device-id": String(id) },
    el("p", { className: "crumb" }, el("a", { href: "#/", textContent: "← Fleet" })), heading, missing, status,
    el("h3", { textContent: "Packets" }), counters,
    el("div", { className: "sensors-head" }, el("h3", { textContent: "Sensors" }), ranges), grid, commands,
    isOwner() ? forgetPanel(id, forgetting) : "");
  main.replaceChildren(section);
  if (view) {
    logView = view;
    renderLog();
  }

  const sensors = new Map(); // channel -> figure parts (charts live only while the view is open)
  function figureFor(s) {
    let p = sensors.get(s.channel);
    if (p) return p;
    p = sensorFigure(s);
    sensors.set(s.channel, p);
    const after = [...sensors.keys()].filter((c) => c > s.channel).sort((a, b) => a - b)[0];
    grid.insertBefore(p.fig, after === undefined ? null : sensors.get(after).fig);
    describe(p, s);
    loadHistory(p, id, range);
    return p;
  }
  function describe(p, sensor) { // caption, chart name and unit (metadata may arrive after the first reading)
    const label = sensor.name || `channel ${sensor.channel}`;
    setText(p.caption, sensor.unit ? `${label} (${sensor.unit})` : label);
    p.canvas.setAttribute("aria-label", `${label} chart`);
    p.chart.unit = sensor.unit || "";
    setText(p.unit, sensor.unit || "");
  }

  let frame = 0;
  const schedule = () => { if (!frame) frame = requestAnimationFrame(render); };
  function renderSeen(d) {
    setText(sf["last-seen"], d && isNum(d.last_seen_ms) ? fmtAgo(hubNow() - d.last_seen_ms) : "never");
  }
  function render() {
    frame = 0;
    const d = devices.get(id);
    missing.hidden = !!d;
    const name = d ? displayName(d) : `device ${id}`;
    setText(heading, name);
    document.title = `${name} · Sensor hub`;
    const st = statusOf(d?.status);
    sf.status.dataset.status = st;
    setText(sf.status.lastChild, st);
    const [trust, trustText] = trustOf(d);
    sf.trust.dataset.trust = trust;
    setText(sf.trust, trustText);
    setText(sf.firmware, d?.firmware ?? DASH);
    setText(sf.interval, fmtInterval(d?.interval_ms));
    renderSeen(d);
    const s = d?.stats;
    for (const k of ["received", "lost", "reordered", "duplicated", "restarts"]) setText(cf[k], fmtCount(s?.[k]));
    setText(cf.loss, fmtPercent(s?.loss_ratio));
    setText(cf.latency, s ? fmtLatency(s.latency.p50, s.latency.p99, s.latency.count) : DASH);
    for (const sensor of d ? [...d.sensors.values()] : []) {
      const p = figureFor(sensor);
      describe(p, sensor);
      setText(p.value, fmtValue(sensor.value));
      const w = sensor.windows[0];
      setText(p.windowLabel, w && isNum(w.window_s) ? `${w.window_s} s window` : "window: not yet reported");
      for (const k of ["min", "mean", "max"]) setText(p.f[k], fmtValue(w?.[k]));
    }
  }

  const offs = [
    on("model", schedule),
    on("device", (dev) => { if (dev === id) schedule(); }),
    on("removed", (dev) => {
      if (dev !== id) return;
      showNotice(forgetting.name ? `${forgetting.name} forgotten.`
        : `${heading.textContent || `Device ${id}`} left the hub: the owner forgot it, or it was a discovered device silent for too long.`);
      location.hash = "#/";
    }),
    on("readings", (msg) => {
      const d = devices.get(id);
      for (const dg of Array.isArray(msg.datagrams) ? msg.datagrams : []) {
        if (dg?.device !== id || !d) continue;
        const t = isNum(dg.received_ms) ? dg.received_ms : hubNow();
        for (const r of Array.isArray(dg.readings) ? dg.readings : []) {
          const s = r && d.sensors.get(r.channel);
          if (s) figureFor(s).chart.push(t, typeof r.value === "boolean" || isNum(r.value) ? r.value : null);
        }
        schedule();
      }
    }),
  ];
  const secondTimer = setInterval(() => {
    renderSeen(devices.get(id));
    for (const p of sensors.values()) p.chart.schedule(); // the time axis slides
  }, 1000);
  const refreshTimer = setInterval(requestRefresh, 5000);
  requestRefresh();
  render();
  return () => {
    offs.forEach((off) => off());
    clearInterval(secondTimer);
    clearInterval(refreshTimer);
    if (frame) cancelAnimationFrame(frame);
    disarm();
    for (const p of sensors.values()) { p.load += 1; p.chart.destroy(); }
    sensors.clear();
    if (view && logView === view) logView = null;
  };
}
