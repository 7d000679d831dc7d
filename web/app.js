// app.js: the page's entry module: hash routing (#/ fleet, #/device/ID device,
// #/hub hub) with back/forward, the header's nav and connection indicator
// (#connection data-state + text), and starting the one WebSocket stream.
import { connection, on, start, tick } from "/stream.js";
import * as fleet from "/fleet.js";
import * as device from "/device.js";
import * as hub from "/hub.js";

const main = document.getElementById("view");
const indicator = document.getElementById("connection");
const indicatorText = document.getElementById("connection-text");
const announcer = document.getElementById("connection-announcer");
let unmount = null;
let firstRoute = true;

/** The view a location hash names: { view: "fleet" | "device" | "hub", id? }. */
function parseRoute(hash) {
  const m = /^#\/device\/(\d{1,10})\/?$/.exec(hash);
  if (m) return { view: "device", id: Number(m[1]) };
  if (/^#\/hub\/?$/.test(hash)) return { view: "hub" };
  return { view: "fleet" };
}

function route() {
  const r = parseRoute(location.hash);
  if (unmount) unmount();
  unmount = null;
  try {
    if (r.view === "device") unmount = device.mount(main, r.id);
    else if (r.view === "hub") unmount = hub.mount(main);
    else unmount = fleet.mount(main);
  } catch (err) {
    console.error("sensor hub: view failed:", err);
  }
  if (r.view !== "device") document.title = `${r.view === "hub" ? "Hub" : "Fleet"} · Sensor hub`;
  for (const a of document.querySelectorAll("nav a[data-route]")) {
    if (a.dataset.route === r.view) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  // Move focus to the new view's heading on navigation (not on first load).
  if (!firstRoute) main.querySelector("h2")?.focus();
  firstRoute = false;
}

function showConnection(c) {
  const stateChanged = indicator.dataset.state !== c.state;
  indicator.dataset.state = c.state;
  indicatorText.textContent = c.text;
  // Screen readers hear state changes, not the countdown ticking every second.
  if (stateChanged) announcer.textContent = `Connection ${c.state === "live" ? "live" : c.state}`;
}

window.addEventListener("hashchange", route);
on("connection", showConnection);
showConnection(connection);
setInterval(tick, 1000);
route();
start();
