// fleet.js: the fleet view (#/): one sortable, filterable table row per device
// (status, last seen, rate, loss, latency, firmware), updated live from the
// model and re-rendered at most once per animation frame; "last seen" ticks
// every second against hub time. Sort key and filter survive view changes.
import { devices, hubNow, on } from "/stream.js";
import { DASH, displayName, el, fmtAgo, fmtLatency, fmtPercent, fmtRate, isNum, setText, statusOf, statusRank } from "/format.js";

const COLUMNS = [
  ["id", "ID", "num"], ["name", "Name", ""], ["status", "Status", ""], ["last-seen", "Last seen", ""],
  ["rate", "Rate (datagrams/s)", "num"], ["loss", "Loss", "num"], ["latency", "Latency p50 / p99", "num"],
  ["firmware", "Firmware", ""],
];
const state = { sort: "id", dir: 1, filter: "" }; // dir: 1 ascending, -1 descending


// Sort value of a device for a key; null sorts last in both directions.
function sortValue(d, key) {
  const s = d.stats;
  switch (key) {
    case "id": return d.id;
    case "name": return displayName(d).toLowerCase();
    case "status": return statusRank(d.status);
    case "rate": return s?.rate_per_s ?? null;
    case "loss": return s?.loss_ratio ?? null;
    case "latency": return isNum(s?.latency.p99) && s.latency.count !== 0 ? s.latency.p99 * 1e6 + (s.latency.p50 ?? 0) : null;
    case "last-seen": return isNum(d.last_seen_ms) ? -d.last_seen_ms : null; // ascending: most recent first
    case "firmware": return d.firmware ? d.firmware.toLowerCase() : null;
    default: return null;
  }
}
export function compareDevices(a, b, key, dir) {
  const x = sortValue(a, key);
  const y = sortValue(b, key);
  if (x !== y) {
    if (x === null) return 1;
    if (y === null) return -1;
    const c = typeof x === "string" ? x.localeCompare(y, undefined, { numeric: true }) : x - y;
    if (c) return c * dir;
  }
  return a.id - b.id;
}
export function matches(d, query) {
  if (!query) return true;
  const text = `${d.id} ${displayName(d)} ${d.firmware ?? ""} ${statusOf(d.status)}`.toLowerCase();
  return text.includes(query);
}

export function mount(main) {
  const rows = new Map(); // id -> { tr, cells }
  const input = el("input", { id: "fleet-filter", type: "search", value: state.filter,
    placeholder: "Filter by name, id, firmware or status", autocomplete: "off", "aria-label": "Filter devices" });
  const headRow = el("tr");
  const ths = new Map();
  for (const [key, label, cls] of COLUMNS) {
    const button = el("button", { type: "button", className: "sort" }, label, el("span", { className: "arrow", "aria-hidden": "true" }));
    button.dataset.sort = key;
    const th = el("th", { scope: "col", className: cls }, button);
    ths.set(key, th);
    headRow.append(th);
  }
  const tbody = el("tbody");
  const table = el("table", { id: "fleet" }, el("caption", { className: "visually-hidden", textContent: "Devices, live" }), el("thead", {}, headRow), tbody);
  const wrap = el("div", { className: "table-wrap", tabIndex: 0, role: "region", "aria-label": "Device table" }, table);
  const summary = el("p", { className: "summary" });
  const empty = el("p", { className: "empty", hidden: true, role: "status" });
  const section = el("section", { id: "fleet-view" },
    el("div", { className: "view-head" }, el("h2", { textContent: "Fleet", tabIndex: -1 }), summary),
    el("div", { className: "toolbar" }, input), wrap, empty);
  main.replaceChildren(section);

  let frame = 0;
  let allDirty = true;
  const dirty = new Set();
  const schedule = () => { if (!frame) frame = requestAnimationFrame(render); };
  const markAll = () => { allDirty = true; schedule(); };
  const mark = (id) => { dirty.add(id); schedule(); };

  function getRow(id) {
    let r = rows.get(id);
    if (r) return r;
    const tr = el("tr");
    tr.dataset.deviceId = String(id);
    const cells = {};
    for (const [key, , cls] of COLUMNS) {
      cells[key] = el("td", { className: cls });
      cells[key].dataset.field = key;
      tr.append(cells[key]);
    }
    cells.link = el("a", { href: `#/device/${id}` });
    cells.name.append(cells.link);
    cells.status.append(el("span", { className: "dot", "aria-hidden": "true" }), el("span"));
    r = { tr, cells };
    rows.set(id, r);
    return r;
  }

  function renderRow(d) {
    const { cells } = getRow(d.id);
    const s = d.stats;
    setText(cells.id, String(d.id));
    setText(cells.link, displayName(d));
    cells.link.classList.toggle("muted", !d.name);
    const status = statusOf(d.status);
    cells.status.dataset.status = status;
    setText(cells.status.lastChild, status);
    renderSeen(d);
    setText(cells.rate, fmtRate(s?.rate_per_s));
    setText(cells.loss, fmtPercent(s?.loss_ratio));
    setText(cells.latency, s ? fmtLatency(s.latency.p50, s.latency.p99, s.latency.count) : DASH);
    setText(cells.firmware, d.firmware ?? DASH);
  }

  function renderSeen(d) {
    const cell = getRow(d.id).cells["last-seen"];
    setText(cell, isNum(d.last_seen_ms) ? fmtAgo(hubNow() - d.last_seen_ms) : "never");
    cell.title = isNum(d.last_seen_ms) ? new Date(d.last_seen_ms).toLocaleString() : "";
  }

  function render() {
    frame = 0;
    for (const id of rows.keys()) if (!devices.has(id)) { rows.get(id).tr.remove(); rows.delete(id); }
    for (const d of devices.values()) if (allDirty || dirty.has(d.id) || !rows.has(d.id)) renderRow(d);
    allDirty = false;
    dirty.clear();
    order();
  }

  // Filter and sort: reorders the tbody only when the visible order changed.
  function order() {
    const query = state.filter.trim().toLowerCase();
    const list = [...devices.values()].filter((d) => matches(d, query))
      .sort((a, b) => compareDevices(a, b, state.sort, state.dir));
    const want = list.map((d) => rows.get(d.id).tr);
    const have = [...tbody.children];
    if (want.length !== have.length || want.some((tr, i) => tr !== have[i])) tbody.replaceChildren(...want);
    for (const [key, th] of ths) {
      if (key === state.sort) th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
    const counts = { online: 0, late: 0, offline: 0, unknown: 0 };
    for (const d of devices.values()) counts[statusOf(d.status)] += 1;
    const n = devices.size;
    setText(summary, `${n} device${n === 1 ? "" : "s"}: ${counts.online} online, ${counts.late} late, ${counts.offline} offline`
      + (counts.unknown ? `, ${counts.unknown} unknown` : ""));
    empty.hidden = list.length > 0;
    wrap.hidden = list.length === 0;
    setText(empty, n === 0 ? "Waiting for devices… send datagrams to the hub's UDP port." : `No device matches “${state.filter.trim()}”.`);
  }

  headRow.addEventListener("click", (ev) => {
    const key = ev.target.closest("button[data-sort]")?.dataset.sort;
    if (!key) return;
    if (state.sort === key) state.dir = -state.dir;
    else { state.sort = key; state.dir = 1; }
    order();
  });
  input.addEventListener("input", () => { state.filter = input.value; order(); });

  const offs = [
    on("model", markAll),
    on("device", mark),
    on("readings", (msg) => {
      for (const dg of Array.isArray(msg.datagrams) ? msg.datagrams : []) if (isNum(dg?.device) && !rows.has(dg.device)) mark(dg.device);
    }),
  ];
  const timer = setInterval(() => {
    for (const d of devices.values()) if (rows.has(d.id)) renderSeen(d);
    if (state.sort === "last-seen") order();
  }, 1000);
  render();
  return () => {
    offs.forEach((off) => off());
    clearInterval(timer);
    if (frame) cancelAnimationFrame(frame);
  };
}
