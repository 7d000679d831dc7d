//! The hub's messages, checked as parsed JSON.

use super::*;
use crate::aggregate::sequence::SeqCounts;
use crate::registry::Origin;
use sensor_hub_protocol::control::CommandBody;
use sensor_hub_protocol::{Reading, Value};
use serde_json::json;

fn parse(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap()
}

#[test]
fn hello_names_protocol_epoch_and_head() {
    assert_eq!(
        parse(&hello("00ff", 41, 1_700_000_000_000)),
        json!({"type": "hello", "protocol": 1, "hub_version": HUB_VERSION,
               "server_time_ms": 1_700_000_000_000u64, "epoch": "00ff", "seq": 41})
    );
}

#[test]
fn readings_carry_seq_every_datagram_and_typed_values() {
    let batch = [LiveDatagram {
        device: 3,
        seq: 9,
        time_ms: 1_000,
        received_ms: 1_004,
        readings: [
            Reading {
                channel: 0,
                value: Value::F32(21.5),
            },
            Reading {
                channel: 1,
                value: Value::I32(-4),
            },
            Reading {
                channel: 2,
                value: Value::Bool(true),
            },
            Reading {
                channel: 3,
                value: Value::F32(f32::NAN),
            },
        ]
        .into_iter()
        .collect(),
    }];
    assert_eq!(
        parse(&readings(7, &batch, 5_000)),
        json!({"type": "readings", "seq": 7, "hub_time_ms": 5_000, "datagrams": [
            {"device": 3, "seq": 9, "time_ms": 1_000, "received_ms": 1_004, "readings": [
                {"channel": 0, "value": 21.5},
                {"channel": 1, "value": -4},
                {"channel": 2, "value": true},
                {"channel": 3, "value": null},
            ]},
        ]})
    );
}

#[test]
fn aggregates_report_last_and_window() {
    let folded = [(
        (3, 1),
        Folded {
            last: Value::F32(2.5),
            time_ms: 10,
            count: 4,
            finite: 4,
            min: 1.0,
            max: 3.0,
            sum: 8.0,
        },
    )];
    assert_eq!(
        parse(&aggregates(12, 1_000, &folded)),
        json!({"type": "aggregates", "seq": 12, "interval_ms": 1000, "sensors": [
            {"device": 3, "channel": 1, "last": 2.5, "time_ms": 10, "count": 4,
             "min": 1.0, "max": 3.0, "mean": 2.0}
        ]})
    );
}

/// Command 9 on device 3, acked, submitted by client 4 as request "c1".
fn acked_command() -> CommandRecord {
    CommandRecord {
        id: 9,
        device: 3,
        body: CommandBody::SetInterval { ms: 500 },
        state: CommandState::Acked,
        detail: None,
        origin: Origin {
            request_id: Some(json!("c1")),
            client: Some(4),
            source: None,
            ..Default::default()
        },
        created_ms: 1,
        updated_ms: 2,
        deadline_mono_ms: 3,
    }
}

#[test]
fn command_status_has_the_request_id_only_in_the_submitters_form() {
    let record = acked_command();
    let own = parse(&own_command_status(9, &record));
    assert_eq!(
        own,
        json!({"type": "command_status", "seq": 9, "id": "c1", "command_id": 9, "device": 3,
               "kind": "set_interval", "state": "acked", "detail": null, "at_ms": 2})
    );
    // Everyone else's form (the shared event JSON): the same without `id`.
    let others = parse(&event(
        9,
        &Event::CommandStatus(Box::new(record.clone())),
        0,
    ));
    let mut expected = own.clone();
    expected.as_object_mut().unwrap().remove("id");
    assert_eq!(others, expected);
    assert!(others.get("id").is_none(), "no `id` field at all: {others}");
    // A request without an id (or an HTTP command): no `id` in either form.
    let anonymous = CommandRecord {
        origin: Origin::default(),
        ..record
    };
    assert_eq!(parse(&own_command_status(9, &anonymous)), expected);
}

#[test]
fn status_and_stats_events_render_with_their_seq() {
    let status = Event::DeviceStatus {
        device: 3,
        status: DeviceStatus::Late,
        previous: Some(DeviceStatus::Online),
        at_ms: 5,
    };
    assert_eq!(
        parse(&event(8, &status, 0)),
        json!({"type": "device_status", "seq": 8, "device": 3, "status": "late",
               "previous": "online", "at_ms": 5})
    );
    assert_eq!(
        parse(&event(
            9,
            &Event::CommandStatus(Box::new(acked_command())),
            0
        )),
        json!({"type": "command_status", "seq": 9, "command_id": 9, "device": 3,
               "kind": "set_interval", "state": "acked", "detail": null, "at_ms": 2})
    );
    let stats = Event::DeviceStats(vec![DeviceStats {
        device: 3,
        seq: SeqCounts {
            received: 90,
            lost: 10,
            reordered: 2,
            duplicated: 0,
            restarts: 1,
        },
        rate_per_s: 2.0,
        latency_p50_ms: Some(1),
        latency_p99_ms: Some(5),
        latency_count: 90,
    }]);
    assert_eq!(
        parse(&event(10, &stats, 0)),
        json!({"type": "device_stats", "seq": 10, "devices": [
            {"device": 3, "received": 90, "lost": 10, "reordered": 2, "duplicated": 0,
             "restarts": 1, "loss_ratio": 0.1, "rate_per_s": 2.0,
             "latency_ms": {"p50_ms": 1, "p99_ms": 5, "count": 90}}
        ]})
    );
}

#[test]
fn snapshot_resync_ack_pong_and_error() {
    assert_eq!(
        parse(&snapshot(Some(&json!("s1")), None, "e", 4, 9, &[])),
        json!({"type": "snapshot", "id": "s1", "epoch": "e", "seq": 4, "hub_time_ms": 9, "devices": []})
    );
    assert_eq!(
        parse(&snapshot(None, Some("epoch changed"), "e", 4, 9, &[])),
        json!({"type": "resync", "reason": "epoch changed", "epoch": "e", "seq": 4,
               "hub_time_ms": 9, "devices": []})
    );
    assert_eq!(
        parse(&ack(Some(&json!(2)), "unsubscribe", 4)),
        json!({"type": "ack", "id": 2, "of": "unsubscribe", "seq": 4})
    );
    assert_eq!(parse(&pong(None)), json!({"type": "pong"}));
    assert_eq!(
        parse(&error(ClientError::BadJson, "nope", Some(&json!("x")))),
        json!({"type": "error", "code": "bad_json", "message": "nope", "id": "x"})
    );
}

fn datagram(device: DeviceId, seq: u32) -> LiveDatagram {
    LiveDatagram {
        device,
        seq,
        time_ms: 1_000,
        received_ms: 1_004,
        readings: [Reading {
            channel: 0,
            value: Value::F32(21.5),
        }]
        .into(),
    }
}

#[test]
fn merged_readings_are_one_message_with_every_datagram_in_order() {
    let a = readings(10, &[datagram(1, 1), datagram(2, 1)], 5_000);
    let b = readings(12, &[datagram(1, 2)], 5_002);
    let merged = merge_readings(&[a.clone(), b.clone()]).unwrap();
    // The same as one event of all three datagrams, at the last one's
    // position and time.
    assert_eq!(
        parse(&merged),
        parse(&readings(
            12,
            &[datagram(1, 1), datagram(2, 1), datagram(1, 2)],
            5_002
        ))
    );
    // One alone comes back as it was.
    assert_eq!(merge_readings(std::slice::from_ref(&a)).unwrap(), a);
    // Anything else is refused, not mangled.
    assert_eq!(merge_readings::<String>(&[]), None);
    let status = pong(None);
    assert_eq!(merge_readings(&[a, status]), None);
}
