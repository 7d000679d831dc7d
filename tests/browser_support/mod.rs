//! What the browser tests share: headless Chromium through chromedriver
//! ([`Browser`], with the log endpoint fantoccini has no call for), a
//! simulated fleet in the background ([`Fleet`]), the hub settings they run
//! with, and logging in through the real login page (a one-time link made
//! with the credentials file's API, as `sensor-hub login-link` makes one, or
//! a password or token typed into the form).
#![allow(dead_code)] // each browser test file uses a different subset

use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use device_sim::{
    build_fleet, run_fleet, ControlTarget, FaultSpec, FleetOptions, FleetSpec, FleetStats,
};
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::support::TestHub;

pub const TOKEN: &str = "browser-test-token";
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver and a browser session. [`Browser::end`] closes the
/// session; dropping it (also when a test panics before `end`) kills
/// chromedriver and the Chromium it started.
pub struct Browser {
    pub client: Client,
    driver: Child,
    /// chromedriver's port, for the log endpoint fantoccini has no call for.
    port: u16,
    profile: std::path::PathBuf,
}

impl Browser {
    pub async fn start() -> Browser {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: run scripts/test, which installs Debian's chromium and chromium-driver"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group, with the Chromium it starts: see `Drop`.
        let driver = Command::new(CHROMEDRIVER)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile =
            std::env::temp_dir().join(format!("sensor-hub-chromium-{}-{port}", std::process::id()));
        let caps = json!({
            // The console and network log, read by `Browser::log`.
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        // A chromedriver that just opened its port may still reset the first
        // request (seen with three browsers starting at once on two cores).
        let client = loop {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => break client,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "no Chromium session through chromedriver: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Browser {
            client,
            driver,
            port,
            profile,
        }
    }

    /// The browser's log (console messages, failed requests) since the
    /// previous call, from chromedriver's `se/log` endpoint: entries with
    /// `level` (e.g. "SEVERE"), `source` and `message`.
    pub async fn log(&self) -> Vec<Value> {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let session = self.client.session_id().await.unwrap().unwrap();
        let body = r#"{"type":"browser"}"#;
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let request = format!(
            "POST /session/{session}/se/log HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.port,
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        // chromedriver keeps the connection open: read the head, then
        // Content-Length bytes.
        let mut raw = Vec::new();
        let mut chunk = [0u8; 8192];
        let (head_len, body_len) = loop {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
                .await
                .expect("chromedriver answers the log request")
                .unwrap();
            assert!(n > 0, "chromedriver closed the connection: {raw:?}");
            raw.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&raw);
            if let Some((head, _)) = text.split_once("\r\n\r\n") {
                assert!(head.starts_with("HTTP/1.1 200"), "{text}");
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or_else(|| panic!("no Content-Length: {head}"));
                break (head.len() + 4, length);
            }
        };
        while raw.len() < head_len + body_len {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
                .await
                .expect("chromedriver sends the whole log")
                .unwrap();
            assert!(n > 0, "chromedriver closed the connection early");
            raw.extend_from_slice(&chunk[..n]);
        }
        let body = &raw[head_len..head_len + body_len];
        let answer: Value = serde_json::from_slice(body).unwrap();
        answer["value"].as_array().cloned().unwrap()
    }

    /// Runs `script` (a function body returning a value) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or(Value::Null)
    }

    /// Polls `script` until `ok` accepts its value, for up to `within`.
    pub async fn until(
        &self,
        what: &str,
        within: Duration,
        script: &str,
        ok: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.js(script).await;
            if ok(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; last value {v}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Clicks the element matching `css`.
    pub async fn click(&self, css: &str) {
        let element = self
            .client
            .find(fantoccini::Locator::Css(css))
            .await
            .unwrap();
        element.click().await.unwrap();
    }

    /// Closes the browser session (then `Drop` ends chromedriver).
    pub async fn end(self) {
        let _ = self.client.clone().close().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver and every Chromium process it started share one
        // process group (its id is chromedriver's pid, not reused before
        // the `wait` below); /bin/kill comes with procps (scripts/test).
        let group = format!("-{}", self.driver.id());
        let killed = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        if !killed.is_ok_and(|s| s.success()) {
            let _ = self.driver.kill();
        }
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A simulated fleet running in the background.
pub struct Fleet {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<FleetStats>>,
}

impl Fleet {
    pub fn start(
        udp: SocketAddr,
        control: Option<SocketAddr>,
        first_id: u32,
        devices: u32,
        interval_ms: u64,
    ) -> Fleet {
        let fleet = build_fleet(&FleetSpec {
            devices,
            first_id,
            interval_ms,
            seed: 7,
        });
        let options = FleetOptions {
            udp,
            control: control.map(|addr| ControlTarget {
                addr,
                token: TOKEN.into(),
                key_seed: None,
            }),
            boot_pause_ms: 300,
            faults: FaultSpec::NONE,
            device_faults: Vec::new(),
            failover: Vec::new(),
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_fleet(fleet, options, cancel.clone()));
        Fleet { cancel, task }
    }

    pub async fn stop(self) -> FleetStats {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }
}

pub const HUB_CONFIG: &[(&str, &str)] = &[
    ("SENSOR_HUB__CONTROL__FLEET_TOKEN", TOKEN),
    // Devices with a session declare 100 ms: late after 0.5 s of silence.
    // UDP-only devices (no declared interval): late after 1 s, offline after 4 s.
    ("SENSOR_HUB__LIVENESS__DEFAULT_INTERVAL_MS", "200"),
    ("SENSOR_HUB__LIVENESS__LATE_AFTER_INTERVALS", "5"),
    ("SENSOR_HUB__LIVENESS__OFFLINE_AFTER_INTERVALS", "20"),
    ("SENSOR_HUB__LIVENESS__TICK_MS", "50"),
    ("SENSOR_HUB__WS__STATS_INTERVAL_MS", "250"),
    // Readings reach the history store within 0.2 s.
    ("SENSOR_HUB__STORAGE__FLUSH_INTERVAL_MS", "200"),
];

/// The page's connection indicator state.
pub const CONNECTION_STATE: &str = "return document.getElementById('connection').dataset.state;";

/// The page's path ("/" on the dashboard, "/login.html" on the login page).
pub const PATH: &str = "return location.pathname;";

/// An expression: what the header says about who is logged in ("owner",
/// "viewer · phone"), or null while it is hidden.
macro_rules! who_expr {
    () => {
        "(() => { const a = document.getElementById('account'); \
         return a && !a.hidden ? document.getElementById('account-who').textContent : null; })()"
    };
}

/// What the header says about who is logged in, or null while it is hidden.
pub const WHO: &str = concat!("return ", who_expr!(), ";");

/// The login page's message, or null while it is hidden.
pub const LOGIN_MESSAGE: &str = r#"
    const m = document.getElementById('login-message');
    return m && !m.hidden ? m.textContent : null;
"#;

/// The status of device `id` in the fleet table.
pub fn row_status(id: u32) -> String {
    format!(
        r#"return document.querySelector('#fleet tr[data-device-id="{id}"] [data-field="status"]')?.dataset.status ?? null;"#
    )
}

/// Each command log entry of the page's device view: [id, kind, state,
/// lifecycle, detail].
pub const COMMAND_LOG: &str = r#"
    return [...document.querySelectorAll('#command-log li')].map((li) => [li.dataset.commandId,
        li.querySelector('.kind').textContent, li.dataset.state,
        li.querySelector('.lifecycle').textContent, li.querySelector('.detail')?.textContent ?? null]);
"#;

/// The log entries of `log` (a [`COMMAND_LOG`] value).
pub fn entries(log: &Value) -> &[Value] {
    log.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// `log` has `n` entries, all succeeded.
pub fn all_succeeded(log: &Value, n: usize) -> bool {
    let e = entries(log);
    e.len() == n && e.iter().all(|e| e[2] == "succeeded")
}

/// The credentials file of a test hub.
pub fn credential_file(hub: &TestHub) -> sensor_hub::auth::store::CredentialFile {
    sensor_hub::auth::store::CredentialFile::new(hub.auth_dir.path().join("credentials.json"))
}

/// A one-time login code of `hub` (the owner's), made as
/// `sensor-hub login-link` makes one.
pub fn login_code(hub: &TestHub) -> String {
    credential_file(hub)
        .update(|c| c.add_login_code(u64::MAX))
        .unwrap()
}

impl Browser {
    /// Opens a one-time login link of `hub` and waits for the dashboard,
    /// logged in as the owner.
    pub async fn login_with_link(&self, hub: &TestHub) {
        let url = format!("http://{}/login.html#code={}", hub.http, login_code(hub));
        self.client.goto(&url).await.unwrap();
        self.until_logged_in("owner").await;
    }

    /// Opens the login page of the hub at `http`, types `secret` (a
    /// password or an API token) and clicks Log in.
    pub async fn submit_login(&self, http: SocketAddr, secret: &str) {
        if self.js(PATH).await != "/login.html" {
            let url = format!("http://{http}/login.html");
            self.client.goto(&url).await.unwrap();
        }
        let input = self
            .client
            .find(fantoccini::Locator::Id("secret"))
            .await
            .unwrap();
        input.clear().await.unwrap();
        input.send_keys(secret).await.unwrap();
        self.until(
            "the Log in button enabled",
            Duration::from_secs(10),
            "return !document.getElementById('login-button').disabled;",
            |v| v == true,
        )
        .await;
        self.click("#login-button").await;
    }

    /// Logs in through the login page with `secret` and waits for the
    /// dashboard, whose header then says `who`.
    pub async fn login_with_form(&self, http: SocketAddr, secret: &str, who: &str) {
        self.submit_login(http, secret).await;
        self.until_logged_in(who).await;
    }

    /// Waits for the dashboard with `who` in its header.
    pub async fn until_logged_in(&self, who: &str) {
        self.until(
            &format!("the dashboard, logged in as {who}"),
            Duration::from_secs(15),
            concat!(
                "return location.pathname === '/' ? ",
                who_expr!(),
                " : null;"
            ),
            |v| v == who,
        )
        .await;
    }
}
