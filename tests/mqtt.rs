//! The MQTT bridge against a real Mosquitto broker, checked against
//! docs/MQTT.md: Home Assistant discovery configs, states and
//! availability (retained), the hub's last will, commands from MQTT (and
//! none when they are off), a broker outage under load, Home Assistant's
//! birth message, and a forgotten device's removal. The `broker_` tests
//! check the harness itself (tests/mqtt_support): the broker, its
//! password, retained messages and a restart on the same port.
//!
//! Each test runs its own broker (Mosquitto, Debian package `mosquitto`)
//! and its own hub, with a node id of its own.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod mqtt_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mqtt_support::{Broker, Message, Probe};
use serde_json::Value as Json;
use support::*;

/// The fleet token the simulated devices say hello with.
const FLEET_TOKEN: &str = "mqtt-test-fleet-token-0123456789";
/// The simulated fleet's seed: device 1 declares temperature (°C),
/// humidity (%) and pressure (hPa); device 2 temperature, co2 (ppm, i32)
/// and motion (bool, no unit); device 3 temperature, humidity and battery
/// (V).
const SIM_SEED: u64 = 11;
/// Home Assistant's discovery prefix (the default).
const P: &str = "homeassistant";
/// What every probe of the bridge tests subscribes to.
const ALL: [&str; 2] = ["homeassistant/#", "sensor-hub/#"];
/// The hub's version, announced in `origin.sw_version`.
const HUB_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The keys of the hub's own sensors (`T/hub`).
const HUB_KEYS: [&str; 3] = ["datagrams_per_s", "devices_online", "datagrams_dropped"];

const SECONDS_10: Duration = Duration::from_secs(10);
const SECONDS_15: Duration = Duration::from_secs(15);
const SECONDS_20: Duration = Duration::from_secs(20);

// --- the harness ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_delivers_retained_messages_to_authenticated_clients() {
    let broker = Broker::start();
    assert_ne!(broker.port(), 0);
    let publisher = Probe::connect(&broker, "publisher", &[]).await;
    publisher
        .publish("selftest/retained", "kept for later", true)
        .await;
    publisher.publish("selftest/live", "gone", false).await;
    // Subscribing after the publish: only the retained one is delivered,
    // flagged as retained, and it is there once connect returns.
    let reader = Probe::connect(&broker, "reader", &["selftest/#"]).await;
    let retained = reader
        .latest("selftest/retained")
        .unwrap_or_else(|| panic!("no retained message after subscribing\n{}", reader.report()));
    assert_eq!(retained.text(), "kept for later");
    assert!(retained.retain, "{retained:?}");
    assert!(
        reader.latest("selftest/live").is_none(),
        "{}",
        reader.report()
    );
    // A live message is delivered with the retain flag clear.
    publisher.publish("selftest/retained", "now", true).await;
    let live = reader
        .wait_for("the second publish", SECONDS_10, |m| m.text() == "now")
        .await;
    assert!(!live.retain, "{live:?}");
    reader.clear();
    assert!(reader.messages().is_empty());
    publisher.disconnect().await;
    reader.disconnect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_refuses_a_wrong_password() {
    let broker = Broker::start();
    let refused = Probe::connect_as(&broker, "intruder", broker.user(), "wrong password", &["#"])
        .await
        .map(|_| ())
        .expect_err("the broker accepted a wrong password");
    assert!(
        matches!(
            *refused,
            rumqttc::ConnectionError::ConnectionRefused(
                rumqttc::ConnectReturnCode::NotAuthorized
                    | rumqttc::ConnectReturnCode::BadUserNamePassword
            )
        ),
        "{refused:?}"
    );
    let anonymous = Probe::connect_as(&broker, "anonymous", "", "", &["#"])
        .await
        .map(|_| ())
        .expect_err("the broker accepted an anonymous client");
    assert!(
        matches!(*anonymous, rumqttc::ConnectionError::ConnectionRefused(_)),
        "{anonymous:?}"
    );
    // The right password still works.
    Probe::connect(&broker, "owner", &["#"])
        .await
        .disconnect()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarts_on_the_same_port_and_probes_reconnect() {
    let mut broker = Broker::start();
    let port = broker.port();
    let listener = Probe::connect(&broker, "listener", &["restart/#"]).await;
    listener.publish("restart/kept", "before", true).await;
    assert_eq!(listener.connections(), 1);

    broker.stop();
    assert!(!broker.is_running());
    let deadline = Instant::now() + SECONDS_10;
    while listener.is_connected() {
        assert!(
            Instant::now() < deadline,
            "the probe did not notice the broker stopped\n{}",
            listener.report()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.start_again();
    assert_eq!(broker.port(), port, "same port after a restart");
    assert!(broker.is_running());

    let deadline = Instant::now() + SECONDS_15;
    while listener.connections() < 2 {
        assert!(
            Instant::now() < deadline,
            "the probe did not reconnect\n{}\nbroker log:\n{}",
            listener.report(),
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // No persistence: the retained message is gone.
    let fresh = Probe::connect(&broker, "fresh", &["restart/#"]).await;
    assert!(fresh.latest("restart/kept").is_none(), "{}", fresh.report());
    // The reconnected probe subscribed again and receives.
    listener.sync().await;
    fresh.publish("restart/after", "after", false).await;
    listener
        .wait_for("a message after the restart", SECONDS_10, |m| {
            m.topic == "restart/after" && m.text() == "after"
        })
        .await;
}

// --- helpers ----------------------------------------------------------------------

/// `T`: the hub's own topics for `node`.
fn base(node: &str) -> String {
    format!("sensor-hub/{node}")
}

/// The bridge's settings for `broker` as environment overrides, plus
/// `extra`.
fn bridge_env(broker: &Broker, node: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("SENSOR_HUB__MQTT__ENABLED", "true".to_string()),
        ("SENSOR_HUB__MQTT__HOST", broker.host().to_string()),
        ("SENSOR_HUB__MQTT__PORT", broker.port().to_string()),
        ("SENSOR_HUB__MQTT__USERNAME", broker.user().to_string()),
        ("SENSOR_HUB__MQTT__PASSWORD", broker.password().to_string()),
        ("SENSOR_HUB__MQTT__NODE_ID", node.to_string()),
        ("SENSOR_HUB__MQTT__MIN_INTERVAL_MS", "200".to_string()),
        ("SENSOR_HUB__MQTT__HUB_INTERVAL_MS", "500".to_string()),
        // The smallest keep-alive the configuration accepts.
        ("SENSOR_HUB__MQTT__KEEP_ALIVE_S", "5".to_string()),
        ("SENSOR_HUB__CONTROL__FLEET_TOKEN", FLEET_TOKEN.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in extra {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

/// A hub in this test's runtime whose bridge talks to `broker`.
async fn bridged_hub(broker: &Broker, node: &str, extra: &[(&str, &str)]) -> TestHub {
    let env = bridge_env(broker, node, extra);
    let refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    start_hub(&refs).await
}

/// Polls `check` every 50 ms until it holds, for up to `deadline`.
async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + deadline;
    while !check().await {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every device of `/api/devices`.
async fn devices(hub: &TestHub) -> Vec<Json> {
    let (status, body) = hub.get("/api/devices").await;
    assert_eq!(status, 200, "{body}");
    let v: Json = serde_json::from_str(&body).unwrap();
    v["devices"].as_array().unwrap().clone()
}

async fn device(hub: &TestHub, id: u64) -> Option<Json> {
    devices(hub).await.into_iter().find(|d| d["id"] == id)
}

/// Waits until devices 1..=`n` have a control session, declared their
/// sensors and sent readings; returns them.
async fn fleet_ready(hub: &TestHub, n: u64) -> Vec<Json> {
    wait_until(
        &format!("{n} simulated devices connected with declared sensors and values"),
        SECONDS_15,
        || async {
            let all = devices(hub).await;
            (1..=n).all(|id| {
                all.iter().any(|d| {
                    d["id"] == id
                        && d["connected"] == true
                        && d["sensors"].as_array().is_some_and(|s| {
                            !s.is_empty()
                                && s.iter()
                                    .all(|s| s["name"].is_string() && !s["value"].is_null())
                        })
                })
            })
        },
    )
    .await;
    let all = devices(hub).await;
    (1..=n)
        .map(|id| all.iter().find(|d| d["id"] == id).unwrap().clone())
        .collect()
}

/// A sample of /metrics as a whole number. A labelled series that does not
/// exist yet reads 0 (as Prometheus sees it) provided its family is
/// declared; an unlabelled one must exist.
async fn metric(hub: &TestHub, series: &str) -> u64 {
    let (status, text) = hub.get("/metrics").await;
    assert_eq!(status, 200, "{text}");
    if let Some(value) = text
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    {
        let value: f64 = value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{series}: not a number: {value}"));
        return value as u64;
    }
    let family = series.split('{').next().unwrap().trim_end_matches("_total");
    assert!(
        series.contains('{') && text.contains(&format!("# TYPE {family} ")),
        "{series} not in /metrics:\n{text}"
    );
    0
}

/// A sensor's key in states and value templates (docs/MQTT.md): its name
/// lowercased with every character outside `[a-z0-9_]` replaced by `_`,
/// or `ch<channel>` without a name; a key two sensors share gets
/// `_ch<channel>` appended for each. By channel.
fn sensor_keys(sensors: &[Json]) -> BTreeMap<u64, String> {
    let plain: Vec<(u64, String)> = sensors
        .iter()
        .map(|s| {
            let channel = s["channel"].as_u64().unwrap();
            let key = match s["name"].as_str() {
                Some(name) => name
                    .to_lowercase()
                    .chars()
                    .map(|c| {
                        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect(),
                None => format!("ch{channel}"),
            };
            (channel, key)
        })
        .collect();
    plain
        .iter()
        .map(|(channel, key)| {
            let shared = plain.iter().filter(|(_, k)| k == key).count() > 1;
            let key = if shared {
                format!("{key}_ch{channel}")
            } else {
                key.clone()
            };
            (*channel, key)
        })
        .collect()
}

/// The `device_class` docs/MQTT.md's table gives a sensor, if any.
fn device_class(name: &str, unit: &str) -> Option<&'static str> {
    let name = name.to_lowercase();
    let named = |words: &[&str]| words.iter().any(|w| name.contains(w));
    match unit {
        "°C" | "°F" | "K" => Some("temperature"),
        "%" if named(&["humid"]) => Some("humidity"),
        "%" if named(&["batt"]) => Some("battery"),
        "hPa" | "Pa" | "kPa" | "bar" | "mbar" | "psi" | "mmHg" | "inHg" => Some("pressure"),
        "V" | "mV" => Some("voltage"),
        "A" | "mA" => Some("current"),
        "W" | "kW" => Some("power"),
        "Wh" | "kWh" => Some("energy"),
        "lx" => Some("illuminance"),
        "ppm" if named(&["co2"]) => Some("carbon_dioxide"),
        "µg/m³" if named(&["pm2", "pm25"]) => Some("pm25"),
        "µg/m³" if named(&["pm10"]) => Some("pm10"),
        "dB" | "dBA" => Some("sound_pressure"),
        "dBm" => Some("signal_strength"),
        _ => None,
    }
}

/// The topics of an entity's `availability` list.
fn availability_topics(config: &Json) -> BTreeSet<String> {
    config["availability"]
        .as_array()
        .unwrap_or_else(|| panic!("no availability list: {config}"))
        .iter()
        .map(|a| {
            a["topic"]
                .as_str()
                .unwrap_or_else(|| panic!("availability entry without topic: {config}"))
                .to_string()
        })
        .collect()
}

/// The discovery config topic of `device`'s numeric sensor on `channel`.
fn sensor_config_topic(node: &str, device: u64, channel: u64) -> String {
    format!("{P}/sensor/{node}/d{device}_ch{channel}/config")
}

/// Whether a sensor of /api/devices is a boolean (a `binary_sensor`).
fn is_bool(sensor: &Json) -> bool {
    sensor["kind"] == "bool"
}

/// The discovery config topic of `sensor` (as /api/devices shows it):
/// `sensor`, or `binary_sensor` for a boolean.
fn config_topic_of(node: &str, device: u64, sensor: &Json) -> String {
    let channel = sensor["channel"].as_u64().unwrap();
    if is_bool(sensor) {
        format!("{P}/binary_sensor/{node}/d{device}_ch{channel}/config")
    } else {
        sensor_config_topic(node, device, channel)
    }
}

/// The discovery config topics of the hub's own sensors.
fn hub_config_topics(node: &str) -> Vec<String> {
    HUB_KEYS
        .iter()
        .map(|key| format!("{P}/sensor/{node}/hub_{key}/config"))
        .collect()
}

/// Every sensor config topic of `devices` (as /api/devices shows them).
fn device_config_topics(node: &str, devices: &[Json]) -> Vec<String> {
    devices
        .iter()
        .flat_map(|d| {
            let id = d["id"].as_u64().unwrap();
            d["sensors"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |s| config_topic_of(node, id, s))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Waits for a non-empty message on each of `topics`; returns the newest
/// of each.
async fn wait_configs(probe: &Probe, topics: &[String], deadline: Duration) -> Vec<Message> {
    let mut found = Vec::new();
    for topic in topics {
        probe
            .wait_for(&format!("a discovery config on {topic}"), deadline, |m| {
                m.topic == *topic && !m.payload.is_empty()
            })
            .await;
        found.push(probe.latest(topic).unwrap());
    }
    found
}

/// Checks a device sensor's discovery config against docs/MQTT.md.
fn check_sensor_config(node: &str, config: &Message, device: &Json, sensor: &Json, key: &str) {
    let id = device["id"].as_u64().unwrap();
    let channel = sensor["channel"].as_u64().unwrap();
    let t = base(node);
    let c = config.json();
    let context = format!("{}: {c}", config.topic);
    assert_eq!(
        c["unique_id"],
        format!("{node}_d{id}_ch{channel}"),
        "{context}"
    );
    assert_eq!(
        c["state_topic"],
        format!("{t}/device/{id}/state"),
        "{context}"
    );
    if is_bool(sensor) {
        // A binary sensor: Home Assistant's own ON/OFF, no unit or class.
        assert_eq!(
            c["value_template"],
            format!("{{{{ 'ON' if value_json.{key} else 'OFF' }}}}"),
            "{context}"
        );
        assert!(c["state_class"].is_null(), "{context}");
        assert!(c["unit_of_measurement"].is_null(), "{context}");
        check_device_entity(node, &c, device, &context);
        return;
    }
    assert_eq!(
        c["value_template"],
        format!("{{{{ value_json.{key} }}}}"),
        "{context}"
    );
    let unit = sensor["unit"].as_str().unwrap();
    if unit.is_empty() {
        // Assumed: no unit declared, none announced (absent, null or "").
        assert!(
            c["unit_of_measurement"].is_null() || c["unit_of_measurement"] == "",
            "{context}"
        );
    } else {
        assert_eq!(c["unit_of_measurement"], unit, "{context}");
    }
    let name = sensor["name"].as_str().unwrap();
    match device_class(name, unit) {
        Some(class) => assert_eq!(c["device_class"], class, "{context}"),
        None => assert!(
            c["device_class"].is_null(),
            "no device_class fits: {context}"
        ),
    }
    let numeric = matches!(sensor["kind"].as_str(), Some("f32" | "i32"));
    if numeric {
        assert_eq!(c["state_class"], "measurement", "{context}");
    } else {
        // Assumed: a boolean is not a measurement (Home Assistant refuses
        // non-numeric states with a state_class).
        assert!(c["state_class"].is_null(), "not numeric: {context}");
    }
    check_device_entity(node, &c, device, &context);
}

/// What every entity of an adopted device carries: availability, device
/// and origin.
fn check_device_entity(node: &str, c: &Json, device: &Json, context: &str) {
    let id = device["id"].as_u64().unwrap();
    let t = base(node);
    assert_eq!(
        availability_topics(c),
        BTreeSet::from([
            format!("{t}/status"),
            format!("{t}/device/{id}/availability")
        ]),
        "{context}"
    );
    assert_eq!(c["availability_mode"], "all", "{context}");
    let d = &c["device"];
    assert_eq!(
        d["identifiers"],
        serde_json::json!([format!("{node}_d{id}")]),
        "{context}"
    );
    assert_eq!(d["via_device"], format!("{node}_hub"), "{context}");
    let name = device["name"]
        .as_str()
        .map_or(format!("device {id}"), str::to_string);
    assert_eq!(d["name"], name, "{context}");
    assert_eq!(d["sw_version"], device["firmware"], "{context}");
    assert_eq!(d["model"], "sensor-hub device", "{context}");
    assert_eq!(d["manufacturer"], "sensor-hub", "{context}");
    check_origin(c, context);
}

fn check_origin(c: &Json, context: &str) {
    assert_eq!(c["origin"]["name"], "sensor-hub", "{context}");
    assert_eq!(c["origin"]["sw_version"], HUB_VERSION, "{context}");
}

/// Checks the hub's own sensor configs.
fn check_hub_configs(node: &str, configs: &[Message]) {
    let t = base(node);
    for (key, config) in HUB_KEYS.iter().zip(configs) {
        let c = config.json();
        let context = format!("{}: {c}", config.topic);
        assert_eq!(c["unique_id"], format!("{node}_hub_{key}"), "{context}");
        assert_eq!(c["state_topic"], format!("{t}/hub"), "{context}");
        assert_eq!(
            c["value_template"],
            format!("{{{{ value_json.{key} }}}}"),
            "{context}"
        );
        assert_eq!(
            c["device"]["identifiers"],
            serde_json::json!([format!("{node}_hub")]),
            "{context}"
        );
        assert_eq!(
            c["device"]["name"],
            format!("sensor-hub {node}"),
            "{context}"
        );
        // docs/MQTT.md does not say how the hub's own entities give
        // their availability: a list or a single topic, naming T/status.
        let status = format!("{t}/status");
        assert!(
            c["availability_topic"] == status.as_str()
                || (c["availability"].is_array() && availability_topics(&c).contains(&status)),
            "{context}"
        );
        check_origin(&c, &context);
        match *key {
            "datagrams_per_s" => assert_eq!(c["unit_of_measurement"], "datagrams/s", "{context}"),
            "datagrams_dropped" => assert_eq!(c["state_class"], "total_increasing", "{context}"),
            _ => {}
        }
    }
}

/// The state docs/MQTT.md says a device's state topic carries: its latest
/// value per sensor, by key.
fn expected_state(device: &Json) -> BTreeMap<String, Json> {
    let sensors = device["sensors"].as_array().unwrap();
    let keys = sensor_keys(sensors);
    sensors
        .iter()
        .filter(|s| !s["value"].is_null())
        .map(|s| {
            (
                keys[&s["channel"].as_u64().unwrap()].clone(),
                s["value"].clone(),
            )
        })
        .collect()
}

/// Whether a state payload holds exactly `expected` (numbers compared as
/// numbers: `21` and `21.0` are equal).
fn state_matches(state: &Json, expected: &BTreeMap<String, Json>) -> bool {
    let Some(object) = state.as_object() else {
        return false;
    };
    object.len() == expected.len()
        && expected.iter().all(|(key, want)| {
            object
                .get(key)
                .is_some_and(|got| match (got.as_f64(), want.as_f64()) {
                    (Some(a), Some(b)) => a == b,
                    _ => got == want,
                })
        })
}

/// The command kind of a `command/result` (its `kind`, docs/MQTT.md).
fn result_kind(result: &Json) -> Option<&str> {
    result["kind"].as_str()
}

fn is_final(state: &str) -> bool {
    matches!(state, "succeeded" | "failed" | "rejected" | "timed_out")
}

/// Waits for the final result of a command on `topic` that `matches`;
/// returns every result of that command (by `command_id`), in order.
async fn command_results(
    probe: &Probe,
    what: &str,
    topic: &str,
    matches: impl Fn(&Json) -> bool,
) -> Vec<Json> {
    let last = probe
        .wait_for(what, SECONDS_20, |m| {
            m.topic == topic
                && serde_json::from_slice::<Json>(&m.payload)
                    .is_ok_and(|r| matches(&r) && r["state"].as_str().is_some_and(is_final))
        })
        .await
        .json();
    let command_id = last["command_id"].clone();
    probe
        .messages()
        .iter()
        .filter(|m| m.topic == topic)
        .map(Message::json)
        .filter(|r| r["command_id"] == command_id && matches(r))
        .collect()
}

// --- the bridge ----------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_states_and_availability() {
    let broker = Broker::start();
    let node = "t_discovery";
    let t = base(node);
    let probe = Probe::connect(&broker, "probe-live", &ALL).await;
    let hub = bridged_hub(&broker, node, &[]).await;
    let sim = Sim::start(&hub, 2, 200, FLEET_TOKEN, SIM_SEED);
    let fleet = fleet_ready(&hub, 2).await;

    // A config per declared sensor, as documented.
    let mut config_topics = Vec::new();
    for device in &fleet {
        let sensors = device["sensors"].as_array().unwrap();
        assert_eq!(sensors.len(), 3, "{device}");
        let keys = sensor_keys(sensors);
        let id = device["id"].as_u64().unwrap();
        for sensor in sensors {
            let channel = sensor["channel"].as_u64().unwrap();
            let topic = config_topic_of(node, id, sensor);
            let config = wait_configs(&probe, std::slice::from_ref(&topic), SECONDS_15).await;
            check_sensor_config(node, &config[0], device, sensor, &keys[&channel]);
            config_topics.push(topic);
        }
    }
    // The classes this fleet must get (the table, spot-checked by name).
    let class_of = |id: u64, channel: u64| {
        probe
            .latest(&sensor_config_topic(node, id, channel))
            .unwrap()
            .json()["device_class"]
            .clone()
    };
    assert_eq!(class_of(1, 0), "temperature");
    assert_eq!(class_of(1, 1), "humidity");
    assert_eq!(class_of(1, 2), "pressure");
    assert_eq!(class_of(2, 1), "carbon_dioxide");
    // The hub's own sensors.
    let hub_configs = wait_configs(&probe, &hub_config_topics(node), SECONDS_15).await;
    check_hub_configs(node, &hub_configs);
    config_topics.extend(hub_config_topics(node));
    probe
        .wait_latest(
            "the hub's figures, 2 devices online",
            &format!("{t}/hub"),
            SECONDS_15,
            |m| {
                let h = m.json();
                [
                    "datagrams_per_s",
                    "devices",
                    "devices_online",
                    "datagrams_dropped",
                    "mqtt_dropped",
                ]
                .iter()
                .all(|k| h[*k].is_number())
                    && h["devices"] == 2
                    && h["devices_online"] == 2
            },
        )
        .await;

    // Status, availability, interval and states.
    probe
        .wait_latest("the hub online", &format!("{t}/status"), SECONDS_15, |m| {
            m.text() == "online"
        })
        .await;
    for id in [1, 2] {
        probe
            .wait_latest(
                &format!("device {id} online"),
                &format!("{t}/device/{id}/availability"),
                SECONDS_15,
                |m| m.text() == "online",
            )
            .await;
        probe
            .wait_latest(
                &format!("device {id}'s interval"),
                &format!("{t}/device/{id}/interval"),
                SECONDS_15,
                |m| m.text() == "200",
            )
            .await;
        let keys: BTreeSet<String> = expected_state(&fleet[id as usize - 1])
            .into_keys()
            .collect();
        probe
            .wait_for(&format!("device {id}'s state"), SECONDS_15, |m| {
                m.topic == format!("{t}/device/{id}/state")
                    && m.json().as_object().is_some_and(|o| {
                        o.keys().cloned().collect::<BTreeSet<_>>() == keys
                            && o.values().all(|v| v.is_number() || v.is_boolean())
                    })
            })
            .await;
    }

    // All of it retained: a client subscribing now gets it at once.
    let late = Probe::connect(&broker, "probe-late", &ALL).await;
    for topic in &config_topics {
        let kept = late
            .latest(topic)
            .unwrap_or_else(|| panic!("{topic} is not retained\n{}", late.report()));
        assert!(kept.retain, "{kept:?}");
        assert_eq!(kept.json(), probe.latest(topic).unwrap().json(), "{topic}");
    }
    let mut retained_topics = vec![format!("{t}/status")];
    for id in [1, 2] {
        retained_topics.push(format!("{t}/device/{id}/availability"));
        retained_topics.push(format!("{t}/device/{id}/state"));
        retained_topics.push(format!("{t}/device/{id}/interval"));
    }
    for topic in &retained_topics {
        let kept = late
            .latest(topic)
            .unwrap_or_else(|| panic!("{topic} is not retained\n{}", late.report()));
        assert!(kept.retain, "{kept:?}");
    }
    assert_eq!(
        late.latest(&format!("{t}/status")).unwrap().text(),
        "online"
    );
    late.disconnect().await;

    // The devices stop: their last values go out, then they are offline.
    sim.stop().await;
    for id in [1, 2] {
        probe
            .wait_latest(
                &format!("device {id} offline after the fleet stopped"),
                &format!("{t}/device/{id}/availability"),
                SECONDS_15,
                |m| m.text() == "offline",
            )
            .await;
    }
    let fleet = devices(&hub).await;
    for id in [1u64, 2] {
        let device = fleet.iter().find(|d| d["id"] == id).unwrap();
        let expected = expected_state(device);
        assert_eq!(expected.len(), 3, "{device}");
        probe
            .wait_latest(
                &format!("device {id}'s state = the hub's latest values {expected:?}"),
                &format!("{t}/device/{id}/state"),
                SECONDS_10,
                |m| state_matches(&m.json(), &expected),
            )
            .await;
    }

    // The hub stops: it says so itself.
    hub.stop().await;
    probe
        .wait_latest(
            "the hub offline after it stopped",
            &format!("{t}/status"),
            SECONDS_10,
            |m| m.text() == "offline",
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_will_when_the_hub_is_killed() {
    let broker = Broker::start();
    let node = "t_will";
    let status = format!("{}/status", base(node));
    let probe = Probe::connect(&broker, "probe-will", &[&status]).await;

    let dir = TempDir::new("mqtt-will");
    let log_path = dir.path().join("hub.log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_sensor-hub"));
    command
        .arg("run")
        .env("SENSOR_HUB__UDP__BIND", "127.0.0.1:0")
        .env("SENSOR_HUB__CONTROL__BIND", "127.0.0.1:0")
        .env("SENSOR_HUB__HTTP__BIND", "127.0.0.1:0")
        .env("SENSOR_HUB__STORAGE__PATH", dir.path().join("hub.db"))
        .env(
            "SENSOR_HUB__AUTH__CREDENTIALS_PATH",
            dir.path().join("credentials.json"),
        )
        .env(
            "SENSOR_HUB__DEVICES__KEYS_PATH",
            dir.path().join("devices.json"),
        )
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("hub.out")).unwrap())
        .stderr(std::fs::File::create(&log_path).unwrap());
    for (key, value) in bridge_env(&broker, node, &[("SENSOR_HUB__MQTT__KEEP_ALIVE_S", "5")]) {
        command.env(key, value);
    }
    /// Kills the hub if the test fails first.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut hub = Killed(command.spawn().unwrap());
    let hub_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let deadline = Instant::now() + SECONDS_20;
    while probe.latest(&status).map(|m| m.text()).as_deref() != Some("online") {
        assert!(
            Instant::now() < deadline,
            "the hub did not publish {status} online within 20 s\n{}\nhub log:\n{}\nbroker log:\n{}",
            probe.report(),
            hub_log(),
            broker.log()
        );
        assert!(
            hub.0.try_wait().unwrap().is_none(),
            "the hub exited:\n{}",
            hub_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    probe.clear();

    // SIGKILL: the hub says nothing more; the broker publishes its will.
    hub.0.kill().unwrap();
    hub.0.wait().unwrap();
    let deadline = Instant::now() + SECONDS_20;
    while probe.latest(&status).map(|m| m.text()).as_deref() != Some("offline") {
        assert!(
            Instant::now() < deadline,
            "no last will (offline) on {status} within 20 s of killing the hub\n{}\nhub log:\n{}\nbroker log:\n{}",
            probe.report(),
            hub_log(),
            broker.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Retained, so Home Assistant started later sees the hub is gone.
    let late = Probe::connect(&broker, "probe-will-late", &[&status]).await;
    let kept = late
        .latest(&status)
        .unwrap_or_else(|| panic!("the will is not retained\n{}", late.report()));
    assert_eq!(kept.text(), "offline");
    assert!(kept.retain, "{kept:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_from_mqtt() {
    let broker = Broker::start();
    let node = "t_commands";
    let t = base(node);
    let probe = Probe::connect(&broker, "probe-commands", &ALL).await;
    let hub = bridged_hub(&broker, node, &[("SENSOR_HUB__MQTT__COMMANDS", "true")]).await;
    let sim = Sim::start(&hub, 1, 1_000, FLEET_TOKEN, SIM_SEED);
    let fleet = fleet_ready(&hub, 1).await;
    let device1 = &fleet[0];

    // With commands on: identify and reboot buttons and an interval number.
    let entity = |component: &'static str, command_topic: String| {
        let probe = &probe;
        async move {
            probe
                .wait_for(
                    &format!("a {component} config commanding {command_topic}"),
                    SECONDS_15,
                    |m| {
                        m.topic.starts_with(&format!("{P}/{component}/{node}/"))
                            && m.topic.ends_with("/config")
                            && !m.payload.is_empty()
                            && m.json()["command_topic"] == command_topic
                    },
                )
                .await
        }
    };
    let identify = entity("button", format!("{t}/device/1/identify/press")).await;
    let reboot = entity("button", format!("{t}/device/1/reboot/press")).await;
    let interval = entity("number", format!("{t}/device/1/interval/set")).await;
    for (m, class) in [(&identify, "identify"), (&reboot, "restart")] {
        let c = m.json();
        let context = format!("{}: {c}", m.topic);
        assert_eq!(c["device_class"], class, "{context}");
        check_device_entity(node, &c, device1, &context);
    }
    let c = interval.json();
    let context = format!("{}: {c}", interval.topic);
    assert_eq!(c["min"], 1, "{context}");
    assert_eq!(c["max"], 86_400_000, "{context}");
    assert_eq!(c["mode"], "box", "{context}");
    assert_eq!(c["entity_category"], "config", "{context}");
    assert_eq!(c["unit_of_measurement"], "ms", "{context}");
    assert_eq!(
        c["state_topic"],
        format!("{t}/device/1/interval"),
        "{context}"
    );
    check_device_entity(node, &c, device1, &context);

    // A command as in the WebSocket API, with an id.
    let mut ws = subscribed_client(&hub).await;
    let results = format!("{t}/device/1/command/result");
    probe
        .publish(
            &format!("{t}/device/1/command"),
            r#"{"kind":"identify","id":"req-1"}"#,
            false,
        )
        .await;
    let identified = command_results(&probe, "identify req-1 finished", &results, |r| {
        r["id"] == "req-1"
    })
    .await;
    let states: Vec<&str> = identified
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.last(), Some(&"succeeded"), "{identified:?}");
    assert!(
        !states
            .iter()
            .any(|s| matches!(*s, "failed" | "rejected" | "timed_out")),
        "{identified:?}"
    );
    let command_id = identified[0]["command_id"].clone();
    for r in &identified {
        assert!(r["command_id"].is_u64(), "{r}");
        assert_eq!(r["command_id"], command_id, "{identified:?}");
        assert_eq!(r["device"], 1, "{r}");
        assert_eq!(result_kind(r), Some("identify"), "{r}");
        assert!(
            r.get("detail").is_some(),
            "every result has a detail field: {r}"
        );
    }
    // The dashboard sees the same command (not its own: no id).
    let end = Instant::now() + SECONDS_15;
    loop {
        assert!(
            Instant::now() < end,
            "no command_status succeeded for command {command_id} on the WebSocket"
        );
        let msg = next_json(&mut ws).await;
        if msg["type"] == "command_status" && msg["command_id"] == command_id {
            assert_eq!(msg["device"], 1, "{msg}");
            assert_eq!(msg["kind"], "identify", "{msg}");
            assert!(msg["id"].is_null(), "not this client's command: {msg}");
            if msg["state"] == "succeeded" {
                break;
            }
        }
    }
    drop(ws);

    // The number: a new interval.
    probe
        .publish(&format!("{t}/device/1/interval/set"), "500", false)
        .await;
    let set = command_results(
        &probe,
        "set_interval from interval/set finished",
        &results,
        |r| result_kind(r) == Some("set_interval"),
    )
    .await;
    assert_eq!(set.last().unwrap()["state"], "succeeded", "{set:?}");
    wait_until("device 1's interval is 500 ms", SECONDS_15, || async {
        device(&hub, 1)
            .await
            .is_some_and(|d| d["interval_ms"] == 500)
    })
    .await;
    probe
        .wait_latest(
            "the new interval published",
            &format!("{t}/device/1/interval"),
            SECONDS_15,
            |m| m.text() == "500",
        )
        .await;

    // The reboot button.
    probe
        .publish(&format!("{t}/device/1/reboot/press"), "PRESS", false)
        .await;
    let rebooted = command_results(&probe, "reboot from reboot/press finished", &results, |r| {
        result_kind(r) == Some("reboot")
    })
    .await;
    assert_eq!(
        rebooted.last().unwrap()["state"],
        "succeeded",
        "{rebooted:?}"
    );

    // What cannot be used is rejected, said and counted.
    probe
        .publish(&format!("{t}/device/1/command"), "not json", false)
        .await;
    let invalid = probe
        .wait_for("a rejection of `not json`", SECONDS_15, |m| {
            m.topic == results && m.json()["state"] == "rejected"
        })
        .await
        .json();
    assert!(
        invalid["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{invalid}"
    );
    let unknown_results = format!("{t}/device/999/command/result");
    probe
        .publish(
            &format!("{t}/device/999/command"),
            r#"{"kind":"identify","id":"req-unknown"}"#,
            false,
        )
        .await;
    let unknown = probe
        .wait_for("a rejection for unknown device 999", SECONDS_15, |m| {
            m.topic == unknown_results && m.json()["state"] == "rejected"
        })
        .await
        .json();
    assert_eq!(unknown["id"], "req-unknown", "{unknown}");
    assert_eq!(unknown["device"], 999, "{unknown}");
    assert!(
        unknown["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{unknown}"
    );
    for (outcome, count) in [("submitted", 3), ("invalid", 1), ("unknown_device", 1)] {
        let series = format!("sensor_hub_mqtt_commands_total{{outcome=\"{outcome}\"}}");
        wait_until(&format!("{series} = {count}"), SECONDS_10, || async {
            metric(&hub, &series).await == count
        })
        .await;
    }
    let stats = sim.stop().await;
    assert_eq!(
        stats.commands_received, 3,
        "identify, set_interval and reboot reached the device, nothing else"
    );
    assert_eq!(stats.reboots, 1);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_are_ignored_when_disabled() {
    let broker = Broker::start();
    let node = "t_commands_off";
    let t = base(node);
    let probe = Probe::connect(&broker, "probe-commands-off", &ALL).await;
    let hub = bridged_hub(&broker, node, &[]).await;
    let sim = Sim::start(&hub, 1, 1_000, FLEET_TOKEN, SIM_SEED);
    let fleet = fleet_ready(&hub, 1).await;
    wait_configs(&probe, &device_config_topics(node, &fleet), SECONDS_15).await;
    probe
        .wait_latest(
            "device 1 online",
            &format!("{t}/device/1/availability"),
            SECONDS_15,
            |m| m.text() == "online",
        )
        .await;

    probe
        .publish(
            &format!("{t}/device/1/command"),
            r#"{"kind":"set_interval","ms":500,"id":"req-off"}"#,
            false,
        )
        .await;
    probe
        .publish(&format!("{t}/device/1/interval/set"), "500", false)
        .await;
    probe
        .publish(&format!("{t}/device/1/identify/press"), "PRESS", false)
        .await;
    probe
        .publish(&format!("{t}/device/1/reboot/press"), "PRESS", false)
        .await;
    // Give a bridge that wrongly listened time to act.
    tokio::time::sleep(Duration::from_secs(2)).await;
    probe.sync().await;

    let d = device(&hub, 1).await.unwrap();
    assert_eq!(d["interval_ms"], 1_000, "{d}");
    assert_eq!(d["connected"], true, "{d}");
    assert_eq!(
        metric(&hub, "sensor_hub_control_sessions_opened_total").await,
        1,
        "no reboot"
    );
    let seen = probe.messages();
    assert!(
        !seen.iter().any(|m| m.topic.ends_with("/command/result")),
        "results with commands off:\n{}",
        probe.report()
    );
    // No buttons, no number: neither announced live nor retained.
    let late = Probe::connect(&broker, "probe-commands-off-late", &ALL).await;
    for m in seen.iter().chain(late.messages().iter()) {
        assert!(
            !m.topic.starts_with(&format!("{P}/button/"))
                && !m.topic.starts_with(&format!("{P}/number/")),
            "announced with commands off: {} {}",
            m.topic,
            m.text()
        );
    }
    let stats = sim.stop().await;
    assert_eq!(stats.commands_received, 0);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_under_load() {
    let mut broker = Broker::start();
    let node = "t_outage";
    let t = base(node);
    let probe = Probe::connect(&broker, "probe-outage", &ALL).await;
    let hub = bridged_hub(&broker, node, &[]).await;
    let sim = Sim::start(&hub, 3, 50, FLEET_TOKEN, SIM_SEED);
    let fleet = fleet_ready(&hub, 3).await;
    let mut config_topics = device_config_topics(node, &fleet);
    assert_eq!(config_topics.len(), 9);
    config_topics.extend(hub_config_topics(node));
    wait_configs(&probe, &config_topics, SECONDS_15).await;
    for id in 1..=3 {
        probe
            .wait_for(&format!("device {id}'s state"), SECONDS_15, |m| {
                m.topic == format!("{t}/device/{id}/state")
            })
            .await;
    }
    wait_until("sensor_hub_mqtt_connected = 1", SECONDS_10, || async {
        metric(&hub, "sensor_hub_mqtt_connected").await == 1
    })
    .await;
    let mut ws = subscribed_client(&hub).await;

    // The broker goes away for 10 s; the devices keep sending.
    let outage = Instant::now();
    let stopped_at_ms = sensor_hub::clock::wall_ms();
    broker.stop();
    wait_until("sensor_hub_mqtt_connected = 0", SECONDS_15, || async {
        metric(&hub, "sensor_hub_mqtt_connected").await == 0
    })
    .await;
    let accepted_before = metric(&hub, "sensor_hub_udp_datagrams_accepted_total").await;
    // The dashboard keeps getting readings of every device.
    let mut live: BTreeSet<u64> = BTreeSet::new();
    let end = Instant::now() + SECONDS_10;
    while live.len() < 3 {
        assert!(
            Instant::now() < end,
            "WebSocket readings during the outage only from {live:?}"
        );
        let msg = next_json(&mut ws).await;
        if msg["type"] == "readings" {
            for d in msg["datagrams"].as_array().unwrap() {
                if d["received_ms"].as_u64().unwrap() > stopped_at_ms {
                    live.insert(d["device"].as_u64().unwrap());
                }
            }
        }
    }
    let (status, body) = hub.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(outage.elapsed())).await;
    let accepted_after = metric(&hub, "sensor_hub_udp_datagrams_accepted_total").await;
    // 3 devices at 20 datagrams/s for several seconds: hundreds.
    assert!(
        accepted_after >= accepted_before + 30,
        "ingest during the outage: {accepted_before} -> {accepted_after}"
    );
    let (status, body) = hub.get("/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(metric(&hub, "sensor_hub_mqtt_connected").await, 0);
    // The hub view's figures say so, and why.
    let (_, body) = hub.get("/api/hub").await;
    let mqtt = serde_json::from_str::<Json>(&body).unwrap()["mqtt"].clone();
    assert_eq!(mqtt["state"], "connecting", "{mqtt}");
    assert!(
        mqtt["last_error"].as_str().is_some_and(|e| !e.is_empty()),
        "{mqtt}"
    );
    drop(ws);

    // The broker is back, empty (no persistence): the hub reconnects and
    // publishes everything again.
    probe.clear();
    broker.start_again();
    wait_until(
        "the bridge reconnected (sensor_hub_mqtt_connected = 1)",
        Duration::from_secs(45),
        || async { metric(&hub, "sensor_hub_mqtt_connected").await == 1 },
    )
    .await;
    wait_configs(&probe, &config_topics, SECONDS_20).await;
    probe
        .wait_latest(
            "the hub online again",
            &format!("{t}/status"),
            SECONDS_20,
            |m| m.text() == "online",
        )
        .await;
    for id in 1..=3 {
        probe
            .wait_latest(
                &format!("device {id} online again"),
                &format!("{t}/device/{id}/availability"),
                SECONDS_20,
                |m| m.text() == "online",
            )
            .await;
        probe
            .wait_for(&format!("device {id}'s state again"), SECONDS_20, |m| {
                m.topic == format!("{t}/device/{id}/state") && !m.payload.is_empty()
            })
            .await;
    }
    // Retained again: a client new after the restart gets it all at once.
    let fresh = Probe::connect(&broker, "probe-after-outage", &ALL).await;
    let mut retained_topics = config_topics.clone();
    retained_topics.push(format!("{t}/status"));
    for id in 1..=3 {
        retained_topics.push(format!("{t}/device/{id}/availability"));
        retained_topics.push(format!("{t}/device/{id}/state"));
    }
    for topic in &retained_topics {
        let kept = fresh.latest(topic).unwrap_or_else(|| {
            panic!("{topic} not retained after the restart\n{}", fresh.report())
        });
        assert!(kept.retain && !kept.payload.is_empty(), "{kept:?}");
    }
    assert_eq!(
        fresh.latest(&format!("{t}/status")).unwrap().text(),
        "online"
    );

    assert!(metric(&hub, "sensor_hub_mqtt_reconnects_total").await >= 1);
    assert_eq!(metric(&hub, "sensor_hub_mqtt_connected").await, 1);
    let (_, body) = hub.get("/api/hub").await;
    let mqtt = serde_json::from_str::<Json>(&body).unwrap()["mqtt"].clone();
    assert_eq!(mqtt["state"], "connected", "{mqtt}");
    assert_eq!(
        mqtt["broker"],
        format!("127.0.0.1:{}", broker.port()),
        "{mqtt}"
    );
    assert!(
        mqtt["reconnects"].as_u64().is_some_and(|n| n >= 1),
        "{mqtt}"
    );
    assert_eq!(
        metric(
            &hub,
            "sensor_hub_mqtt_dropped_total{reason=\"results_full\"}"
        )
        .await,
        0
    );
    assert!(
        metric(&hub, "sensor_hub_mqtt_states_coalesced_total").await > 0,
        "20 datagrams/s per device, one state per 200 ms, and an outage: states were coalesced"
    );
    sim.stop().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_birth_republishes_discovery() {
    let broker = Broker::start();
    let node = "t_birth";
    let t = base(node);
    let probe = Probe::connect(&broker, "probe-birth", &ALL).await;
    let hub = bridged_hub(&broker, node, &[]).await;
    let sim = Sim::start(&hub, 1, 200, FLEET_TOKEN, SIM_SEED);
    let fleet = fleet_ready(&hub, 1).await;
    let mut expected = device_config_topics(node, &fleet);
    expected.extend(hub_config_topics(node));
    wait_configs(&probe, &expected, SECONDS_15).await;
    // Quiet: the device stops, goes offline, its last state goes out.
    sim.stop().await;
    let availability = format!("{t}/device/1/availability");
    let state = format!("{t}/device/1/state");
    probe
        .wait_latest("device 1 offline", &availability, SECONDS_15, |m| {
            m.text() == "offline"
        })
        .await;
    let last = expected_state(&device(&hub, 1).await.unwrap());
    probe
        .wait_latest("device 1's last state", &state, SECONDS_10, |m| {
            state_matches(&m.json(), &last)
        })
        .await;
    probe.sync().await;
    let configs: BTreeMap<String, Json> = probe
        .messages()
        .iter()
        .filter(|m| m.topic.starts_with(&format!("{P}/")) && m.topic.ends_with("/config"))
        .filter(|m| !m.payload.is_empty())
        .map(|m| (m.topic.clone(), m.json()))
        .collect();
    assert!(configs.len() >= expected.len(), "{configs:?}");

    probe.clear();
    probe.publish(&format!("{P}/status"), "online", false).await;
    for (topic, config) in &configs {
        let again = probe
            .wait_for(
                &format!("{topic} again after Home Assistant's birth"),
                SECONDS_15,
                |m| m.topic == *topic && !m.payload.is_empty(),
            )
            .await;
        assert_eq!(again.json(), *config, "{topic}");
    }
    probe
        .wait_for("device 1's availability again", SECONDS_15, |m| {
            m.topic == availability && m.text() == "offline"
        })
        .await;
    probe
        .wait_for("device 1's state again", SECONDS_15, |m| {
            m.topic == state && state_matches(&m.json(), &last)
        })
        .await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forgotten_device_is_removed() {
    let broker = Broker::start();
    let node = "t_forget";
    let t = base(node);
    let probe = Probe::connect(&broker, "probe-forget", &ALL).await;
    let hub = bridged_hub(&broker, node, &[]).await;
    let sim = Sim::start(&hub, 1, 200, FLEET_TOKEN, SIM_SEED);
    let fleet = fleet_ready(&hub, 1).await;
    assert_eq!(
        fleet[0]["adopted"], true,
        "admitted by its hello: {}",
        fleet[0]
    );
    wait_configs(&probe, &device_config_topics(node, &fleet), SECONDS_15).await;
    wait_configs(&probe, &hub_config_topics(node), SECONDS_15).await;
    let availability = format!("{t}/device/1/availability");
    let state = format!("{t}/device/1/state");
    for topic in [&availability, &state] {
        probe
            .wait_for(&format!("a message on {topic}"), SECONDS_15, |m| {
                m.topic == *topic && !m.payload.is_empty()
            })
            .await;
    }
    // Stopped first, so that it does not say hello again once forgotten.
    sim.stop().await;
    probe.sync().await;
    // Every config of device 1, whatever its component.
    let identifier = serde_json::json!([format!("{node}_d1")]);
    let device_configs: BTreeSet<String> = probe
        .messages()
        .iter()
        .filter(|m| m.topic.starts_with(&format!("{P}/")) && m.topic.ends_with("/config"))
        .filter(|m| !m.payload.is_empty() && m.json()["device"]["identifiers"] == identifier)
        .map(|m| m.topic.clone())
        .collect();
    assert_eq!(
        device_configs.len(),
        3,
        "three sensor configs: {device_configs:?}"
    );

    let cookie = owner_cookie(&hub).await;
    let origin = format!("http://{}", hub.http);
    let owner = [
        ("Authorization", ""),
        ("Cookie", cookie.as_str()),
        ("Origin", origin.as_str()),
    ];
    let (response, _) = http_request(hub.http, "DELETE", "/api/devices/1", &owner, None).await;
    assert_eq!(response.status, 204, "{}", response.text());

    let mut removed: Vec<&String> = device_configs.iter().collect();
    removed.push(&availability);
    removed.push(&state);
    for topic in &removed {
        probe
            .wait_latest(
                &format!("{topic} cleared (empty retained payload)"),
                topic,
                SECONDS_15,
                |m| m.payload.is_empty(),
            )
            .await;
    }
    // Gone from the broker; the hub's own configs stay.
    let late = Probe::connect(&broker, "probe-forget-late", &ALL).await;
    for topic in &removed {
        assert!(
            late.latest(topic).is_none(),
            "{topic} still retained\n{}",
            late.report()
        );
    }
    for topic in hub_config_topics(node) {
        assert!(
            late.latest(&topic)
                .is_some_and(|m| m.retain && !m.payload.is_empty()),
            "{topic} should stay\n{}",
            late.report()
        );
    }
    hub.stop().await;
}

/// TLS to the broker with `mqtt.ca_file`: the bridge connects and
/// publishes over it; with a CA that did not sign the broker's
/// certificate it refuses to connect and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_file() {
    let broker = Broker::start_with_tls();
    let node = "t_tls";
    let probe = Probe::connect(&broker, "probe-tls", &["sensor-hub/#"]).await;
    let tls_port = broker.tls_port().to_string();
    let ca = broker.ca_file().display().to_string();
    let hub = bridged_hub(
        &broker,
        node,
        &[
            ("SENSOR_HUB__MQTT__PORT", &tls_port),
            ("SENSOR_HUB__MQTT__TLS", "true"),
            ("SENSOR_HUB__MQTT__CA_FILE", &ca),
        ],
    )
    .await;
    probe
        .wait_latest(
            "the hub online over TLS",
            &format!("{}/status", base(node)),
            SECONDS_15,
            |m| m.text() == "online",
        )
        .await;
    hub.stop().await;

    // Another CA: the broker's certificate is not trusted.
    let other = Broker::start_with_tls();
    let wrong_ca = other.ca_file().display().to_string();
    let hub = bridged_hub(
        &broker,
        "t_tls_wrong",
        &[
            ("SENSOR_HUB__MQTT__PORT", &tls_port),
            ("SENSOR_HUB__MQTT__TLS", "true"),
            ("SENSOR_HUB__MQTT__CA_FILE", &wrong_ca),
        ],
    )
    .await;
    wait_until(
        "the bridge reports the untrusted certificate",
        SECONDS_15,
        || async {
            let (_, body) = hub.get("/api/hub").await;
            let mqtt = serde_json::from_str::<Json>(&body).unwrap()["mqtt"].clone();
            mqtt["state"] == "connecting"
                && mqtt["last_error"]
                    .as_str()
                    .is_some_and(|e| e.to_ascii_lowercase().contains("certificate"))
        },
    )
    .await;
    assert!(probe.latest("sensor-hub/t_tls_wrong/status").is_none());
    hub.stop().await;
}
