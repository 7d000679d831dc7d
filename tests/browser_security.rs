//! Access control of the dashboard in real headless Chromium (see
//! tests/browser.rs for how it is driven): the owner logs in with the
//! password through the login page (a wrong one is said so, and the
//! address then waits, counted down on the page) and commands a device; the
//! owner's Access view makes and revokes API tokens; a viewer logged in with
//! such a token sees no command controls, and is sent to the login page the
//! moment the token is revoked; and pages of other origins, open in the
//! same browser while the owner is logged in, cannot reach a device through
//! the owner's session: not by WebSocket, not by auto-submitted forms of any
//! encoding, not by a no-cors fetch. The same-site case (another port of
//! 127.0.0.1: the browser sends the SameSite=Strict cookie along) is refused
//! by the Origin checks; the cross-site one (127.0.0.2) gets no cookie.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod browser_support;
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use browser_support::*;
use serde_json::{json, Value};
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The device view's status of device 1.
const DEVICE_STATUS: &str = r#"
    return document.querySelector('#device-view [data-field="status"]')?.dataset.status ?? null;
"#;

const PASSWORD: &str = "correct horse battery staple";

#[tokio::test]
async fn the_owner_logs_in_with_the_password_and_commands_a_device() {
    // A wrong password makes the address wait 3 s before the next try.
    let mut config = HUB_CONFIG.to_vec();
    config.push(("SENSOR_HUB__AUTH__FAILURE_DELAY_MS", "3000"));
    let hub = start_hub(&config).await;
    let hash = sensor_hub::auth::secret::hash_password(PASSWORD).unwrap();
    credential_file(&hub)
        .update(|c| {
            c.owner_password = Some(hash);
            Ok(())
        })
        .unwrap();
    let fleet = Fleet::start(hub.udp, Some(hub.control), 1, 1, 100);
    let browser = Browser::start().await;

    // Without a session, the dashboard sends the browser to the login page.
    browser
        .client
        .goto(&format!("http://{}/#/device/1", hub.http))
        .await
        .unwrap();
    browser
        .until("the login page", Duration::from_secs(10), PATH, |v| {
            v == "/login.html"
        })
        .await;

    // A wrong password is said to be wrong.
    browser
        .submit_login(hub.http, "not the password at all")
        .await;
    browser
        .until(
            "the wrong password refused",
            Duration::from_secs(10),
            LOGIN_MESSAGE,
            |v| v == "Wrong password. (An API token starts with shub_.)",
        )
        .await;
    // The right one at once: the address must wait, and the page says how long.
    browser.submit_login(hub.http, PASSWORD).await;
    let wait = browser
        .until(
            "the wait after a failure",
            Duration::from_secs(10),
            LOGIN_MESSAGE,
            |v| {
                v.as_str().is_some_and(|t| {
                    t.starts_with("Too many failed attempts from this address. Try again in ")
                })
            },
        )
        .await;
    let seconds: u64 = wait
        .as_str()
        .unwrap()
        .trim_start_matches("Too many failed attempts from this address. Try again in ")
        .trim_end_matches(" s.")
        .parse()
        .unwrap_or_else(|_| panic!("a whole number of seconds: {wait}"));
    assert!((1..=3).contains(&seconds), "{wait}");
    let button = browser
        .js("const b = document.getElementById('login-button'); return [b.disabled, b.textContent];")
        .await;
    assert_eq!(button[0], true, "no tries while waiting: {button}");
    assert!(
        button[1].as_str().unwrap().starts_with("Wait "),
        "the countdown on the button: {button}"
    );
    browser
        .until(
            "the countdown's end",
            Duration::from_secs(6),
            LOGIN_MESSAGE,
            |v| v == "You can try again now.",
        )
        .await;
    browser.submit_login(hub.http, PASSWORD).await;
    browser.until_logged_in("owner").await;
    assert_eq!(
        browser.js("return location.hash;").await,
        "#/device/1",
        "back to the page first asked for"
    );
    assert_eq!(
        browser
            .js("return [document.getElementById('nav-access').hidden, document.getElementById('logout').textContent];")
            .await,
        json!([false, "Log out"]),
        "the owner sees the Access view's link and a Log out button"
    );

    // A command clicked in the page reaches the device and succeeds.
    browser
        .until(
            "device 1 online",
            Duration::from_secs(10),
            DEVICE_STATUS,
            |v| v == "online",
        )
        .await;
    browser
        .click(r#"#commands button[data-command="identify"]"#)
        .await;
    browser
        .until(
            "identify succeeded",
            Duration::from_secs(10),
            COMMAND_LOG,
            |v| all_succeeded(v, 1),
        )
        .await;
    assert_eq!(
        hub.metric(r#"sensor_hub_auth_logins_total{method="password"}"#)
            .await,
        1
    );
    assert_eq!(
        hub.metric(r#"sensor_hub_http_denied_total{reason="bad_credentials"}"#)
            .await,
        1
    );
    assert_eq!(
        hub.metric(r#"sensor_hub_http_denied_total{reason="throttled"}"#)
            .await,
        1
    );

    let stats = fleet.stop().await;
    assert_eq!(stats.commands_received, 1, "identify reached the device");
    browser.end().await;
    hub.stop().await;
}

/// The rows of the Access view's token table: [name, role] each.
const TOKEN_ROWS: &str = r#"
    return [...document.querySelectorAll('#tokens tbody tr')].map((tr) =>
        [tr.querySelector('[data-field="name"]').textContent, tr.querySelector('[data-field="role"]').textContent]);
"#;

/// The new token the Access view shows, or null.
const NEW_TOKEN: &str = r#"
    const box = document.getElementById('token-new');
    return box && !box.hidden ? document.getElementById('token-text').value : null;
"#;

/// The names of the tokens in the hub's credentials file.
fn token_names(hub: &TestHub) -> Vec<String> {
    let (credentials, _) = credential_file(hub).load().unwrap().unwrap();
    credentials.tokens.into_iter().map(|t| t.name).collect()
}

/// Makes a token in the Access view; returns its text.
async fn make_token(browser: &Browser, name: &str, role: &str, before: &Value) -> String {
    let input = browser
        .client
        .find(fantoccini::Locator::Id("token-name"))
        .await
        .unwrap();
    input.send_keys(name).await.unwrap();
    browser
        .click(&format!("#token-role option[value={role}]"))
        .await;
    browser.click("#token-create button[type=submit]").await;
    let token = browser
        .until(
            &format!("token {name} shown"),
            Duration::from_secs(10),
            NEW_TOKEN,
            |v| {
                v.as_str()
                    .is_some_and(|t| t.starts_with("shub_") && v != before)
            },
        )
        .await;
    browser
        .until(
            &format!("token {name} listed"),
            Duration::from_secs(10),
            TOKEN_ROWS,
            |v| v.as_array().unwrap().contains(&json!([name, role])),
        )
        .await;
    token.as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_owner_manages_tokens_and_a_viewer_sees_no_command_controls() {
    let hub = start_hub(HUB_CONFIG).await;
    let fleet = Fleet::start(hub.udp, Some(hub.control), 1, 1, 100);
    let browser = Browser::start().await;
    browser.login_with_link(&hub).await;

    // The Access view lists the tokens: the test hub's own first.
    browser.click(r#"nav a[data-route="access"]"#).await;
    browser
        .until("the token list", Duration::from_secs(10), TOKEN_ROWS, |v| {
            v == &json!([["test-operator", "operator"]])
        })
        .await;
    assert_eq!(
        browser
            .js("return document.querySelector('label[for=\"token-name\"]')?.textContent;")
            .await,
        "Name",
        "the form's fields are labelled"
    );

    // A viewer token: its text is shown once, with the hint to copy it.
    let phone = make_token(&browser, "phone", "viewer", &Value::Null).await;
    let hint = browser
        .js("return document.getElementById('token-new-hint').textContent;")
        .await;
    assert!(hint.as_str().unwrap().starts_with("Copy it now"), "{hint}");
    // An operator token, revoked again after the confirming second click.
    let spare = make_token(&browser, "spare", "operator", &json!(phone)).await;
    assert_ne!(phone, spare);
    assert_eq!(token_names(&hub), ["test-operator", "phone", "spare"]);
    let revoke = r#"#tokens tbody tr:nth-child(3) button[data-action="revoke"]"#;
    browser.click(revoke).await;
    assert_eq!(
        browser
            .js(&format!(
                "const b = document.querySelector('{revoke}'); return [b.textContent, b.dataset.confirm];"
            ))
            .await,
        json!(["Confirm revoke", "pending"]),
    );
    assert_eq!(
        token_names(&hub),
        ["test-operator", "phone", "spare"],
        "nothing revoked by the first click"
    );
    browser.click(revoke).await;
    browser
        .until("spare revoked", Duration::from_secs(10), TOKEN_ROWS, |v| {
            v == &json!([["test-operator", "operator"], ["phone", "viewer"]])
        })
        .await;
    assert_eq!(token_names(&hub), ["test-operator", "phone"]);

    // Log out: the login page, and the session is over.
    browser.click("#logout").await;
    browser
        .until("the login page", Duration::from_secs(10), PATH, |v| {
            v == "/login.html"
        })
        .await;
    let me = browser
        .client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             fetch('/api/me').then((r) => done(r.status), (e) => done(String(e)));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(me, 401, "the session ended with the logout");

    // The viewer token typed into the login page: the dashboard without
    // command controls and without the Access link.
    browser
        .login_with_form(hub.http, &phone, "viewer · phone")
        .await;
    assert_eq!(
        browser
            .js("return document.getElementById('nav-access').hidden;")
            .await,
        true
    );
    browser
        .client
        .goto(&format!("http://{}/#/device/1", hub.http))
        .await
        .unwrap();
    browser
        .until(
            "device 1 online for the viewer",
            Duration::from_secs(10),
            DEVICE_STATUS,
            |v| v == "online",
        )
        .await;
    assert_eq!(
        browser
            .js(r#"
            return [document.querySelectorAll('#commands, #command-log, [data-command], #command-set-interval, #command-set-config').length,
                document.getElementById('commands-off')?.textContent ?? null];
        "#)
            .await,
        json!([
            0,
            "Sending commands needs the operator role; you are logged in as a viewer."
        ])
    );
    browser.click(r#"nav a[data-route="fleet"]"#).await;
    browser
        .until(
            "the fleet for the viewer",
            Duration::from_secs(10),
            &row_status(1),
            |v| v == "online",
        )
        .await;
    assert_eq!(
        browser
            .js("return document.querySelectorAll('#view button[data-command], #view form.command').length;")
            .await,
        0
    );

    // The token revoked (from the command line, say): the hub closes the
    // page's socket with 4401 and the page goes to the login page by itself.
    let evicted = r#"sensor_hub_ws_evictions_total{reason="logged_out"}"#;
    let before = hub.metric(evicted).await;
    credential_file(&hub)
        .update(|c| Ok(c.revoke("phone")))
        .unwrap()
        .unwrap();
    browser
        .until(
            "the login page after the revocation",
            Duration::from_secs(10),
            PATH,
            |v| v == "/login.html",
        )
        .await;
    assert_eq!(hub.metric(evicted).await, before + 1);

    let stats = fleet.stop().await;
    assert_eq!(stats.commands_received, 0);
    browser.end().await;
    hub.stop().await;
}

/// The attacker's page: three forms that post a command to the hub, each
/// into its own frame, one per encoding a form can send (the text/plain one
/// shaped so that its body is the JSON of a command), and its script.
const ATTACK_HTML: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>attacker: running</title><script src="/attack.js" defer></script></head>
<body>
<h1>You won a prize</h1>
<form method="POST" enctype="text/plain" target="sink-text" action="http://{HUB}/api/devices/{DEVICE}/commands">
  <input type="hidden" name='{"kind":"identify","pad":"' value='"}'>
</form>
<form method="POST" enctype="application/x-www-form-urlencoded" target="sink-urlencoded" action="http://{HUB}/api/devices/{DEVICE}/commands">
  <input type="hidden" name="kind" value="identify">
</form>
<form method="POST" enctype="multipart/form-data" target="sink-multipart" action="http://{HUB}/api/devices/{DEVICE}/commands">
  <input type="hidden" name="kind" value="identify">
</form>
<iframe name="sink-text"></iframe><iframe name="sink-urlencoded"></iframe><iframe name="sink-multipart"></iframe>
<pre id="results"></pre>
</body>
</html>
"#;

/// The attacker's script: (a) a WebSocket to the hub that sends a command
/// once open, (b) the forms submitted, (c) a no-cors POST with the browser's
/// cookies and a text/plain JSON command, (d) a credentialed read of the
/// device list. What the page could see goes into #results and the title.
const ATTACK_JS: &str = r#"
const results = { ws: null, forms: [], fetch: null, read: null };
const command = JSON.stringify({ kind: "identify" });

const ws = new Promise((resolve) => {
  const r = { opened: false, messages: 0, error: false, close: null };
  results.ws = r;
  let sock;
  try { sock = new WebSocket("ws://{HUB}/ws"); } catch (e) { r.error = String(e); resolve(); return; }
  sock.onopen = () => {
    r.opened = true;
    sock.send(JSON.stringify({ type: "command", id: "evil", device: {DEVICE}, command: { kind: "identify" } }));
  };
  sock.onmessage = (ev) => { r.messages += 1; };
  sock.onerror = () => { r.error = true; };
  sock.onclose = (ev) => { r.close = ev.code; resolve(); };
  setTimeout(() => { try { sock.close(); } catch (_) {} resolve(); }, 5000);
});

for (const form of document.forms) {
  form.submit();
  results.forms.push(form.enctype);
}

const post = fetch("http://{HUB}/api/devices/{DEVICE}/commands", {
  method: "POST", mode: "no-cors", credentials: "include",
  headers: { "Content-Type": "text/plain" }, body: command,
}).then((r) => { results.fetch = { type: r.type, status: r.status }; },
  (e) => { results.fetch = { error: String(e) }; });

const read = fetch("http://{HUB}/api/devices", { credentials: "include" })
  .then((r) => r.text()).then((t) => { results.read = { text: t.slice(0, 100) }; },
    (e) => { results.read = { blocked: String(e) }; });

Promise.all([ws, post, read]).then(() => {
  document.getElementById("results").textContent = JSON.stringify(results);
  document.title = "attacker: done";
});
"#;

/// A tiny HTTP server on another origin serving [`ATTACK_HTML`] and
/// [`ATTACK_JS`], aimed at the hub at `hub` and its device `device`.
struct Attacker {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Attacker {
    async fn start(ip: &str, hub: SocketAddr, device: u32) -> Attacker {
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .unwrap_or_else(|e| panic!("bind the attacker's server on {ip}: {e}"));
        let addr = listener.local_addr().unwrap();
        let fill = |s: &str| {
            s.replace("{HUB}", &hub.to_string())
                .replace("{DEVICE}", &device.to_string())
        };
        let (page, script) = (fill(ATTACK_HTML), fill(ATTACK_JS));
        // Its own script only; it may connect, post forms and frame the hub.
        let csp = format!(
            "default-src 'self'; script-src 'self'; connect-src 'self' http://{hub} ws://{hub}; \
             form-action http://{hub}; frame-src http://{hub}"
        );
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (page, script, csp) = (page.clone(), script.clone(), csp.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut chunk = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
                            .await
                        {
                            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                    }
                    let text = String::from_utf8_lossy(&head);
                    let path = text.split_whitespace().nth(1).unwrap_or("/");
                    let (status, content_type, body) = match path {
                        "/" => ("200 OK", "text/html; charset=utf-8", page),
                        "/attack.js" => ("200 OK", "text/javascript", script),
                        _ => ("404 Not Found", "text/plain", "not here\n".to_string()),
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n\
                         Content-Length: {}\r\nContent-Security-Policy: {csp}\r\n\
                         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Attacker { addr, task }
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The refusal counters of the hub's /metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Refusals {
    origin: u64,
    unauthenticated: u64,
    content_type: u64,
    ws_foreign_origin: u64,
}

impl Refusals {
    async fn of(hub: &TestHub) -> Refusals {
        let denied = |reason: &str| format!(r#"sensor_hub_http_denied_total{{reason="{reason}"}}"#);
        Refusals {
            origin: hub.metric(&denied("origin")).await,
            unauthenticated: hub.metric(&denied("unauthenticated")).await,
            content_type: hub.metric(&denied("content_type")).await,
            ws_foreign_origin: hub
                .metric("sensor_hub_ws_foreign_origin_refused_total")
                .await,
        }
    }

    fn since(self, before: Refusals) -> Refusals {
        Refusals {
            origin: self.origin - before.origin,
            unauthenticated: self.unauthenticated - before.unauthenticated,
            content_type: self.content_type - before.content_type,
            ws_foreign_origin: self.ws_foreign_origin - before.ws_foreign_origin,
        }
    }
}

/// Commands of the hub that reached a final state, all states together.
async fn commands_finished(hub: &TestHub) -> u64 {
    let mut n = 0;
    for state in ["succeeded", "failed", "rejected", "timed_out"] {
        n += hub
            .metric(&format!(
                r#"sensor_hub_commands_finished_total{{state="{state}"}}"#
            ))
            .await;
    }
    n
}

/// Opens the attacker's page at `url` in a new tab, waits for its script to
/// finish, and returns what the page saw; the tab is closed again.
async fn run_attack(browser: &Browser, url: &str) -> Value {
    let home = browser.client.window().await.unwrap();
    let tab = browser.client.new_window(true).await.unwrap().handle;
    browser.client.switch_to_window(tab).await.unwrap();
    browser.client.goto(url).await.unwrap();
    browser
        .until(
            "the attacker's page done",
            Duration::from_secs(20),
            "return document.title;",
            |v| v == "attacker: done",
        )
        .await;
    let results = browser
        .js("return JSON.parse(document.getElementById('results').textContent);")
        .await;
    browser.client.close_window().await.unwrap();
    browser.client.switch_to_window(home).await.unwrap();
    results
}

/// Polls the hub's refusal counters until they are `want` more than
/// `before` (and checks they stay so for a moment).
async fn refusals_reach(hub: &TestHub, before: Refusals, want: Refusals) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = Refusals::of(hub).await.since(before);
        if seen == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "refusals counted: {seen:?}, expected {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        Refusals::of(hub).await.since(before),
        want,
        "no more refusals"
    );
}

/// What the attacker's page saw, the same in both cases: the WebSocket never
/// opened and got nothing, the forms were sent, the no-cors POST got its
/// opaque answer, and the device list could not be read.
fn assert_page_saw_nothing(results: &Value) {
    assert_eq!(results["ws"]["opened"], false, "{results}");
    assert_eq!(results["ws"]["messages"], 0, "{results}");
    assert_eq!(
        results["forms"],
        json!([
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data"
        ]),
        "{results}"
    );
    assert_eq!(
        results["fetch"],
        json!({"type": "opaque", "status": 0}),
        "{results}"
    );
    assert!(
        results["read"]["blocked"].is_string(),
        "CORS keeps the answer from the page: {results}"
    );
}

#[tokio::test]
async fn pages_of_other_origins_cannot_command_through_the_owners_session() {
    let hub = start_hub(HUB_CONFIG).await;
    let fleet = Fleet::start(hub.udp, Some(hub.control), 1, 1, 100);
    let browser = Browser::start().await;
    browser.login_with_link(&hub).await;
    browser
        .client
        .goto(&format!("http://{}/#/device/1", hub.http))
        .await
        .unwrap();
    browser
        .until(
            "device 1 online, with its control session",
            Duration::from_secs(10),
            DEVICE_STATUS,
            |v| v == "online",
        )
        .await;

    // Same site, another origin: 127.0.0.1 on another port. The browser
    // sends the owner's SameSite=Strict cookie along, so the hub knows the
    // session and refuses by Origin all six: the four POSTs, the
    // credentialed read and the WebSocket upgrade (403, reason "origin"; a
    // request without the cookie would count as unauthenticated).
    let before = Refusals::of(&hub).await;
    let same_site = Attacker::start("127.0.0.1", hub.http, 1).await;
    let results = run_attack(&browser, &format!("http://{}/", same_site.addr)).await;
    assert_page_saw_nothing(&results);
    refusals_reach(
        &hub,
        before,
        Refusals {
            origin: 6,
            unauthenticated: 0,
            content_type: 0,
            ws_foreign_origin: 0,
        },
    )
    .await;

    // Another site (127.0.0.2): the browser keeps the cookie to itself, and
    // all six requests (the read too) are refused as unauthenticated.
    let before = Refusals::of(&hub).await;
    let cross_site = Attacker::start("127.0.0.2", hub.http, 1).await;
    let results = run_attack(&browser, &format!("http://{}/", cross_site.addr)).await;
    assert_page_saw_nothing(&results);
    refusals_reach(
        &hub,
        before,
        Refusals {
            origin: 0,
            unauthenticated: 6,
            content_type: 0,
            ws_foreign_origin: 0,
        },
    )
    .await;

    // No command was made, let alone sent.
    assert_eq!(commands_finished(&hub).await, 0);
    let (status, hub_json) = hub.get("/api/hub").await;
    assert_eq!(status, 200);
    let hub_json: Value = serde_json::from_str(&hub_json).unwrap();
    assert!(
        hub_json["commands_finished"]
            .as_object()
            .unwrap()
            .values()
            .all(|n| n == 0),
        "{hub_json}"
    );

    // The owner's own page still commands the device: the refusals were
    // the origins', not a broken session or device.
    browser
        .click(r#"#commands button[data-command="identify"]"#)
        .await;
    browser
        .until(
            "the owner's identify succeeded",
            Duration::from_secs(10),
            COMMAND_LOG,
            |v| all_succeeded(v, 1),
        )
        .await;
    assert_eq!(commands_finished(&hub).await, 1);

    let stats = fleet.stop().await;
    assert_eq!(
        stats.commands_received, 1,
        "the device received the owner's command and nothing of the attacker's"
    );
    browser.end().await;
    hub.stop().await;
}
