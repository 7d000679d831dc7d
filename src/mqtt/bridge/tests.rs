//! The bridge's behaviour, driven by events and a time passed in: what it
//! publishes on a connection, how it coalesces states, what it does with
//! strangers, forgotten devices, Home Assistant's birth and commands.

use sensor_hub_protocol::control::{CommandBody, ValueKind};
use sensor_hub_protocol::{Reading, Value};

use super::*;
use crate::config::HubConfig;
use crate::registry::Origin as CommandOrigin;
use crate::state::LiveDatagram;
use crate::views::{CatalogDevice, CatalogSensor};

fn config(commands: bool) -> MqttConfig {
    let mut config = HubConfig::defaults().expect("defaults").mqtt;
    config.node_id = "n".into();
    config.min_interval_ms = 1_000;
    config.hub_interval_ms = 10_000;
    config.commands = commands;
    config.max_results = 4;
    config
}

fn device(id: DeviceId, adopted: bool, status: DeviceStatus) -> CatalogDevice {
    CatalogDevice {
        id,
        name: Some(format!("dev{id}")),
        firmware: Some("1.0".into()),
        interval_ms: Some(1_000),
        status: Some(status),
        adopted,
        sensors: vec![
            CatalogSensor {
                channel: 0,
                name: Some("temperature".into()),
                unit: Some("°C".into()),
                kind: Some(ValueKind::F32),
                value: None,
            },
            CatalogSensor {
                channel: 1,
                name: Some("humidity".into()),
                unit: Some("%".into()),
                kind: Some(ValueKind::F32),
                value: None,
            },
        ],
    }
}

fn readings(id: DeviceId, values: &[(u8, f32)]) -> Event {
    Event::Readings(vec![LiveDatagram {
        device: id,
        seq: 0,
        time_ms: 0,
        received_ms: 0,
        readings: values
            .iter()
            .map(|&(channel, v)| Reading {
                channel,
                value: Value::F32(v),
            })
            .collect(),
    }])
}

/// Everything it publishes at `now_ms`.
fn drain(bridge: &mut Bridge, now_ms: u64) -> Vec<Publish> {
    std::iter::from_fn(|| bridge.poll_publish(now_ms)).collect()
}

fn topics(published: &[Publish]) -> Vec<&str> {
    published.iter().map(|p| p.topic.as_str()).collect()
}

fn text(p: &Publish) -> &str {
    std::str::from_utf8(&p.payload).expect("utf-8")
}

fn find<'p>(published: &'p [Publish], topic: &str) -> Option<&'p Publish> {
    published.iter().rev().find(|p| p.topic == topic)
}

/// A connected bridge that knows `devices` and has published everything.
fn connected(commands: bool, devices: &[CatalogDevice]) -> (Bridge, Vec<Publish>) {
    let mut bridge = Bridge::new(&config(commands), "9.9.9");
    bridge.handle_catalog(devices, 0);
    bridge.handle_connected(0);
    bridge.handle_hub_figures(HubFigures::default());
    let published = drain(&mut bridge, 0);
    (bridge, published)
}

#[test]
fn nothing_goes_out_before_a_connection() {
    let mut bridge = Bridge::new(&config(false), "9.9.9");
    bridge.handle_catalog(&[device(1, true, DeviceStatus::Online)], 0);
    bridge.handle_event(&readings(1, &[(0, 21.5)]), 0);
    assert_eq!(bridge.poll_publish(0), None);
    assert_eq!(bridge.poll_timeout(), None);
}

#[test]
fn a_connection_announces_the_hub_and_every_adopted_device() {
    let (_, published) = connected(false, &[device(1, true, DeviceStatus::Online)]);
    let seen = topics(&published);
    assert_eq!(seen[0], "sensor-hub/n/status", "status first: {seen:?}");
    assert_eq!(text(&published[0]), "online");
    assert!(published[0].retain);
    for topic in [
        "homeassistant/sensor/n/hub_datagrams_per_s/config",
        "homeassistant/sensor/n/d1_ch0/config",
        "homeassistant/sensor/n/d1_ch1/config",
        "sensor-hub/n/device/1/availability",
        "sensor-hub/n/device/1/interval",
        "sensor-hub/n/hub",
    ] {
        assert!(seen.contains(&topic), "{topic} missing from {seen:?}");
    }
    let availability = find(&published, "sensor-hub/n/device/1/availability").expect("published");
    assert_eq!(text(availability), "online");
    assert!(availability.retain);
    let config = find(&published, "homeassistant/sensor/n/d1_ch1/config").expect("published");
    let config: serde_json::Value = serde_json::from_slice(&config.payload).expect("json");
    assert_eq!(config["device_class"], "humidity");
    assert_eq!(config["origin"]["sw_version"], "9.9.9");
    assert!(
        !seen
            .iter()
            .any(|t| t.contains("/button/") || t.contains("/number/")),
        "no command entities without mqtt.commands: {seen:?}"
    );
}

#[test]
fn states_are_coalesced_to_the_newest_values_at_most_once_per_interval() {
    let (mut bridge, _) = connected(false, &[device(1, true, DeviceStatus::Online)]);
    bridge.handle_event(&readings(1, &[(0, 20.0), (1, 40.0)]), 100);
    let first = drain(&mut bridge, 100);
    assert_eq!(topics(&first), ["sensor-hub/n/device/1/state"]);
    assert_eq!(text(&first[0]), r#"{"humidity":40.0,"temperature":20.0}"#);
    // Three more datagrams inside the interval: one state, the newest.
    bridge.handle_event(&readings(1, &[(0, 21.0)]), 200);
    bridge.handle_event(&readings(1, &[(0, 22.0)]), 300);
    bridge.handle_event(&readings(1, &[(0, 23.5)]), 400);
    assert_eq!(drain(&mut bridge, 500), []);
    assert_eq!(bridge.poll_timeout(), Some(1_100));
    let second = drain(&mut bridge, 1_100);
    assert_eq!(text(&second[0]), r#"{"humidity":40.0,"temperature":23.5}"#);
    assert_eq!(bridge.counters().states_coalesced, 2);
    assert_eq!(bridge.counters().published[PublishKind::State as usize], 2);
}

#[test]
fn discovered_devices_are_not_published() {
    let (mut bridge, published) = connected(false, &[device(9, false, DeviceStatus::Online)]);
    assert!(
        !topics(&published)
            .iter()
            .any(|t| t.contains("d9") || t.contains("/9/")),
        "{published:?}"
    );
    bridge.handle_event(&readings(9, &[(0, 1.0)]), 10);
    assert_eq!(drain(&mut bridge, 5_000), []);
    // Adopted later: announced with its values.
    bridge.handle_catalog(&[device(9, true, DeviceStatus::Online)], 6_000);
    let announced = drain(&mut bridge, 6_000);
    let seen = topics(&announced);
    assert!(
        seen.contains(&"homeassistant/sensor/n/d9_ch0/config"),
        "{seen:?}"
    );
    assert!(seen.contains(&"sensor-hub/n/device/9/state"), "{seen:?}");
}

#[test]
fn availability_follows_liveness() {
    let (mut bridge, _) = connected(false, &[device(1, true, DeviceStatus::Online)]);
    let status = |status| Event::DeviceStatus {
        device: 1,
        status,
        previous: None,
        at_ms: 0,
    };
    bridge.handle_event(&status(DeviceStatus::Late), 10);
    let late = drain(&mut bridge, 10);
    assert_eq!(
        text(find(&late, "sensor-hub/n/device/1/availability").expect("sent")),
        "offline"
    );
    bridge.handle_event(&status(DeviceStatus::Offline), 20);
    assert_eq!(drain(&mut bridge, 20), [], "no change, nothing sent");
    bridge.handle_event(&status(DeviceStatus::Online), 30);
    let back = drain(&mut bridge, 30);
    assert_eq!(
        text(find(&back, "sensor-hub/n/device/1/availability").expect("sent")),
        "online"
    );

    let mut lenient = config(false);
    lenient.late_is_offline = false;
    let mut bridge = Bridge::new(&lenient, "9.9.9");
    bridge.handle_catalog(&[device(1, true, DeviceStatus::Late)], 0);
    bridge.handle_connected(0);
    let published = drain(&mut bridge, 0);
    assert_eq!(
        text(find(&published, "sensor-hub/n/device/1/availability").expect("sent")),
        "online"
    );
}

#[test]
fn a_forgotten_device_is_removed_from_home_assistant() {
    let (mut bridge, _) = connected(true, &[device(1, true, DeviceStatus::Online)]);
    bridge.handle_event(
        &Event::DeviceRemoved {
            device: 1,
            at_ms: 0,
        },
        10,
    );
    let removed = drain(&mut bridge, 10);
    assert!(
        removed.iter().all(|p| p.payload.is_empty() && p.retain),
        "{removed:?}"
    );
    let seen = topics(&removed);
    for topic in [
        "homeassistant/sensor/n/d1_ch0/config",
        "homeassistant/sensor/n/d1_ch1/config",
        "homeassistant/button/n/d1_identify/config",
        "homeassistant/button/n/d1_reboot/config",
        "homeassistant/number/n/d1_interval/config",
        "sensor-hub/n/device/1/state",
        "sensor-hub/n/device/1/availability",
        "sensor-hub/n/device/1/interval",
    ] {
        assert!(seen.contains(&topic), "{topic} not cleared: {seen:?}");
    }
}

#[test]
fn a_sensor_that_disappears_loses_its_entity() {
    let (mut bridge, _) = connected(false, &[device(1, true, DeviceStatus::Online)]);
    let mut fewer = device(1, true, DeviceStatus::Online);
    fewer.sensors.truncate(1);
    bridge.handle_catalog(&[fewer], 10);
    let changed = drain(&mut bridge, 10);
    let removal = find(&changed, "homeassistant/sensor/n/d1_ch1/config").expect("removed");
    assert!(removal.payload.is_empty() && removal.retain);
    let kept = find(&changed, "homeassistant/sensor/n/d1_ch0/config").expect("re-announced");
    assert!(!kept.payload.is_empty());
}

#[test]
fn home_assistant_birth_and_a_reconnection_republish_everything() {
    let (mut bridge, first) = connected(false, &[device(1, true, DeviceStatus::Online)]);
    bridge.handle_event(&readings(1, &[(0, 20.0)]), 10);
    drain(&mut bridge, 10);
    let configs: Vec<&str> = topics(&first)
        .into_iter()
        .filter(|t| t.ends_with("/config"))
        .collect();
    assert_eq!(
        bridge.handle_message("homeassistant/status", b"online", 20),
        None
    );
    let again = drain(&mut bridge, 20);
    for topic in &configs {
        assert!(topics(&again).contains(topic), "{topic} not republished");
    }
    assert!(
        find(&again, "sensor-hub/n/device/1/state").is_some(),
        "state again"
    );
    assert_eq!(
        bridge.handle_message("homeassistant/status", b"offline", 30),
        None
    );
    assert_eq!(drain(&mut bridge, 30), []);

    bridge.handle_disconnected();
    bridge.handle_event(&readings(1, &[(0, 25.0)]), 40);
    assert_eq!(bridge.poll_publish(40), None);
    bridge.handle_connected(50);
    let reconnected = drain(&mut bridge, 50);
    assert_eq!(reconnected[0].topic, "sensor-hub/n/status");
    for topic in &configs {
        assert!(
            topics(&reconnected).contains(topic),
            "{topic} not republished"
        );
    }
    let state = find(&reconnected, "sensor-hub/n/device/1/state").expect("state");
    assert_eq!(text(state), r#"{"temperature":25.0}"#);
}

fn record(id: CommandId, state: CommandState) -> CommandRecord {
    CommandRecord {
        id,
        device: 1,
        body: CommandBody::Identify,
        state,
        detail: None,
        origin: CommandOrigin::default(),
        created_ms: 0,
        updated_ms: 0,
        deadline_mono_ms: 0,
    }
}

#[test]
fn commands_are_refused_unless_enabled() {
    let (mut bridge, _) = connected(false, &[device(1, true, DeviceStatus::Online)]);
    assert_eq!(
        bridge.handle_message("sensor-hub/n/device/1/identify/press", b"PRESS", 1),
        None
    );
    assert_eq!(
        bridge.counters().commands[CommandOutcome::Disabled as usize],
        1
    );
    assert_eq!(drain(&mut bridge, 1), []);
    assert_eq!(bridge.subscriptions(), ["homeassistant/status"]);
}

#[test]
fn commands_from_mqtt_become_requests_and_their_statuses_come_back() {
    let (mut bridge, _) = connected(true, &[device(1, true, DeviceStatus::Online)]);
    assert_eq!(
        bridge.subscriptions(),
        ["homeassistant/status", "sensor-hub/n/device/+/#"]
    );
    let request = bridge
        .handle_message(
            "sensor-hub/n/device/1/command",
            br#"{"kind": "set_interval", "ms": 500, "id": "r1", "wait": true}"#,
            1,
        )
        .expect("a request");
    assert_eq!(request.body, CommandBody::SetInterval { ms: 500 });
    assert!(request.wait);
    assert_eq!(request.request_id, Some(json!("r1")));
    bridge.handle_submitted(request, Some(record(7, CommandState::Queued)));
    bridge.handle_event(
        &Event::CommandStatus(Box::new(record(7, CommandState::Sent))),
        2,
    );
    bridge.handle_event(
        &Event::CommandStatus(Box::new(record(7, CommandState::Succeeded))),
        3,
    );
    // Someone else's command: not ours to report.
    bridge.handle_event(
        &Event::CommandStatus(Box::new(record(8, CommandState::Succeeded))),
        4,
    );
    let results = drain(&mut bridge, 4);
    let states: Vec<serde_json::Value> = results
        .iter()
        .map(|p| {
            assert_eq!(p.topic, "sensor-hub/n/device/1/command/result");
            assert!(!p.retain);
            serde_json::from_slice(&p.payload).expect("json")
        })
        .collect();
    assert_eq!(states.len(), 3, "{states:?}");
    assert_eq!(states[0]["state"], "queued");
    assert_eq!(states[2]["state"], "succeeded");
    assert!(states
        .iter()
        .all(|s| s["id"] == "r1" && s["command_id"] == 7));
    assert_eq!(
        bridge.counters().commands[CommandOutcome::Submitted as usize],
        1
    );

    let press = bridge
        .handle_message("sensor-hub/n/device/1/reboot/press", b"PRESS", 5)
        .expect("a request");
    assert_eq!(press.body, CommandBody::Reboot);
    let interval = bridge
        .handle_message("sensor-hub/n/device/1/interval/set", b"250.0", 5)
        .expect("a request");
    assert_eq!(interval.body, CommandBody::SetInterval { ms: 250 });
}

#[test]
fn bad_command_requests_get_a_rejected_result_and_are_counted() {
    let (mut bridge, _) = connected(true, &[device(1, true, DeviceStatus::Online)]);
    for (topic, payload) in [
        ("sensor-hub/n/device/1/command", &b"not json"[..]),
        ("sensor-hub/n/device/1/command", br#"{"kind": 5, "id": 9}"#),
        (
            "sensor-hub/n/device/1/command",
            br#"{"kind": "identify", "wait": "yes"}"#,
        ),
        ("sensor-hub/n/device/1/interval/set", b"0"),
        ("sensor-hub/n/device/1/interval/set", b"86400001"),
        ("sensor-hub/n/device/1/interval/set", b"1.5"),
    ] {
        assert_eq!(
            bridge.handle_message(topic, payload, 1),
            None,
            "{topic} {payload:?}"
        );
    }
    assert_eq!(
        bridge.counters().commands[CommandOutcome::Invalid as usize],
        6
    );
    let request = bridge
        .handle_message(
            "sensor-hub/n/device/99/command",
            br#"{"kind": "identify"}"#,
            1,
        )
        .expect("parses");
    bridge.handle_submitted(request, None);
    assert_eq!(
        bridge.counters().commands[CommandOutcome::UnknownDevice as usize],
        1
    );
    // max_results is 4: the oldest three of seven were dropped, counted.
    let results = drain(&mut bridge, 1);
    assert_eq!(results.len(), 4);
    assert_eq!(bridge.counters().dropped_results_full, 3);
    for result in &results {
        let v: serde_json::Value = serde_json::from_slice(&result.payload).expect("json");
        assert_eq!(v["state"], "rejected", "{v}");
        assert!(v["detail"].as_str().is_some_and(|d| !d.is_empty()), "{v}");
    }
    let unknown: serde_json::Value = serde_json::from_slice(&results[3].payload).expect("json");
    assert_eq!(unknown["device"], 99);
    assert_eq!(unknown["command_id"], serde_json::Value::Null);
    // Topics not ours, or our own echoes, are ignored.
    assert_eq!(
        bridge.handle_message("sensor-hub/n/device/1/state", b"{}", 2),
        None
    );
    assert_eq!(
        bridge.handle_message("sensor-hub/n/device/1/other", b"", 2),
        None
    );
    assert_eq!(bridge.counters().ignored_messages, 1);
}

#[test]
fn the_hub_figures_go_out_every_interval() {
    let (mut bridge, first) = connected(false, &[]);
    assert!(find(&first, "sensor-hub/n/hub").is_some());
    assert!(!bridge.hub_due(5_000));
    assert!(bridge.hub_due(10_000));
    bridge.handle_hub_figures(HubFigures {
        datagrams_per_s: 12.345,
        devices: 3,
        devices_online: 2,
        datagrams_dropped: 7,
    });
    let next = drain(&mut bridge, 10_000);
    let v: serde_json::Value =
        serde_json::from_slice(&find(&next, "sensor-hub/n/hub").expect("hub").payload)
            .expect("json");
    assert_eq!(v["datagrams_per_s"], 12.35);
    assert_eq!(v["devices_online"], 2);
    assert_eq!(v["datagrams_dropped"], 7);
}

#[test]
fn after_a_gap_the_fleet_brings_the_newest_values() {
    let (mut bridge, _) = connected(false, &[device(1, true, DeviceStatus::Online)]);
    bridge.handle_event(&readings(1, &[(0, 20.0)]), 10);
    drain(&mut bridge, 10);
    // Readings were missed; the fleet as read now has the newest.
    bridge.handle_stream_gap();
    let mut now = device(1, true, DeviceStatus::Online);
    now.sensors[0].value = Some(Value::F32(30.0));
    bridge.handle_catalog(&[now.clone()], 2_000);
    let published = drain(&mut bridge, 2_000);
    assert_eq!(
        text(find(&published, "sensor-hub/n/device/1/state").expect("state")),
        r#"{"temperature":30.0}"#
    );
    // The same fleet again changes nothing.
    bridge.handle_catalog(&[now], 4_000);
    assert_eq!(drain(&mut bridge, 4_000), []);
}

#[test]
fn a_stream_gap_asks_for_the_fleet_again() {
    let (mut bridge, _) = connected(false, &[]);
    assert!(!bridge.catalog_wanted());
    bridge.handle_stream_gap();
    assert!(bridge.catalog_wanted());
    assert_eq!(bridge.counters().stream_gaps, 1);
    // A reading from a device it has not seen asks too.
    bridge.handle_catalog(&[], 0);
    bridge.handle_event(&readings(5, &[(0, 1.0)]), 0);
    assert!(bridge.catalog_wanted());
}

#[test]
fn home_assistant_births_cannot_amplify_a_flood() {
    let (mut bridge, _) = connected(false, &[device(1, true, DeviceStatus::Online)]);
    assert_eq!(
        bridge.handle_message("homeassistant/status", b"online", 100),
        None
    );
    bridge.handle_hub_figures(HubFigures::default());
    let first = drain(&mut bridge, 100);
    assert!(first.len() > 3, "republished: {first:?}");
    // A hundred more within the interval: one more republish, when it ends.
    for t in 0..100 {
        bridge.handle_message("homeassistant/status", b"online", 200 + t);
    }
    assert_eq!(drain(&mut bridge, 1_000), []);
    assert_eq!(bridge.poll_timeout(), Some(100 + BIRTH_MIN_INTERVAL_MS));
    let mut second = drain(&mut bridge, 100 + BIRTH_MIN_INTERVAL_MS);
    // The hub's figures were due again at the republish: given, they follow.
    assert!(bridge.hub_due(100 + BIRTH_MIN_INTERVAL_MS));
    bridge.handle_hub_figures(HubFigures::default());
    second.extend(drain(&mut bridge, 100 + BIRTH_MIN_INTERVAL_MS));
    assert_eq!(topics(&second), topics(&first));
}

#[test]
fn another_hubs_devices_are_left_to_its_own_bridge() {
    let (mut bridge, _) = connected(false, &[device(1, true, DeviceStatus::Online)]);
    assert!(!bridge.catalog_wanted());
    // A cluster's stream brings device 9, which another hub holds.
    bridge.handle_event(&readings(9, &[(0, 20.0)]), 2_000);
    bridge.handle_event(
        &Event::DeviceStatus {
            device: 9,
            status: DeviceStatus::Online,
            previous: None,
            at_ms: 0,
        },
        2_000,
    );
    assert!(bridge.catalog_wanted(), "it may be new here: ask once");
    assert!(
        drain(&mut bridge, 2_000).is_empty(),
        "nothing of it goes out"
    );
    bridge.handle_catalog(&[device(1, true, DeviceStatus::Online)], 2_000);
    // Known as another hub's now: its readings ask for nothing more.
    bridge.handle_event(&readings(9, &[(0, 21.0)]), 3_000);
    assert!(!bridge.catalog_wanted());
    assert!(topics(&drain(&mut bridge, 3_000))
        .iter()
        .all(|t| !t.contains("/device/9/")));
    // It moves here: listed by the next catalog, it is published.
    bridge.handle_event(
        &Event::DeviceStatus {
            device: 9,
            status: DeviceStatus::Online,
            previous: None,
            at_ms: 0,
        },
        4_000,
    );
    assert!(bridge.catalog_wanted());
    bridge.handle_catalog(
        &[
            device(1, true, DeviceStatus::Online),
            device(9, true, DeviceStatus::Online),
        ],
        4_000,
    );
    assert!(topics(&drain(&mut bridge, 4_000))
        .iter()
        .any(|t| t.contains("/device/9/")));
}
