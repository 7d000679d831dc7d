//! The control channel over real sockets with a hand-driven device: auth,
//! every kind of bad input, timeouts, duplicate sessions, connection limits,
//! liveness transitions, and commands that fail or time out.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::time::Duration;

use futures_util::SinkExt as _;
use sensor_hub_protocol::control::*;
use sensor_hub_protocol::Value;
use support::device::{self, closed, connect, next, session};
use support::*;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

const TOKEN: &str = "fleet-secret-for-tests";

async fn hub_with(overrides: &[(&str, &str)]) -> TestHub {
    let mut all = vec![("SENSOR_HUB__CONTROL__FLEET_TOKEN", TOKEN)];
    all.extend_from_slice(overrides);
    start_hub(&all).await
}

async fn closed_count(hub: &TestHub, reason: &str) -> u64 {
    hub.metric(&format!(
        "sensor_hub_control_closed_total{{reason=\"{reason}\"}}"
    ))
    .await
}

async fn expect_closed_count(hub: &TestHub, reason: &str, count: u64) {
    eventually(&format!("{reason} counted"), || async {
        closed_count(hub, reason).await == count
    })
    .await;
}

#[tokio::test]
async fn valid_hello_gets_welcome_and_the_device_is_listed_with_its_sensors() {
    let hub = hub_with(&[]).await;
    let mut d = session(hub.control, 17, TOKEN).await;
    d.send(DeviceMessage::Heartbeat {
        device_time_ms: sensor_hub::clock::wall_ms(),
    })
    .await
    .unwrap();
    assert!(matches!(
        next(&mut d).await,
        Some(HubMessage::HeartbeatAck { .. })
    ));
    let (_, body) = hub.get("/api/devices").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let dev = &v["devices"][0];
    assert_eq!(dev["id"], 17);
    assert_eq!(dev["name"], "test-device");
    assert_eq!(dev["firmware"], "test 1.0");
    assert_eq!(dev["connected"], true);
    assert_eq!(dev["status"], "online");
    assert_eq!(dev["interval_ms"], 1000);
    assert_eq!(dev["sensors"][0]["name"], "temperature");
    assert_eq!(dev["sensors"][0]["unit"], "°C");
    assert_eq!(dev["sensors"][0]["kind"], "f32");
    assert_eq!(dev["sensors"][0]["value"], serde_json::Value::Null);
    assert_eq!(hub.metric("sensor_hub_control_sessions").await, 1);
    d.send(DeviceMessage::Bye).await.unwrap();
    assert_eq!(closed(&mut d).await, None);
    expect_closed_count(&hub, "peer_closed", 1).await;
    hub.stop().await;
}

#[tokio::test]
async fn bad_token_is_rejected_counted_and_slows_the_address_down() {
    let hub = hub_with(&[
        ("SENSOR_HUB__CONTROL__TOKENS__5", "own-token-of-device-5"),
        ("SENSOR_HUB__CONTROL__FAILURE_DELAY_MS", "300"),
        ("SENSOR_HUB__CONTROL__MAX_FAILURE_DELAY_MS", "300"),
    ])
    .await;
    let hello_answer = |device: u32, token: &'static str| async move {
        let mut d = connect(hub.control).await;
        d.send(device::hello(device, token, 1_000)).await.unwrap();
        closed(&mut d).await.expect("a reject")
    };
    let (reason, detail) = hello_answer(9, "wrong").await;
    assert_eq!(reason, RejectReason::BadToken);
    assert!(detail.contains("device 9"), "{detail}");
    // Within the wait, the next hellos from this address are not checked:
    // neither a wrong token, nor the fleet token for a keyed device, nor
    // even the right one.
    for (device, token) in [(9, ""), (5, TOKEN), (5, "own-token-of-device-5")] {
        let (reason, detail) = hello_answer(device, token).await;
        assert_eq!(reason, RejectReason::BadToken);
        assert!(detail.contains("retry in"), "{detail}");
    }
    expect_closed_count(&hub, "bad_token", 1).await;
    expect_closed_count(&hub, "throttled", 3).await;
    // After the wait: a keyed device refuses the fleet token, then its own
    // token works (which also forgets the address's failures).
    tokio::time::sleep(Duration::from_millis(350)).await;
    let (reason, detail) = hello_answer(5, TOKEN).await;
    assert_eq!(reason, RejectReason::BadToken);
    assert!(detail.contains("device 5"), "{detail}");
    tokio::time::sleep(Duration::from_millis(350)).await;
    let _ok = session(hub.control, 5, "own-token-of-device-5").await;
    expect_closed_count(&hub, "bad_token", 2).await;
    hub.stop().await;
}

#[tokio::test]
async fn idle_unauthenticated_connections_do_not_keep_a_device_out() {
    let hub = hub_with(&[("SENSOR_HUB__CONTROL__MAX_HANDSHAKING", "8")]).await;
    // Fifty connections that send the preamble and then nothing.
    let mut idle = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(hub.control).await.unwrap();
        s.write_all(&PREAMBLE).await.unwrap();
        idle.push(s);
    }
    eventually("the oldest idle connections were pushed out", || async {
        hub.metric("sensor_hub_control_closed_total{reason=\"handshake_evicted\"}")
            .await
            >= 42
    })
    .await;
    // A real device gets its session at once (`session` expects the
    // welcome; its own connection may push out one more idle one).
    let _device = session(hub.control, 3, TOKEN).await;
    drop(idle);
    hub.stop().await;
}

#[tokio::test]
async fn oversized_frame_closes_before_the_body_is_read() {
    let hub = hub_with(&[("SENSOR_HUB__CONTROL__MAX_FRAME_BYTES", "512")]).await;
    let mut s = TcpStream::connect(hub.control).await.unwrap();
    s.write_all(&PREAMBLE).await.unwrap();
    s.write_all(&[0x02, 0x01]).await.unwrap(); // announces 513 bytes, sends none
    let mut d = tokio_util::codec::Framed::new(
        s,
        sensor_hub_protocol::codec::FrameCodec::<DecodedHubMessage, DeviceMessage>::new(4096),
    );
    assert_eq!(closed(&mut d).await, None);
    expect_closed_count(&hub, "oversized_frame", 1).await;

    // Same after the handshake.
    let mut d = session(hub.control, 3, TOKEN).await;
    d.get_mut().write_all(&[0xFF, 0xFF]).await.unwrap();
    assert_eq!(closed(&mut d).await, None);
    expect_closed_count(&hub, "oversized_frame", 2).await;
    hub.stop().await;
}

#[tokio::test]
async fn garbage_is_refused_by_reason() {
    let hub = hub_with(&[]).await;
    // Not our protocol at all.
    let mut s = TcpStream::connect(hub.control).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut d = tokio_util::codec::Framed::new(
        s,
        sensor_hub_protocol::codec::FrameCodec::<DecodedHubMessage, DeviceMessage>::new(4096),
    );
    assert_eq!(closed(&mut d).await, None);
    expect_closed_count(&hub, "bad_preamble", 1).await;

    // A future control version.
    let mut s = TcpStream::connect(hub.control).await.unwrap();
    s.write_all(&[0xB5, 0x07]).await.unwrap();
    let mut d = tokio_util::codec::Framed::new(
        s,
        sensor_hub_protocol::codec::FrameCodec::<DecodedHubMessage, DeviceMessage>::new(4096),
    );
    let (reason, _) = closed(&mut d).await.expect("a reject");
    assert_eq!(reason, RejectReason::UnsupportedVersion);

    // Right preamble, junk frame instead of a hello.
    let mut d = connect(hub.control).await;
    d.get_mut()
        .write_all(&[0x00, 0x03, 0xEE, 0xEE, 0xEE])
        .await
        .unwrap();
    let (reason, _) = closed(&mut d).await.expect("a reject");
    assert_eq!(reason, RejectReason::BadHello);

    // A valid frame that is not a hello.
    let mut d = connect(hub.control).await;
    d.send(DeviceMessage::Bye).await.unwrap();
    let (reason, _) = closed(&mut d).await.expect("a reject");
    assert_eq!(reason, RejectReason::BadHello);
    expect_closed_count(&hub, "bad_hello", 2).await;

    // Junk after a good handshake.
    let mut d = session(hub.control, 4, TOKEN).await;
    d.get_mut()
        .write_all(&[0x00, 0x02, 0x63, 0x63])
        .await
        .unwrap();
    assert_eq!(closed(&mut d).await, None);
    expect_closed_count(&hub, "undecodable_frame", 1).await;
    expect_closed_count(&hub, "unsupported_version", 1).await;
    hub.stop().await;
}

#[tokio::test]
async fn silent_and_slowloris_handshakes_are_cut_on_time() {
    let hub = hub_with(&[("SENSOR_HUB__CONTROL__HANDSHAKE_TIMEOUT_MS", "300")]).await;
    // Connects and says nothing.
    let mut silent = TcpStream::connect(hub.control).await.unwrap();
    // Trickles a valid hello, one byte every 50 ms: never done in time.
    let mut slow = TcpStream::connect(hub.control).await.unwrap();
    let mut bytes = PREAMBLE.to_vec();
    let mut buf = [0u8; 1024];
    bytes.extend_from_slice(encode_frame(&device::hello(8, TOKEN, 1_000), &mut buf).unwrap());
    let trickle = tokio::spawn(async move {
        for b in bytes {
            if slow.write_all(&[b]).await.is_err() {
                return true; // the hub closed on us
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    });
    expect_closed_count(&hub, "handshake_timeout", 2).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut silent, &mut rest),
    )
    .await
    .unwrap();
    assert!(read.is_ok(), "the silent connection was closed: {read:?}");
    assert!(
        rest.is_empty(),
        "nothing is sent to a client that never said hello"
    );
    assert!(trickle.await.unwrap(), "the slow writer was cut off");
    hub.stop().await;
}

#[tokio::test]
async fn idle_session_is_closed() {
    let hub = hub_with(&[
        ("SENSOR_HUB__CONTROL__HEARTBEAT_INTERVAL_MS", "100"),
        ("SENSOR_HUB__CONTROL__IDLE_TIMEOUT_MS", "300"),
    ])
    .await;
    let mut d = session(hub.control, 6, TOKEN).await;
    assert_eq!(closed(&mut d).await, None);
    expect_closed_count(&hub, "idle_timeout", 1).await;
    hub.stop().await;
}

#[tokio::test]
async fn second_hello_replaces_the_first_session() {
    // Replacement at once (the default waits a second; see device_trust.rs).
    let hub = hub_with(&[("SENSOR_HUB__CONTROL__MIN_REPLACE_INTERVAL_MS", "0")]).await;
    let mut first = session(hub.control, 11, TOKEN).await;
    let _second = session(hub.control, 11, TOKEN).await;
    let (reason, _) = closed(&mut first).await.expect("a reject");
    assert_eq!(reason, RejectReason::Replaced);
    expect_closed_count(&hub, "replaced", 1).await;
    assert_eq!(
        hub.metric("sensor_hub_control_sessions_replaced_total")
            .await,
        1
    );
    assert_eq!(hub.metric("sensor_hub_control_sessions").await, 1);
    hub.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let hub = hub_with(&[("SENSOR_HUB__CONTROL__MAX_CONNECTIONS", "1")]).await;
    let _first = session(hub.control, 1, TOKEN).await;
    let mut second = connect(hub.control).await;
    let (reason, _) = closed(&mut second).await.expect("a reject");
    assert_eq!(reason, RejectReason::TooManyConnections);
    expect_closed_count(&hub, "too_many_connections", 1).await;
    hub.stop().await;
}

#[tokio::test]
async fn silent_device_goes_late_then_offline_then_online_again() {
    let hub = hub_with(&[
        ("SENSOR_HUB__LIVENESS__DEFAULT_INTERVAL_MS", "100"),
        ("SENSOR_HUB__LIVENESS__LATE_AFTER_INTERVALS", "2"),
        ("SENSOR_HUB__LIVENESS__OFFLINE_AFTER_INTERVALS", "4"),
        ("SENSOR_HUB__LIVENESS__TICK_MS", "20"),
    ])
    .await;
    let mut ws = subscribed_client(&hub).await;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let send = |seq| datagram(21, seq, &[(0, Value::F32(1.0))]);
    udp.send_to(&send(0), hub.udp).await.unwrap();

    let mut transitions = Vec::new();
    while transitions.len() < 3 {
        let msg = next_json(&mut ws).await;
        if msg["type"] != "device_status" {
            continue;
        }
        assert_eq!(msg["device"], 21);
        transitions.push((msg["previous"].clone(), msg["status"].clone()));
        if transitions.len() == 3 {
            // Offline now: it resumes.
            udp.send_to(&send(1), hub.udp).await.unwrap();
        }
    }
    loop {
        let msg = next_json(&mut ws).await;
        if msg["type"] == "device_status" {
            transitions.push((msg["previous"].clone(), msg["status"].clone()));
            break;
        }
    }
    use serde_json::json;
    assert_eq!(
        transitions,
        [
            (json!(null), json!("online")),
            (json!("online"), json!("late")),
            (json!("late"), json!("offline")),
            (json!("offline"), json!("online")),
        ]
    );
    hub.stop().await;
}

async fn post_command(
    hub: &TestHub,
    device: u32,
    query: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    let (answer, _) = http_request(
        hub.http,
        "POST",
        &format!("/api/devices/{device}/commands{query}"),
        &[("Content-Type", "application/json")],
        Some(body.as_bytes()),
    )
    .await;
    (
        answer.status,
        serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn command_to_an_offline_device_times_out_and_unknown_devices_are_404() {
    let hub = hub_with(&[("SENSOR_HUB__COMMANDS__TTL_MS", "300")]).await;
    // Known from data, no control session.
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.send_to(&datagram(30, 0, &[]), hub.udp).await.unwrap();
    eventually("device known", || async {
        hub.metric("sensor_hub_devices").await == 1
    })
    .await;

    let (status, v) = post_command(&hub, 30, "", r#"{"kind":"identify"}"#).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "timed_out");
    assert_eq!(v["kind"], "identify");

    let (status, v) = post_command(&hub, 30, "?wait=false", r#"{"kind":"identify"}"#).await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(v["state"], "rejected");

    let (status, v) = post_command(&hub, 999, "", r#"{"kind":"reboot"}"#).await;
    assert_eq!(status, 404, "{v}");
    assert_eq!(v["error"], "unknown device 999");

    let (status, v) = post_command(&hub, 30, "", r#"{"kind":"set_interval"}"#).await;
    assert_eq!(status, 400);
    assert!(v["error"].as_str().unwrap().contains("needs `ms`"));
    let (status, _) = post_command(&hub, 30, "", "not json").await;
    assert_eq!(status, 400);
    assert_eq!(
        hub.metric("sensor_hub_commands_finished_total{state=\"timed_out\"}")
            .await,
        1
    );
    hub.stop().await;
}

#[tokio::test]
async fn command_lifecycle_over_a_hand_driven_device() {
    let hub = hub_with(&[]).await;
    let mut d = session(hub.control, 40, TOKEN).await;
    let mut ws = hub.ws().await;
    next_json(&mut ws).await;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        r#"{"type":"command","id":"c7","device":40,"command":{"kind":"open_valve","percent":40}}"#,
    ))
    .await
    .unwrap();
    let (id, body) = match next(&mut d).await {
        Some(HubMessage::Command { id, body }) => (id, body),
        other => panic!("expected a command, got {other:?}"),
    };
    assert_eq!(
        body,
        CommandBody::Custom {
            name: Name::try_from("open_valve").unwrap(),
            args: Text::try_from(r#"{"percent":40}"#).unwrap()
        }
    );
    d.send(DeviceMessage::CommandAck { id }).await.unwrap();
    d.send(DeviceMessage::CommandResult {
        id,
        outcome: Outcome::Failed,
        detail: Some(Text::try_from("unsupported command `open_valve`").unwrap()),
    })
    .await
    .unwrap();
    let mut states = Vec::new();
    while states.last().map(String::as_str) != Some("failed") {
        let msg = next_json(&mut ws).await;
        if msg["type"] == "command_status" {
            assert_eq!(msg["id"], "c7");
            assert_eq!(msg["device"], 40);
            assert_eq!(msg["kind"], "open_valve");
            states.push(msg["state"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(states, ["queued", "sent", "acked", "failed"]);
    hub.stop().await;
}
