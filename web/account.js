// account.js: who is logged in (GET /api/me: role, name, via), what the role
// may do (viewer < operator < owner: operators and the owner command devices,
// the owner also manages API tokens), logging out (POST /api/logout), and the
// way to the login page when the session is gone (the view to come back to is
// kept for the tab in sessionStorage under RETURN_KEY; login.js, which cannot
// load this module before a login, returns there), and api(), the JSON request
// helper of the owner's actions (tokens, adopting and forgetting devices).

const ROLES = ["viewer", "operator", "owner"];
const RETURN_KEY = "sensor-hub-return"; // read by login.js too

/** The logged-in user: { role, name, via }; role null until known. */
export const me = { role: null, name: null, via: null };

/** Whether the user's role is `role` or above. */
export const may = (role) => me.role !== null && ROLES.indexOf(me.role) >= ROLES.indexOf(role);
/** Whether the user may send commands (operator or owner). */
export const mayCommand = () => may("operator");
/** Whether the user is the owner (tokens, adopting and forgetting devices). */
export const isOwner = () => me.role === "owner";

/** What the header says: "owner", or "viewer · phone" (role, then a token's name). */
export function describe(who = me) {
  if (!who.role) return "";
  return who.name && who.name !== who.role ? `${who.role} · ${who.name}` : who.role;
}

let leaving = false;
/** Goes to the login page (once), to come back to the current view afterwards. */
export function toLogin() {
  if (leaving) return;
  leaving = true;
  try {
    if (/^#\/[\w/-]*$/.test(location.hash)) sessionStorage.setItem(RETURN_KEY, location.hash);
  } catch (_) { /* storage off: start at the fleet */ }
  location.replace("/login.html");
}

/**
 * Asks the hub who we are. "ok" (me updated), "logged-out" (401: the session
 * is gone), or "unreachable" (the hub did not answer, or answered otherwise).
 */
export async function loadMe() {
  let res;
  try {
    res = await fetch("/api/me", { cache: "no-store", credentials: "same-origin" });
  } catch (_) {
    return "unreachable";
  }
  if (res.status === 401) return "logged-out";
  if (!res.ok) return "unreachable";
  try {
    const body = await res.json();
    if (!body || !ROLES.includes(body.role)) return "unreachable";
    Object.assign(me, {
      role: body.role,
      name: typeof body.name === "string" ? body.name : null,
      via: typeof body.via === "string" ? body.via : null,
    });
    return "ok";
  } catch (_) {
    return "unreachable";
  }
}

/** Ends the session, then goes to the login page. Throws when the hub cannot be reached. */
export async function logout() {
  const res = await fetch("/api/logout", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: "{}",
    credentials: "same-origin",
  });
  // 401: the session had ended already; either way it is over.
  if (!res.ok && res.status !== 401) throw new Error(`HTTP ${res.status}`);
  leaving = true;
  location.replace("/login.html");
}

/**
 * A JSON request to the hub (same origin, session cookie; a body is sent as
 * application/json): the answer's body (null when it has none, e.g. 204), or
 * an Error with the hub's message. A 401 goes to the login page.
 */
export async function api(method, path, body) {
  const init = { method, cache: "no-store", credentials: "same-origin", headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    toLogin();
    throw new Error("the session ended; log in again");
  }
  let answer = null;
  try { answer = await res.json(); } catch { /* not JSON, or no body */ }
  if (!res.ok) throw new Error(typeof answer?.error === "string" ? answer.error : `HTTP ${res.status}`);
  return answer;
}
