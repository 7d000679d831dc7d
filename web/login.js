// login.js: the login page. A one-time link (/login.html#code=…) logs in at
// once: the code travels in the fragment, which the browser never sends
// to a server, and is removed from the address bar before it is used. A
// typed secret that looks like an API token (shub_…) opens a session with
// the token's role; anything else is the owner's password.

const form = document.getElementById("login-form");
const input = document.getElementById("secret");
const button = document.getElementById("login-button");
const message = document.getElementById("login-message");

function show(text) {
  message.textContent = text;
  message.hidden = !text;
}

async function login(body) {
  button.disabled = true;
  show("");
  try {
    const res = await fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    if (res.ok) {
      location.replace("/");
      return;
    }
    let text = `Login failed (HTTP ${res.status}).`;
    try {
      const answer = await res.json();
      if (answer.error) text = answer.error;
    } catch (_) { /* not JSON */ }
    show(text);
  } catch (e) {
    show(`The hub cannot be reached: ${e.message}`);
  } finally {
    button.disabled = false;
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  const secret = input.value;
  if (!secret) {
    show("Type the owner's password or an API token.");
    return;
  }
  login(secret.startsWith("shub_") ? { token: secret } : { password: secret });
});

const code = new URLSearchParams(location.hash.slice(1)).get("code");
if (code) {
  history.replaceState(null, "", location.pathname);
  login({ code });
}
