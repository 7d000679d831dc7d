//! Adopting and forgetting devices in the dashboard, in real headless
//! Chromium (see tests/browser.rs for how it is driven): devices that only
//! send datagrams from ids the hub does not know are listed apart, as
//! discovered (#discovered), with their live readings; the owner adopts one
//! without a key (it moves into the fleet table with a "no key" badge) and
//! one with a key (shown once, in the key panel; "key" badge), forgets one
//! from its device view (after a confirm; it shows up as discovered again
//! since it keeps sending), and a device removed by another client while
//! its view is open sends the page back to the fleet with a notice. A viewer
//! sees the discovered devices but no Adopt or Forget controls.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod browser_support;
mod support;

use std::time::Duration;

use browser_support::*;
use serde_json::{json, Value};
use support::*;

/// [adopted ids in #fleet, discovered ids in #discovered], each in table order.
const TABLES: &str = r#"
    const ids = (css) => [...document.querySelectorAll(css)].map((r) => Number(r.dataset.deviceId));
    return [ids('#fleet tr[data-device-id]'), ids('#discovered tr[data-device-id]')];
"#;

/// The key badge of device `id` in the fleet table: [text, title], or null.
fn badge(id: u32) -> String {
    format!(
        r#"const b = document.querySelector('#fleet tr[data-device-id="{id}"] [data-field="trust"] .badge');
        return b ? [b.textContent, b.title] : null;"#
    )
}

/// Whether `ids` (a [`TABLES`] half) holds `id`.
fn has(ids: &Value, id: u32) -> bool {
    ids.as_array()
        .is_some_and(|a| a.iter().any(|v| v.as_u64() == Some(id.into())))
}

/// The hub's view of device `id` in `GET /api/devices`: (adopted, keyed).
async fn trust(hub: &TestHub, id: u32) -> Option<(bool, bool)> {
    let (status, body) = hub.get("/api/devices").await;
    assert_eq!(status, 200, "{body}");
    let list: Value = serde_json::from_str(&body).unwrap();
    list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .map(|d| {
            (
                d["adopted"].as_bool().unwrap(),
                d["keyed"].as_bool().unwrap(),
            )
        })
}

/// [the location's hash, what the fleet view's notice says or null].
const NOTICE: &str = r#"
    const n = document.getElementById('fleet-notice');
    return [location.hash, n && !n.hidden ? n.textContent : null];
"#;

#[tokio::test]
async fn the_owner_adopts_and_forgets_discovered_devices() {
    let hub = start_hub(HUB_CONFIG).await;
    // Two devices that only send datagrams, from ids nobody adopted.
    let fleet = Fleet::start(hub.udp, None, 200, 2, 100);
    let browser = Browser::start().await;
    browser.login_with_link(&hub).await;
    let base = format!("http://{}/", hub.http);
    browser.client.goto(&format!("{base}#/")).await.unwrap();

    // Both discovered, none adopted; their readings shown live.
    browser
        .until(
            "two discovered devices, none adopted",
            Duration::from_secs(10),
            TABLES,
            |v| v == &json!([[], [200, 201]]),
        )
        .await;
    browser
        .until(
            "live readings of the discovered devices",
            Duration::from_secs(10),
            r#"return [...document.querySelectorAll('#discovered [data-field="readings"]')].map((c) => c.textContent);"#,
            |v| {
                v.as_array().is_some_and(|cells| {
                    cells.len() == 2 && cells.iter().all(|c| c.as_str().is_some_and(|t| t.starts_with("ch0 ")))
                })
            },
        )
        .await;
    let explanation = browser
        .js("return document.querySelector('#discovered-devices > .hint')?.textContent ?? null;")
        .await;
    let explanation = explanation.as_str().unwrap();
    assert!(
        explanation.contains("never stored") && explanation.contains("Adopt one to keep its data"),
        "{explanation}"
    );
    assert_eq!(trust(&hub, 200).await, Some((false, false)));
    assert_eq!(
        browser
            .js(r#"return [...document.querySelectorAll('#discovered tr[data-device-id="200"] button[data-action]')]
                .map((b) => [b.dataset.action, b.textContent]);"#)
            .await,
        json!([
            ["adopt-key", "Adopt with key"],
            ["adopt-nokey", "Adopt without key"]
        ])
    );

    // Adopted without a key: into the fleet table at once, badge "no key".
    browser
        .click(r#"#discovered tr[data-device-id="200"] button[data-action="adopt-nokey"]"#)
        .await;
    browser
        .until("device 200 adopted", Duration::from_secs(2), TABLES, |v| {
            v == &json!([[200], [201]])
        })
        .await;
    let no_key = browser
        .until(
            "the no key badge",
            Duration::from_secs(2),
            &badge(200),
            |v| v[0] == "no key",
        )
        .await;
    assert!(
        no_key[1].as_str().unwrap().contains("not authenticated"),
        "{no_key}"
    );
    assert_eq!(trust(&hub, 200).await, Some((true, false)));
    assert_eq!(
        browser
            .js("return document.getElementById('device-key').hidden;")
            .await,
        true,
        "no key to show"
    );

    // Adopted with a key: shown once, with a copy button; badge "key".
    browser
        .click(r#"#discovered tr[data-device-id="201"] button[data-action="adopt-key"]"#)
        .await;
    let panel = browser
        .until(
            "the new key shown",
            Duration::from_secs(5),
            r#"
            const p = document.getElementById('device-key');
            return p && !p.hidden ? [document.getElementById('device-key-text').value,
                document.getElementById('device-key-hint').textContent,
                !!document.getElementById('device-key-copy')] : null;
        "#,
            |v| !v.is_null(),
        )
        .await;
    let key = panel[0].as_str().unwrap().to_string();
    assert!(
        key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()),
        "{panel}"
    );
    let hint = panel[1].as_str().unwrap();
    assert!(
        hint.contains("firmware") && hint.contains("will not show it again"),
        "{hint}"
    );
    assert_eq!(panel[2], true, "a copy button");
    browser
        .until("device 201 adopted", Duration::from_secs(2), TABLES, |v| {
            v == &json!([[200, 201], []])
        })
        .await;
    let keyed = browser
        .until("the key badge", Duration::from_secs(2), &badge(201), |v| {
            v[0] == "key"
        })
        .await;
    assert!(
        keyed[1].as_str().unwrap().contains("authenticated"),
        "{keyed}"
    );
    // The hub lists it keyed; the simulator's untagged datagrams are dropped
    // from now on (as `unauthenticated`).
    assert_eq!(trust(&hub, 201).await, Some((true, true)));
    // The key is in no URL and in no log line of the page.
    assert!(!browser
        .js("return location.href;")
        .await
        .as_str()
        .unwrap()
        .contains(&key));
    let log = browser.log().await;
    assert!(
        !log.iter().any(|e| e.to_string().contains(&key)),
        "the key in the browser log: {log:#?}"
    );
    assert!(
        !log.iter().any(|e| e["level"] == "SEVERE"),
        "browser log: {log:#?}"
    );
    browser.click("#device-key-done").await;
    assert_eq!(
        browser
            .js("return [document.getElementById('device-key').hidden, document.getElementById('device-key-text').value];")
            .await,
        json!([true, ""])
    );

    // Forget device 200 from its view: nothing without the confirm, then
    // back to the fleet; it sends on, so it is discovered again.
    browser
        .click(r#"#fleet tr[data-device-id="200"] [data-field="name"] a"#)
        .await;
    browser
        .until(
            "device 200's view",
            Duration::from_secs(5),
            r#"return document.querySelector('#device-view [data-field="trust"]')?.textContent ?? null;"#,
            |v| v == "no key — unauthenticated",
        )
        .await;
    browser
        .js("window.confirm = () => false; return null;")
        .await;
    browser.click("#device-forget").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(browser.js("return location.hash;").await, "#/device/200");
    assert_eq!(trust(&hub, 200).await, Some((true, false)), "not forgotten");
    browser
        .js("window.confirm = () => true; return null;")
        .await;
    browser.click("#device-forget").await;
    browser
        .until(
            "back on the fleet, told so",
            Duration::from_secs(5),
            NOTICE,
            |v| v == &json!(["#/", "device 200 forgotten."]),
        )
        .await;
    browser
        .until(
            "device 200 discovered again",
            Duration::from_secs(10),
            TABLES,
            |v| !has(&v[0], 200) && has(&v[1], 200) && has(&v[0], 201),
        )
        .await;
    // A device list from before the forget does not bring it back as adopted.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let tables = browser.js(TABLES).await;
    assert!(!has(&tables[0], 200) && has(&tables[1], 200), "{tables}");
    assert_eq!(trust(&hub, 200).await, Some((false, false)));

    // Another client forgets device 201 while its view is open: the page
    // goes back to the fleet and says why.
    browser
        .client
        .goto(&format!("{base}#/device/201"))
        .await
        .unwrap();
    browser
        .until(
            "device 201's view",
            Duration::from_secs(5),
            r#"return document.querySelector('#device-view [data-field="trust"]')?.textContent ?? null;"#,
            |v| v == "adopted, with a key",
        )
        .await;
    let (response, _) = http_request(
        hub.http,
        "DELETE",
        "/api/devices/201",
        &[("Authorization", &format!("Bearer {}", owner_token(&hub)))],
        None,
    )
    .await;
    assert_eq!(response.status, 204, "{}", response.text());
    let notice = browser
        .until(
            "back on the fleet after device_removed",
            Duration::from_secs(5),
            NOTICE,
            |v| v[0] == "#/" && v[1].is_string(),
        )
        .await;
    assert!(
        notice[1].as_str().unwrap().contains("left the hub"),
        "{notice}"
    );
    browser
        .until(
            "device 201 gone from the fleet",
            Duration::from_secs(5),
            TABLES,
            |v| !has(&v[0], 201),
        )
        .await;

    // A viewer sees the discovered devices, but no Adopt or Forget.
    let (_, viewer) = credential_file(&hub)
        .update(|c| c.add_token("phone", sensor_hub::auth::Role::Viewer, 0))
        .unwrap();
    browser.click("#logout").await;
    browser
        .until("the login page", Duration::from_secs(10), PATH, |v| {
            v == "/login.html"
        })
        .await;
    browser
        .login_with_form(hub.http, &viewer, "viewer · phone")
        .await;
    browser.client.goto(&format!("{base}#/")).await.unwrap();
    browser
        .until(
            "discovered devices for the viewer",
            Duration::from_secs(10),
            TABLES,
            |v| has(&v[1], 200),
        )
        .await;
    assert_eq!(
        browser
            .js("return document.querySelectorAll('#view button[data-action], #device-key').length;")
            .await,
        0
    );
    browser
        .client
        .goto(&format!("{base}#/device/200"))
        .await
        .unwrap();
    browser
        .until(
            "device 200's view for the viewer",
            Duration::from_secs(5),
            r#"return document.querySelector('#device-view [data-field="trust"]')?.textContent ?? null;"#,
            |v| v == "discovered — not stored",
        )
        .await;
    assert_eq!(
        browser
            .js("return document.querySelectorAll('#device-forget, #device-admin').length;")
            .await,
        0
    );

    fleet.stop().await;
    browser.end().await;
    hub.stop().await;
}

/// An owner API token of `hub`, for a client other than the page.
fn owner_token(hub: &TestHub) -> String {
    credential_file(hub)
        .update(|c| c.add_token("owner-script", sensor_hub::auth::Role::Owner, 0))
        .unwrap()
        .1
}
