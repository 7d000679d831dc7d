// login.js: the login page. A one-time link (/login.html#code=…) logs in at
// once: the code travels in the fragment, which the browser never sends
// to a server, and is removed from the address bar before it is used. A
// typed secret that looks like an API token (shub_…) opens a session with
// the token's role; anything else is the owner's password. A refusal says
// what went wrong in words (wrong password or token, a used link, too many
// attempts with the seconds to wait, counted down); after a login the page
// goes back to the dashboard view it was sent from.

/** The dashboard view to go back to ("#/…" or ""): kept by the dashboard's
 *  account.js in sessionStorage (used once; this page loads before any
 *  login, so it can load only the public files: the key is repeated here),
 *  or the fragment this page was opened with. */
function takeReturn() {
  const view = /^#\/[\w/-]*$/;
  try {
    const hash = sessionStorage.getItem("sensor-hub-return") ?? "";
    sessionStorage.removeItem("sensor-hub-return");
    if (view.test(hash)) return hash;
  } catch (_) { /* storage off */ }
  // Sent here by the hub (303) from a dashboard URL: the browser kept its fragment.
  return view.test(arrivedWith) ? arrivedWith : "";
}

const arrivedWith = location.hash;
const form = document.getElementById("login-form");
const input = document.getElementById("secret");
const button = document.getElementById("login-button");
const message = document.getElementById("login-message");
let waitTimer = 0;

function show(text) {
  message.textContent = text;
  message.hidden = !text;
}

/** What a refused login means, for the way it was tried. */
function refusal(status, kind, hubSays) {
  if (status === 401) {
    if (kind === "code") return "This login link was used already or has expired. On the hub's machine, run `sensor-hub login-link` for a new one.";
    if (kind === "token") return "Wrong API token: it may have been revoked or mistyped.";
    return "Wrong password. (An API token starts with shub_.)";
  }
  if (status === 403) return `The hub refused this page: ${hubSays || "forbidden"}`;
  return hubSays || `Login failed (HTTP ${status}).`;
}

/** Disables the form for `seconds`, counting down on the button (the
 *  message, an alert, is said once, not every second). */
function wait(seconds, busy) {
  clearInterval(waitTimer);
  let left = Math.max(1, Math.ceil(seconds));
  show(busy
    ? `The hub is busy with other logins. Try again in ${left} s.`
    : `Too many failed attempts from this address. Try again in ${left} s.`);
  button.disabled = true;
  button.textContent = `Wait ${left} s`;
  waitTimer = setInterval(() => {
    left -= 1;
    if (left > 0) {
      button.textContent = `Wait ${left} s`;
      return;
    }
    clearInterval(waitTimer);
    button.textContent = "Log in";
    button.disabled = false;
    show(busy ? "" : "You can try again now.");
    input.focus();
  }, 1000);
}

async function login(body, kind) {
  button.disabled = true;
  show("");
  let waiting = false;
  try {
    const res = await fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    if (res.ok) {
      location.replace(`/${takeReturn()}`);
      return;
    }
    let hubSays = "";
    try {
      const answer = await res.json();
      if (typeof answer.error === "string") hubSays = answer.error;
    } catch (_) { /* not JSON */ }
    if (res.status === 429) {
      const header = Number(res.headers.get("Retry-After"));
      const seconds = Number.isFinite(header) && header > 0 ? header : Number(/(\d+) s/.exec(hubSays)?.[1] ?? 1);
      waiting = true;
      wait(seconds, /at once/.test(hubSays));
      return;
    }
    show(refusal(res.status, kind, hubSays));
    if (kind !== "code") input.select();
  } catch (e) {
    show(`The hub cannot be reached: ${e.message}`);
  } finally {
    if (!waiting) button.disabled = false;
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (button.disabled) return;
  const secret = input.value.trim();
  if (!secret) {
    show("Type the owner's password or an API token.");
    input.focus();
    return;
  }
  if (secret.startsWith("shub_")) login({ token: secret }, "token");
  else login({ password: input.value }, "password");
});

// A login link opened in a tab that shows this page already changes only
// the fragment: no new page load, so the fragment is watched too.
function codeFromLink() {
  const code = new URLSearchParams(location.hash.slice(1)).get("code");
  if (!code) return;
  history.replaceState(null, "", location.pathname);
  login({ code }, "code");
}
window.addEventListener("hashchange", codeFromLink);
codeFromLink();
