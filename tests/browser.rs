//! The dashboard in real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by scripts/test), driven through WebDriver
//! (fantoccini), against a real hub with simulated devices: the fleet view,
//! charts loaded from the history store then continued live (and live only
//! when the hub keeps no history), the range selector, capped charts,
//! commands clicked in the page, liveness, reconnecting after the hub
//! restarts, a page load without failed requests or console errors (the
//! icon included), and two tabs that each keep their own command log. The
//! run also refreshes docs/dashboard.png and docs/device.png.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use device_sim::{
    build_fleet, run_fleet, ControlTarget, FaultSpec, FleetOptions, FleetSpec, FleetStats,
};
use fantoccini::{Client, ClientBuilder};
use serde_json::{json, Value};
use support::*;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "browser-test-token";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver and a browser session, ended on drop.
struct Browser {
    client: Client,
    driver: Child,
    /// chromedriver's port, for the log endpoint fantoccini has no call for.
    port: u16,
    profile: std::path::PathBuf,
}

impl Browser {
    async fn start() -> Browser {
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
        let driver = Command::new(CHROMEDRIVER)
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
    async fn log(&self) -> Vec<Value> {
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
    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or(Value::Null)
    }

    /// Polls `script` until `ok` accepts its value, for up to `within`.
    async fn until(
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
    async fn click(&self, css: &str) {
        let element = self
            .client
            .find(fantoccini::Locator::Css(css))
            .await
            .unwrap();
        element.click().await.unwrap();
    }

    async fn end(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A simulated fleet running in the background.
struct Fleet {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<FleetStats>>,
}

impl Fleet {
    fn start(
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
            }),
            boot_pause_ms: 300,
            faults: FaultSpec::NONE,
            device_faults: Vec::new(),
        };
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_fleet(fleet, options, cancel.clone()));
        Fleet { cancel, task }
    }

    async fn stop(self) -> FleetStats {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
    }
}

const HUB_CONFIG: &[(&str, &str)] = &[
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

/// The chart of device 1's channel 0: its history state and range (on the
/// figure), the history points the page received, and the points drawn,
/// the cap and the newest reading's time (on the canvas).
const CHART: &str = r#"
    const f = document.querySelector('#device-view figure.sensor[data-channel="0"]');
    const c = f?.querySelector('canvas.chart');
    const note = f?.querySelector('[data-field="history-note"]');
    return f && c ? {
        history: f.dataset.history ?? null, range: f.dataset.range ?? null,
        history_points: Number(f.dataset.historyPoints), points: Number(c.dataset.points),
        max_points: Number(c.dataset.maxPoints), last_ms: Number(c.dataset.lastMs ?? 0),
        note: note && !note.hidden ? note.textContent : null,
    } : null;
"#;

/// The range buttons: [data-range, label, aria-pressed] each.
const RANGE_BUTTONS: &str = r#"
    return [...document.querySelectorAll('#history-range button[data-range]')]
        .map(b => [b.dataset.range, b.textContent.trim(), b.getAttribute('aria-pressed')]);
"#;

/// Number of points of the chart state `v`.
fn count(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

/// The page's connection indicator state.
const CONNECTION_STATE: &str = "return document.getElementById('connection').dataset.state;";

fn row_status(id: u32) -> String {
    format!(
        r#"return document.querySelector('#fleet tr[data-device-id="{id}"] [data-field="status"]')?.dataset.status ?? null;"#
    )
}

#[tokio::test]
async fn dashboard_end_to_end() {
    let hub = start_hub(HUB_CONFIG).await;
    let connected = Fleet::start(hub.udp, Some(hub.control), 1, 3, 100);
    let udp_only = Fleet::start(hub.udp, None, 100, 1, 100);
    let browser = Browser::start().await;
    let base = format!("http://{}/?points=40", hub.http);

    // Fleet view: every device, with names and status, within a few seconds.
    browser.client.goto(&format!("{base}#/")).await.unwrap();
    browser
        .until(
            "four devices online with names",
            Duration::from_secs(10),
            r#"
            const rows = [...document.querySelectorAll('#fleet tr[data-device-id]')];
            return rows.map(r => [r.dataset.deviceId,
                r.querySelector('[data-field="name"]').textContent.trim(),
                r.querySelector('[data-field="status"]').dataset.status]);
        "#,
            |v| {
                let rows = v.as_array().map(Vec::as_slice).unwrap_or(&[]);
                rows.len() == 4
                    && rows.iter().all(|r| r[2] == "online")
                    && rows.iter().any(|r| r[1] == "kitchen-1")
            },
        )
        .await;
    browser
        .until(
            "connection live",
            Duration::from_secs(5),
            CONNECTION_STATE,
            |v| v == "live",
        )
        .await;
    browser.until("loss and rate shown", Duration::from_secs(5), r#"
        return document.querySelector('#fleet tr[data-device-id="1"] [data-field="rate"]')?.textContent ?? '';
    "#, |v| v.as_str().is_some_and(|t| t.chars().any(|c| c.is_ascii_digit() && c != '0'))).await;
    // The filter narrows the list.
    let filter = browser
        .client
        .find(fantoccini::Locator::Id("fleet-filter"))
        .await
        .unwrap();
    filter.send_keys("kitchen").await.unwrap();
    browser
        .until("filtered to one row", Duration::from_secs(5), "return [...document.querySelectorAll('#fleet tr[data-device-id]')].filter(r => !r.hidden && r.offsetParent !== null).length;", |v| v == 1)
        .await;
    // Clearing with keys, as a person would (WebDriver's clear() fires no input event).
    filter
        .send_keys(&"\u{E003}".repeat("kitchen".len()))
        .await
        .unwrap();
    browser
        .until("all rows back", Duration::from_secs(5), "return [...document.querySelectorAll('#fleet tr[data-device-id]')].filter(r => !r.hidden && r.offsetParent !== null).length;", |v| v == 4)
        .await;
    browser
        .js("document.activeElement?.blur(); return null;")
        .await;
    let png = browser.client.screenshot().await.unwrap();
    std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/docs/dashboard.png"),
        &png,
    )
    .unwrap();

    // Device view: each chart first shows what the history store holds for
    // the default range (readings from before the view opened), then goes on live.
    browser
        .client
        .goto(&format!("{base}#/device/1"))
        .await
        .unwrap();
    let loaded = browser
        .until(
            "15 min of history loaded",
            Duration::from_secs(10),
            CHART,
            |v| v["history"] == "ready" && v["range"] == "15m",
        )
        .await;
    let history_points = count(&loaded, "history_points");
    assert!(
        (1..=40).contains(&history_points),
        "history from the store, at most the cap: {loaded}"
    );
    assert!((1..=40).contains(&count(&loaded, "points")), "{loaded}");
    assert_eq!(loaded["max_points"], 40, "{loaded}");
    assert_eq!(loaded["note"], Value::Null, "no history note: {loaded}");

    // The range selector: four choices, 15 min chosen.
    assert_eq!(
        browser
            .js("return document.getElementById('history-range')?.getAttribute('aria-label') ?? null;")
            .await,
        "History range"
    );
    assert_eq!(
        browser.js(RANGE_BUTTONS).await,
        json!([
            ["15m", "15 min", "true"],
            ["1h", "1 h", "false"],
            ["24h", "24 h", "false"],
            ["7d", "7 d", "false"]
        ])
    );

    // Choosing 1 h loads that range into every chart and moves the choice.
    browser
        .click(r#"#history-range button[data-range="1h"]"#)
        .await;
    let loaded = browser
        .until(
            "1 h of history loaded",
            Duration::from_secs(10),
            CHART,
            |v| v["history"] == "ready" && v["range"] == "1h",
        )
        .await;
    assert!(
        (1..=40).contains(&count(&loaded, "history_points")),
        "{loaded}"
    );
    assert!((1..=40).contains(&count(&loaded, "points")), "{loaded}");
    browser
        .until(
            "every chart on 1 h",
            Duration::from_secs(10),
            r#"
            const figs = [...document.querySelectorAll('#device-view figure.sensor')];
            return figs.map(f => [f.dataset.range, f.dataset.history]);
        "#,
            |v| {
                v.as_array().is_some_and(|figs| {
                    figs.len() == 3 && figs.iter().all(|f| f == &json!(["1h", "ready"]))
                })
            },
        )
        .await;
    assert_eq!(
        browser.js(RANGE_BUTTONS).await,
        json!([
            ["15m", "15 min", "false"],
            ["1h", "1 h", "true"],
            ["24h", "24 h", "false"],
            ["7d", "7 d", "false"]
        ])
    );

    // Live readings go on after the history, and the cap holds.
    let since = loaded["last_ms"].as_f64().unwrap_or(0.0);
    browser
        .until(
            "live readings after the history",
            Duration::from_secs(5),
            CHART,
            |v| v["last_ms"].as_f64().is_some_and(|t| t > since),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let now = browser.js(CHART).await;
    assert!(
        (1..=40).contains(&count(&now, "points")),
        "the cap holds: {now}"
    );

    // A command clicked in the page reaches the device and succeeds.
    let ms = browser
        .client
        .find(fantoccini::Locator::Css(
            "#command-set-interval input[name=ms]",
        ))
        .await
        .unwrap();
    ms.clear().await.unwrap();
    ms.send_keys("100").await.unwrap();
    browser
        .click("#command-set-interval button, #command-set-interval [type=submit]")
        .await;
    browser
        .until(
            "set_interval succeeded in the page",
            Duration::from_secs(10),
            "return document.querySelector('#command-log li')?.dataset.state ?? null;",
            |v| v == "succeeded",
        )
        .await;
    browser
        .click(r#"#commands button[data-command="identify"]"#)
        .await;
    browser
        .until(
            "identify succeeded",
            Duration::from_secs(10),
            "return [...document.querySelectorAll('#command-log li')].map(li => li.dataset.state);",
            |v| {
                v.as_array()
                    .is_some_and(|s| s.len() == 2 && s.iter().all(|x| x == "succeeded"))
            },
        )
        .await;
    let device_png = browser.client.screenshot().await.unwrap();
    std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/docs/device.png"),
        &device_png,
    )
    .unwrap();

    // Hub view: the ingest rate and drop counters, from /api/hub.
    browser.client.goto(&format!("{base}#/hub")).await.unwrap();
    browser
        .until("ingest rate measured", Duration::from_secs(10), r#"
            return parseFloat(document.querySelector('#hub-view [data-field="ingest-rate"]')?.textContent ?? '');
        "#, |v| v.as_f64().is_some_and(|r| r > 10.0))
        .await;
    browser
        .until(
            "drops by reason listed",
            Duration::from_secs(5),
            r#"
            return document.querySelectorAll('#drops tr[data-reason]').length;
        "#,
            |v| v == 6,
        )
        .await;

    // A device that stops becomes late, then offline.
    browser.client.goto(&format!("{base}#/")).await.unwrap();
    browser
        .until(
            "udp-only device online",
            Duration::from_secs(5),
            &row_status(100),
            |v| v == "online",
        )
        .await;
    udp_only.stop().await;
    browser
        .until(
            "stopped device late",
            Duration::from_secs(5),
            &row_status(100),
            |v| v == "late",
        )
        .await;
    browser
        .until(
            "stopped device offline",
            Duration::from_secs(10),
            &row_status(100),
            |v| v == "offline",
        )
        .await;

    // Everything so far went without a failed request (the icon the page
    // links and the /favicon.ico browsers ask for included) or a console error.
    let icons = browser
        .client
        .execute_async(
            r#"
            const done = arguments[arguments.length - 1];
            Promise.all(['/favicon.ico', '/favicon.svg'].map((p) => fetch(p, { cache: 'no-store' })
                .then((r) => [p, r.status, r.headers.get('content-type')])))
                .then(done, (e) => done(String(e)));
        "#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        icons,
        json!([
            ["/favicon.ico", 200, "image/svg+xml"],
            ["/favicon.svg", 200, "image/svg+xml"]
        ])
    );
    assert_eq!(
        browser
            .js(r#"
            return performance.getEntriesByType('resource')
                .filter((e) => e.responseStatus >= 400).map((e) => [e.name, e.responseStatus]);
        "#)
            .await,
        json!([]),
        "failed requests"
    );
    let log = browser.log().await;
    let errors: Vec<&Value> = log
        .iter()
        .filter(|e| {
            e["level"] == "SEVERE" || e["message"].as_str().unwrap_or("").contains("favicon")
        })
        .collect();
    assert!(errors.is_empty(), "browser log: {errors:#?}");

    // The hub restarts; the page notices and comes back by itself.
    let binds = hub.binds();
    hub.stop().await;
    browser
        .until(
            "page notices the hub is gone",
            Duration::from_secs(10),
            CONNECTION_STATE,
            |v| v == "reconnecting",
        )
        .await;
    let hub = start_hub_on(binds, HUB_CONFIG).await;
    browser
        .until(
            "page live again",
            Duration::from_secs(20),
            CONNECTION_STATE,
            |v| v == "live",
        )
        .await;
    browser
        .until(
            "devices back after the restart",
            Duration::from_secs(20),
            &row_status(1),
            |v| v == "online",
        )
        .await;

    let stats = connected.stop().await;
    assert_eq!(
        stats.commands_received, 2,
        "set_interval and identify reached the device"
    );
    browser.end().await;
    hub.stop().await;
}

/// With `storage.enabled = false` the device view says history is off and
/// charts live readings as they come, capped, whatever the range.
#[tokio::test]
async fn device_view_without_history() {
    let mut config = HUB_CONFIG.to_vec();
    config.push(("SENSOR_HUB__STORAGE__ENABLED", "false"));
    let hub = start_hub(&config).await;
    let fleet = Fleet::start(hub.udp, Some(hub.control), 1, 1, 100);
    let browser = Browser::start().await;
    browser
        .client
        .goto(&format!("http://{}/?points=20#/device/1", hub.http))
        .await
        .unwrap();
    let off = browser
        .until("history off", Duration::from_secs(10), CHART, |v| {
            v["history"] == "off"
        })
        .await;
    assert_eq!(off["note"], "history off — live only", "{off}");
    assert_eq!(off["history_points"], 0, "{off}");

    // Live only: every reading is a point, up to the cap.
    browser
        .until("live chart capped", Duration::from_secs(15), CHART, |v| {
            v["points"] == 20 && v["max_points"] == 20
        })
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(browser.js(CHART).await["points"], 20, "the cap holds");

    // Another range asks again and gets the same answer.
    browser
        .click(r#"#history-range button[data-range="24h"]"#)
        .await;
    let off = browser
        .until("24 h: history off", Duration::from_secs(10), CHART, |v| {
            v["history"] == "off" && v["range"] == "24h"
        })
        .await;
    assert_eq!(off["note"], "history off — live only", "{off}");
    browser
        .until(
            "live again after the range change",
            Duration::from_secs(5),
            CHART,
            |v| count(v, "points") > 1,
        )
        .await;

    fleet.stop().await;
    browser.end().await;
    hub.stop().await;
}

/// Each command log entry of the page's device view: [id, kind, state,
/// lifecycle, detail].
const COMMAND_LOG: &str = r#"
    return [...document.querySelectorAll('#command-log li')].map((li) => [li.dataset.commandId,
        li.querySelector('.kind').textContent, li.dataset.state,
        li.querySelector('.lifecycle').textContent, li.querySelector('.detail')?.textContent ?? null]);
"#;

/// The log entries of `log` (a [`COMMAND_LOG`] value).
fn entries(log: &Value) -> &[Value] {
    log.as_array().map(Vec::as_slice).unwrap_or(&[])
}

/// `log` has `n` entries, all succeeded.
fn all_succeeded(log: &Value, n: usize) -> bool {
    let e = entries(log);
    e.len() == n && e.iter().all(|e| e[2] == "succeeded")
}

/// The per-tab part of a command id ("ui-<tab>-<n>").
/// In `tab`, sends a second command (identify) and checks that once it
/// succeeded, the tab's first entry (`first`) is exactly as it was: the
/// other tab's command statuses did not touch it.
async fn second_identify_keeps_the_first_entry(
    browser: &Browser,
    tab: &fantoccini::wd::WindowHandle,
    name: &str,
    first: &Value,
) {
    browser.client.switch_to_window(tab.clone()).await.unwrap();
    browser
        .click(r#"#commands button[data-command="identify"]"#)
        .await;
    let log = browser
        .until(
            &format!("tab {name}: second command succeeded"),
            Duration::from_secs(10),
            COMMAND_LOG,
            |v| all_succeeded(v, 2),
        )
        .await;
    assert_eq!(
        log[0], first[0],
        "tab {name}'s first entry untouched by the other tab's commands"
    );
    assert_eq!(log[1][1], "identify", "{log}");
}

fn tab_of(entry: &Value) -> String {
    let id = entry[0].as_str().unwrap();
    id.rsplit_once('-').unwrap().0.to_string()
}

/// Two tabs on the same device page: each sends commands, and each tab's
/// log shows its own commands only, untouched by the other tab's (whose
/// statuses reach it too, without the request id).
#[tokio::test]
async fn two_tabs_keep_their_own_command_logs() {
    let hub = start_hub(HUB_CONFIG).await;
    let fleet = Fleet::start(hub.udp, Some(hub.control), 1, 1, 100);
    let browser = Browser::start().await;
    let url = format!("http://{}/#/device/1", hub.http);
    let online = r#"
        return document.querySelector('#device-view [data-field="status"]')?.dataset.status ?? null;
    "#;
    let tab_a = browser.client.window().await.unwrap();
    browser.client.goto(&url).await.unwrap();
    browser
        .until(
            "tab A: device online",
            Duration::from_secs(10),
            online,
            |v| v == "online",
        )
        .await;
    let tab_b = browser.client.new_window(true).await.unwrap().handle;
    browser
        .client
        .switch_to_window(tab_b.clone())
        .await
        .unwrap();
    browser.client.goto(&url).await.unwrap();
    browser
        .until(
            "tab B: device online",
            Duration::from_secs(10),
            online,
            |v| v == "online",
        )
        .await;

    // A: identify.
    browser
        .client
        .switch_to_window(tab_a.clone())
        .await
        .unwrap();
    browser
        .click(r#"#commands button[data-command="identify"]"#)
        .await;
    let a_first = browser
        .until(
            "tab A: identify succeeded",
            Duration::from_secs(10),
            COMMAND_LOG,
            |v| all_succeeded(v, 1),
        )
        .await;
    assert_eq!(a_first[0][1], "identify", "{a_first}");

    // B: set_interval. Its statuses reach tab A too (subscribed to the device).
    browser
        .client
        .switch_to_window(tab_b.clone())
        .await
        .unwrap();
    let ms = browser
        .client
        .find(fantoccini::Locator::Css(
            "#command-set-interval input[name=ms]",
        ))
        .await
        .unwrap();
    ms.send_keys("100").await.unwrap();
    browser
        .click("#command-set-interval button[type=submit]")
        .await;
    let b_first = browser
        .until(
            "tab B: set_interval succeeded",
            Duration::from_secs(10),
            COMMAND_LOG,
            |v| all_succeeded(v, 1),
        )
        .await;
    assert_eq!(b_first[0][1], "set_interval 100 ms", "{b_first}");
    assert_ne!(
        tab_of(&a_first[0]),
        tab_of(&b_first[0]),
        "ids unique per tab"
    );

    // A again: once its second command's statuses are in, B's (which the hub
    // streamed before them) have been seen by A too. Then the same for B.
    second_identify_keeps_the_first_entry(&browser, &tab_a, "A", &a_first).await;
    second_identify_keeps_the_first_entry(&browser, &tab_b, "B", &b_first).await;

    let stats = fleet.stop().await;
    assert_eq!(
        stats.commands_received, 4,
        "every command reached the device once"
    );
    browser.end().await;
    hub.stop().await;
}
