// format.js: pure helpers shared by the views: type guards for untrusted JSON and
// the text formats of values, ages, rates, percentages, latencies, durations,
// clock times and sizes; plus el()/setText(), the DOM builders every view uses
// (DOM touched only when called, so the module loads under node too).

export const isNum = (v) => typeof v === "number" && Number.isFinite(v);
export const str = (v) => (typeof v === "string" ? v : null);
export const DASH = "—";

const STATUSES = ["online", "late", "offline"];
/** One of "online" | "late" | "offline" | "unknown". */
export const statusOf = (s) => (STATUSES.includes(s) ? s : "unknown");
/** Sort rank of a status (healthy first). */
export const statusRank = (s) => { const i = STATUSES.indexOf(s); return i < 0 ? STATUSES.length : i; };

/** A reading: a number (at most 2 decimals, no "-0"), a boolean, or "—" for null (NaN/inf). */
export function fmtValue(v) {
  if (typeof v === "boolean") return String(v);
  if (isNum(v)) return String(Number(v.toFixed(2)) || 0);
  return DASH;
}

/** A count as plain digits, or "—". */
export const fmtCount = (n) => (isNum(n) ? String(n) : DASH);

/** "3 s ago", "4 min ago", "2 h ago", "1 d ago"; "never" for null. */
export function fmtAgo(ms) {
  if (!isNum(ms)) return "never";
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** Datagrams per second with one decimal ("1.0"). */
export const fmtRate = (r) => (isNum(r) ? r.toFixed(1) : DASH);

/** A ratio 0..1 as a percentage with two decimals ("0.25 %"). */
export const fmtPercent = (ratio) => (isNum(ratio) ? `${(ratio * 100).toFixed(2)} %` : DASH);

/** "p50 / p99 ms" ("1 / 5 ms"), or "—" when either is missing or there are no samples. */
export function fmtLatency(p50, p99, count) {
  if (!isNum(p50) || !isNum(p99) || count === 0) return DASH;
  return `${fmtValue(p50)} / ${fmtValue(p99)} ms`;
}

/** A duration in seconds, the two largest units: "45 s", "3 min 4 s", "2 h 3 min", "1 d 2 h". */
export function fmtUptime(seconds) {
  if (!isNum(seconds) || seconds < 0) return DASH;
  const s = Math.floor(seconds);
  const parts = [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]];
  const i = parts.findIndex(([n]) => s >= n);
  if (i < 0) return "0 s";
  const [big, bigUnit] = parts[i];
  const out = `${Math.floor(s / big)} ${bigUnit}`;
  if (i === parts.length - 1) return out;
  const [small, smallUnit] = parts[i + 1];
  const rest = Math.floor((s % big) / small);
  return rest ? `${out} ${rest} ${smallUnit}` : out;
}

/** A report interval: "500 ms", "1 s", "2.5 s", "5 min". */
export function fmtInterval(ms) {
  if (!isNum(ms)) return DASH;
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${Number((ms / 1000).toFixed(1))} s`;
  return `${Number((ms / 60000).toFixed(1))} min`;
}

const pad2 = (n) => String(n).padStart(2, "0");
/** Local wall-clock time "HH:MM:SS" of an epoch time in ms. */
export function fmtClock(ms) {
  if (!isNum(ms)) return DASH;
  const d = new Date(ms);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/** Bytes with a binary unit: "512 B", "2.8 KiB", "4 MiB". */
export function fmtBytes(n) {
  if (!isNum(n)) return DASH;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${i === 0 ? n : Number(n.toFixed(1))} ${units[i]}`;
}

/** Loss ratio of sequence counters, as the hub computes it: lost / (unique received + lost). */
export function lossRatio(seq) {
  if (!seq || !isNum(seq.received) || !isNum(seq.lost)) return null;
  const expected = seq.received - (isNum(seq.duplicated) ? seq.duplicated : 0) + seq.lost;
  return expected > 0 ? seq.lost / expected : 0;
}

/** A device's display name: its declared name or "device ID". */
export const displayName = (d) => d.name || `device ${d.id}`;

/** createElement with properties; "aria-*", "data-*" and "role" keys become attributes. Text only, never HTML. */
export function el(tag, props = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (/^(aria-|data-|role$)/.test(k)) e.setAttribute(k, v); else e[k] = v;
  }
  e.append(...kids);
  return e;
}

/** Sets textContent only when it changed (no needless layout or screen-reader churn). */
export const setText = (e, text) => { if (e.textContent !== text) e.textContent = text; };
