//! Commands end to end with real simulated devices (device-sim) over real
//! sockets: a browser-style WebSocket client changes a device's report
//! rate and sees every lifecycle state; a reboot resets the device's
//! sequence and it comes back on its own.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::time::Duration;

use futures_util::SinkExt as _;
use support::*;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "sim-fleet-token-for-tests";

async fn device_field(hub: &TestHub, id: u32, field: &str) -> serde_json::Value {
    let (_, body) = hub.get("/api/devices").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .map(|d| d[field].clone())
        .unwrap_or(serde_json::Value::Null)
}

/// Datagrams the hub accepted from device `id` during `window`.
async fn datagrams_during(hub: &TestHub, id: u32, window: Duration) -> u64 {
    let before = device_field(hub, id, "datagrams").await.as_u64().unwrap();
    tokio::time::sleep(window).await;
    device_field(hub, id, "datagrams").await.as_u64().unwrap() - before
}

#[tokio::test]
async fn set_interval_from_a_websocket_client_changes_the_device_rate() {
    let hub = start_hub(&[("SENSOR_HUB__CONTROL__FLEET_TOKEN", TOKEN)]).await;
    let sim = Sim::start(&hub, 1, 1_000, TOKEN, 5);
    eventually("device connected", || async {
        device_field(&hub, 1, "connected").await == true
    })
    .await;
    assert_eq!(
        device_field(&hub, 1, "firmware").await,
        format!("device-sim {}", env!("CARGO_PKG_VERSION"))
    );
    let slow = datagrams_during(&hub, 1, Duration::from_millis(1_200)).await;

    let mut ws = hub.ws().await;
    next_json(&mut ws).await; // hello
    ws.send(Message::text(
        r#"{"type":"command","id":"rate","device":1,"command":{"kind":"set_interval","ms":50}}"#,
    ))
    .await
    .unwrap();
    let mut states = Vec::new();
    while states.last().map(String::as_str) != Some("succeeded") {
        let msg = next_json(&mut ws).await;
        if msg["type"] == "command_status" {
            assert_eq!(msg["id"], "rate");
            assert_eq!(msg["kind"], "set_interval");
            let state = msg["state"].as_str().unwrap().to_string();
            assert!(state != "failed" && state != "timed_out", "{msg}");
            states.push(state);
        }
    }
    assert_eq!(states, ["queued", "sent", "acked", "succeeded"]);

    let fast = datagrams_during(&hub, 1, Duration::from_millis(1_200)).await;
    // 1 s interval: one or two datagrams; 50 ms interval: about 24.
    assert!(slow <= 3, "before: {slow} datagrams in 1.2 s");
    assert!(fast >= 10, "after: {fast} datagrams in 1.2 s");
    let stats = sim.stop().await;
    assert_eq!(stats.commands_received, 1);
    hub.stop().await;
}

#[tokio::test]
async fn reboot_resets_the_sequence_and_the_device_comes_back() {
    let hub = start_hub(&[("SENSOR_HUB__CONTROL__FLEET_TOKEN", TOKEN)]).await;
    let sim = Sim::start(&hub, 1, 50, TOKEN, 5);
    eventually("device connected and counting", || async {
        device_field(&hub, 1, "last_seq")
            .await
            .as_u64()
            .unwrap_or(0)
            >= 20
    })
    .await;
    let (answer, _) = http_request(
        hub.http,
        "POST",
        "/api/devices/1/commands",
        &[("Content-Type", "application/json")],
        Some(br#"{"kind":"reboot"}"#),
    )
    .await;
    let (status, body) = (answer.status.to_string(), answer.text());
    assert_eq!(status, "200", "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["state"], "succeeded");
    eventually("a second session after the reboot", || async {
        hub.metric("sensor_hub_control_sessions_opened_total").await == 2
    })
    .await;
    eventually("sequence restarted", || async {
        let seq = device_field(&hub, 1, "last_seq")
            .await
            .as_u64()
            .unwrap_or(u64::MAX);
        seq < 15
    })
    .await;
    assert_eq!(device_field(&hub, 1, "connected").await, true);
    // The hub saw a restart, not a loss.
    assert_eq!(
        hub.metric("sensor_hub_sequence_total{kind=\"restarts\"}")
            .await,
        1
    );
    assert_eq!(
        hub.metric("sensor_hub_sequence_total{kind=\"lost\"}").await,
        0
    );
    let stats = sim.stop().await;
    assert_eq!(stats.reboots, 1);
    assert_eq!(stats.sessions_opened, 2);
    hub.stop().await;
}
