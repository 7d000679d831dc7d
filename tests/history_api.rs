//! The history through a real hub: readings sent over UDP come back from
//! `GET …/history` and the WebSocket `history` request, by channel or by
//! declared name, never with more points than asked; bad requests get
//! clear errors; and a restarted hub still knows its devices and their
//! history.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use futures_util::SinkExt as _;
use sensor_hub::clock::wall_ms as unix_ms;
use sensor_hub_protocol::Value;
use serde_json::{json, Value as Json};
use support::*;
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "history-test-fleet-token";

/// A hub that flushes every 100 ms into the database at `db`, with the
/// UDP-only devices of these tests adopted (no key) in a device file
/// beside it.
async fn hub_at(db: &std::path::Path) -> TestHub {
    start_hub(&[
        ("SENSOR_HUB__STORAGE__PATH", &db.display().to_string()),
        ("SENSOR_HUB__STORAGE__FLUSH_INTERVAL_MS", "100"),
        ("SENSOR_HUB__CONTROL__FLEET_TOKEN", TOKEN),
        ("SENSOR_HUB__DEVICES__KEYS_PATH", &device_file(db)),
    ])
    .await
}

/// The device file beside `db`, adopting devices 0 to 99 without keys.
fn device_file(db: &std::path::Path) -> String {
    let path = db.with_extension("devices.json");
    adopt(&path, &(0..100).collect::<Vec<u32>>(), &[]);
    path.display().to_string()
}

/// Sends `n` datagrams from `device`, channel 0 = i, channel 1 = -i, and
/// waits until the hub has accepted them all.
async fn send(hub: &TestHub, device: u32, n: u32) {
    let before = hub.metric("sensor_hub_udp_datagrams_accepted_total").await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..n {
        let bytes = datagram(
            device,
            i,
            &[(0, Value::F32(i as f32)), (1, Value::I32(-(i as i32)))],
        );
        socket.send_to(&bytes, hub.udp).await.unwrap();
        if i % 50 == 49 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
    eventually("every datagram accepted", || async {
        hub.metric("sensor_hub_udp_datagrams_accepted_total").await == before + u64::from(n)
    })
    .await;
}

async fn history(hub: &TestHub, path: &str) -> (u16, Json) {
    let (status, body) = hub.get(path).await;
    (
        status,
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

fn counts(answer: &Json) -> u64 {
    answer["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_u64().unwrap())
        .sum()
}

#[tokio::test]
async fn readings_come_back_reduced_to_at_most_max_points() {
    let dir = TempDir::new("api");
    let hub = hub_at(&dir.db()).await;
    let from = unix_ms() - 1;
    send(&hub, 5, 300).await;
    let to = unix_ms() + 1;

    // Everything, unreduced: raw readings in arrival order.
    let (status, all) = history(
        &hub,
        &format!("/api/devices/5/sensors/0/history?from={from}&to={to}&max_points=1000"),
    )
    .await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(
        (all["tier"].as_str(), all["step_ms"].as_u64()),
        (Some("raw"), Some(1))
    );
    let points = all["points"].as_array().unwrap();
    assert_eq!(points.len(), 300);
    assert_eq!(points[0]["last"], 0.0);
    let last = points.last().unwrap();
    assert_eq!(last["last"], 299.0);
    assert!(points
        .windows(2)
        .all(|w| w[0]["t"].as_u64() <= w[1]["t"].as_u64()));

    // Reduced: at most 10 points, every reading still counted, extremes kept.
    let (_, reduced) = history(
        &hub,
        &format!("/api/devices/5/sensors/1/history?from={from}&to={to}&max_points=10"),
    )
    .await;
    let points = reduced["points"].as_array().unwrap();
    assert!(!points.is_empty() && points.len() <= 10, "{reduced}");
    assert_eq!(counts(&reduced), 300);
    let min = points
        .iter()
        .map(|p| p["min"].as_f64().unwrap())
        .fold(f64::MAX, f64::min);
    let max = points
        .iter()
        .map(|p| p["max"].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!((min, max), (-299.0, 0.0));
    assert!(reduced["step_ms"].as_u64().unwrap() >= (to - from) / 10);

    // The same query over the WebSocket, echoing the id.
    let mut ws = hub.ws().await;
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    let request = json!({"type": "history", "id": "h1", "device": 5, "sensor": 1,
                         "from": from, "to": to, "max_points": 10});
    ws.send(Message::text(request.to_string())).await.unwrap();
    let mut answer = next_json(&mut ws).await;
    answer.as_object_mut().unwrap().remove("id");
    assert_eq!(answer, reduced);
    hub.stop().await;
}

#[tokio::test]
async fn bad_history_requests_get_clear_errors() {
    let dir = TempDir::new("errors");
    let hub = hub_at(&dir.db()).await;
    send(&hub, 5, 3).await;
    let cases = [
        ("/api/devices/6/sensors/0/history", 404, "unknown device 6"),
        (
            "/api/devices/5/sensors/7/history",
            404,
            "no sensor on channel 7",
        ),
        (
            "/api/devices/5/sensors/humidity/history",
            404,
            "known: channel 0, channel 1",
        ),
        (
            "/api/devices/5/sensors/0/history?from=10&to=5",
            400,
            "must be before",
        ),
        (
            "/api/devices/5/sensors/0/history?max_points=0",
            400,
            "between 1 and 10000",
        ),
        (
            "/api/devices/5/sensors/0/history?from=yesterday",
            400,
            "whole number",
        ),
        (
            "/api/devices/5/sensors/0/history?since=1",
            400,
            "unknown query parameter",
        ),
    ];
    for (path, status, text) in cases {
        let (got, body) = history(&hub, path).await;
        assert_eq!(got, status, "{path}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(text), "{path}: {error}");
    }
    let mut ws = hub.ws().await;
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    for (request, code) in [
        (
            json!({"type": "history", "id": 1, "device": 5}),
            "bad_history",
        ),
        (
            json!({"type": "history", "id": 2, "device": 9, "sensor": 0}),
            "bad_history",
        ),
    ] {
        ws.send(Message::text(request.to_string())).await.unwrap();
        let error = next_json(&mut ws).await;
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("error"), Some(code))
        );
        assert_eq!(error["id"], request["id"]);
    }
    hub.stop().await;
}

#[tokio::test]
async fn without_storage_history_is_refused_and_live_data_flows() {
    let hub = start_hub_adopting(&[("SENSOR_HUB__STORAGE__ENABLED", "false")], &[5]).await;
    send(&hub, 5, 3).await;
    let (status, body) = history(&hub, "/api/devices/5/sensors/0/history").await;
    assert_eq!(status, 503);
    assert!(body["error"]
        .as_str()
        .unwrap()
        .contains("storage.enabled = false"));
    let mut ws = hub.ws().await;
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    let request = json!({"type": "history", "device": 5, "sensor": 0});
    ws.send(Message::text(request.to_string())).await.unwrap();
    assert_eq!(next_json(&mut ws).await["code"], "history_unavailable");
    assert_eq!(hub.metric("sensor_hub_history_enabled").await, 0);
    hub.stop().await;
}

#[tokio::test]
async fn a_restarted_hub_remembers_devices_names_and_history() {
    let dir = TempDir::new("restart");
    let from = unix_ms() - 1;
    let hub = hub_at(&dir.db()).await;
    // Device 3 says hello (name "test-device", sensor "temperature" on
    // channel 0) and sends data; device 4 only sends data.
    let session = device::session(hub.control, 3, TOKEN).await;
    send(&hub, 3, 20).await;
    send(&hub, 4, 10).await;
    let binds = hub.binds();
    hub.stop().await; // a clean stop writes everything that waits
    drop(session);

    let hub = start_hub_on(
        binds,
        &[
            ("SENSOR_HUB__STORAGE__PATH", &dir.db().display().to_string()),
            ("SENSOR_HUB__CONTROL__FLEET_TOKEN", TOKEN),
            ("SENSOR_HUB__DEVICES__KEYS_PATH", &device_file(&dir.db())),
        ],
    )
    .await;
    let (_, devices) = history(&hub, "/api/devices").await;
    let devices = devices["devices"].as_array().unwrap();
    let find = |id: u64| {
        devices
            .iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("{devices:?}"))
    };
    assert_eq!(find(3)["name"], "test-device");
    let sensors = |d: &Json| -> Vec<u64> {
        d["sensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["channel"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(sensors(find(3)), vec![0, 1]);
    assert_eq!(find(3)["sensors"][0]["unit"], "°C");
    assert_eq!(
        sensors(find(4)),
        vec![0, 1],
        "channels seen before the restart"
    );

    // By declared name, across the restart.
    let to = unix_ms() + 1;
    let (status, answer) = history(
        &hub,
        &format!("/api/devices/3/sensors/temperature/history?from={from}&to={to}"),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((answer["channel"].as_u64(), counts(&answer)), (Some(0), 20));
    let (_, answer) = history(
        &hub,
        &format!("/api/devices/4/sensors/1/history?from={from}&to={to}"),
    )
    .await;
    assert_eq!(counts(&answer), 10);
    // Device 3 lost its session with the restart: offline until it returns.
    eventually("device 3 offline", || async {
        let (_, d) = history(&hub, "/api/devices").await;
        d["devices"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == 3 && d["status"] == "offline")
    })
    .await;
    hub.stop().await;
}
