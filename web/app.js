// app.js: the page's entry module: asks the hub who is logged in (GET /api/me;
// without a session, to the login page), shows it in the header with the
// Log out button, then hash routing (#/ fleet, #/device/ID device, #/hub hub,
// #/access the owner's API tokens) with back/forward, the header's nav and
// connection indicator (#connection data-state + text), and starting the one
// WebSocket stream.
import { connection, on, start, tick } from "/stream.js";
import { describe, isOwner, loadMe, logout, me, toLogin } from "/account.js";
import * as fleet from "/fleet.js";
import * as device from "/device.js";
import * as hub from "/hub.js";
import * as access from "/access.js";

const main = document.getElementById("view");
const indicator = document.getElementById("connection");
const indicatorText = document.getElementById("connection-text");
const announcer = document.getElementById("connection-announcer");
let unmount = null;
let firstRoute = true;

const TITLES = { fleet: "Fleet", hub: "Hub", access: "Access" };

/** The view a location hash names: { view: "fleet" | "device" | "hub" | "access", id? }. */
function parseRoute(hash) {
  const m = /^#\/device\/(\d{1,10})\/?$/.exec(hash);
  if (m) return { view: "device", id: Number(m[1]) };
  if (/^#\/hub\/?$/.test(hash)) return { view: "hub" };
  if (/^#\/access\/?$/.test(hash)) return { view: "access" };
  return { view: "fleet" };
}

function route() {
  const r = parseRoute(location.hash);
  if (unmount) unmount();
  unmount = null;
  try {
    if (r.view === "device") unmount = device.mount(main, r.id);
    else if (r.view === "hub") unmount = hub.mount(main);
    else if (r.view === "access") unmount = access.mount(main);
    else unmount = fleet.mount(main);
  } catch (err) {
    console.error("sensor hub: view failed:", err);
  }
  if (r.view !== "device") document.title = `${TITLES[r.view]} · Sensor hub`;
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

let shownRole; // undefined until the header first shows who is logged in
function showAccount() {
  const who = document.getElementById("account-who");
  who.textContent = describe();
  who.dataset.role = me.role ?? "";
  document.getElementById("account").hidden = !me.role;
  document.getElementById("nav-access").hidden = !isOwner();
  // Learned only now (the hub was away at load): the view shows what the role may do.
  const changed = shownRole !== undefined && shownRole !== me.role;
  shownRole = me.role;
  if (changed) route();
}

const logoutButton = document.getElementById("logout");
const accountProblem = document.getElementById("account-problem");
logoutButton.addEventListener("click", async () => {
  logoutButton.disabled = true;
  accountProblem.hidden = true;
  try {
    await logout();
  } catch (err) {
    accountProblem.textContent = `Log out failed: the hub did not answer (${err.message}). Try again.`;
    accountProblem.hidden = false;
    logoutButton.disabled = false;
  }
});

// Who is logged in decides what the views offer, so it comes first. A hub
// that cannot answer now is asked again by the stream when it reconnects.
if ((await loadMe()) === "logged-out") {
  toLogin();
} else {
  showAccount();
  on("account", showAccount);
  window.addEventListener("hashchange", route);
  on("connection", showConnection);
  showConnection(connection);
  setInterval(tick, 1000);
  route();
  start();
}
