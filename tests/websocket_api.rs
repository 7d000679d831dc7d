//! The WebSocket API over real sockets: subscriptions and snapshots,
//! aggregate mode, resume and resync, slow consumers, pings, rate limits,
//! malformed messages, and whose `command_status` carries the request `id`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use sensor_hub_protocol::Value;
use serde_json::json;
use support::*;
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

async fn sender() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// Reads messages until `done` says stop; returns them all (pings skipped).
async fn read_until(
    ws: &mut Client,
    mut done: impl FnMut(&serde_json::Value) -> bool,
) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    loop {
        let msg = next_json(ws).await;
        let stop = done(&msg);
        all.push(msg);
        if stop {
            return all;
        }
    }
}

/// (device, datagram seq) of every datagram in `readings` messages.
fn datagrams_in(messages: &[serde_json::Value]) -> Vec<(u64, u64)> {
    messages
        .iter()
        .filter(|m| m["type"] == "readings")
        .flat_map(|m| m["datagrams"].as_array().unwrap().clone())
        .map(|d| (d["device"].as_u64().unwrap(), d["seq"].as_u64().unwrap()))
        .collect()
}

#[tokio::test]
async fn two_clients_get_exactly_what_they_subscribed_to() {
    let hub = start_hub(&[]).await;
    let udp = sender().await;
    let two = [(0, Value::F32(1.0)), (1, Value::I32(2))];
    // Devices known before anyone subscribes.
    for device in 1..=3 {
        udp.send_to(&datagram(device, 0, &two), hub.udp)
            .await
            .unwrap();
    }
    eventually("devices known", || async {
        hub.metric("sensor_hub_devices").await == 3
    })
    .await;

    let mut a = hub.ws().await;
    let mut b = hub.ws().await;
    next_json(&mut a).await;
    next_json(&mut b).await;
    let snap_a = subscribe(&mut a, json!({"id": "a", "devices": [1], "sensors": [0]})).await;
    let snap_b = subscribe(&mut b, json!({"id": "b", "devices": [2]})).await;
    assert_eq!(snap_a["id"], "a");
    let devices_a = snap_a["devices"].as_array().unwrap();
    assert_eq!(devices_a.len(), 1);
    assert_eq!(devices_a[0]["id"], 1);
    let sensors_a = devices_a[0]["sensors"].as_array().unwrap();
    assert_eq!(sensors_a.len(), 1, "only channel 0");
    assert_eq!(sensors_a[0]["value"], 1.0);
    assert_eq!(snap_b["devices"].as_array().unwrap().len(), 1);
    assert_eq!(snap_b["devices"][0]["sensors"].as_array().unwrap().len(), 2);

    for seq in 1..=5 {
        for device in 1..=3 {
            udp.send_to(&datagram(device, seq, &two), hub.udp)
                .await
                .unwrap();
        }
    }
    let seen_a = read_until(&mut a, |m| {
        datagrams_in(std::slice::from_ref(m)).contains(&(1, 5))
    })
    .await;
    let seen_b = read_until(&mut b, |m| {
        datagrams_in(std::slice::from_ref(m)).contains(&(2, 5))
    })
    .await;
    assert_eq!(
        datagrams_in(&seen_a),
        (1..=5).map(|s| (1, s)).collect::<Vec<_>>()
    );
    assert_eq!(
        datagrams_in(&seen_b),
        (1..=5).map(|s| (2, s)).collect::<Vec<_>>()
    );
    for m in seen_a.iter().filter(|m| m["type"] == "readings") {
        assert!(m["seq"].as_u64().unwrap() > snap_a["seq"].as_u64().unwrap());
        for d in m["datagrams"].as_array().unwrap() {
            let channels: Vec<_> = d["readings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["channel"].clone())
                .collect();
            assert_eq!(channels, [json!(0)], "client a asked for channel 0 only");
        }
    }
    for m in seen_a
        .iter()
        .chain(&seen_b)
        .filter(|m| m["type"] == "device_stats")
    {
        assert_eq!(m["devices"].as_array().unwrap().len(), 1);
    }
    hub.stop().await;
}

#[tokio::test]
async fn snapshot_and_stream_add_up_exactly_under_load() {
    let hub = start_hub(&[]).await;
    let udp = sender().await;
    let target = hub.udp;
    // Keep sending while the client subscribes.
    let feeder = tokio::spawn(async move {
        for seq in 0..2_000u32 {
            udp.send_to(&datagram(9, seq, &[(0, Value::I32(seq as i32))]), target)
                .await
                .unwrap();
            if seq % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut ws = hub.ws().await;
    next_json(&mut ws).await;
    let snap = subscribe(&mut ws, json!({})).await;
    let in_snapshot = snap["devices"][0]["datagrams"].as_u64().unwrap_or(0);
    feeder.await.unwrap();
    eventually("all read", || async {
        hub.metric("sensor_hub_udp_datagrams_received_total").await == 2_000
    })
    .await;
    let accepted = hub.metric("sensor_hub_udp_datagrams_accepted_total").await;
    let mut streamed = 0;
    while in_snapshot + streamed < accepted {
        let msg = next_json(&mut ws).await;
        streamed += datagrams_in(std::slice::from_ref(&msg)).len() as u64;
    }
    assert_eq!(in_snapshot + streamed, accepted, "no overlap, no gap");
    assert!(
        in_snapshot > 0 && streamed > 0,
        "subscribed mid-stream: {in_snapshot} + {streamed}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn aggregate_mode_coalesces_per_sensor() {
    let hub = start_hub(&[]).await;
    let mut ws = hub.ws().await;
    next_json(&mut ws).await;
    subscribe(
        &mut ws,
        json!({"devices": [4], "mode": "aggregate", "interval_ms": 300}),
    )
    .await;
    let udp = sender().await;
    for seq in 0..50u32 {
        udp.send_to(&datagram(4, seq, &[(0, Value::F32(seq as f32))]), hub.udp)
            .await
            .unwrap();
    }
    let mut count = 0;
    let mut last = json!(null);
    let (mut min, mut max) = (f64::MAX, f64::MIN);
    while count < 50 {
        let msg = next_json(&mut ws).await;
        assert_ne!(
            msg["type"], "readings",
            "aggregate clients get no raw readings"
        );
        if msg["type"] != "aggregates" {
            continue;
        }
        assert_eq!(msg["interval_ms"], 300);
        for s in msg["sensors"].as_array().unwrap() {
            assert_eq!(
                (s["device"].clone(), s["channel"].clone()),
                (json!(4), json!(0))
            );
            count += s["count"].as_u64().unwrap();
            last = s["last"].clone();
            min = min.min(s["min"].as_f64().unwrap());
            max = max.max(s["max"].as_f64().unwrap());
        }
    }
    assert_eq!(count, 50);
    assert_eq!(last, 49.0);
    assert_eq!((min, max), (0.0, 49.0));
    hub.stop().await;
}

#[tokio::test]
async fn resume_delivers_exactly_what_was_missed() {
    let hub = start_hub(&[]).await;
    let udp = sender().await;
    let mut ws = hub.ws().await;
    let epoch = next_json(&mut ws).await["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    subscribe(&mut ws, json!({})).await;
    for seq in 0..50 {
        udp.send_to(&datagram(5, seq, &[(0, Value::I32(1))]), hub.udp)
            .await
            .unwrap();
    }
    let before = read_until(&mut ws, |m| {
        datagrams_in(std::slice::from_ref(m)).contains(&(5, 49))
    })
    .await;
    let last_seq = before
        .iter()
        .filter_map(|m| m["seq"].as_u64())
        .max()
        .unwrap();
    drop(ws);

    for seq in 50..120 {
        udp.send_to(&datagram(5, seq, &[(0, Value::I32(1))]), hub.udp)
            .await
            .unwrap();
    }
    eventually("sent while away", || async {
        hub.metric("sensor_hub_udp_datagrams_accepted_total").await == 120
    })
    .await;

    let mut ws = hub.ws().await;
    next_json(&mut ws).await;
    ws.send(Message::text(
        json!({"type": "resume", "id": "r", "epoch": epoch, "last_seq": last_seq}).to_string(),
    ))
    .await
    .unwrap();
    let ack = next_json(&mut ws).await;
    assert_eq!(
        ack,
        json!({"type": "ack", "id": "r", "of": "resume", "seq": last_seq})
    );
    let after = read_until(&mut ws, |m| {
        datagrams_in(std::slice::from_ref(m)).contains(&(5, 119))
    })
    .await;
    let mut all = datagrams_in(&before);
    all.extend(datagrams_in(&after));
    assert_eq!(
        all,
        (0..120).map(|s| (5, s)).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    let seqs: Vec<u64> = after.iter().filter_map(|m| m["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]) && seqs[0] > last_seq);
    hub.stop().await;
}

#[tokio::test]
async fn resume_after_the_buffer_is_gone_or_from_another_run_gets_resync() {
    let hub = start_hub(&[
        ("SENSOR_HUB__WS__REPLAY_BYTES", "4096"),
        ("SENSOR_HUB__WS__CLIENT_BUDGET_BYTES", "4096"),
    ])
    .await;
    let udp = sender().await;
    let mut ws = hub.ws().await;
    let epoch = next_json(&mut ws).await["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    drop(ws);
    // Paced, so the readings make many events and the first ones leave the
    // 4 KiB replay buffer.
    for seq in 0..200 {
        udp.send_to(&datagram(6, seq, &[(0, Value::I32(1))]), hub.udp)
            .await
            .unwrap();
        if seq % 5 == 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    eventually("all accepted", || async {
        hub.metric("sensor_hub_udp_datagrams_accepted_total").await == 200
    })
    .await;
    assert!(
        hub.metric("sensor_hub_stream_seq").await > 30,
        "enough events to overflow the buffer"
    );
    let cases = [
        (epoch.as_str(), "no longer buffered"),
        ("0000000000000000", "restarted"),
    ];
    for (extra, (epoch, reason)) in cases.into_iter().enumerate() {
        let mut ws = hub.ws().await;
        next_json(&mut ws).await;
        ws.send(Message::text(
            json!({"type": "resume", "epoch": epoch, "last_seq": 1}).to_string(),
        ))
        .await
        .unwrap();
        let resync = next_json(&mut ws).await;
        assert_eq!(resync["type"], "resync", "{resync}");
        assert!(
            resync["reason"].as_str().unwrap().contains(reason),
            "{resync}"
        );
        assert_eq!(resync["devices"][0]["id"], 6);
        assert_eq!(resync["devices"][0]["datagrams"], 200 + extra);
        // The stream continues after the resync.
        udp.send_to(&datagram(6, 1_000, &[]), hub.udp)
            .await
            .unwrap();
        let later = read_until(&mut ws, |m| m["type"] == "readings").await;
        assert!(later.last().unwrap()["seq"].as_u64() > resync["seq"].as_u64());
    }
    hub.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_evicted_and_others_are_not_slowed() {
    const BUDGET: u64 = 65_536;
    let hub = start_hub(&[
        ("SENSOR_HUB__WS__CLIENT_BUDGET_BYTES", "65536"),
        ("SENSOR_HUB__WS__SLOW_GRACE_MS", "300"),
    ])
    .await;
    // The slow client: a small receive buffer, subscribes, then never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(hub.http).await.unwrap();
    let (mut slow, _) =
        tokio_tungstenite::client_async(support::ws_request(hub.http, Some(&hub.token)), stream)
            .await
            .unwrap();
    slow.send(Message::text(r#"{"type":"subscribe"}"#))
        .await
        .unwrap();
    let mut fast = subscribed_client(&hub).await;

    let udp = sender().await;
    let readings = [
        (0, Value::F32(1.5)),
        (1, Value::F32(2.5)),
        (2, Value::F32(3.5)),
    ];
    let mut max_queued = 0;
    let mut worst = Duration::ZERO;
    let mut seq = 0u32;
    let started = Instant::now();
    while hub
        .metric("sensor_hub_ws_evictions_total{reason=\"slow_consumer\"}")
        .await
        == 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "slow client never evicted"
        );
        let sent_at = Instant::now();
        let first = seq;
        for _ in 0..100 {
            udp.send_to(&datagram(1, seq, &readings), hub.udp)
                .await
                .unwrap();
            seq += 1;
        }
        // The fast client gets every one of them, promptly.
        let mut got = BTreeSet::new();
        while got.len() < 100 {
            let msg = next_json(&mut fast).await;
            got.extend(
                datagrams_in(std::slice::from_ref(&msg))
                    .into_iter()
                    .map(|(_, s)| s),
            );
            got.retain(|&s| s >= u64::from(first));
        }
        worst = worst.max(sent_at.elapsed());
        max_queued = max_queued.max(hub.metric("sensor_hub_ws_queued_bytes").await);
    }
    // Memory held for the slow client stayed within its budget (plus one
    // message, which is written whole).
    assert!(max_queued <= BUDGET + 16_384, "queued {max_queued} bytes");
    assert!(
        worst < Duration::from_secs(2),
        "fast client waited {worst:?}"
    );
    // Once it reads, the slow client finds the close code after what was in flight.
    let close = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = slow.next().await {
            if let Ok(Message::Close(frame)) = msg {
                return frame;
            }
        }
        None
    })
    .await
    .unwrap();
    let frame = close.expect("a close frame");
    assert_eq!(u16::from(frame.code), 4008);
    assert_eq!(frame.reason.as_str(), "slow consumer");
    hub.stop().await;
}

#[tokio::test]
async fn a_client_that_does_not_answer_pings_is_closed() {
    let hub = start_hub(&[
        ("SENSOR_HUB__WS__PING_INTERVAL_MS", "100"),
        ("SENSOR_HUB__WS__PONG_TIMEOUT_MS", "200"),
    ])
    .await;
    // Never polled, so it never answers pings.
    let mut silent = hub.ws().await;
    // One that keeps reading (and so answers pings) meanwhile.
    let mut awake = subscribed_client(&hub).await;
    let (tx, mut from_awake) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = awake.next().await {
            let _ = tx.send(msg);
        }
        awake
    });
    eventually("silent client closed", || async {
        hub.metric("sensor_hub_ws_evictions_total{reason=\"no_pong\"}")
            .await
            >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        hub.metric("sensor_hub_ws_evictions_total{reason=\"no_pong\"}")
            .await,
        1
    );
    assert_eq!(
        hub.metric("sensor_hub_ws_clients").await,
        1,
        "the awake client is still served"
    );
    reader.abort();
    while from_awake.try_recv().is_ok() {}
    // Its connection is gone (whether the close frame, 4009, is read before
    // the reset depends on the pongs the client now tries to send).
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = silent.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the silent client's connection was closed");
    hub.stop().await;
}

#[tokio::test]
async fn malformed_messages_of_every_kind_get_errors_and_floods_are_closed() {
    let hub = start_hub(&[
        ("SENSOR_HUB__WS__CLIENT_MESSAGES_PER_S", "5"),
        ("SENSOR_HUB__WS__CLIENT_MESSAGE_BURST", "20"),
    ])
    .await;
    let mut ws = hub.ws().await;
    next_json(&mut ws).await;
    let cases = [
        ("{", "bad_json"),
        ("null", "missing_type"),
        (r#"{"type":null}"#, "missing_type"),
        (r#"{"type":"subscribe_all"}"#, "unknown_type"),
        (
            r#"{"type":"subscribe","devices":{"a":1}}"#,
            "bad_subscription",
        ),
        (
            r#"{"type":"subscribe","sensors":[256]}"#,
            "bad_subscription",
        ),
        (
            r#"{"type":"subscribe","mode":"aggregate","interval_ms":1}"#,
            "bad_subscription",
        ),
        (r#"{"type":"resume","epoch":"x"}"#, "bad_subscription"),
        (
            r#"{"type":"command","device":"one","command":{"kind":"reboot"}}"#,
            "bad_command",
        ),
        (
            r#"{"type":"command","device":1,"command":{"kind":"set_config"}}"#,
            "bad_command",
        ),
    ];
    for (text, code) in cases {
        ws.send(Message::text(text.to_string())).await.unwrap();
        let reply = next_json(&mut ws).await;
        assert_eq!(
            (reply["type"].clone(), reply["code"].clone()),
            (json!("error"), json!(code)),
            "{text}"
        );
    }
    ws.send(Message::binary(vec![0u8; 8])).await.unwrap();
    assert_eq!(next_json(&mut ws).await["code"], "binary_unsupported");
    // Still fine.
    ws.send(Message::text(r#"{"type":"ping","id":9}"#))
        .await
        .unwrap();
    assert_eq!(next_json(&mut ws).await, json!({"type": "pong", "id": 9}));

    // A flood: rate-limited errors, then the close.
    for _ in 0..200 {
        if ws.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
            break;
        }
    }
    let mut rate_limited = 0;
    let mut close = None;
    while let Some(Ok(msg)) = ws.next().await {
        match msg {
            Message::Text(t) if t.contains("rate_limited") => rate_limited += 1,
            Message::Close(frame) => close = frame,
            _ => {}
        }
    }
    assert!(rate_limited > 0);
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Policy));
    assert_eq!(
        hub.metric("sensor_hub_ws_evictions_total{reason=\"flood\"}")
            .await,
        1
    );
    hub.stop().await;
}

#[tokio::test]
async fn device_stats_report_loss_reordering_and_duplicates() {
    let hub = start_hub(&[("SENSOR_HUB__WS__STATS_INTERVAL_MS", "50")]).await;
    let mut ws = subscribed_client(&hub).await;
    let udp = sender().await;
    // 0 1 3 2 2 5: 4 lost, 2 late, 2 twice. Stamped as a device would (one
    // per 10 ms, a copy with its original's time): a repeated number with a
    // newer timestamp would be a restart, not a duplicate.
    let start = sensor_hub::clock::wall_ms();
    for seq in [0, 1, 3, 2, 2, 5] {
        let time_ms = start + 10 * u64::from(seq);
        udp.send_to(&datagram_at(8, seq, time_ms, &[]), hub.udp)
            .await
            .unwrap();
    }
    let stats = read_until(&mut ws, |m| {
        m["type"] == "device_stats" && m["devices"][0]["received"] == 6
    })
    .await;
    let s = &stats.last().unwrap()["devices"][0];
    assert_eq!(
        (
            s["lost"].clone(),
            s["reordered"].clone(),
            s["duplicated"].clone()
        ),
        (json!(1), json!(1), json!(1))
    );
    assert_eq!(
        hub.metric("sensor_hub_sequence_total{kind=\"lost\"}").await,
        1
    );
    hub.stop().await;
}

#[tokio::test]
async fn only_the_submitting_client_sees_its_command_id() {
    let hub = start_hub(&[]).await;
    let mut a = subscribed_client(&hub).await;
    let mut b = subscribed_client(&hub).await;
    // C never subscribes.
    let mut c = hub.ws().await;
    assert_eq!(next_json(&mut c).await["type"], "hello");
    // The device exists (data only, no control session).
    sender()
        .await
        .send_to(&datagram(12, 0, &[]), hub.udp)
        .await
        .unwrap();
    eventually("device known", || async {
        hub.metric("sensor_hub_devices").await == 1
    })
    .await;
    // No session and wait:false: rejected at once, one command_status.
    a.send(Message::text(
        json!({"type": "command", "id": "a-1", "device": 12, "wait": false,
               "command": {"kind": "identify"}})
        .to_string(),
    ))
    .await
    .unwrap();
    let mine = read_until(&mut a, |m| m["type"] == "command_status")
        .await
        .pop()
        .unwrap();
    assert_eq!(mine["id"], "a-1", "{mine}");
    assert_eq!(
        (mine["device"].clone(), mine["state"].clone()),
        (json!(12), json!("rejected"))
    );
    let theirs = read_until(&mut b, |m| m["type"] == "command_status")
        .await
        .pop()
        .unwrap();
    assert_eq!(theirs["command_id"], mine["command_id"], "{theirs}");
    assert_eq!(theirs["seq"], mine["seq"]);
    assert!(
        theirs.get("id").is_none(),
        "another client's command comes without `id`: {theirs}"
    );
    let mut without_id = mine.clone();
    without_id.as_object_mut().unwrap().remove("id");
    assert_eq!(theirs, without_id, "otherwise the same message");

    // Without a subscription C got none of that (device status, readings,
    // A's command): the first thing after its hello is its own command's
    // status, whose event comes after all of them.
    c.send(Message::text(
        json!({"type": "command", "id": "c-1", "device": 12, "wait": false,
               "command": {"kind": "reboot"}})
        .to_string(),
    ))
    .await
    .unwrap();
    let first = next_json(&mut c).await;
    assert_eq!(
        (first["type"].clone(), first["id"].clone()),
        (json!("command_status"), json!("c-1")),
        "{first}"
    );
    assert!(first["seq"].as_u64() > mine["seq"].as_u64());
    hub.stop().await;
}
