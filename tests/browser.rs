//! The dashboard in real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by scripts/test), driven through WebDriver
//! (fantoccini), against a real hub with simulated devices: the fleet view,
//! charts loaded from the history store then continued live (and live only
//! when the hub keeps no history), the range selector, capped charts,
//! commands clicked in the page, liveness, a page load without failed
//! requests or console errors (the icon included), the hub restarting (its
//! sessions end with it: the page goes to the login page instead of
//! retrying, and is live again after a new login), two tabs that each
//! keep their own command log, and a hub in a cluster (a real Redis: the
//! link, the hubs, the hub holding each device, the link lost). Every test logs in through the real login
//! page first (a one-time link, or the operator token typed into the form);
//! tests/browser_security.rs has the password, the roles, the tokens view
//! and cross-origin pages. The run also refreshes docs/dashboard.png and
//! docs/device.png.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod browser_support;
mod cluster_support;
mod mqtt_support;
mod support;

use std::time::Duration;

use browser_support::*;
use serde_json::{json, Value};
use support::*;

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

#[tokio::test]
async fn dashboard_end_to_end() {
    // Device 100 sends datagrams only: listed in the device file without a
    // key, so it is adopted (in #fleet, stored) rather than discovered.
    let hub = start_hub_adopting(HUB_CONFIG, &[100]).await;
    let connected = Fleet::start(hub.udp, Some(hub.control), 1, 3, 100);
    let udp_only = Fleet::start(hub.udp, None, 100, 1, 100);
    let browser = Browser::start().await;
    let base = format!("http://{}/?points=40", hub.http);
    // Logged in with a one-time link, as the owner.
    browser.login_with_link(&hub).await;

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
    // All four are adopted without a key (the connected ones by the fleet
    // token's hello), so none is discovered.
    assert_eq!(
        browser
            .js(r#"
            return [[...document.querySelectorAll('#fleet [data-field="trust"] .badge')].map(b => b.textContent),
                document.querySelectorAll('#discovered tr[data-device-id]').length];
        "#)
            .await,
        json!([["no key", "no key", "no key", "no key"], 0])
    );
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
            |v| v == 13,
        )
        .await;
    // The MQTT bridge is off in this hub, and the view says so.
    browser
        .until(
            "the MQTT bridge shown off",
            Duration::from_secs(5),
            r#"
            const f = document.querySelector('#hub-view [data-field="mqtt"]');
            return f ? `${f.dataset.state} ${f.textContent}` : null;
        "#,
            |v| v == "disabled off",
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

    // The hub restarts; the page notices. Sessions live in the hub's memory,
    // so once the hub is back the page is sent to the login page (instead of
    // retrying forever), and is live again after a login.
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
            "the login page once the hub is back",
            Duration::from_secs(30),
            PATH,
            |v| v == "/login.html",
        )
        .await;
    browser.login_with_link(&hub).await;
    assert_eq!(
        browser.js("return location.hash;").await,
        "#/",
        "back to the view the page was on"
    );
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
    browser.login_with_link(&hub).await;
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

/// The per-tab part of a command id ("ui-<tab>-<n>").
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
    // The operator token typed into the login page; the session cookie
    // serves both tabs.
    browser
        .login_with_form(hub.http, &hub.token, "operator · test-operator")
        .await;
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

/// The hub view shows the MQTT bridge: connected to its broker, and what
/// it published by kind; a command from MQTT (as Home Assistant's button
/// sends it) shows in the device view's log, marked so.
#[tokio::test]
async fn hub_view_shows_the_mqtt_bridge() {
    let broker = mqtt_support::Broker::start();
    let port = broker.port().to_string();
    let mut config = HUB_CONFIG.to_vec();
    config.extend([
        ("SENSOR_HUB__MQTT__ENABLED", "true"),
        ("SENSOR_HUB__MQTT__HOST", broker.host()),
        ("SENSOR_HUB__MQTT__PORT", port.as_str()),
        ("SENSOR_HUB__MQTT__USERNAME", broker.user()),
        ("SENSOR_HUB__MQTT__PASSWORD", broker.password()),
        ("SENSOR_HUB__MQTT__HUB_INTERVAL_MS", "500"),
        ("SENSOR_HUB__MQTT__COMMANDS", "true"),
    ]);
    let hub = start_hub(&config).await;
    let fleet = Fleet::start(hub.udp, Some(hub.control), 2, 1, 100);
    let browser = Browser::start().await;
    browser.login_with_link(&hub).await;
    browser
        .client
        .goto(&format!("http://{}/#/hub", hub.http))
        .await
        .unwrap();
    let expected = format!("connected connected to 127.0.0.1:{port}");
    browser
        .until(
            "the bridge shown connected",
            Duration::from_secs(15),
            r#"
            const f = document.querySelector('#hub-view [data-field="mqtt"]');
            return f ? `${f.dataset.state} ${f.textContent}` : null;
        "#,
            |v| v == expected.as_str(),
        )
        .await;
    browser
        .until(
            "states published, by kind",
            Duration::from_secs(15),
            r#"
            const table = document.querySelector('#mqtt-published');
            const row = table?.querySelector('tr[data-kind="state"] [data-field="count"]');
            return table && !table.closest('.table-wrap').hidden && row ? Number(row.textContent.replace(/[^0-9]/g, '')) : 0;
        "#,
            |v| v.as_u64().is_some_and(|n| n > 0),
        )
        .await;

    browser
        .client
        .goto(&format!("http://{}/#/device/2", hub.http))
        .await
        .unwrap();
    browser
        .until(
            "the device view's command log",
            Duration::from_secs(10),
            "return document.querySelector('#command-log') !== null;",
            |v| v == true,
        )
        .await;
    let probe = mqtt_support::Probe::connect(&broker, "browser-probe", &[]).await;
    probe
        .publish(
            "sensor-hub/sensor_hub/device/2/identify/press",
            "PRESS",
            false,
        )
        .await;
    browser
        .until(
            "the MQTT command listed, succeeded",
            Duration::from_secs(15),
            r#"
            const li = document.querySelector('#command-log li[data-command-id^="mqtt-"]');
            return li ? `${li.querySelector('.kind').textContent} ${li.dataset.state}` : null;
        "#,
            |v| v == "identify via MQTT succeeded",
        )
        .await;
    fleet.stop().await;
    browser.end().await;
    hub.stop().await;
}

/// Waits until the hub view's cluster fact reads `state text…` starting
/// with `prefix` (its `data-state`, a space, its text).
async fn cluster_fact(browser: &Browser, what: &str, deadline: Duration, prefix: &str) {
    browser
        .until(
            what,
            deadline,
            r#"
            const f = document.querySelector('#hub-view [data-field="cluster"]');
            return f ? `${f.dataset.state} ${f.textContent}` : null;
        "#,
            |v| v.as_str().is_some_and(|t| t.starts_with(prefix)),
        )
        .await;
}

/// In a cluster (a real Redis, hubs "a" and "b"), hub a's dashboard shows
/// the link up and both hubs in the hub view, and the hub holding each
/// device in the fleet view (b's devices included); when Redis goes away
/// the link is shown down.
#[tokio::test]
async fn hub_view_shows_the_cluster() {
    let redis = cluster_support::RedisServer::start();
    let url = redis.url();
    let config = |name: &'static str| {
        let mut config = HUB_CONFIG.to_vec();
        config.extend([
            ("SENSOR_HUB__CLUSTER__ENABLED", "true"),
            ("SENSOR_HUB__CLUSTER__REDIS_URL", url.as_str()),
            ("SENSOR_HUB__CLUSTER__HUB_NAME", name),
            ("SENSOR_HUB__CLUSTER__KEY_PREFIX", "browser-cluster"),
            // The hubs list is refreshed every third of it: every second.
            ("SENSOR_HUB__CLUSTER__LEASE_TTL_MS", "3000"),
        ]);
        config
    };
    // Device 100 sends datagrams to hub a (adopted there by its device
    // file); devices 1 and 2 say hello to hub b and report to it.
    let a = start_hub_adopting(&config("a"), &[100]).await;
    let b = start_hub(&config("b")).await;
    let fleet = Fleet::start(b.udp, Some(b.control), 1, 2, 100);
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sender = {
        let to = a.udp;
        tokio::spawn(async move {
            for seq in 0.. {
                let _ = udp
                    .send_to(
                        &datagram(100, seq, &[(0, sensor_hub_protocol::Value::F32(21.5))]),
                        to,
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let browser = Browser::start().await;
    browser.login_with_link(&a).await;
    browser
        .client
        .goto(&format!("http://{}/#/hub", a.http))
        .await
        .unwrap();
    cluster_fact(
        &browser,
        "the cluster link shown up, with two hubs",
        Duration::from_secs(20),
        "up a · link up · 2 hubs · events: ",
    )
    .await;
    browser
        .until(
            "both hubs listed alive, this one marked",
            Duration::from_secs(10),
            r#"
            const table = document.querySelector('#cluster-hubs');
            if (!table || table.closest('.table-wrap').hidden) return null;
            return [...table.querySelectorAll('tbody tr[data-hub]')].map(r => [
                r.querySelector('th').textContent.replace(/\s+/g, ' '),
                r.querySelector('[data-field="state"]').textContent,
                r.querySelector('[data-field="seen"]').textContent]);
        "#,
            |v| {
                let rows = v.as_array().map(Vec::as_slice).unwrap_or(&[]);
                rows.len() == 2
                    && rows[0][0] == "a (this hub)"
                    && rows[1][0] == "b"
                    && rows.iter().all(|r| r[1] == "alive")
                    && rows
                        .iter()
                        .all(|r| r[2].as_str().is_some_and(|t| t.ends_with(" s ago")))
            },
        )
        .await;
    // Hub b holds two devices, hub a one.
    browser
        .until(
            "the hubs' device counts",
            Duration::from_secs(10),
            r#"
            return [...document.querySelectorAll('#cluster-hubs tbody tr[data-hub]')]
                .map(r => [r.dataset.hub, r.querySelector('[data-field="devices"]').textContent]);
        "#,
            |v| *v == json!([["a", "1"], ["b", "2"]]),
        )
        .await;

    // The fleet view: a Hub column, b's devices marked "b", a's "a".
    browser
        .client
        .goto(&format!("http://{}/#/", a.http))
        .await
        .unwrap();
    browser
        .until(
            "every device with its hub",
            Duration::from_secs(15),
            r#"
            const th = [...document.querySelectorAll('#fleet thead th')].find(t => t.textContent.trim() === 'Hub');
            return [th ? !th.hidden && th.offsetParent !== null : null,
                [...document.querySelectorAll('#fleet tr[data-device-id]')].map(r => {
                    const hub = r.querySelector('[data-field="hub"]');
                    return [r.dataset.deviceId, hub.hidden ? null : hub.textContent];
                })];
        "#,
            |v| *v == json!([true, [["1", "b"], ["2", "b"], ["100", "a"]]]),
        )
        .await;

    // Redis goes away: the link is shown down (after link_timeout_ms, 2 s).
    browser
        .client
        .goto(&format!("http://{}/#/hub", a.http))
        .await
        .unwrap();
    browser
        .until(
            "the hub view again, link up",
            Duration::from_secs(10),
            r#"return document.querySelector('#hub-view [data-field="cluster"]')?.dataset.state ?? null;"#,
            |v| v == "up",
        )
        .await;
    let mut redis = tokio::task::spawn_blocking(move || {
        let mut redis = redis;
        redis.stop();
        redis
    })
    .await
    .unwrap();
    cluster_fact(
        &browser,
        "the cluster link shown down",
        Duration::from_secs(10),
        "down a · link down since ",
    )
    .await;
    assert_eq!(
        browser
            .js("return document.querySelector('#cluster-hubs caption')?.textContent ?? null;")
            .await,
        "Hubs of the cluster (as last known: the link is down)"
    );
    sender.abort();
    fleet.stop().await;
    browser.end().await;
    a.stop().await;
    b.stop().await;
    redis.kill();
}
