//! End to end over real sockets: datagrams from a UDP socket arrive as JSON
//! on a WebSocket client; bad input is counted by reason; client messages
//! get answers or errors; limits and shutdown behave.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::time::Duration;

use futures_util::SinkExt as _;
use sensor_hub_protocol::{Value, MAGIC, MAX_DATAGRAM_LEN, VERSION};
use support::*;
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

async fn sender() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// Reads `readings` messages until `count` datagrams were seen.
async fn collect_datagrams(ws: &mut Client, count: usize) -> Vec<serde_json::Value> {
    let mut seen = Vec::new();
    while seen.len() < count {
        let msg = next_json(ws).await;
        if msg["type"] == "device_status" || msg["type"] == "device_stats" {
            continue; // a new device appears; statistics
        }
        assert_eq!(msg["type"], "readings", "{msg}");
        assert!(msg["hub_time_ms"].as_u64().is_some());
        seen.extend(msg["datagrams"].as_array().unwrap().iter().cloned());
    }
    seen
}

#[tokio::test]
async fn datagrams_arrive_as_json_readings_on_the_websocket() {
    let hub = start_hub(&[]).await;
    let mut ws = hub.ws().await;
    let hello = next_json(&mut ws).await;
    assert_eq!(hello["type"], "hello");
    assert_eq!(hello["protocol"], 1);
    assert!(hello["server_time_ms"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(hello["epoch"].as_str().is_some());
    let snapshot = subscribe(&mut ws, serde_json::json!({})).await;
    assert_eq!(snapshot["devices"], serde_json::json!([]));

    let udp = sender().await;
    let values = [
        (0, Value::F32(21.5)),
        (1, Value::I32(-3)),
        (2, Value::Bool(true)),
    ];
    udp.send_to(&datagram(7, 0, &values), hub.udp)
        .await
        .unwrap();
    udp.send_to(&datagram(7, 1, &values[..1]), hub.udp)
        .await
        .unwrap();

    let got = collect_datagrams(&mut ws, 2).await;
    assert_eq!(got[0]["device"], 7);
    assert_eq!(got[0]["seq"], 0);
    assert_eq!(
        got[0]["readings"],
        serde_json::json!([
            {"channel": 0, "value": 21.5},
            {"channel": 1, "value": -3},
            {"channel": 2, "value": true},
        ])
    );
    assert_eq!(got[1]["seq"], 1);
    let time = got[0]["time_ms"].as_u64().unwrap();
    let received = got[0]["received_ms"].as_u64().unwrap();
    assert!(received.abs_diff(time) < 5_000, "{time} vs {received}");

    let (status, body) = hub.get("/api/devices").await;
    assert_eq!(status, 200);
    let devices: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(devices["devices"][0]["id"], 7);
    assert_eq!(devices["devices"][0]["datagrams"], 2);
    assert_eq!(devices["devices"][0]["sensors"][1]["value"], -3);
    assert_eq!(hub.metric("sensor_hub_ws_clients").await, 1);
    hub.stop().await;
}

#[tokio::test]
async fn every_client_gets_the_same_frames() {
    let hub = start_hub(&[]).await;
    let mut a = subscribed_client(&hub).await;
    let mut b = subscribed_client(&hub).await;
    let udp = sender().await;
    for seq in 0..20 {
        udp.send_to(&datagram(3, seq, &[(0, Value::F32(seq as f32))]), hub.udp)
            .await
            .unwrap();
    }
    let from_a = collect_datagrams(&mut a, 20).await;
    let from_b = collect_datagrams(&mut b, 20).await;
    assert_eq!(from_a, from_b);
    let seqs: Vec<u64> = from_a.iter().map(|d| d["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..20).collect::<Vec<_>>());
    hub.stop().await;
}

#[tokio::test]
async fn coalesced_fan_out_delivers_everything_in_order_to_every_client() {
    // Six clients: above ws.coalesce_from_clients (4), so each takes new
    // events at most once per 20 ms and what arrives meanwhile leaves as
    // one message.
    let hub = start_hub(&[("SENSOR_HUB__WS__COALESCE_MS", "20")]).await;
    let mut clients = Vec::new();
    for _ in 0..6 {
        clients.push(subscribed_client(&hub).await);
    }
    let udp = sender().await;
    // 200 datagrams of two devices, each read on its own (a pause after
    // each), so each is its own stream event.
    for seq in 0..100 {
        for device in [3, 4] {
            udp.send_to(
                &datagram(device, seq, &[(0, Value::I32(seq as i32))]),
                hub.udp,
            )
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    let mut first: Option<Vec<serde_json::Value>> = None;
    for ws in &mut clients {
        let got = collect_datagrams(ws, 200).await;
        for device in [3, 4] {
            let seqs: Vec<u64> = got
                .iter()
                .filter(|d| d["device"] == device)
                .map(|d| d["seq"].as_u64().unwrap())
                .collect();
            assert_eq!(seqs, (0..100).collect::<Vec<_>>(), "device {device}");
        }
        match &first {
            None => first = Some(got),
            Some(first) => assert_eq!(&got, first, "every client the same"),
        }
    }
    // Fewer messages than events (merged), counted on /metrics.
    let events = hub.metric("sensor_hub_stream_seq").await;
    let messages = hub.metric("sensor_hub_ws_messages_sent_total").await;
    assert!(
        messages < 6 * events,
        "{messages} messages for {events} events to 6 clients"
    );
    hub.stop().await;
}

#[tokio::test]
async fn every_malformed_datagram_is_counted_by_reason() {
    // Devices 1 and 2 adopted, room for one: device 2 is over the limit.
    let hub = start_hub_adopting(&[("SENSOR_HUB__LIMITS__MAX_DEVICES", "1")], &[1, 2]).await;
    let udp = sender().await;
    let good = datagram(1, 0, &[(0, Value::F32(1.0))]);
    let mut oversized = vec![0u8; MAX_DATAGRAM_LEN + 100];
    oversized[..2].copy_from_slice(&[MAGIC, VERSION]);
    let mut bad_version = good.clone();
    bad_version[1] = 9;
    let mut trailing = good.clone();
    trailing.extend_from_slice(b"xx");
    let oversized_len = oversized.len() as u64;
    let inputs: Vec<Vec<u8>> = vec![
        oversized,
        good[..good.len() - 3].to_vec(),
        vec![MAGIC],
        vec![0x00], // fewer than 2 bytes: truncated, whatever the byte
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        bad_version,
        trailing,
        good.clone(),
        datagram(2, 0, &[]), // a second device beyond limits.max_devices = 1
    ];
    for bytes in &inputs {
        udp.send_to(bytes, hub.udp).await.unwrap();
    }
    eventually("all datagrams read", || async {
        hub.metric("sensor_hub_udp_datagrams_received_total").await == inputs.len() as u64
    })
    .await;
    for (reason, expected) in [
        ("oversized", 1),
        ("truncated", 3),
        ("bad_magic", 1),
        ("bad_version", 1),
        ("undecodable", 1),
        ("device_limit", 1),
    ] {
        let series = format!("sensor_hub_udp_datagrams_dropped_total{{reason=\"{reason}\"}}");
        assert_eq!(hub.metric(&series).await, expected, "{reason}");
    }
    assert_eq!(
        hub.metric("sensor_hub_udp_datagrams_accepted_total").await,
        1
    );
    assert_eq!(hub.metric("sensor_hub_devices").await, 1);
    assert_eq!(hub.metric("sensor_hub_udp_kernel_drops_total").await, 0);
    // Regression: an oversized datagram counted as the 513 bytes read of it.
    let wire: u64 = inputs.iter().map(|b| b.len() as u64).sum();
    assert!(oversized_len > MAX_DATAGRAM_LEN as u64 + 1);
    assert_eq!(
        hub.metric("sensor_hub_udp_bytes_received_total").await,
        wire
    );
    hub.stop().await;
}

#[tokio::test]
async fn client_messages_get_answers_and_errors_without_closing() {
    let hub = start_hub(&[]).await;
    let mut ws = hub.ws().await;
    next_json(&mut ws).await; // hello

    ws.send(Message::text(r#"{"type":"ping","id":"p1"}"#))
        .await
        .unwrap();
    assert_eq!(
        next_json(&mut ws).await,
        serde_json::json!({"type": "pong", "id": "p1"})
    );
    for (input, code) in [
        ("{not json", "bad_json"),
        ("[]", "missing_type"),
        (r#"{"type":"subscribe","mode":"fast"}"#, "bad_subscription"),
        (r#"{"type":"fly","id":4}"#, "unknown_type"),
    ] {
        ws.send(Message::text(input)).await.unwrap();
        let reply = next_json(&mut ws).await;
        assert_eq!(reply["type"], "error", "{input}");
        assert_eq!(reply["code"], code, "{input}");
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(next_json(&mut ws).await["code"], "binary_unsupported");
    // Still open and answering.
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "pong");
    assert_eq!(
        hub.metric("sensor_hub_ws_client_errors_total{code=\"bad_json\"}")
            .await,
        1
    );
    assert_eq!(
        hub.metric("sensor_hub_ws_client_errors_total{code=\"unknown_type\"}")
            .await,
        1
    );
    hub.stop().await;
}

#[tokio::test]
async fn oversized_client_message_closes_with_1009() {
    let hub = start_hub(&[("SENSOR_HUB__WS__MAX_CLIENT_MESSAGE_BYTES", "1024")]).await;
    let mut ws = hub.ws().await;
    next_json(&mut ws).await;
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(4096));
    ws.send(Message::text(big)).await.unwrap();
    // Regression: docs/WEBSOCKET.md promises an `error` `too_large` first.
    let error = next_json(&mut ws).await;
    assert_eq!(
        (error["type"].as_str(), error["code"].as_str()),
        (Some("error"), Some("too_large"))
    );
    match next(&mut ws).await {
        Message::Close(Some(frame)) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected close 1009, got {other:?}"),
    }
    assert_eq!(
        hub.metric("sensor_hub_ws_client_errors_total{code=\"too_large\"}")
            .await,
        1
    );
    hub.stop().await;
}

#[tokio::test]
async fn clients_beyond_the_limit_get_503_and_are_counted() {
    let hub = start_hub(&[("SENSOR_HUB__WS__MAX_CLIENTS", "1")]).await;
    let mut first = hub.ws().await;
    next_json(&mut first).await;
    match tokio_tungstenite::connect_async(support::ws_request(hub.http, Some(&hub.token))).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected HTTP 503, got {other:?}"),
    }
    assert_eq!(hub.metric("sensor_hub_ws_clients_rejected_total").await, 1);
    // Regression: the accepted counter never moved.
    assert_eq!(hub.metric("sensor_hub_ws_clients_accepted_total").await, 1);
    first.close(None).await.unwrap();
    drop(first);
    eventually("slot released", || async {
        hub.metric("sensor_hub_ws_clients").await == 0
    })
    .await;
    let mut again = hub.ws().await;
    assert_eq!(next_json(&mut again).await["type"], "hello");
    hub.stop().await;
}

#[tokio::test]
async fn shutdown_closes_websockets_with_going_away() {
    let hub = start_hub(&[]).await;
    let mut ws = hub.ws().await;
    next_json(&mut ws).await;
    let stopping = tokio::spawn(hub.stop());
    match next(&mut ws).await {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Away);
            assert_eq!(frame.reason.as_str(), "hub shutting down");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
    drop(ws);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("hub stopped")
        .unwrap();
}

#[tokio::test]
async fn control_port_accepts_and_counts_connections() {
    let hub = start_hub(&[]).await;
    let _conn = tokio::net::TcpStream::connect(hub.control).await.unwrap();
    eventually("control connection counted", || async {
        hub.metric("sensor_hub_control_connections_total").await == 1
    })
    .await;
    hub.stop().await;
}
