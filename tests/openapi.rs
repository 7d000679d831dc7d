//! The HTTP API against its description, docs/openapi.yaml. A real hub
//! answers requests that reach every documented path and provoke every
//! documented status that a test can provoke; each answer's status must be
//! documented for its path and method, its Content-Type must be one of
//! the documented media types, and a JSON body must validate against the
//! documented schema (JSON Schema 2020-12). The documented paths and
//! statuses must be exactly those exercised here (plus a short list of
//! ones no test can provoke), so an undocumented route, a stale entry or a
//! new status without a test fails.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;

use futures_util::SinkExt as _;
use sensor_hub_protocol::control::{DeviceMessage, HubMessage, Outcome, Text};
use sensor_hub_protocol::Value;
use serde_json::{json, Value as Json};
use support::*;

const TOKEN: &str = "openapi-test-fleet-token";

const COMMANDS: &str = "/api/devices/{id}/commands";
const HISTORY: &str = "/api/devices/{id}/sensors/{sensor}/history";

/// Documented but not served yet: another change adds the favicon. Once
/// it is in the embedded files, the loop over them exercises it too.
const NOT_SERVED_YET: [&str; 2] = ["/favicon.ico", "/favicon.svg"];

/// Documented statuses no test here can provoke on purpose: a history
/// query while eight others run (429) or with a failing database (500), a
/// command retired before its answer (500), and the favicon.
const NOT_PROVOKED: [(&str, &str, u16); 8] = [
    // A task must fail for this; src/http/tests.rs provokes it.
    ("/healthz", "get", 503),
    // The per-address cap is checked before ws.max_clients, so one client
    // address cannot see both refusals; tests/http_listener.rs provokes it.
    ("/ws", "get", 429),
    (HISTORY, "get", 429),
    (HISTORY, "get", 500),
    (COMMANDS, "post", 500),
    // Only in a cluster whose link cannot take handed-over commands; the
    // core's cluster tests provoke it (src/core/tests.rs).
    (COMMANDS, "post", 503),
    ("/favicon.ico", "get", 200),
    ("/favicon.svg", "get", 200),
];

/// docs/openapi.yaml, and what the requests so far exercised of it.
struct Spec {
    doc: Json,
    /// (path template, method, status) of every checked answer.
    exercised: BTreeSet<(String, String, u16)>,
    /// Every disagreement, reported together at the end.
    failures: Vec<String>,
}

/// One request, as the test sends it.
struct Request<'a> {
    method: &'a str,
    /// The documented path it should match, e.g. `/api/devices/{id}/commands`.
    template: &'a str,
    /// The path and query actually requested.
    target: String,
    headers: &'a [(&'a str, &'a str)],
    body: Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    fn get(template: &'a str, target: impl Into<String>) -> Request<'a> {
        Request {
            method: "GET",
            template,
            target: target.into(),
            headers: &[],
            body: None,
        }
    }

    fn post(template: &'a str, target: impl Into<String>, body: &'a str) -> Request<'a> {
        Request {
            method: "POST",
            template,
            target: target.into(),
            headers: &[("Content-Type", "application/json")],
            body: Some(body.as_bytes()),
        }
    }

    fn name(&self) -> String {
        format!("{} {}", self.method, self.target)
    }

    /// Sends it and returns the answer (and the connection, which a `101`
    /// keeps open).
    async fn send(&self, addr: SocketAddr) -> (RawResponse, tokio::net::TcpStream) {
        http_request(addr, self.method, &self.target, self.headers, self.body).await
    }
}

/// `type/subtype` in lower case, and the parameters as `name=value`.
fn media_type(text: &str) -> (String, BTreeSet<String>) {
    let mut parts = text.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let params = parts
        .map(|p| p.trim().to_ascii_lowercase().replace(' ', ""))
        .filter(|p| !p.is_empty())
        .collect();
    (essence, params)
}

/// Whether an answer's Content-Type is the documented media type: the
/// same `type/subtype` (or within `type/*`), with every documented
/// parameter present.
fn media_matches(documented: &str, actual: &str) -> bool {
    let (doc_essence, doc_params) = media_type(documented);
    let (essence, params) = media_type(actual);
    let essence_ok = match doc_essence.strip_suffix("/*") {
        Some(top) => essence.split('/').next() == Some(top),
        None => doc_essence == essence,
    };
    essence_ok && doc_params.is_subset(&params)
}

impl Spec {
    fn load() -> Spec {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        let doc: Json = serde_norway::from_str(&text)
            .unwrap_or_else(|e| panic!("docs/openapi.yaml is not valid YAML: {e}"));
        let version = doc["openapi"].as_str().unwrap_or_default();
        assert!(
            version.starts_with("3.1."),
            "docs/openapi.yaml must be OpenAPI 3.1, says {version:?}"
        );
        Spec {
            doc,
            exercised: BTreeSet::new(),
            failures: Vec::new(),
        }
    }

    /// Follows a `$ref` to `#/…` within the document.
    fn resolve<'d>(&'d self, value: &'d Json) -> &'d Json {
        match value.get("$ref").and_then(Json::as_str) {
            Some(r) => {
                let pointer = r.strip_prefix('#').unwrap_or_else(|| {
                    panic!("only local references are supported in docs/openapi.yaml: {r}")
                });
                self.resolve(
                    self.doc
                        .pointer(pointer)
                        .unwrap_or_else(|| panic!("docs/openapi.yaml: dangling $ref {r}")),
                )
            }
            None => value,
        }
    }

    /// Errors of `instance` against `schema`, which may refer into
    /// `#/components/schemas`: the document's components go along with it
    /// so that its references resolve.
    fn schema_errors(&self, schema: &Json, instance: &Json) -> Vec<String> {
        let mut root = match self.resolve(schema) {
            Json::Object(o) => o.clone(),
            other => return vec![format!("the schema is not an object: {other}")],
        };
        root.insert("components".into(), self.doc["components"].clone());
        let validator = match jsonschema::draft202012::new(&Json::Object(root)) {
            Ok(v) => v,
            Err(e) => return vec![format!("the documented schema does not compile: {e}")],
        };
        validator
            .iter_errors(instance)
            .map(|e| {
                format!(
                    "at `{}`: {e} (schema {})",
                    e.instance_path(),
                    e.schema_path()
                )
            })
            .collect()
    }

    fn fail(&mut self, message: String) {
        self.failures.push(message);
    }

    /// Sends `request` and checks the answer against the document; returns
    /// the answer (JSON bodies parsed, `Null` otherwise).
    async fn call(&mut self, addr: SocketAddr, request: &Request<'_>) -> (u16, Json) {
        let (response, _connection) = request.send(addr).await;
        self.check(request, &response)
    }

    /// Checks an answer to `request` against the document.
    fn check(&mut self, request: &Request<'_>, response: &RawResponse) -> (u16, Json) {
        let name = request.name();
        let method = request.method.to_ascii_lowercase();
        let status = response.status;
        let body_json: Json = serde_json::from_slice(&response.body).unwrap_or(Json::Null);
        let Some(operation) = self.doc["paths"][request.template].get(&method).cloned() else {
            self.fail(format!(
                "{name}: docs/openapi.yaml has no `{method}` under paths `{}`",
                request.template
            ));
            return (status, body_json);
        };
        self.exercised
            .insert((request.template.to_string(), method.clone(), status));
        let at = format!("{name} (documented as {method} {})", request.template);

        // Query parameters: documented, unless the point was a 400.
        if status != 400 {
            if let Some((_, query)) = request.target.split_once('?') {
                let documented: BTreeSet<String> = operation["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| self.resolve(p))
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str().map(String::from))
                    .collect();
                for name in query.split('&').filter_map(|kv| kv.split('=').next()) {
                    if !documented.contains(name) {
                        self.fail(format!(
                            "{at}: query parameter `{name}` is not documented (documented: {documented:?})"
                        ));
                    }
                }
            }
        }

        // A request body that the hub took must match the documented one.
        if let (Some(body), false) = (request.body, matches!(status, 400 | 411 | 413)) {
            let schema = operation["requestBody"]["content"]["application/json"]["schema"].clone();
            if schema.is_null() {
                self.fail(format!(
                    "{at}: sends a body, but no application/json requestBody is documented"
                ));
            } else {
                let sent: Json = serde_json::from_slice(body).unwrap();
                for e in self.schema_errors(&schema, &sent) {
                    self.fail(format!("{at}: the request body {sent} disagrees with the documented requestBody {e}"));
                }
            }
        }

        let responses = &operation["responses"];
        let Some(documented) = responses.get(status.to_string()).cloned() else {
            let known: Vec<&String> = responses
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            self.fail(format!(
                "{at}: answered {status}, which is not documented (documented: {known:?}); body: {}",
                response.text()
            ));
            return (status, body_json);
        };
        let documented = self.resolve(&documented).clone();
        self.check_content(&at, &documented["content"], response);
        (status, body_json)
    }

    /// The Content-Type and body of an answer against a documented
    /// `content` map (absent: no body).
    fn check_content(&mut self, at: &str, content: &Json, response: &RawResponse) {
        let status = response.status;
        let Some(content) = content.as_object() else {
            if !response.body.is_empty() {
                self.fail(format!(
                    "{at}: {status} is documented without a body, but has {} bytes",
                    response.body.len()
                ));
            }
            return;
        };
        let Some(actual) = response.header("content-type") else {
            self.fail(format!("{at}: {status} has no Content-Type header"));
            return;
        };
        let Some((media, entry)) = content.iter().find(|(m, _)| media_matches(m, actual)) else {
            let documented: Vec<&String> = content.keys().collect();
            self.fail(format!(
                "{at}: {status} has Content-Type {actual:?}, documented: {documented:?}"
            ));
            return;
        };
        if media_type(media).0 != "application/json" {
            return;
        }
        let body: Json = match serde_json::from_slice(&response.body) {
            Ok(b) => b,
            Err(e) => {
                self.fail(format!(
                    "{at}: {status} says JSON but its body is not ({e}): {}",
                    response.text()
                ));
                return;
            }
        };
        let errors = self.schema_errors(&entry["schema"].clone(), &body);
        if !errors.is_empty() {
            self.fail(format!(
                "{at}: {status} body disagrees with the documented schema:\n    {}\n    body: {body}",
                errors.join("\n    ")
            ));
        }
    }

    /// An answer to a request no documented operation takes (unknown
    /// path, wrong method): the JSON error the document's description
    /// promises for those.
    async fn call_undocumented(&mut self, addr: SocketAddr, request: &Request<'_>, expected: u16) {
        let (response, _) = request.send(addr).await;
        let at = format!("{} (no documented operation)", request.name());
        if response.status != expected {
            self.fail(format!(
                "{at}: answered {}, expected {expected}",
                response.status
            ));
        }
        let error = json!({"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}});
        self.check_content(&at, &error, &response);
    }

    /// Every (path, method, status) documented.
    fn documented(&self) -> BTreeSet<(String, String, u16)> {
        let mut all = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for status in operation["responses"].as_object().unwrap().keys() {
                    let status = status.parse().unwrap_or_else(|_| {
                        panic!("{method} {path}: status {status:?} is not a number")
                    });
                    all.insert((path.clone(), method.clone(), status));
                }
            }
        }
        all
    }
}

fn assert_status(what: &str, status: u16, expected: u16, body: &Json) {
    assert_eq!(status, expected, "{what}: {body}");
}

/// A request path for a documented path template.
fn sample_target(template: &str) -> String {
    template
        .replace("/api/tokens/{id}", "/api/tokens/00000000")
        .replace("{id}", "30")
        .replace("{sensor}", "0")
}

/// A valid body for a POST to `template`.
fn sample_body(template: &str) -> &'static [u8] {
    match template {
        COMMANDS => br#"{"kind":"identify"}"#,
        "/api/login" => br#"{"password":"a sample password"}"#,
        "/api/tokens" => br#"{"name":"sample","role":"viewer"}"#,
        _ => b"{}",
    }
}

/// POSTs that need the owner: their 415 is provoked logged in as the owner.
const OWNER_ONLY_POSTS: [&str; 2] = ["/api/tokens", "/api/devices/{id}/adopt"];

/// Every documented refusal of access control, on every operation that
/// documents it, and the account endpoints' own answers.
async fn access_control(spec: &mut Spec, hub: &TestHub) {
    let addr = hub.http;
    let operations: Vec<(String, String, BTreeSet<u16>)> = spec.doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object().unwrap().iter().map(move |(method, op)| {
                let statuses = op["responses"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .filter_map(|k| k.parse().ok())
                    .collect();
                (path.clone(), method.to_ascii_uppercase(), statuses)
            })
        })
        .collect();
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let request =
        |template: &str, method: &str, headers: &'static [(&'static str, &'static str)]| Request {
            method: leak(method.to_string()),
            template: leak(template.to_string()),
            target: sample_target(template),
            headers,
            body: (method == "POST").then_some(sample_body(template)),
        };
    for (template, method, statuses) in &operations {
        // Any other host name: refused before anything else (DNS rebinding).
        let (status, v) = spec
            .call(
                addr,
                &request(template, method, &[("Host", "attacker.example")]),
            )
            .await;
        assert_status(
            &format!("{method} {template} with a foreign Host"),
            status,
            403,
            &v,
        );
        if statuses.contains(&401) && !matches!(template.as_str(), "/api/login" | "/") {
            let (status, v) = spec
                .call(addr, &request(template, method, &[("Authorization", "")]))
                .await;
            assert_status(
                &format!("{method} {template} without credentials"),
                status,
                401,
                &v,
            );
        }
        // (Token management needs the owner: checked below, logged in.)
        if statuses.contains(&415) && !OWNER_ONLY_POSTS.contains(&template.as_str()) {
            let (status, v) = spec
                .call(
                    addr,
                    &request(template, method, &[("Content-Type", "text/plain")]),
                )
                .await;
            assert_status(
                &format!("{method} {template} as text/plain"),
                status,
                415,
                &v,
            );
        }
    }
    // Pages send a browser without a session to the login page.
    let (status, v) = spec
        .call(addr, &request("/", "GET", &[("Authorization", "")]))
        .await;
    assert_status("the dashboard without a session", status, 303, &v);
    for file in ["/login.html", "/login.js"] {
        let (status, v) = spec
            .call(addr, &request(file, "GET", &[("Authorization", "")]))
            .await;
        assert_status(&format!("{file} without a session"), status, 200, &v);
    }

    // The account endpoints.
    let (status, v) = spec.call(addr, &request("/api/me", "GET", &[])).await;
    assert_status("me", status, 200, &v);
    assert_eq!(v["role"], "operator");
    let (status, v) = spec.call(addr, &request("/api/tokens", "GET", &[])).await;
    assert_status("tokens need the owner", status, 403, &v);
    let (status, v) = spec
        .call(
            addr,
            &request(
                "/api/logout",
                "POST",
                &[("Content-Type", "application/json")],
            ),
        )
        .await;
    assert_status("logout with a token", status, 200, &v);
    let login = |body: &'static str, headers: &'static [(&'static str, &'static str)]| Request {
        method: "POST",
        template: "/api/login",
        target: "/api/login".into(),
        headers,
        body: Some(body.as_bytes()),
    };
    const JSON_ONLY: &[(&str, &str)] =
        &[("Content-Type", "application/json"), ("Authorization", "")];
    let (status, v) = spec
        .call(addr, &login(r#"{"password":"x","code":"y"}"#, JSON_ONLY))
        .await;
    assert_status("login with two secrets", status, 400, &v);
    let (status, v) = spec
        .call(
            addr,
            &login(
                r#"{"code":"x"}"#,
                &[
                    ("Content-Type", "application/json"),
                    ("Authorization", ""),
                    ("Origin", "http://evil.example"),
                ],
            ),
        )
        .await;
    assert_status("login from another site's page", status, 403, &v);
    let code =
        sensor_hub::auth::store::CredentialFile::new(hub.auth_dir.path().join("credentials.json"))
            .update(|c| c.add_login_code(u64::MAX))
            .unwrap();
    let body = leak(format!(r#"{{"code":"{code}"}}"#));
    let (response, _) =
        http_request(addr, "POST", "/api/login", JSON_ONLY, Some(body.as_bytes())).await;
    let (status, v) = spec.check(&login(body, JSON_ONLY), &response);
    assert_status("login with a one-time code", status, 200, &v);
    assert_eq!(v["role"], "owner");
    let cookie = response
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    let origin = leak(format!("http://{addr}"));
    let owner: &'static [(&str, &str)] = Box::leak(Box::new([
        ("Authorization", ""),
        ("Cookie", leak(cookie)),
        ("Origin", origin),
        ("Content-Type", "application/json"),
    ]));
    let (status, v) = spec.call(addr, &request("/api/tokens", "GET", owner)).await;
    assert_status("tokens, as the owner", status, 200, &v);
    let owner_plain: &'static [(&str, &str)] = Box::leak(Box::new([
        owner[0],
        owner[1],
        owner[2],
        ("Content-Type", "text/plain"),
    ]));
    let (status, v) = spec
        .call(addr, &request("/api/tokens", "POST", owner_plain))
        .await;
    assert_status("a new token as text/plain", status, 415, &v);
    let new_token = |body: &'static str| Request {
        method: "POST",
        template: "/api/tokens",
        target: "/api/tokens".into(),
        headers: owner,
        body: Some(body.as_bytes()),
    };
    let (status, made) = spec
        .call(addr, &new_token(r#"{"name":"grafana","role":"viewer"}"#))
        .await;
    assert_status("a new token", status, 201, &made);
    let (status, v) = spec
        .call(addr, &new_token(r#"{"name":"grafana","role":"viewer"}"#))
        .await;
    assert_status("a token name taken", status, 409, &v);
    let (status, v) = spec
        .call(addr, &new_token(r#"{"name":"x","role":"owner"}"#))
        .await;
    assert_status("an owner token", status, 400, &v);
    let id = made["id"].as_str().unwrap();
    let revoke = Request {
        method: "DELETE",
        template: "/api/tokens/{id}",
        target: format!("/api/tokens/{id}"),
        headers: owner,
        body: None,
    };
    let (status, v) = spec.call(addr, &revoke).await;
    assert_status("revoke", status, 200, &v);
    let (status, v) = spec.call(addr, &revoke).await;
    assert_status("revoke again", status, 404, &v);

    // Adopting and forgetting devices.
    let adopt = |body: &'static str, headers: &'static [(&'static str, &'static str)]| Request {
        method: "POST",
        template: "/api/devices/{id}/adopt",
        target: "/api/devices/31/adopt".into(),
        headers,
        body: Some(body.as_bytes()),
    };
    let (status, v) = spec.call(addr, &adopt("{}", owner_plain)).await;
    assert_status("adopt as text/plain", status, 415, &v);
    let (status, v) = spec.call(addr, &adopt(r#"{"key":"yes"}"#, owner)).await;
    assert_status("adopt with a bad body", status, 400, &v);
    let (status, adopted) = spec.call(addr, &adopt(r#"{"name":"porch"}"#, owner)).await;
    assert_status("adopt", status, 201, &adopted);
    assert_eq!(adopted["key"].as_str().map(str::len), Some(64));
    let (status, v) = spec.call(addr, &adopt("{}", owner)).await;
    assert_status("adopt again", status, 409, &v);
    let forget = Request {
        method: "DELETE",
        template: "/api/devices/{id}",
        target: "/api/devices/31".into(),
        headers: owner,
        body: None,
    };
    let (status, v) = spec.call(addr, &forget).await;
    assert_status("forget", status, 204, &v);
    let (status, v) = spec.call(addr, &forget).await;
    assert_status("forget again", status, 404, &v);

    // Last: a wrong token or password slows this address down, so every
    // operation with credentials is answered 429 for a while.
    let (status, v) = spec
        .call(
            addr,
            &request(
                "/",
                "GET",
                &[("Authorization", "Bearer shub_00000000_guess")],
            ),
        )
        .await;
    assert_status("the dashboard with a wrong token", status, 401, &v);
    // Past the first wait (auth.failure_delay_ms, 1 s by default).
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let (status, v) = spec
        .call(addr, &login(r#"{"password":"wrong guess"}"#, JSON_ONLY))
        .await;
    assert_status("a wrong password", status, 401, &v);
    for (template, method, statuses) in &operations {
        if statuses.contains(&429) {
            let slowed = if template == "/api/login" {
                login(r#"{"password":"another guess"}"#, JSON_ONLY)
            } else {
                request(template, method, &[("Content-Type", "application/json")])
            };
            let (status, v) = spec.call(addr, &slowed).await;
            assert_status(
                &format!("{method} {template} while slowed down"),
                status,
                429,
                &v,
            );
        }
    }
}

#[tokio::test]
async fn every_documented_path_answers_as_documented() {
    let mut spec = Spec::load();
    let hub = start_hub(&[
        ("SENSOR_HUB__CONTROL__FLEET_TOKEN", TOKEN),
        ("SENSOR_HUB__WS__MAX_CLIENTS", "1"),
    ])
    .await;
    let addr = hub.http;

    // The fleet, empty, then with a device known from its data only.
    let (status, v) = spec
        .call(addr, &Request::get("/api/devices", "/api/devices"))
        .await;
    assert_status("empty fleet", status, 200, &v);
    assert_eq!(v["devices"], json!([]));
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.send_to(&datagram(30, 0, &[(0, Value::F32(21.5))]), hub.udp)
        .await
        .unwrap();
    eventually("device 30 known", || async {
        hub.metric("sensor_hub_devices").await == 1
    })
    .await;
    // And one with a control session (declared name, sensors, status).
    let mut device = device::session(hub.control, 40, TOKEN).await;
    let (status, v) = spec
        .call(addr, &Request::get("/api/devices", "/api/devices"))
        .await;
    assert_status("fleet of two", status, 200, &v);
    assert_eq!(v["devices"].as_array().unwrap().len(), 2, "{v}");

    // Commands: every outcome the status code tells.
    let post = |target: &str, body: &'static str| Request::post(COMMANDS, target.to_string(), body);
    let identify = r#"{"kind":"identify"}"#;
    let (status, v) = spec
        .call(addr, &post("/api/devices/30/commands?wait=false", identify))
        .await;
    assert_status("no session, not waiting", status, 409, &v);
    assert_eq!(v["state"], "rejected");
    let (status, v) = spec
        .call(
            addr,
            &post("/api/devices/30/commands?timeout_ms=50", identify),
        )
        .await;
    assert_status("queued when the wait ends", status, 202, &v);
    assert_eq!(v["state"], "queued");
    let (status, v) = spec
        .call(addr, &post("/api/devices/999/commands", identify))
        .await;
    assert_status("unknown device", status, 404, &v);
    assert_eq!(v["error"], "unknown device 999");
    let (status, v) = spec
        .call(addr, &post("/api/devices/30/commands", "{not json"))
        .await;
    assert_status("body not JSON", status, 400, &v);
    let (status, v) = spec
        .call(
            addr,
            &post("/api/devices/30/commands", r#"{"kind":"set_interval"}"#),
        )
        .await;
    assert_status("invalid command", status, 400, &v);
    let (status, v) = spec
        .call(addr, &post("/api/devices/30/commands?timeout=5", identify))
        .await;
    assert_status("unknown query parameter", status, 400, &v);
    let no_length = Request {
        method: "POST",
        template: COMMANDS,
        target: "/api/devices/30/commands".into(),
        headers: &[("Content-Type", "application/json")],
        body: None,
    };
    let (status, v) = spec.call(addr, &no_length).await;
    assert_status("no Content-Length", status, 411, &v);
    // Announced only: the hub refuses on the header, before any body.
    let too_large = Request {
        headers: &[
            ("Content-Type", "application/json"),
            ("Content-Length", "20000"),
        ],
        ..no_length
    };
    let (status, v) = spec.call(addr, &too_large).await;
    assert_status("body too large", status, 413, &v);

    // A command the device answers within the wait.
    let answered = tokio::spawn(async move {
        let mut spec = Spec::load();
        let request = Request::post(
            COMMANDS,
            "/api/devices/40/commands",
            r#"{"kind":"set_interval","ms":500}"#,
        );
        let result = spec.call(addr, &request).await;
        (spec, result)
    });
    let id = match device::next(&mut device).await {
        Some(HubMessage::Command { id, .. }) => id,
        other => panic!("expected the command, got {other:?}"),
    };
    device.send(DeviceMessage::CommandAck { id }).await.unwrap();
    device
        .send(DeviceMessage::CommandResult {
            id,
            outcome: Outcome::Succeeded,
            detail: Some(Text::try_from("interval now 500 ms").unwrap()),
        })
        .await
        .unwrap();
    let (answered_spec, (status, v)) = answered.await.unwrap();
    assert_status("answered by the device", status, 200, &v);
    assert_eq!(v["state"], "succeeded");
    spec.exercised.extend(answered_spec.exercised);
    spec.failures.extend(answered_spec.failures);

    // History: by channel and by declared name, bad ranges, unknown things.
    for (target, expected) in [
        ("/api/devices/30/sensors/0/history", 200),
        (
            "/api/devices/40/sensors/temperature/history?max_points=10",
            200,
        ),
        (
            "/api/devices/30/sensors/0/history?from=1&to=2000000000000",
            200,
        ),
        ("/api/devices/30/sensors/0/history?max_points=0", 400),
        ("/api/devices/30/sensors/0/history?from=10&to=5", 400),
        ("/api/devices/30/sensors/0/history?since=5", 400),
        ("/api/devices/999/sensors/0/history", 404),
        ("/api/devices/30/sensors/9/history", 404),
    ] {
        let (status, v) = spec.call(addr, &Request::get(HISTORY, target)).await;
        assert_status(target, status, expected, &v);
    }

    // The hub's own figures and health.
    for (path, expected) in [("/api/hub", 200), ("/healthz", 200), ("/metrics", 200)] {
        let (status, v) = spec.call(addr, &Request::get(path, path)).await;
        assert_status(path, status, expected, &v);
    }

    // The WebSocket: another site's page, not an upgrade, an upgrade, one
    // client too many.
    let foreign = Request {
        headers: &[
            ("Connection", "Upgrade, close"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Origin", "http://attacker.example"),
        ],
        ..Request::get("/ws", "/ws")
    };
    let (response, _) = foreign.send(addr).await;
    spec.check(&foreign, &response);
    assert_eq!(response.status, 403, "{}", response.text());
    let (status, v) = spec.call(addr, &Request::get("/ws", "/ws")).await;
    assert_status("plain GET /ws", status, 400, &v);
    let upgrade_headers = [
        ("Connection", "Upgrade"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let upgrade = Request {
        headers: &upgrade_headers,
        ..Request::get("/ws", "/ws")
    };
    let (response, first_client) = upgrade.send(addr).await;
    spec.check(&upgrade, &response);
    assert_eq!(response.status, 101, "{}", response.text());
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    // `close` too, so that the hub ends the connection after refusing.
    let refused_headers = [
        ("Connection", "Upgrade, close"),
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];
    let one_too_many = Request {
        headers: &refused_headers,
        ..Request::get("/ws", "/ws")
    };
    let (response, _) = one_too_many.send(addr).await;
    spec.check(&one_too_many, &response);
    assert_eq!(
        response.status,
        503,
        "max_clients is 1: {}",
        response.text()
    );
    drop(first_client);

    // The dashboard's files.
    for asset in sensor_hub::assets::ASSETS {
        let (status, _) = spec.call(addr, &Request::get(asset.path, asset.path)).await;
        assert_eq!(status, 200, "{}", asset.path);
    }

    // Requests no operation takes get the documented JSON error.
    spec.call_undocumented(addr, &Request::get("", "/no/such/path"), 404)
        .await;
    spec.call_undocumented(addr, &Request::get("", "/api/devices/x/commands"), 404)
        .await;
    let wrong_method = Request {
        method: "POST",
        ..Request::get("", "/api/hub")
    };
    spec.call_undocumented(addr, &wrong_method, 405).await;
    hub.stop().await;

    // Access control, on a hub of its own (the slowdown it provokes would
    // hold up other requests from this address).
    let hub = start_hub(&[]).await;
    access_control(&mut spec, &hub).await;
    hub.stop().await;

    // A hub that keeps no history.
    let hub = start_hub(&[("SENSOR_HUB__STORAGE__ENABLED", "false")]).await;
    let (status, v) = spec
        .call(
            hub.http,
            &Request::get(HISTORY, "/api/devices/1/sensors/0/history"),
        )
        .await;
    assert_status("history off", status, 503, &v);
    let (status, v) = spec
        .call(hub.http, &Request::get("/api/hub", "/api/hub"))
        .await;
    assert_status("figures without history", status, 200, &v);
    assert_eq!(v["history"], Json::Null);
    hub.stop().await;

    assert!(
        spec.failures.is_empty(),
        "the hub disagrees with docs/openapi.yaml:\n  {}",
        spec.failures.join("\n  ")
    );

    // Every documented path was exercised, and every exercised one is
    // documented (the favicon aside, until it is served).
    let documented_paths: BTreeSet<&str> = spec.doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut exercised_paths: BTreeSet<&str> =
        spec.exercised.iter().map(|(p, _, _)| p.as_str()).collect();
    exercised_paths.extend(NOT_SERVED_YET);
    assert_eq!(
        documented_paths,
        exercised_paths,
        "documented but not exercised: {:?}; exercised but not documented: {:?}",
        documented_paths
            .difference(&exercised_paths)
            .collect::<Vec<_>>(),
        exercised_paths
            .difference(&documented_paths)
            .collect::<Vec<_>>(),
    );

    // And every documented status was provoked, or is known not to be.
    let mut provoked = spec.exercised.clone();
    provoked.extend(
        NOT_PROVOKED
            .iter()
            .map(|&(p, m, s)| (p.to_string(), m.to_string(), s)),
    );
    let documented = spec.documented();
    assert!(
        documented == provoked,
        "documented but never provoked: {:?}; provoked but not documented: {:?}",
        documented.difference(&provoked).collect::<Vec<_>>(),
        provoked.difference(&documented).collect::<Vec<_>>(),
    );
}

#[test]
fn media_types_match_on_type_and_documented_parameters() {
    assert!(media_matches("application/json", "application/json"));
    assert!(media_matches("text/html", "text/html; charset=utf-8"));
    assert!(media_matches(
        "text/plain; version=0.0.4",
        "text/plain; version=0.0.4; charset=utf-8"
    ));
    assert!(media_matches("image/*", "image/svg+xml"));
    assert!(!media_matches("text/plain; version=0.0.4", "text/plain"));
    assert!(!media_matches(
        "application/json",
        "text/plain; charset=utf-8"
    ));
    assert!(!media_matches("image/*", "text/html"));
}

#[test]
fn schema_checks_follow_references_and_name_the_field_that_disagrees() {
    let spec = Spec::load();
    let schema = json!({"$ref": "#/components/schemas/Error"});
    assert!(spec
        .schema_errors(&schema, &json!({"error": "unknown device 1"}))
        .is_empty());
    let errors = spec.schema_errors(&schema, &json!({"error": 5, "extra": true}));
    assert!(
        errors.iter().any(|e| e.contains("at `/error`")),
        "{errors:?}"
    );
    assert!(errors.iter().any(|e| e.contains("extra")), "{errors:?}");
}
