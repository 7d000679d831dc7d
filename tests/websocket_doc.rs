//! docs/WEBSOCKET.md cannot drift: every client example is accepted by the
//! hub's parser, every hub example has exactly the shape (field names,
//! nesting) of a message the hub builds, and the facts the prose states
//! about values, statistics and clocks hold for the hub's code.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};

use sensor_hub::aggregate::sequence::{SeqCounts, SeqTracker};
use sensor_hub::clock::Now;
use sensor_hub::config::HubConfig;
use sensor_hub::history::query::{Answer, RangeRequest};
use sensor_hub::history::queue::Queue;
use sensor_hub::history::service::DROP_REASONS;
use sensor_hub::history::{Point, Tier};
use sensor_hub::registry::{
    CommandRecord, CommandState, DeviceStatus, Origin, Registry, RegistryConfig,
};
use sensor_hub::state::{HubState, Ingested, LiveDatagram, WindowConfig};
use sensor_hub::stream::conflate::Folded;
use sensor_hub::stream::{DeviceStats, Event};
use sensor_hub::views;
use sensor_hub::ws::messages;
use sensor_hub::ws::requests::{self, ClientError};
use sensor_hub_protocol::control::{CommandBody, Hello, Name, SensorInfo, Text, ValueKind};
use sensor_hub_protocol::{encode_datagram, Datagram, Reading, Value};
use serde_json::{json, Value as Json};

const DOC: &str = include_str!("../docs/WEBSOCKET.md");
const NOW: u64 = 1_763_731_200_000;

/// (kind, text) of every ```json client / ```json hub block.
fn examples() -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        let kind = match line.trim() {
            "```json client" => "client",
            "```json hub" => "hub",
            _ => continue,
        };
        let body: Vec<&str> = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .collect();
        out.push((kind, body.join("\n")));
    }
    out
}

/// Field names and nesting, without values.
#[derive(Debug, PartialEq)]
enum Shape {
    Leaf,
    Object(BTreeMap<String, Shape>),
    List(Option<Box<Shape>>),
}

fn shape(v: &Json) -> Shape {
    match v {
        Json::Object(map) => {
            Shape::Object(map.iter().map(|(k, v)| (k.clone(), shape(v))).collect())
        }
        Json::Array(items) => Shape::List(items.first().map(|i| Box::new(shape(i)))),
        _ => Shape::Leaf,
    }
}

/// The doc as one line of single-spaced words, for phrases that wrap.
fn prose() -> String {
    DOC.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The doc says `phrase` (whitespace-insensitive).
fn says(phrase: &str) {
    let phrase = phrase.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        prose().contains(&phrase),
        "docs/WEBSOCKET.md no longer says: {phrase}"
    );
}

/// The data plane with the registry that admits its devices.
struct Fixture {
    state: HubState,
    registry: Registry,
}

impl Fixture {
    /// The device views of a snapshot at `NOW`.
    fn devices(&self) -> Vec<views::DeviceView> {
        views::devices(&self.state, &self.registry, None, None, Now::at(0, NOW))
    }
}

/// A state with one fully described device, to build real messages from.
fn state() -> Fixture {
    state_with_clock(NOW)
}

/// [`state`] whose device's hello says its clock reads `device_time_ms` at
/// hub time `NOW`.
fn state_with_clock(device_time_ms: u64) -> Fixture {
    let mut registry = Registry::new(RegistryConfig {
        max_devices: 10,
        default_interval_ms: 1_000,
        late_after_intervals: 3,
        offline_after_intervals: 10,
        command_ttl_ms: 1_000,
        queue_per_device: 1,
        max_in_flight: 1,
        retain_finished: 1,
        trust: Default::default(),
    });
    let hello = Hello {
        device_id: 3,
        name: Name::try_from("kitchen-3").unwrap(),
        firmware: Name::try_from("device-sim 0.1.0").unwrap(),
        token: Text::new(),
        interval_ms: 1_000,
        device_time_ms,
        sensors: [SensorInfo {
            channel: 0,
            name: Name::try_from("temperature").unwrap(),
            unit: "°C".try_into().unwrap(),
            kind: ValueKind::F32,
            min: Some(-40.0),
            max: Some(85.0),
        }]
        .into_iter()
        .collect(),
    };
    registry.open_session(&hello, Now::at(0, NOW)).unwrap();
    let mut state = HubState::new(
        WindowConfig {
            windows_ms: vec![10_000, 60_000],
            buckets: 10,
        },
        1_000_000,
    );
    let datagram = Datagram {
        device_id: 3,
        seq: 0,
        time_ms: NOW as u32,
        readings: [Reading {
            channel: 0,
            value: Value::F32(21.5),
        }]
        .into_iter()
        .collect(),
        auth_tag: None,
    };
    let mut buf = [0u8; 512];
    let bytes = encode_datagram(&datagram, &mut buf).unwrap();
    state
        .ingest(
            &mut registry,
            bytes,
            bytes.len(),
            "192.168.1.40:51234".parse().unwrap(),
            Now::at(0, NOW),
        )
        .unwrap();
    Fixture { state, registry }
}

/// The command of the `command_status` examples.
fn command_record(id: &Json) -> CommandRecord {
    CommandRecord {
        id: 1,
        device: 3,
        body: CommandBody::Identify,
        state: CommandState::Succeeded,
        detail: Some("done".into()),
        origin: Origin {
            request_id: Some(id.clone()),
            client: Some(1),
            source: None,
            ..Default::default()
        },
        created_ms: NOW,
        updated_ms: NOW,
        deadline_mono_ms: 0,
    }
}

/// A real message of each type, as the hub builds it (a `command_status`
/// as every client but the submitter receives it).
fn built(kind: &str) -> Json {
    let id = json!("x");
    let devices = state().devices();
    let datagram = LiveDatagram {
        device: 3,
        seq: 1,
        time_ms: NOW,
        received_ms: NOW,
        readings: [Reading {
            channel: 0,
            value: Value::F32(1.0),
        }]
        .into_iter()
        .collect(),
    };
    let text = match kind {
        "hello" => messages::hello("e", 1, NOW),
        "snapshot" => messages::snapshot(Some(&id), None, "e", 1, NOW, &devices),
        "resync" => messages::snapshot(Some(&id), Some("why"), "e", 1, NOW, &[]),
        "readings" => messages::readings(1, &[datagram], NOW),
        "aggregates" => messages::aggregates(
            1,
            1_000,
            &[(
                (3, 0),
                Folded {
                    last: Value::F32(1.0),
                    time_ms: NOW,
                    count: 1,
                    finite: 1,
                    min: 1.0,
                    max: 1.0,
                    sum: 1.0,
                },
            )],
        ),
        "device_status" => messages::event(
            1,
            &Event::DeviceStatus {
                device: 3,
                status: DeviceStatus::Late,
                previous: Some(DeviceStatus::Online),
                at_ms: NOW,
            },
            NOW,
        ),
        "device_removed" => messages::event(
            1,
            &Event::DeviceRemoved {
                device: 3,
                at_ms: NOW,
            },
            NOW,
        ),
        "device_stats" => messages::device_stats(
            1,
            &[DeviceStats {
                device: 3,
                seq: SeqCounts::default(),
                rate_per_s: 1.0,
                latency_p50_ms: Some(1),
                latency_p99_ms: Some(2),
                latency_count: 1,
            }],
        ),
        "command_status" => {
            messages::event(1, &Event::CommandStatus(Box::new(command_record(&id))), NOW)
        }
        "ack" => messages::ack(Some(&id), "resume", 1),
        "renumbered" => messages::renumbered("e", 1),
        "pong" => messages::pong(Some(&id)),
        "error" => messages::error(ClientError::BadJson, "m", Some(&id)),
        "history" => {
            let range = RangeRequest::default().validate(NOW).unwrap();
            let mut answer = Answer::new(3, 0, range, Tier::Raw, true, &[Point::raw(NOW, 1.0)]);
            answer.id = Some(id.clone());
            answer.to_json()
        }
        other => panic!("docs/WEBSOCKET.md shows a hub message `{other}` the hub does not send"),
    };
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_client_example_is_accepted() {
    let clients: Vec<String> = examples()
        .into_iter()
        .filter(|(k, _)| *k == "client")
        .map(|(_, t)| t)
        .collect();
    assert!(clients.len() >= 7);
    let mut types = BTreeSet::new();
    for text in clients {
        let request = requests::parse(&text, 100);
        assert!(request.is_ok(), "{text}: {request:?}");
        let v: Json = serde_json::from_str(&text).unwrap();
        types.insert(v["type"].as_str().unwrap().to_string());
    }
    let expected: BTreeSet<String> = [
        "subscribe",
        "unsubscribe",
        "resume",
        "command",
        "history",
        "ping",
    ]
    .map(String::from)
    .into();
    assert_eq!(types, expected, "one example of every request");
}

#[test]
fn every_hub_example_has_the_shape_the_hub_builds() {
    let mut types = BTreeSet::new();
    for (_, text) in examples().into_iter().filter(|(k, _)| *k == "hub") {
        let doc: Json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let kind = doc["type"].as_str().unwrap().to_string();
        let hub = if kind == "command_status" && doc.get("id").is_some() {
            // The submitter's form.
            let text = messages::own_command_status(1, &command_record(&json!("x")));
            serde_json::from_str(&text).unwrap()
        } else {
            built(&kind)
        };
        assert_eq!(
            shape(&doc),
            shape(&hub),
            "docs/WEBSOCKET.md example of `{kind}`"
        );
        types.insert(kind);
    }
    let expected: BTreeSet<String> = [
        "hello",
        "snapshot",
        "readings",
        "aggregates",
        "device_status",
        "device_removed",
        "device_stats",
        "command_status",
        "ack",
        "resync",
        "renumbered",
        "pong",
        "history",
        "error",
    ]
    .map(String::from)
    .into();
    assert_eq!(types, expected, "one example of every message");
}

#[test]
fn every_error_code_is_documented() {
    use strum::IntoEnumIterator as _;
    for e in ClientError::iter() {
        assert!(DOC.contains(&format!("| `{}` |", e.code())), "{}", e.code());
    }
}

#[test]
fn both_forms_of_command_status_are_shown() {
    let statuses: Vec<Json> = examples()
        .into_iter()
        .filter(|(k, _)| *k == "hub")
        .map(|(_, t)| serde_json::from_str::<Json>(&t).unwrap())
        .filter(|m| m["type"] == "command_status")
        .collect();
    assert_eq!(statuses.len(), 2, "the submitter's and everyone else's");
    let mut own = statuses[0].clone();
    assert!(own.get("id").is_some() && statuses[1].get("id").is_none());
    own.as_object_mut().unwrap().remove("id");
    assert_eq!(own, statuses[1], "the same status, with and without `id`");
    says("to every other client subscribed to that device, without `id`");
    says("Commands submitted over HTTP (`POST /api/devices/{id}/commands`) have no `id`.");
}

#[test]
fn nothing_but_answers_and_own_commands_before_subscribe() {
    // The behaviour is checked over real sockets in tests/websocket_api.rs
    // (only_the_submitting_client_sees_its_command_id, client C).
    says(
        "a client without a subscription receives only `hello`, the answers to its own \
         requests (`snapshot`, `resync`, `ack`, `history`, `pong`, `error`), and the \
         `command_status` of its own commands",
    );
}

#[test]
fn values_keep_their_wire_type_and_not_finite_ones_are_null() {
    let datagram = LiveDatagram {
        device: 3,
        seq: 1,
        time_ms: NOW,
        received_ms: NOW,
        readings: [
            Value::F32(21.3),
            Value::I32(418),
            Value::Bool(false),
            Value::F32(f32::NAN),
            Value::F32(f32::INFINITY),
        ]
        .into_iter()
        .enumerate()
        .map(|(channel, value)| Reading {
            channel: channel as u8,
            value,
        })
        .collect(),
    };
    let text = messages::readings(1, std::slice::from_ref(&datagram), NOW);
    let v: Json = serde_json::from_str(&text).unwrap();
    let values: Vec<&Json> = v["datagrams"][0]["readings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["value"])
        .collect();
    assert_eq!(
        values,
        [
            &json!(21.3),
            &json!(418),
            &json!(false),
            &Json::Null,
            &Json::Null
        ]
    );
    assert!(values[1].is_i64(), "an i32 stays an integer");
    says("A NaN or infinite `f32` is sent as `null`.");

    // Not stored in the history: counted under reason="not_finite".
    let mut queue = Queue::new(100);
    queue.push_datagrams(&[datagram]);
    assert_eq!((queue.len(), queue.drops().not_finite), (3, 2));
    assert!(DROP_REASONS.contains(&"not_finite"));
    says(r#"`sensor_hub_history_dropped_readings_total{reason="not_finite"}`"#);
}

/// Ingests datagram `seq` of device 3 with `value` on channel 0 (declared
/// `f32` in [`state`]'s hello); returns what is streamed of it.
fn ingest_one(f: &mut Fixture, seq: u32, value: Value) -> LiveDatagram {
    let datagram = Datagram {
        device_id: 3,
        seq,
        time_ms: NOW as u32,
        readings: [Reading { channel: 0, value }].into_iter().collect(),
        auth_tag: None,
    };
    let mut buf = [0u8; 512];
    let bytes = encode_datagram(&datagram, &mut buf).unwrap();
    let from = "192.168.1.40:51234".parse().unwrap();
    match f
        .state
        .ingest(&mut f.registry, bytes, bytes.len(), from, Now::at(0, NOW))
        .unwrap()
    {
        Ingested::Applied { live, .. } => live,
        Ingested::Duplicate => panic!("datagram {seq} is new"),
    }
}

#[test]
fn a_value_of_another_kind_than_declared_passes_as_sent() {
    let mut state = state();
    let live = ingest_one(&mut state, 1, Value::I32(7));
    let text = messages::readings(1, &[live], NOW);
    let v: Json = serde_json::from_str(&text).unwrap();
    assert_eq!(v["datagrams"][0]["readings"][0]["value"], json!(7));
    assert!(v["datagrams"][0]["readings"][0]["value"].is_i64());
    let view = serde_json::to_value(state.devices()).unwrap();
    let sensor = &view[0]["sensors"][0];
    assert_eq!(
        (sensor["kind"].clone(), sensor["value"].clone()),
        (json!("f32"), json!(7))
    );
    says("nothing is converted or dropped");
}

#[test]
fn not_finite_values_are_left_out_of_the_windows() {
    let mut state = state();
    ingest_one(&mut state, 1, Value::F32(f32::NAN));
    let view = serde_json::to_value(state.devices()).unwrap();
    let sensor = &view[0]["sensors"][0];
    assert_eq!(
        sensor["value"],
        Json::Null,
        "the latest value is NaN: {sensor}"
    );
    for window in sensor["windows"].as_array().unwrap() {
        assert_eq!(window["count"], 1, "only the finite 21.5: {window}");
        assert_eq!(window["mean"], 21.5, "{window}");
    }
    says("the sensor's latest `value` in a snapshot is then `null`");
}

#[test]
fn clock_offset_is_hub_minus_device() {
    // The device's clock is 250 ms behind the hub's.
    let state = state_with_clock(NOW - 250);
    let view = serde_json::to_value(state.devices()).unwrap();
    assert_eq!(view[0]["clock_offset_ms"], 250);
    says("`clock_offset_ms` is the hub's clock minus the device's clock, in ms");
    says("Positive means the device's clock is behind the hub's.");
}

#[test]
fn loss_ratio_and_sequence_counts_are_as_documented() {
    // 0 1 3 2 2 5 9: 2 late (taken off lost), 2 twice, 4 and 6-8 lost.
    let mut tracker = SeqTracker::default();
    for seq in [0, 1, 3, 2, 2, 5, 9] {
        tracker.observe(seq, NOW);
    }
    let c = *tracker.counts();
    assert_eq!(
        (c.received, c.lost, c.reordered, c.duplicated, c.restarts),
        (7, 4, 1, 1, 0)
    );
    let expected = c.lost as f64 / (c.received - c.duplicated + c.lost) as f64;
    assert_eq!(c.loss_ratio(), expected);
    assert_eq!(SeqCounts::default().loss_ratio(), 0.0);
    says("`lost / (received - duplicated + lost)`");
    says("datagrams accepted from the device, duplicate copies included");
}

#[test]
fn a_duplicate_is_counted_and_not_applied_again() {
    let mut f = state();
    ingest_one(&mut f, 1, Value::F32(1.0));
    let datagram = Datagram {
        device_id: 3,
        seq: 1,
        time_ms: NOW as u32,
        readings: [Reading {
            channel: 0,
            value: Value::F32(1.0),
        }]
        .into_iter()
        .collect(),
        auth_tag: None,
    };
    let mut buf = [0u8; 512];
    let bytes = encode_datagram(&datagram, &mut buf).unwrap();
    let from = "192.168.1.40:51234".parse().unwrap();
    let again = f
        .state
        .ingest(&mut f.registry, bytes, bytes.len(), from, Now::at(0, NOW))
        .unwrap();
    assert_eq!(
        again,
        Ingested::Duplicate,
        "not applied, so not streamed or stored"
    );
    let view = serde_json::to_value(f.devices()).unwrap();
    assert_eq!(
        view[0]["sensors"][0]["count"], 2,
        "21.5 and 1.0, not 1.0 twice"
    );
    assert_eq!(view[0]["stats"]["duplicated"], 1);
    says("is counted under `duplicated` and not applied again");
}

#[test]
fn readings_are_batched_up_to_udp_batch_max() {
    let config = HubConfig::defaults().unwrap();
    assert_eq!(config.udp.batch_max, 256);
    says("up to `udp.batch_max` datagrams (default 256) at a time");
}
