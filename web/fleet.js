// fleet.js: the fleet view (#/): one sortable, filterable table row per adopted
// device (#fleet: status, key badge, last seen, rate, loss, latency, firmware;
// in a cluster also the hub holding it: a Hub column in both tables, shown only
// when some device names its hub), and below it the discovered devices
// (#discovered: seen only in datagrams of ids the hub does not know; live,
// never stored), each with "Adopt with key" and "Adopt without key" for the
// owner (POST /api/devices/ID/adopt; a new key is shown once, in #device-key,
// with a copy button). Updated live from the model
// and re-rendered at most once per animation frame; "last seen" ticks every
// second against hub time. Sort key and filter survive view changes; a notice
// from another view (showNotice, e.g. "device 7 forgotten") is shown on the next
// mount.
import { devices, hubNow, on, setAdopted } from "/stream.js";
import { api, isOwner } from "/account.js";
import { DASH, displayName, el, fmtAgo, fmtLatency, fmtPercent, fmtRate, fmtValue, isNum, setText, statusOf, statusRank } from "/format.js";

const COLUMNS = [
  ["id", "ID", "num"], ["name", "Name", ""], ["hub", "Hub", ""], ["status", "Status", ""], ["trust", "Key", ""], ["last-seen", "Last seen", ""],
  ["rate", "Rate (datagrams/s)", "num"], ["loss", "Loss", "num"], ["latency", "Latency p50 / p99", "num"],
  ["firmware", "Firmware", ""],
];
const DISCOVERED_COLUMNS = [
  ["id", "ID", "num"], ["hub", "Hub", ""], ["status", "Status", ""], ["last-seen", "Last seen", ""],
  ["rate", "Rate (datagrams/s)", "num"], ["readings", "Latest readings", ""],
];
const READINGS_SHOWN = 4; // channels listed in a discovered row
const state = { sort: "id", dir: 1, filter: "" }; // dir: 1 ascending, -1 descending
const NO_KEY_TITLE = "Adopted without a key: its datagrams are not authenticated, " +
  "so anyone who can reach the hub's UDP port can send data under its id.";
const KEY_TITLE = "Adopted with a key: the hub accepts only its authenticated hello and datagrams.";

/** Which table a device goes in: adopted, discovered, or none until the hub has said (null). */
const placeOf = (d) => (d.adopted === true ? "fleet" : d.adopted === false ? "discovered" : null);

let notice = ""; // for the next mount
/** Shows `text` on the fleet view (the next time it opens). */
export function showNotice(text) { notice = text; }
let unshownKey = null; // { id, key } whose answer came after the view closed


// Sort value of a device for a key; null sorts last in both directions.
function sortValue(d, key) {
  const s = d.stats;
  switch (key) {
    case "id": return d.id;
    case "name": return displayName(d).toLowerCase();
    case "hub": return d.hub ? d.hub.toLowerCase() : null;
    case "status": return statusRank(d.status);
    case "trust": return d.keyed ? 0 : 1;
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
  const text = `${d.id} ${displayName(d)} ${d.firmware ?? ""} ${statusOf(d.status)} ${d.hub ?? ""}`.toLowerCase();
  return text.includes(query);
}

/** A table of `columns` with sort buttons when `sortable`; returns its parts. */
function table(id, caption, columns, sortable, actions) {
  const headRow = el("tr");
  const ths = new Map();
  for (const [key, label, cls] of columns) {
    let content = label;
    if (sortable) {
      content = el("button", { type: "button", className: "sort" }, label, el("span", { className: "arrow", "aria-hidden": "true" }));
      content.dataset.sort = key;
    }
    const th = el("th", { scope: "col", className: cls }, content);
    ths.set(key, th);
    headRow.append(th);
  }
  if (actions) headRow.append(el("th", { scope: "col" }, el("span", { className: "visually-hidden", textContent: "Actions" })));
  const tbody = el("tbody");
  const t = el("table", { id }, el("caption", { className: "visually-hidden", textContent: caption }), el("thead", {}, headRow), tbody);
  return { table: t, headRow, ths, tbody };
}

/** Orders `tbody`'s children as `want`, touching it only when the order changed. */
function reorder(tbody, want) {
  const have = [...tbody.children];
  if (want.length !== have.length || want.some((tr, i) => tr !== have[i])) tbody.replaceChildren(...want);
}

/** "ch0 21.5 · humidity 40" of a device's latest readings. */
function readingsText(d) {
  const sensors = [...d.sensors.values()].sort((a, b) => a.channel - b.channel);
  const shown = sensors.slice(0, READINGS_SHOWN).map((s) => `${s.name || `ch${s.channel}`} ${fmtValue(s.value)}${s.unit ? ` ${s.unit}` : ""}`);
  if (sensors.length > READINGS_SHOWN) shown.push(`+${sensors.length - READINGS_SHOWN} more`);
  return shown.length ? shown.join(" · ") : DASH;
}

export function mount(main) {
  const owner = isOwner();
  const rows = new Map(); // adopted: id -> { tr, cells }
  const drows = new Map(); // discovered: id -> { tr, cells, buttons }
  const input = el("input", { id: "fleet-filter", type: "search", value: state.filter,
    placeholder: "Filter by name, id, firmware or status", autocomplete: "off", "aria-label": "Filter devices" });
  const { table: fleetTable, headRow, ths, tbody } = table("fleet", "Adopted devices, live", COLUMNS, true, false);
  const wrap = el("div", { className: "table-wrap", tabIndex: 0, role: "region", "aria-label": "Device table" }, fleetTable);
  const summary = el("p", { className: "summary" });
  const empty = el("p", { className: "empty", hidden: true, role: "status" });
  const noticeLine = el("p", { id: "fleet-notice", className: "notice", role: "status", hidden: !notice, textContent: notice });
  notice = "";
  const problem = el("p", { id: "fleet-problem", className: "problem", role: "alert", hidden: true });
  const status = el("p", { id: "fleet-status", className: "hint", role: "status" });

  // --- the key of a device just adopted with one (in the view for the owner only) ---
  const keyPanel = el("section", { id: "device-key", className: "token-new", hidden: true, "aria-labelledby": "device-key-title" });
  const keyTitle = el("p", { id: "device-key-title" });
  const keyText = el("input", { id: "device-key-text", readOnly: true, spellcheck: false, autocomplete: "off",
    "aria-label": "The device's key (shown only once)", "aria-describedby": "device-key-hint" });
  const copy = el("button", { type: "button", id: "device-key-copy", textContent: "Copy" });
  const copied = el("span", { className: "hint", role: "status" });
  const done = el("button", { type: "button", id: "device-key-done", textContent: "Done" });
  keyPanel.append(keyTitle, el("p", { id: "device-key-hint", className: "hint",
    textContent: "This key goes into the device's firmware (docs/PROTOCOL.md, “Device authentication”): from now on " +
      "the hub takes only its authenticated hello and datagrams. Copy it now: this page will not show it again." }),
  el("div", { className: "command" }, keyText, copy, done, copied));
  keyText.addEventListener("focus", () => keyText.select());
  copy.addEventListener("click", async () => {
    keyText.focus();
    keyText.select();
    try {
      await navigator.clipboard.writeText(keyText.value);
      setText(copied, "Copied.");
    } catch (_) {
      setText(copied, "Selected: press Ctrl+C (⌘C) to copy.");
    }
  });
  done.addEventListener("click", () => {
    keyText.value = "";
    keyPanel.hidden = true;
    input.focus();
  });
  function showKey(id, key) {
    setText(keyTitle, `Key of device ${id}:`);
    keyText.value = key;
    setText(copied, "");
    keyPanel.hidden = false;
    keyText.focus();
  }

  // --- discovered devices ------------------------------------------------------------
  const disc = table("discovered", "Discovered devices, live, not stored", DISCOVERED_COLUMNS, false, owner);
  const discWrap = el("div", { className: "table-wrap", tabIndex: 0, role: "region", "aria-label": "Discovered devices" }, disc.table);
  const discCount = el("span", { className: "summary" });
  const discEmpty = el("p", { className: "muted", hidden: true });
  const discSection = el("section", { id: "discovered-devices", hidden: true, "aria-labelledby": "discovered-heading" },
    el("div", { className: "view-head" }, el("h3", { id: "discovered-heading", textContent: "Discovered" }), discCount),
    el("p", { className: "hint", textContent: "Seen only in datagrams from ids the hub does not know: shown live here, " +
      "never stored, and forgotten after a while of silence (10 min by default). " +
      (owner ? "Adopt one to keep its data." : "The owner can adopt one to keep its data.") }),
    discWrap, discEmpty);

  const section = el("section", { id: "fleet-view" },
    el("div", { className: "view-head" }, el("h2", { textContent: "Fleet", tabIndex: -1 }), summary),
    noticeLine, problem, owner ? keyPanel : "",
    el("div", { className: "toolbar" }, input), wrap, empty, status, discSection);
  main.replaceChildren(section);
  let stopped = false;
  if (unshownKey) {
    showKey(unshownKey.id, unshownKey.key);
    unshownKey = null;
  }

  // The hub columns: only in a cluster (some device names the hub holding it).
  let hubShown = false;
  function showHub(shown) {
    if (shown === hubShown) return;
    hubShown = shown;
    for (const th of [ths.get("hub"), disc.ths.get("hub")]) th.hidden = !shown;
    for (const r of [...rows.values(), ...drows.values()]) r.cells.hub.hidden = !shown;
  }
  ths.get("hub").hidden = true;
  disc.ths.get("hub").hidden = true;

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
    cells.hub.hidden = !hubShown;
    cells.link = el("a", { href: `#/device/${id}` });
    cells.name.append(cells.link);
    cells.status.append(el("span", { className: "dot", "aria-hidden": "true" }), el("span"));
    cells.badge = el("span", { className: "badge" });
    cells.trust.append(cells.badge);
    r = { tr, cells };
    rows.set(id, r);
    return r;
  }

  function getDRow(id) {
    let r = drows.get(id);
    if (r) return r;
    const tr = el("tr");
    tr.dataset.deviceId = String(id);
    const cells = {};
    for (const [key, , cls] of DISCOVERED_COLUMNS) {
      cells[key] = el("td", { className: cls });
      cells[key].dataset.field = key;
      tr.append(cells[key]);
    }
    cells.hub.hidden = !hubShown;
    cells.link = el("a", { href: `#/device/${id}` });
    cells.id.append(cells.link);
    cells.status.append(el("span", { className: "dot", "aria-hidden": "true" }), el("span"));
    const buttons = [];
    if (owner) {
      buttons.push(
        el("button", { type: "button", textContent: "Adopt with key", "data-action": "adopt-key",
          title: "Adopt it and make a key for its firmware: only authenticated datagrams are taken from then on" }),
        el("button", { type: "button", textContent: "Adopt without key", "data-action": "adopt-nokey",
          title: "Adopt it as it is: its datagrams stay unauthenticated (the weaker option, for devices that only send UDP)" }));
      tr.append(el("td", { className: "actions" }, ...buttons));
    }
    r = { tr, cells, buttons };
    drows.set(id, r);
    return r;
  }

  function renderRow(d) {
    const { cells } = getRow(d.id);
    const s = d.stats;
    setText(cells.id, String(d.id));
    setText(cells.link, displayName(d));
    cells.link.classList.toggle("muted", !d.name);
    setText(cells.hub, d.hub ?? DASH);
    const status = statusOf(d.status);
    cells.status.dataset.status = status;
    setText(cells.status.lastChild, status);
    setText(cells.badge, d.keyed ? "key" : "no key");
    cells.badge.dataset.trust = d.keyed ? "key" : "no-key";
    cells.badge.title = d.keyed ? KEY_TITLE : NO_KEY_TITLE;
    renderSeen(d);
    setText(cells.rate, fmtRate(s?.rate_per_s));
    setText(cells.loss, fmtPercent(s?.loss_ratio));
    setText(cells.latency, s ? fmtLatency(s.latency.p50, s.latency.p99, s.latency.count) : DASH);
    setText(cells.firmware, d.firmware ?? DASH);
  }

  function renderDRow(d) {
    const { cells } = getDRow(d.id);
    setText(cells.link, String(d.id));
    setText(cells.hub, d.hub ?? DASH);
    const status = statusOf(d.status);
    cells.status.dataset.status = status;
    setText(cells.status.lastChild, status);
    renderSeen(d);
    setText(cells.rate, fmtRate(d.stats?.rate_per_s));
    setText(cells.readings, readingsText(d));
  }

  function renderSeen(d) {
    const r = placeOf(d) === "fleet" ? rows.get(d.id) : drows.get(d.id);
    if (!r) return;
    const cell = r.cells["last-seen"];
    setText(cell, isNum(d.last_seen_ms) ? fmtAgo(hubNow() - d.last_seen_ms) : "never");
    cell.title = isNum(d.last_seen_ms) ? new Date(d.last_seen_ms).toLocaleString() : "";
  }

  function render() {
    frame = 0;
    // A row leaves its table when its device left the model or moved (adopted).
    for (const [id, r] of rows) if (placeOf(devices.get(id) ?? {}) !== "fleet") { r.tr.remove(); rows.delete(id); }
    for (const [id, r] of drows) if (placeOf(devices.get(id) ?? {}) !== "discovered") { r.tr.remove(); drows.delete(id); }
    for (const d of devices.values()) {
      const place = placeOf(d);
      if (place === "fleet" && (allDirty || dirty.has(d.id) || !rows.has(d.id))) renderRow(d);
      if (place === "discovered" && (allDirty || dirty.has(d.id) || !drows.has(d.id))) renderDRow(d);
    }
    allDirty = false;
    dirty.clear();
    order();
  }

  // Filter and sort: reorders a tbody only when its visible order changed.
  function order() {
    const query = state.filter.trim().toLowerCase();
    const all = [...devices.values()];
    const adopted = all.filter((d) => placeOf(d) === "fleet");
    const discovered = all.filter((d) => placeOf(d) === "discovered");
    showHub(all.some((d) => typeof d.hub === "string"));
    const list = adopted.filter((d) => matches(d, query)).sort((a, b) => compareDevices(a, b, state.sort, state.dir));
    reorder(tbody, list.map((d) => rows.get(d.id).tr));
    for (const [key, th] of ths) {
      if (key === state.sort) th.setAttribute("aria-sort", state.dir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    }
    const counts = { online: 0, late: 0, offline: 0, unknown: 0 };
    for (const d of adopted) counts[statusOf(d.status)] += 1;
    const n = adopted.length;
    setText(summary, `${n} device${n === 1 ? "" : "s"}: ${counts.online} online, ${counts.late} late, ${counts.offline} offline`
      + (counts.unknown ? `, ${counts.unknown} unknown` : "")
      + (discovered.length ? `; ${discovered.length} discovered` : ""));
    empty.hidden = list.length > 0;
    wrap.hidden = list.length === 0;
    let why = `No device matches “${state.filter.trim()}”.`;
    if (all.length === 0) why = "Waiting for devices… send datagrams to the hub's UDP port.";
    else if (n === 0) why = owner ? "No adopted devices yet: adopt one of the discovered devices below." : "No adopted devices yet.";
    setText(empty, why);

    const shown = discovered.filter((d) => matches(d, query)).sort((a, b) => a.id - b.id);
    reorder(disc.tbody, shown.map((d) => drows.get(d.id).tr));
    discSection.hidden = discovered.length === 0;
    setText(discCount, `${discovered.length} device${discovered.length === 1 ? "" : "s"}, not stored`);
    discWrap.hidden = shown.length === 0;
    discEmpty.hidden = shown.length > 0;
    setText(discEmpty, `No discovered device matches “${state.filter.trim()}”.`);
  }

  async function adopt(id, withKey, buttons) {
    for (const b of buttons) b.disabled = true;
    problem.hidden = true;
    try {
      const answer = await api("POST", `/api/devices/${encodeURIComponent(id)}/adopt`, { key: withKey });
      const key = typeof answer?.key === "string" && /^[0-9a-f]{64}$/i.test(answer.key) ? answer.key : null;
      setAdopted(id, key !== null);
      if (stopped) {
        if (key) unshownKey = { id, key };
        return;
      }
      setText(status, key ? `Device ${id} adopted with a key.` : `Device ${id} adopted without a key.`);
      if (key) showKey(id, key);
    } catch (err) {
      for (const b of buttons) b.disabled = false;
      if (stopped) return;
      setText(problem, `Adopting device ${id} failed: ${String(err?.message ?? err)}`);
      problem.hidden = false;
    }
  }

  disc.tbody.addEventListener("click", (ev) => {
    const button = ev.target.closest("button[data-action]");
    const id = Number(button?.closest("tr[data-device-id]")?.dataset.deviceId);
    const r = drows.get(id);
    if (!button || !r || button.disabled) return;
    if (button.dataset.action === "adopt-key") adopt(id, true, r.buttons);
    else if (button.dataset.action === "adopt-nokey") adopt(id, false, r.buttons);
  });
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
      for (const dg of Array.isArray(msg.datagrams) ? msg.datagrams : []) {
        // New rows, and the live values of discovered devices.
        if (isNum(dg?.device) && (!rows.has(dg.device) || drows.has(dg.device))) mark(dg.device);
      }
    }),
  ];
  const timer = setInterval(() => {
    for (const d of devices.values()) renderSeen(d);
    if (state.sort === "last-seen") order();
  }, 1000);
  render();
  return () => {
    stopped = true;
    offs.forEach((off) => off());
    clearInterval(timer);
    if (frame) cancelAnimationFrame(frame);
    keyText.value = "";
  };
}
