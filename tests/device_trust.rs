//! Device trust against a real hub, as an attacker on the same network
//! would try it: spoofed, forged, replayed (within a session and across a
//! reboot) and sequence-poisoning datagrams, phantom-id floods, wrong
//! keys, fleet-token takeovers and session flapping. Each attack is
//! refused, counted by reason, and leaves the real device's statistics,
//! address, history and session untouched.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use sensor_hub_protocol::auth::{keyed_hello, verify_keyed_welcome, DatagramKey, DeviceKey, Nonce};
use sensor_hub_protocol::codec::{FrameCodec, WithBody};
use sensor_hub_protocol::control::*;
use sensor_hub_protocol::{Datagram, Reading, Value, MAX_DATAGRAM_LEN};
use serde_json::Value as Json;
use support::*;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpStream, UdpSocket};
use tokio_util::codec::Framed;

const FLEET_TOKEN: &str = "device-trust-fleet-token";
const KEYED: u32 = 17;
const KEY: DeviceKey = [0x17; 32];

type Conn = Framed<TcpStream, FrameCodec<WithBody<DecodedHubMessage>, DeviceMessage>>;

/// A hub whose device file gives device 17 a key, with a fleet token for
/// other devices and a history that flushes every 100 ms.
async fn hub_with(overrides: &[(&str, &str)]) -> (TestHub, TempDir) {
    let dir = TempDir::new("trust");
    let devices = dir.path().join("devices.json");
    adopt(&devices, &[], &[(KEYED, KEY)]);
    let devices = devices.display().to_string();
    let mut all = vec![
        ("SENSOR_HUB__CONTROL__FLEET_TOKEN", FLEET_TOKEN),
        ("SENSOR_HUB__DEVICES__KEYS_PATH", devices.as_str()),
        ("SENSOR_HUB__STORAGE__FLUSH_INTERVAL_MS", "100"),
    ];
    all.extend_from_slice(overrides);
    (start_hub(&all).await, dir)
}

fn hello(device_id: u32, token: &str) -> Hello {
    match device::hello(device_id, token, 1_000) {
        DeviceMessage::Hello(hello) => hello,
        _ => unreachable!("device::hello makes a hello"),
    }
}

async fn connect(addr: SocketAddr) -> Conn {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&PREAMBLE).await.unwrap();
    Framed::new(stream, FrameCodec::new(MAX_FRAME_BODY))
}

async fn answer(conn: &mut Conn) -> Option<WithBody<DecodedHubMessage>> {
    match tokio::time::timeout(Duration::from_secs(5), conn.next())
        .await
        .expect("an answer within 5 s")
    {
        Some(Ok(frame)) => Some(frame),
        _ => None,
    }
}

/// How a keyed hello went.
#[allow(clippy::large_enum_variant)] // test data, one at a time
enum Keyed {
    /// Welcomed (the hub's proof checked): the connection and the
    /// session's datagram key.
    Welcome(Conn, DatagramKey),
    /// Refused: why, and the detail.
    Reject(RejectReason, String),
}

/// Challenge request, challenge, keyed hello with `key` for `device_id`.
async fn keyed_session(addr: SocketAddr, device_id: u32, key: &DeviceKey) -> Keyed {
    let mut conn = connect(addr).await;
    conn.send(DeviceMessage::ChallengeRequest).await.unwrap();
    let hub_nonce = match answer(&mut conn).await.map(|f| f.message) {
        Some(DecodedHubMessage::Known(HubMessage::Challenge { nonce })) => nonce,
        other => panic!("expected a challenge, got {other:?}"),
    };
    let device_nonce: Nonce = fastrand::u128(..).to_le_bytes();
    let mut scratch = vec![0u8; MAX_FRAME_BODY + 2];
    let message = keyed_hello(
        &hello(device_id, ""),
        device_nonce,
        key,
        &hub_nonce,
        &mut scratch,
    )
    .unwrap();
    conn.send(message).await.unwrap();
    let frame = answer(&mut conn)
        .await
        .expect("an answer to the keyed hello");
    match frame.message {
        DecodedHubMessage::Known(HubMessage::KeyedWelcome { .. }) => {
            assert!(
                verify_keyed_welcome(&frame.body, key, &device_nonce, &hub_nonce),
                "the hub proves it holds the key"
            );
            Keyed::Welcome(conn, DatagramKey::derive(key, &hub_nonce, &device_nonce))
        }
        DecodedHubMessage::Known(HubMessage::Reject { reason, detail }) => {
            Keyed::Reject(reason, detail.to_string())
        }
        other => panic!("expected a keyed welcome or a reject, got {other:?}"),
    }
}

/// The reason of the reject that ends `conn` (other frames are skipped).
async fn rejected(conn: &mut Conn) -> RejectReason {
    loop {
        match answer(conn).await.map(|f| f.message) {
            Some(DecodedHubMessage::Known(HubMessage::Reject { reason, .. })) => return reason,
            Some(_) => continue,
            None => panic!("closed without a reject"),
        }
    }
}

async fn welcomed(addr: SocketAddr, device_id: u32, key: &DeviceKey) -> (Conn, DatagramKey) {
    match keyed_session(addr, device_id, key).await {
        Keyed::Welcome(conn, session) => (conn, session),
        Keyed::Reject(reason, detail) => panic!("refused: {reason:?} {detail}"),
    }
}

fn sealed(key: &DatagramKey, device_id: u32, seq: u32, value: f32) -> Vec<u8> {
    let d = Datagram {
        device_id,
        seq,
        time_ms: sensor_hub::clock::wall_ms() as u32,
        readings: [Reading {
            channel: 0,
            value: Value::F32(value),
        }]
        .into_iter()
        .collect(),
        auth_tag: None,
    };
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    key.seal(&d, &mut buf).unwrap().to_vec()
}

async fn dropped(hub: &TestHub, reason: &str) -> u64 {
    hub.metric(&format!(
        "sensor_hub_udp_datagrams_dropped_total{{reason=\"{reason}\"}}"
    ))
    .await
}

async fn received(hub: &TestHub) -> u64 {
    hub.metric("sensor_hub_udp_datagrams_received_total").await
}

/// Sends `datagrams` from `socket` and waits until the hub has read them.
async fn send_all(hub: &TestHub, socket: &UdpSocket, datagrams: &[Vec<u8>]) {
    let before = received(hub).await;
    for (i, bytes) in datagrams.iter().enumerate() {
        socket.send_to(bytes, hub.udp).await.unwrap();
        if i % 64 == 63 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let want = before + datagrams.len() as u64;
    eventually("the hub read every datagram", || async {
        received(hub).await == want
    })
    .await;
}

async fn device_json(hub: &TestHub, id: u32) -> Option<Json> {
    let (_, body) = hub.get("/api/devices").await;
    let v: Json = serde_json::from_str(&body).unwrap();
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .cloned()
}

async fn device_ids(hub: &TestHub) -> Vec<u64> {
    let (_, body) = hub.get("/api/devices").await;
    let v: Json = serde_json::from_str(&body).unwrap();
    v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_u64().unwrap())
        .collect()
}

/// Values of sensor 0 of `device` in the history.
async fn history(hub: &TestHub, device: u32) -> Vec<f64> {
    let from = sensor_hub::clock::wall_ms() - 600_000;
    let path = format!("/api/devices/{device}/sensors/0/history?from={from}&max_points=1000");
    let (status, body) = hub.get(&path).await;
    assert_eq!(status, 200, "{body}");
    let v: Json = serde_json::from_str(&body).unwrap();
    v["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["value"].as_f64().or_else(|| p["mean"].as_f64()).unwrap())
        .collect()
}

#[tokio::test]
async fn spoofed_forged_replayed_and_poisoning_datagrams_change_nothing() {
    let (hub, _dir) = hub_with(&[]).await;
    let (_conn, key) = welcomed(hub.control, KEYED, &KEY).await;
    let device = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let real: Vec<Vec<u8>> = (0..10).map(|s| sealed(&key, KEYED, s, 20.0)).collect();
    send_all(&hub, &device, &real).await;
    let before = device_json(&hub, KEYED).await.unwrap();
    assert_eq!(before["keyed"], true);
    assert_eq!(before["adopted"], true);
    assert_eq!(before["datagrams"], 10);
    let real_addr = device.local_addr().unwrap().to_string();
    assert_eq!(before["addr"], real_addr.as_str());

    // From another address and port: the device's id with its next
    // sequence number, without a tag; with a tag of a wrong key and a
    // sequence number a million ahead; the real tag on altered bytes.
    let spoofer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut altered = sealed(&key, KEYED, 10, 20.0);
    let at = altered.len() - 18; // the value's last byte
    altered[at] ^= 0x40;
    let attacks = vec![
        datagram(KEYED, 10, &[(0, Value::F32(99.0))]),
        sealed(&DatagramKey::new(&[9; 32]), KEYED, 1_000_010, 99.0),
        altered,
        // Replays of datagrams the device sent.
        real[9].clone(),
        real[3].clone(),
    ];
    send_all(&hub, &spoofer, &attacks).await;
    assert_eq!(dropped(&hub, "unauthenticated").await, 1);
    assert_eq!(dropped(&hub, "bad_tag").await, 2);
    assert_eq!(dropped(&hub, "replayed").await, 2);
    let after = device_json(&hub, KEYED).await.unwrap();
    assert_eq!(after["addr"], real_addr.as_str(), "address unchanged");
    assert_eq!(after["datagrams"], 10);
    assert_eq!(after["last_seq"], 9);
    assert_eq!(after["stats"]["lost"], 0);

    // The device's next datagram is its next one: no loss, no reorder.
    send_all(&hub, &device, &[sealed(&key, KEYED, 10, 21.0)]).await;
    let next = device_json(&hub, KEYED).await.unwrap();
    assert_eq!(next["datagrams"], 11);
    assert_eq!(next["stats"]["lost"], 0);
    assert_eq!(next["stats"]["reordered"], 0);
    assert_eq!(next["stats"]["loss_ratio"], 0.0);
    eventually("the history holds only real values", || async {
        let values = history(&hub, KEYED).await;
        values.len() == 11 && values.iter().all(|&v| v == 20.0 || v == 21.0)
    })
    .await;
    hub.stop().await;
}

#[tokio::test]
async fn after_a_reboot_old_datagrams_fail_and_new_ones_count_from_zero() {
    let (hub, _dir) = hub_with(&[("SENSOR_HUB__CONTROL__MIN_REPLACE_INTERVAL_MS", "0")]).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (first_conn, first) = welcomed(hub.control, KEYED, &KEY).await;
    let before_reboot: Vec<Vec<u8>> = (0..5).map(|s| sealed(&first, KEYED, s, 1.0)).collect();
    send_all(&hub, &socket, &before_reboot).await;
    // Reboot: the connection goes, a new keyed hello makes a new key, and
    // the sequence restarts at 0.
    drop(first_conn);
    let (_conn, second) = welcomed(hub.control, KEYED, &KEY).await;
    let after_reboot: Vec<Vec<u8>> = (0..3).map(|s| sealed(&second, KEYED, s, 2.0)).collect();
    send_all(&hub, &socket, &after_reboot).await;
    // An attacker replays what it recorded before the reboot.
    send_all(&hub, &socket, &before_reboot).await;
    assert_eq!(dropped(&hub, "bad_tag").await, 5);
    assert_eq!(dropped(&hub, "replayed").await, 0);
    let d = device_json(&hub, KEYED).await.unwrap();
    assert_eq!(d["datagrams"], 8);
    assert_eq!(d["last_seq"], 2);
    assert_eq!(d["stats"]["restarts"], 1);
    assert_eq!(d["stats"]["lost"], 0);
    hub.stop().await;
}

#[tokio::test]
async fn a_keyed_device_without_a_session_and_untagged_datagrams_are_refused() {
    let (hub, _dir) = hub_with(&[]).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Before any keyed hello (after a hub restart, say).
    send_all(
        &hub,
        &socket,
        &[sealed(&DatagramKey::new(&KEY), KEYED, 0, 1.0)],
    )
    .await;
    assert_eq!(dropped(&hub, "no_session").await, 1);
    assert!(device_json(&hub, KEYED).await.is_none(), "nothing created");
    let (_conn, _key) = welcomed(hub.control, KEYED, &KEY).await;
    send_all(
        &hub,
        &socket,
        &[datagram(KEYED, 0, &[(0, Value::F32(1.0))])],
    )
    .await;
    assert_eq!(dropped(&hub, "unauthenticated").await, 1);
    hub.stop().await;
}

#[tokio::test]
async fn wrong_keys_and_fleet_tokens_never_get_a_keyed_device_s_session() {
    let (hub, _dir) = hub_with(&[]).await;
    let (mut real, _) = welcomed(hub.control, KEYED, &KEY).await;

    // A wrong key: refused, counted, slowed down.
    match keyed_session(hub.control, KEYED, &[1; 32]).await {
        Keyed::Reject(reason, detail) => {
            assert_eq!(reason, RejectReason::BadToken);
            assert!(detail.contains("not valid"), "{detail}");
            assert!(!detail.contains("0101"), "no key material in the detail");
        }
        Keyed::Welcome(..) => panic!("a wrong key got a session"),
    }
    // The next hello from this address, even with the right key, waits.
    match keyed_session(hub.control, KEYED, &KEY).await {
        Keyed::Reject(reason, detail) => {
            assert_eq!(reason, RejectReason::BadToken);
            assert!(detail.contains("retry in"), "{detail}");
        }
        Keyed::Welcome(..) => panic!("a hello right after a failure was checked"),
    }
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    // The fleet token for the keyed device: refused.
    let mut fleet = device::connect(hub.control).await;
    fleet
        .send(device::hello(KEYED, FLEET_TOKEN, 1_000))
        .await
        .unwrap();
    let (reason, detail) = device::closed(&mut fleet).await.expect("a reject");
    assert_eq!(reason, RejectReason::BadToken);
    assert!(detail.contains("has a key"), "{detail}");
    tokio::time::sleep(Duration::from_millis(2_100)).await;

    // A keyed hello for a device without a key: refused.
    match keyed_session(hub.control, 18, &KEY).await {
        Keyed::Reject(reason, detail) => {
            assert_eq!(reason, RejectReason::BadToken);
            assert!(detail.contains("no key"), "{detail}");
        }
        Keyed::Welcome(..) => panic!("a keyed hello without a key on the hub"),
    }
    assert_eq!(
        hub.metric("sensor_hub_control_closed_total{reason=\"bad_token\"}")
            .await,
        3
    );
    // The real device's session was never touched.
    real.send(DeviceMessage::Heartbeat {
        device_time_ms: sensor_hub::clock::wall_ms(),
    })
    .await
    .unwrap();
    match answer(&mut real).await.map(|f| f.message) {
        Some(DecodedHubMessage::Known(HubMessage::HeartbeatAck { .. })) => {}
        other => panic!("the real session is gone: {other:?}"),
    }
    assert_eq!(
        hub.metric("sensor_hub_control_sessions_replaced_total")
            .await,
        0
    );
    hub.stop().await;
}

#[tokio::test]
async fn two_holders_of_one_key_cannot_flap_the_session() {
    let (hub, _dir) = hub_with(&[]).await;
    let (mut first, _) = welcomed(hub.control, KEYED, &KEY).await;
    let started = std::time::Instant::now();
    // The other holder says hello again and again, every 10 ms.
    let mut refused = 0;
    let _second = loop {
        match keyed_session(hub.control, KEYED, &KEY).await {
            Keyed::Reject(RejectReason::TooSoon, detail) => {
                assert!(detail.contains("retry in"), "{detail}");
                refused += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Keyed::Reject(reason, detail) => panic!("{reason:?}: {detail}"),
            Keyed::Welcome(conn, _) => break conn,
        }
    };
    assert!(refused > 0, "a second holder was refused at first");
    assert!(
        started.elapsed() >= Duration::from_millis(1_000),
        "not replaced within control.min_replace_interval_ms"
    );
    // At most one replacement in that second: the first session saw it.
    assert_eq!(
        hub.metric("sensor_hub_control_sessions_replaced_total")
            .await,
        1
    );
    assert_eq!(
        hub.metric("sensor_hub_control_hellos_too_soon_total").await,
        refused
    );
    let replaced = rejected(&mut first).await;
    assert_eq!(replaced, RejectReason::Replaced);
    hub.stop().await;
}

#[tokio::test]
async fn phantom_floods_never_lock_out_adopted_devices_nor_survive_a_restart() {
    let dir = TempDir::new("phantoms");
    let (hub, devices_dir) = hub_with(&[
        ("SENSOR_HUB__LIMITS__MAX_DEVICES", "3"),
        ("SENSOR_HUB__DEVICES__MAX_DISCOVERED", "16"),
        ("SENSOR_HUB__STORAGE__PATH", &dir.db().display().to_string()),
    ])
    .await;
    let flood = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // 2,000 tiny datagrams from 1,000 made-up ids (ids 1,000,000 and up).
    let phantoms: Vec<Vec<u8>> = (0..2_000u32)
        .map(|i| datagram(1_000_000 + i % 1_000, i / 1_000, &[]))
        .collect();
    send_all(&hub, &flood, &phantoms).await;
    // 16 ids got a discovered slot (both their datagrams accepted); the
    // other 984 ids' 1,968 datagrams were dropped.
    assert_eq!(dropped(&hub, "discovered_limit").await, 1_968);
    assert_eq!(hub.metric("sensor_hub_devices_discovered").await, 16);

    // Adopted devices still get in, on both planes.
    let (_conn, key) = welcomed(hub.control, KEYED, &KEY).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    send_all(&hub, &socket, &[sealed(&key, KEYED, 0, 5.0)]).await;
    let _fleet = device::session(hub.control, 21, FLEET_TOKEN).await;
    assert_eq!(dropped(&hub, "device_limit").await, 0);
    let d = device_json(&hub, KEYED).await.unwrap();
    assert_eq!(d["datagrams"], 1);
    assert!(device_json(&hub, 21).await.unwrap()["adopted"] == true);
    let phantom = device_json(&hub, 1_000_000).await.unwrap();
    assert_eq!(phantom["adopted"], false);
    // A discovered device's readings are never stored.
    let (status, body) = hub
        .get("/api/devices/1000000/sensors/0/history?from=0")
        .await;
    assert!(
        status == 404 || body.contains("\"points\":[]"),
        "{status} {body}"
    );

    // After a restart, only adopted devices come back.
    let binds = hub.binds();
    hub.stop().await;
    let devices = devices_dir
        .path()
        .join("devices.json")
        .display()
        .to_string();
    let hub = start_hub_on(
        binds,
        &[
            ("SENSOR_HUB__CONTROL__FLEET_TOKEN", FLEET_TOKEN),
            ("SENSOR_HUB__DEVICES__KEYS_PATH", &devices),
            ("SENSOR_HUB__STORAGE__PATH", &dir.db().display().to_string()),
        ],
    )
    .await;
    let mut ids = device_ids(&hub).await;
    ids.sort_unstable();
    assert_eq!(ids, [u64::from(KEYED), 21], "no phantom after a restart");
    hub.stop().await;
}

#[tokio::test]
async fn unknown_devices_can_be_refused_outright_and_budgets_hold() {
    let (hub, _dir) = hub_with(&[
        ("SENSOR_HUB__DEVICES__ACCEPT_UNKNOWN", "false"),
        ("SENSOR_HUB__DEVICES__MAX_READINGS_PER_S", "32"),
    ])
    .await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    send_all(&hub, &socket, &[datagram(5, 0, &[])]).await;
    assert_eq!(dropped(&hub, "unknown_device").await, 1);
    assert!(device_ids(&hub).await.is_empty());

    // Device 17, keyed, at 3 readings a datagram: two seconds' budget (64
    // readings) is 21 datagrams at once; the rest of a burst is dropped.
    let (_conn, key) = welcomed(hub.control, KEYED, &KEY).await;
    let burst: Vec<Vec<u8>> = (0..40)
        .map(|s| {
            let d = Datagram {
                device_id: KEYED,
                seq: s,
                time_ms: sensor_hub::clock::wall_ms() as u32,
                readings: (0..3)
                    .map(|c| Reading {
                        channel: c,
                        value: Value::I32(1),
                    })
                    .collect(),
                auth_tag: None,
            };
            let mut buf = [0u8; MAX_DATAGRAM_LEN];
            key.seal(&d, &mut buf).unwrap().to_vec()
        })
        .collect();
    for bytes in &burst {
        socket.send_to(bytes, hub.udp).await.unwrap();
    }
    eventually("the burst read", || async { received(&hub).await == 41 }).await;
    let over = dropped(&hub, "over_budget").await;
    let accepted = device_json(&hub, KEYED).await.unwrap()["datagrams"]
        .as_u64()
        .unwrap();
    assert_eq!(accepted + over, 40);
    // Refills at 32 readings a second: at least 19 dropped whatever the
    // pace of this machine (a burst read within 2 s refills at most 64).
    assert!((19..=19 + 21).contains(&over), "over_budget {over}");
    hub.stop().await;
}

#[tokio::test]
async fn the_owner_adopts_and_forgets_devices_over_http() {
    let (hub, _dir) = hub_with(&[]).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    send_all(&hub, &socket, &[datagram(40, 0, &[(0, Value::F32(1.0))])]).await;
    assert_eq!(device_json(&hub, 40).await.unwrap()["adopted"], false);
    let cookie = owner_cookie(&hub).await;
    let origin = format!("http://{}", hub.http);
    let owner = [
        ("Authorization", ""),
        ("Cookie", cookie.as_str()),
        ("Origin", origin.as_str()),
        ("Content-Type", "application/json"),
    ];
    let (response, _) = http_request(
        hub.http,
        "POST",
        "/api/devices/40/adopt",
        &owner,
        Some(br#"{"key": false}"#),
    )
    .await;
    assert_eq!(response.status, 201, "{}", response.text());
    let d = device_json(&hub, 40).await.unwrap();
    assert_eq!(d["adopted"], true);
    assert_eq!(d["keyed"], false);
    // An operator may not forget it.
    let (response, _) = http_request(hub.http, "DELETE", "/api/devices/40", &[], None).await;
    assert_eq!(response.status, 403);
    let mut ws = subscribed_client(&hub).await;
    let (response, _) = http_request(hub.http, "DELETE", "/api/devices/40", &owner, None).await;
    assert_eq!(response.status, 204, "{}", response.text());
    loop {
        let msg = next_json(&mut ws).await;
        if msg["type"] == "device_removed" {
            assert_eq!(msg["device"], 40);
            break;
        }
    }
    assert!(device_json(&hub, 40).await.is_none());
    hub.stop().await;
}

#[tokio::test]
async fn a_new_key_in_the_device_file_ends_the_old_key_s_session() {
    let (hub, dir) = hub_with(&[]).await;
    let (mut old, old_key) = welcomed(hub.control, KEYED, &KEY).await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    send_all(&hub, &socket, &[sealed(&old_key, KEYED, 0, 1.0)]).await;
    // The owner gives the device a new key (e.g. after the old one leaked).
    const NEW_KEY: DeviceKey = [0x71; 32];
    adopt(&dir.path().join("devices.json"), &[], &[(KEYED, NEW_KEY)]);
    let reason = rejected(&mut old).await;
    assert_eq!(reason, RejectReason::BadToken);
    eventually("the close counted as revoked", || async {
        hub.metric("sensor_hub_control_closed_total{reason=\"revoked\"}")
            .await
            == 1
    })
    .await;
    send_all(&hub, &socket, &[sealed(&old_key, KEYED, 1, 1.0)]).await;
    assert_eq!(dropped(&hub, "no_session").await, 1);
    let (_conn, new_session) = welcomed(hub.control, KEYED, &NEW_KEY).await;
    send_all(&hub, &socket, &[sealed(&new_session, KEYED, 0, 2.0)]).await;
    assert_eq!(device_json(&hub, KEYED).await.unwrap()["datagrams"], 2);
    hub.stop().await;
}
