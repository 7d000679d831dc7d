// access.js: the owner's access view (#/access): the API tokens (GET /api/tokens:
// name, role, when made; never their secrets), a form that makes one
// (POST /api/tokens with a name and the viewer or operator role; the token's
// text is shown once, here, with a copy button), and revoking one (DELETE
// /api/tokens/ID) after a confirming second click, like the device view's
// Reboot. Anyone else is told that only the owner manages tokens.
import { api, isOwner, me } from "/account.js";
import { el, setText } from "/format.js";

const CONFIRM_MS = 5000;

/** "2025-11-22 08:58" in local time, or "—". */
function fmtCreated(ms) {
  if (typeof ms !== "number" || !Number.isFinite(ms) || ms <= 0) return "—";
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}`;
}

export function mount(main) {
  const heading = el("h2", { textContent: "Access", tabIndex: -1 });
  if (!isOwner()) {
    const who = me.role ? `You are logged in as a ${me.role}.` : "";
    main.replaceChildren(el("section", { id: "access-view" },
      el("div", { className: "view-head" }, heading),
      el("p", { className: "empty", textContent: `Only the owner manages API tokens. ${who}`.trim() })));
    return () => {};
  }

  // --- a new token ---------------------------------------------------------------
  const name = el("input", { id: "token-name", name: "name", required: true, maxLength: 64, autocomplete: "off",
    placeholder: "e.g. phone, prometheus" });
  const role = el("select", { id: "token-role", name: "role" },
    el("option", { value: "viewer", textContent: "viewer: reads only" }),
    el("option", { value: "operator", textContent: "operator: also sends commands" }));
  const create = el("button", { type: "submit", textContent: "Create token" });
  const form = el("form", { id: "token-create", className: "command", "aria-labelledby": "token-create-heading" },
    el("label", { htmlFor: "token-name" }, "Name"), name,
    el("label", { htmlFor: "token-role" }, "Role"), role, create);

  const fresh = el("div", { id: "token-new", className: "token-new", hidden: true });
  const freshText = el("p", {});
  const token = el("input", { id: "token-text", readOnly: true, spellcheck: false, autocomplete: "off",
    "aria-label": "The new token (shown only once)", "aria-describedby": "token-new-hint" });
  const copy = el("button", { type: "button", id: "token-copy", textContent: "Copy" });
  const copied = el("span", { className: "hint", role: "status" });
  const dismiss = el("button", { type: "button", id: "token-dismiss", textContent: "Done" });
  fresh.append(freshText, el("p", { id: "token-new-hint", className: "hint",
    textContent: "Copy it now: the hub keeps only a digest, so this page cannot show it again. " +
      "Send it as “Authorization: Bearer <token>”, or type it into the login page." }),
  el("div", { className: "command" }, token, copy, dismiss, copied));
  token.addEventListener("focus", () => token.select());
  copy.addEventListener("click", async () => {
    token.focus();
    token.select();
    try {
      await navigator.clipboard.writeText(token.value);
      setText(copied, "Copied.");
    } catch (_) {
      setText(copied, "Selected: press Ctrl+C (⌘C) to copy.");
    }
  });
  dismiss.addEventListener("click", () => {
    token.value = "";
    fresh.hidden = true;
    name.focus();
  });

  // --- the list --------------------------------------------------------------------
  const tbody = el("tbody");
  const table = el("table", { id: "tokens" },
    el("caption", { textContent: "API tokens" }),
    el("thead", {}, el("tr", {},
      ...["Name", "Role", "Created", "Id"].map((h) => el("th", { scope: "col", textContent: h })),
      el("th", { scope: "col" }, el("span", { className: "visually-hidden", textContent: "Actions" })))),
    tbody);
  const none = el("p", { className: "empty", hidden: true, textContent: "No API tokens yet." });
  const problem = el("p", { className: "problem", role: "alert", hidden: true });
  const status = el("p", { id: "access-status", className: "hint", role: "status" });
  const summary = el("p", { className: "summary", textContent: "Loading…" });

  main.replaceChildren(el("section", { id: "access-view" },
    el("div", { className: "view-head" }, heading, summary),
    el("p", { className: "hint", textContent: "The owner logs in with the password or a login link. " +
      "API tokens are for scripts, Prometheus and other people: a viewer reads, an operator also sends " +
      "commands. Revoking a token ends its sessions and WebSockets at once." }),
    problem,
    el("h3", { id: "token-create-heading", textContent: "New token" }), form, fresh,
    el("div", { className: "table-wrap" }, table), none, status));

  let stopped = false;
  const disarms = new Set();
  const fail = (err) => {
    if (stopped) return;
    setText(problem, String(err?.message ?? err));
    problem.hidden = false;
  };

  function row(t) {
    const revoke = el("button", { type: "button", className: "danger", textContent: "Revoke",
      "data-action": "revoke", "aria-label": `Revoke ${t.name}` });
    const hint = el("span", { className: "hint", role: "status" });
    let timer = 0;
    const disarm = () => {
      clearTimeout(timer);
      timer = 0;
      revoke.textContent = "Revoke";
      revoke.setAttribute("aria-label", `Revoke ${t.name}`);
      delete revoke.dataset.confirm;
      hint.textContent = "";
    };
    disarms.add(disarm);
    revoke.addEventListener("click", async () => {
      if (!timer) {
        revoke.textContent = "Confirm revoke";
        revoke.setAttribute("aria-label", `Confirm: revoke ${t.name}`);
        revoke.dataset.confirm = "pending";
        hint.textContent = "Click again within 5 s to revoke it.";
        timer = setTimeout(disarm, CONFIRM_MS);
        return;
      }
      disarm();
      revoke.disabled = true;
      problem.hidden = true;
      try {
        await api("DELETE", `/api/tokens/${encodeURIComponent(t.id)}`);
        setText(status, `Token “${t.name}” revoked.`);
        await load();
      } catch (err) {
        revoke.disabled = false;
        fail(err);
      }
    });
    return el("tr", { "data-token-id": t.id },
      el("th", { scope: "row", "data-field": "name", textContent: t.name }),
      el("td", { "data-field": "role", textContent: t.role }),
      el("td", { "data-field": "created" },
        el("time", { dateTime: new Date(t.created_ms || 0).toISOString(), textContent: fmtCreated(t.created_ms) })),
      el("td", { "data-field": "id" }, el("code", { textContent: t.id })),
      el("td", { className: "actions" }, revoke, " ", hint));
  }

  async function load() {
    const answer = await api("GET", "/api/tokens");
    if (stopped) return;
    const tokens = (Array.isArray(answer?.tokens) ? answer.tokens : [])
      .filter((t) => t && typeof t.id === "string" && typeof t.name === "string" && typeof t.role === "string");
    for (const d of disarms) d();
    disarms.clear();
    tbody.replaceChildren(...tokens.map(row));
    table.parentElement.hidden = tokens.length === 0;
    none.hidden = tokens.length > 0;
    setText(summary, `${tokens.length} token${tokens.length === 1 ? "" : "s"}`);
    problem.hidden = true;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const wanted = name.value.trim();
    if (!wanted) {
      fail(new Error("Give the token a name, e.g. the device or person that will use it."));
      name.focus();
      return;
    }
    create.disabled = true;
    problem.hidden = true;
    try {
      const made = await api("POST", "/api/tokens", { name: wanted, role: role.value });
      if (stopped) return;
      setText(freshText, `Token “${made.name}” (${made.role}):`);
      token.value = typeof made.token === "string" ? made.token : "";
      fresh.hidden = false;
      setText(copied, "");
      setText(status, `Token “${made.name}” made.`);
      name.value = "";
      token.focus();
      await load();
    } catch (err) {
      fail(err);
    } finally {
      create.disabled = false;
    }
  });

  load().catch(fail);
  return () => {
    stopped = true;
    for (const d of disarms) d();
    token.value = "";
  };
}
