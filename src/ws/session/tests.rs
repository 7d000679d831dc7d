//! The socket driver over an in-memory duplex pipe: real WebSocket framing
//! on both ends, no network. What the client logic decides is tested in
//! `ws::client`; here, that the driver carries it out on a socket.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use sensor_hub_protocol::{encode_datagram, Datagram, Reading, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use super::*;
use crate::config::HubConfig;
use crate::core::Received;
use crate::ws::client::Eviction;

fn context(config: &HubConfig) -> WsContext {
    let mut config = config.clone();
    config.auth.credentials_path = std::env::temp_dir().join(format!(
        "sensor-hub-session-unit-{}/none.json",
        std::process::id()
    ));
    let auth = Auth::open(&config.auth, &config.http).unwrap();
    WsContext::new(
        Arc::new(Core::new(&config, None)),
        &config,
        Clock::system(),
        Arc::new(WsMetrics::default()),
        CancellationToken::new(),
        auth,
    )
}

/// Starts a session on one end of a pipe; returns the other end.
async fn serve(ctx: &WsContext) -> (DuplexStream, tokio::task::JoinHandle<()>) {
    let (server, client) = tokio::io::duplex(1 << 16);
    let config = WebSocketConfig::default()
        .max_message_size(Some(ctx.config.max_client_message_bytes))
        .max_frame_size(Some(ctx.config.max_client_message_bytes));
    let ws = WebSocketStream::from_raw_socket(server, Role::Server, Some(config)).await;
    let operator = Principal {
        role: crate::auth::Role::Operator,
        name: "test".into(),
        via: crate::auth::Via::Token("t".into()),
    };
    let task = tokio::spawn(run(ctx.clone(), operator, ws, None));
    (client, task)
}

async fn next_json(ws: &mut WebSocketStream<DuplexStream>) -> serde_json::Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("the stream is open")
            .expect("a valid frame");
        if let Message::Text(text) = message {
            return serde_json::from_str(text.as_str()).unwrap();
        }
    }
}

async fn close_code(ws: &mut WebSocketStream<DuplexStream>) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => return u16::from(frame.code),
            Ok(Some(Ok(_))) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

fn datagram(device_id: u32) -> Vec<u8> {
    datagram_at(device_id, 0)
}

fn datagram_at(device_id: u32, seq: u32) -> Vec<u8> {
    let d = Datagram {
        device_id,
        seq,
        time_ms: crate::clock::wall_ms() as u32,
        readings: [Reading {
            channel: 0,
            value: Value::I32(42),
        }]
        .into_iter()
        .collect(),
        auth_tag: None,
    };
    let mut buf = [0u8; 512];
    encode_datagram(&d, &mut buf).unwrap().to_vec()
}

#[tokio::test]
async fn a_client_subscribes_and_receives_readings_over_a_socket() {
    let config = HubConfig::defaults().unwrap();
    let ctx = context(&config);
    let (pipe, _task) = serve(&ctx).await;
    let mut ws = WebSocketStream::from_raw_socket(pipe, Role::Client, None).await;
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    ws.send(Message::text(r#"{"type":"subscribe","id":1}"#))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await["type"], "snapshot");
    let bytes = datagram(12);
    ctx.core.ingest_batch_received(
        &[Received {
            bytes: &bytes,
            wire_len: bytes.len(),
            from: "127.0.0.1:1".parse().unwrap(),
        }],
        ctx.clock.now(),
        ctx.clock.mono_us(),
    );
    // The device's arrival, then its readings.
    let mut saw_readings = false;
    for _ in 0..3 {
        let m = next_json(&mut ws).await;
        if m["type"] == "readings" {
            assert_eq!(m["datagrams"][0]["device"], 12);
            assert_eq!(m["datagrams"][0]["readings"][0]["value"], 42);
            saw_readings = true;
            break;
        }
    }
    assert!(saw_readings);
    assert!(ctx.metrics.messages_sent.get() >= 3);
    // The write of the readings was timed from their UDP read: one sample,
    // well under the second it would take to be anything but the hub's.
    let latency = ctx.metrics.write_latency.0.samples();
    assert_eq!(latency.count, 1);
    assert!(latency.sum < 1.0);
}

#[tokio::test]
async fn an_oversized_message_gets_its_error_then_1009() {
    let mut config = HubConfig::defaults().unwrap();
    config.ws.max_client_message_bytes = 1_024;
    let ctx = context(&config);
    let (pipe, task) = serve(&ctx).await;
    let mut ws = WebSocketStream::from_raw_socket(pipe, Role::Client, None).await;
    next_json(&mut ws).await;
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(4_096));
    ws.send(Message::text(big)).await.unwrap();
    let error = next_json(&mut ws).await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["code"], "too_large");
    assert_eq!(close_code(&mut ws).await, 1009);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn invalid_utf8_text_is_closed_with_1007() {
    let config = HubConfig::defaults().unwrap();
    let ctx = context(&config);
    let (mut pipe, _task) = serve(&ctx).await;
    // A masked text frame whose payload is not UTF-8, written by hand (a
    // client library refuses to send one).
    let payload = [0xff_u8, 0xfe, 0xfd];
    let mask = [1_u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    pipe.write_all(&frame).await.unwrap();
    // Read the hub's (unmasked) frames until its close frame.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut header = [0u8; 2];
        tokio::time::timeout_at(deadline, pipe.read_exact(&mut header))
            .await
            .expect("the hub answers")
            .unwrap();
        let len = match header[1] & 0x7f {
            126 => {
                let mut ext = [0u8; 2];
                pipe.read_exact(&mut ext).await.unwrap();
                usize::from(u16::from_be_bytes(ext))
            }
            127 => panic!("no frame here is that long"),
            n => usize::from(n),
        };
        let mut body = vec![0u8; len];
        pipe.read_exact(&mut body).await.unwrap();
        if header[0] & 0x0f == 0x8 {
            assert_eq!(u16::from_be_bytes([body[0], body[1]]), 1007);
            let index = crate::ws::client::Eviction::InvalidUtf8.index();
            assert_eq!(ctx.metrics.evictions.get(index), 1);
            return;
        }
    }
}

#[tokio::test]
async fn shutdown_closes_clients_with_1001() {
    let config = HubConfig::defaults().unwrap();
    let ctx = context(&config);
    let (pipe, task) = serve(&ctx).await;
    let mut ws = WebSocketStream::from_raw_socket(pipe, Role::Client, None).await;
    next_json(&mut ws).await;
    ctx.cancel.cancel();
    assert_eq!(close_code(&mut ws).await, 1001);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn the_clients_furthest_behind_are_closed_until_the_rest_fit() {
    let backlog = vec![(1, 100), (2, 700), (3, 300), (4, 700)];
    // 1,800 waiting, 1,000 allowed: the two with 700 (older first).
    assert_eq!(furthest_behind(backlog.clone(), 1_000), [2, 4]);
    assert_eq!(furthest_behind(backlog.clone(), 1_100), [2]);
    assert!(furthest_behind(backlog, 1_800).is_empty());
    assert!(furthest_behind(Vec::new(), 0).is_empty());
}

/// One batch: datagram `seq` of devices `1..=n`.
fn ingest(ctx: &WsContext, seq: u32, n: u32) {
    let encoded: Vec<Vec<u8>> = (1..=n).map(|device| datagram_at(device, seq)).collect();
    let batch: Vec<Received<'_>> = encoded
        .iter()
        .map(|bytes| Received {
            bytes,
            wire_len: bytes.len(),
            from: "127.0.0.1:1".parse().unwrap(),
        })
        .collect();
    ctx.core.ingest_batch(&batch, ctx.clock.now());
}

#[tokio::test]
async fn over_the_total_budget_the_client_that_does_not_read_is_cut_and_the_other_gets_everything()
{
    let mut config = HubConfig::defaults().unwrap();
    // Each client may lag by 150 KB, both together by 200 KB: the one that
    // never reads fills its budget and is cut, while the reader (drained
    // between batches) stays well under.
    config.ws.client_budget_bytes = 150_000;
    config.ws.total_budget_bytes = 200_000;
    config.ws.coalesce_ms = 0;
    let ctx = context(&config);
    let subscribe = |pipe| async move {
        let mut ws = WebSocketStream::from_raw_socket(pipe, Role::Client, None).await;
        assert_eq!(next_json(&mut ws).await["type"], "hello");
        ws.send(Message::text(r#"{"type":"subscribe"}"#))
            .await
            .unwrap();
        assert_eq!(next_json(&mut ws).await["type"], "snapshot");
        ws
    };
    let (pipe, stuck_task) = serve(&ctx).await;
    let mut stuck = subscribe(pipe).await;
    let (pipe, _task) = serve(&ctx).await;
    let reader = subscribe(pipe).await;
    // The reader counts every datagram it is sent.
    let reading = tokio::spawn(async move {
        let mut reader = reader;
        let mut datagrams = 0;
        while datagrams < 5_000 {
            let m = next_json(&mut reader).await;
            if m["type"] == "readings" {
                datagrams += m["datagrams"].as_array().map_or(0, Vec::len);
            }
        }
        datagrams
    });
    // 100 batches of 50 datagrams: several hundred KB of JSON, far more
    // than the stuck client's pipe (64 KiB) and the total budget.
    for batch in 0..100 {
        ingest(&ctx, batch, 50);
        // Time for the reader to take what was written to it.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let evicted = || ctx.metrics.evictions.get(Eviction::SlowConsumer.index());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while evicted() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(evicted(), 1, "the client that does not read is cut");
    tokio::time::timeout(Duration::from_secs(5), stuck_task)
        .await
        .expect("its session ends at once, not after a close timeout")
        .unwrap();
    // Its socket ends without more than what was already in the pipe.
    let mut frames = 0;
    while let Ok(Some(Ok(_))) = tokio::time::timeout(Duration::from_secs(5), stuck.next()).await {
        frames += 1;
    }
    assert!(frames < 100_000);
    let got = tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("the reader gets everything")
        .unwrap();
    assert_eq!(got, 5_000);
    assert_eq!(evicted(), 1, "and is never cut itself");
}
