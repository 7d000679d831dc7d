//! Home Assistant's MQTT discovery messages, as docs/MQTT.md lays them out:
//! the topics of the bridge, the key of each sensor in a device's state
//! object, the `device_class` a unit suggests, and the retained config
//! payload of every entity (one message per entity, the single-component
//! form every Home Assistant version with MQTT discovery reads). Pure
//! functions of the configuration and a device's description.

use sensor_hub_protocol::control::ValueKind;
use sensor_hub_protocol::DeviceId;
use serde_json::{json, Value};

use crate::config::MqttConfig;

/// Every topic the bridge uses, from the configuration.
#[derive(Debug, Clone)]
pub struct Topics {
    /// `<base_topic>/<node_id>`.
    pub root: String,
    /// Home Assistant's discovery prefix.
    pub discovery_prefix: String,
    /// `node_id`.
    pub node: String,
}

impl Topics {
    /// The topics of `config`.
    pub fn new(config: &MqttConfig) -> Topics {
        Topics {
            root: format!("{}/{}", config.base_topic, config.node_id),
            discovery_prefix: config.discovery_prefix.clone(),
            node: config.node_id.clone(),
        }
    }

    /// The hub's availability (and last will).
    pub fn status(&self) -> String {
        format!("{}/status", self.root)
    }

    /// The hub's own figures.
    pub fn hub(&self) -> String {
        format!("{}/hub", self.root)
    }

    /// `T/device/<id>/<leaf>`.
    pub fn device(&self, device: DeviceId, leaf: &str) -> String {
        format!("{}/device/{device}/{leaf}", self.root)
    }

    /// Home Assistant's own status (its birth and last will).
    pub fn home_assistant_status(&self) -> String {
        format!("{}/status", self.discovery_prefix)
    }

    /// The filter of every command topic: `T/device/+/#`.
    pub fn command_filter(&self) -> String {
        format!("{}/device/+/#", self.root)
    }

    /// `P/<component>/<node>/<object>/config`.
    pub fn config(&self, component: &str, object: &str) -> String {
        format!(
            "{}/{component}/{}/{object}/config",
            self.discovery_prefix, self.node
        )
    }

    /// A command topic's device and what it asks, if it is one of ours.
    pub fn parse_command_topic<'t>(&self, topic: &'t str) -> Option<(DeviceId, &'t str)> {
        let rest = topic
            .strip_prefix(self.root.as_str())?
            .strip_prefix("/device/")?;
        let (id, leaf) = rest.split_once('/')?;
        // Decimal ids only: no sign, no leading zeros but "0" itself.
        if id.is_empty()
            || !id.bytes().all(|b| b.is_ascii_digit())
            || (id.len() > 1 && id.starts_with('0'))
        {
            return None;
        }
        let id: DeviceId = id.parse().ok()?;
        Some((id, leaf))
    }
}

/// A device as the bridge describes it to Home Assistant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMeta {
    /// From its hello.
    pub name: Option<String>,
    /// From its hello.
    pub firmware: Option<String>,
    /// Declared report interval, ms.
    pub interval_ms: Option<u32>,
    /// Its sensors, by channel.
    pub sensors: Vec<SensorMeta>,
}

/// One sensor of a [`DeviceMeta`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SensorMeta {
    /// Channel in datagrams.
    pub channel: u8,
    /// Its key in the device's state object (see [`sensor_keys`]).
    pub key: String,
    /// Declared name.
    pub name: Option<String>,
    /// Declared unit; empty for none.
    pub unit: String,
    /// Declared value type.
    pub kind: Option<ValueKind>,
}

/// The state-object key of each `(channel, declared name)`: the name
/// lowercased with everything outside `[a-z0-9_]` replaced by `_`, or
/// `ch<channel>` without a name; a key two sensors would share gets
/// `_ch<channel>` appended for each of them.
pub fn sensor_keys(sensors: &[(u8, Option<&str>)]) -> Vec<String> {
    let base: Vec<String> = sensors
        .iter()
        .map(|&(channel, name)| match name.filter(|n| !n.is_empty()) {
            Some(name) => name
                .chars()
                .map(|c| {
                    let c = c.to_ascii_lowercase();
                    if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect(),
            None => format!("ch{channel}"),
        })
        .collect();
    base.iter()
        .zip(sensors)
        .map(|(key, &(channel, _))| {
            if base.iter().filter(|k| *k == key).count() > 1 {
                format!("{key}_ch{channel}")
            } else {
                key.clone()
            }
        })
        .collect()
}

/// The Home Assistant `device_class` a unit (and, where the unit alone is
/// ambiguous, the sensor's name) suggests.
pub fn device_class(unit: &str, name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    let named = |words: &[&str]| words.iter().any(|w| name.contains(w));
    Some(match unit {
        "°C" | "°F" | "K" => "temperature",
        "%" if named(&["humid", "rh"]) => "humidity",
        "%" if named(&["batt"]) => "battery",
        "hPa" | "Pa" | "kPa" | "bar" | "mbar" | "psi" | "mmHg" | "inHg" => "pressure",
        "V" | "mV" => "voltage",
        "A" | "mA" => "current",
        "W" | "kW" => "power",
        "Wh" | "kWh" => "energy",
        "lx" => "illuminance",
        "ppm" if named(&["co2", "carbon"]) => "carbon_dioxide",
        "µg/m³" if named(&["pm2", "pm25", "pm_2"]) => "pm25",
        "µg/m³" if named(&["pm10", "pm_10"]) => "pm10",
        "dB" | "dBA" => "sound_pressure",
        "dBm" => "signal_strength",
        _ => return None,
    })
}

/// What every config message shares: the hub's version as its origin.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The hub's version.
    pub version: &'static str,
}

fn origin(origin: &Origin) -> Value {
    json!({"name": "sensor-hub", "sw_version": origin.version})
}

fn hub_identifier(topics: &Topics) -> String {
    format!("{}_hub", topics.node)
}

fn device_identifier(topics: &Topics, device: DeviceId) -> String {
    format!("{}_d{device}", topics.node)
}

/// The availability list of a device's entities: the hub and the device.
fn device_availability(topics: &Topics, device: DeviceId) -> Value {
    json!([
        {"topic": topics.status()},
        {"topic": topics.device(device, "availability")},
    ])
}

/// The hub's own figures in `T/hub`: (key, name, unit, state_class).
pub const HUB_SENSORS: [(&str, &str, Option<&str>, &str); 3] = [
    (
        "datagrams_per_s",
        "Datagrams per second",
        Some("datagrams/s"),
        "measurement",
    ),
    ("devices_online", "Devices online", None, "measurement"),
    (
        "datagrams_dropped",
        "Datagrams dropped",
        None,
        "total_increasing",
    ),
];

/// The hub device's config messages: `(topic, payload)`.
pub fn hub_configs(topics: &Topics, from: &Origin) -> Vec<(String, Value)> {
    HUB_SENSORS
        .iter()
        .map(|&(key, name, unit, state_class)| {
            let mut config = json!({
                "name": name,
                "unique_id": format!("{}_hub_{key}", topics.node),
                "object_id": format!("{}_hub_{key}", topics.node),
                "state_topic": topics.hub(),
                "value_template": format!("{{{{ value_json.{key} }}}}"),
                "state_class": state_class,
                "availability_topic": topics.status(),
                "device": {
                    "identifiers": [hub_identifier(topics)],
                    "name": format!("sensor-hub {}", topics.node),
                    "manufacturer": "sensor-hub",
                    "model": "sensor-hub",
                    "sw_version": from.version,
                },
                "origin": origin(from),
            });
            if let Some(unit) = unit {
                config["unit_of_measurement"] = json!(unit);
            }
            (topics.config("sensor", &format!("hub_{key}")), config)
        })
        .collect()
}

/// A device's config messages: one `sensor` per sensor, and with
/// `commands` the `identify` and `reboot` buttons and the `interval`
/// number. `(topic, payload)`.
pub fn device_configs(
    topics: &Topics,
    from: &Origin,
    device: DeviceId,
    meta: &DeviceMeta,
    commands: bool,
) -> Vec<(String, Value)> {
    let device_block = {
        let mut block = json!({
            "identifiers": [device_identifier(topics, device)],
            "name": meta.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| format!("device {device}")),
            "manufacturer": "sensor-hub",
            "model": "sensor-hub device",
            "via_device": hub_identifier(topics),
        });
        if let Some(firmware) = meta.firmware.as_ref().filter(|f| !f.is_empty()) {
            block["sw_version"] = json!(firmware);
        }
        block
    };
    let common = |config: &mut Value| {
        config["availability"] = device_availability(topics, device);
        config["availability_mode"] = json!("all");
        config["device"] = device_block.clone();
        config["origin"] = origin(from);
    };
    let mut out = Vec::with_capacity(meta.sensors.len() + 3);
    for sensor in &meta.sensors {
        let object = format!("d{device}_ch{}", sensor.channel);
        let unique = format!("{}_{object}", topics.node);
        let name = sensor
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| format!("channel {}", sensor.channel));
        let mut config = json!({
            "name": name,
            "unique_id": unique,
            "object_id": unique,
            "state_topic": topics.device(device, "state"),
        });
        let component = if sensor.kind == Some(ValueKind::Bool) {
            // On/off: a binary sensor, its payloads Home Assistant's own.
            config["value_template"] = json!(format!(
                "{{{{ 'ON' if value_json.{} else 'OFF' }}}}",
                sensor.key
            ));
            "binary_sensor"
        } else {
            config["value_template"] = json!(format!("{{{{ value_json.{} }}}}", sensor.key));
            if !sensor.unit.is_empty() {
                config["unit_of_measurement"] = json!(sensor.unit);
            }
            if let Some(class) = device_class(&sensor.unit, sensor.name.as_deref().unwrap_or("")) {
                config["device_class"] = json!(class);
            }
            config["state_class"] = json!("measurement");
            "sensor"
        };
        common(&mut config);
        out.push((topics.config(component, &object), config));
    }
    if commands {
        for (leaf, name, class) in [
            ("identify", "Identify", "identify"),
            ("reboot", "Reboot", "restart"),
        ] {
            let object = format!("d{device}_{leaf}");
            let unique = format!("{}_{object}", topics.node);
            let mut config = json!({
                "name": name,
                "unique_id": unique,
                "object_id": unique,
                "command_topic": topics.device(device, &format!("{leaf}/press")),
                "payload_press": "PRESS",
                "device_class": class,
            });
            common(&mut config);
            out.push((topics.config("button", &object), config));
        }
        let object = format!("d{device}_interval");
        let unique = format!("{}_{object}", topics.node);
        let mut config = json!({
            "name": "Report interval",
            "unique_id": unique,
            "object_id": unique,
            "command_topic": topics.device(device, "interval/set"),
            "state_topic": topics.device(device, "interval"),
            "min": 1,
            "max": crate::command_json::MAX_INTERVAL_MS,
            "step": 1,
            "mode": "box",
            "unit_of_measurement": "ms",
            "entity_category": "config",
        });
        common(&mut config);
        out.push((topics.config("number", &object), config));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics() -> Topics {
        Topics {
            root: "sensor-hub/node".into(),
            discovery_prefix: "homeassistant".into(),
            node: "node".into(),
        }
    }

    #[test]
    fn keys_are_safe_and_unique() {
        let keys = sensor_keys(&[
            (0, Some("Temperature")),
            (1, Some("rel. humidity")),
            (2, None),
            (3, Some("x")),
            (4, Some("X")),
            (5, Some("")),
        ]);
        assert_eq!(
            keys,
            [
                "temperature",
                "rel__humidity",
                "ch2",
                "x_ch3",
                "x_ch4",
                "ch5"
            ]
        );
    }

    #[test]
    fn units_suggest_device_classes() {
        assert_eq!(device_class("°C", "temperature"), Some("temperature"));
        assert_eq!(device_class("%", "humidity"), Some("humidity"));
        assert_eq!(device_class("%", "battery level"), Some("battery"));
        assert_eq!(device_class("%", "duty cycle"), None);
        assert_eq!(device_class("hPa", "pressure"), Some("pressure"));
        assert_eq!(device_class("ppm", "CO2"), Some("carbon_dioxide"));
        assert_eq!(device_class("", "count"), None);
    }

    #[test]
    fn command_topics_parse_strictly() {
        let t = topics();
        assert_eq!(
            t.parse_command_topic("sensor-hub/node/device/7/command"),
            Some((7, "command"))
        );
        assert_eq!(
            t.parse_command_topic("sensor-hub/node/device/0/identify/press"),
            Some((0, "identify/press"))
        );
        for bad in [
            "sensor-hub/node/device/07/command",
            "sensor-hub/node/device/+1/command",
            "sensor-hub/node/device/4294967296/command",
            "sensor-hub/node/device//command",
            "sensor-hub/node/device/1",
            "sensor-hub/other/device/1/command",
            "sensor-hub/nodex/device/1/command",
        ] {
            assert_eq!(t.parse_command_topic(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_device_has_one_config_per_sensor_and_its_commands() {
        let meta = DeviceMeta {
            name: Some("greenhouse".into()),
            firmware: Some("1.2.3".into()),
            interval_ms: Some(1000),
            sensors: vec![
                SensorMeta {
                    channel: 0,
                    key: "temperature".into(),
                    name: Some("temperature".into()),
                    unit: "°C".into(),
                    kind: Some(ValueKind::F32),
                },
                SensorMeta {
                    channel: 3,
                    key: "door".into(),
                    name: Some("door".into()),
                    unit: String::new(),
                    kind: Some(ValueKind::Bool),
                },
            ],
        };
        let from = Origin { version: "0.1.0" };
        let configs = device_configs(&topics(), &from, 5, &meta, true);
        let topics_seen: Vec<&str> = configs.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            topics_seen,
            [
                "homeassistant/sensor/node/d5_ch0/config",
                "homeassistant/binary_sensor/node/d5_ch3/config",
                "homeassistant/button/node/d5_identify/config",
                "homeassistant/button/node/d5_reboot/config",
                "homeassistant/number/node/d5_interval/config",
            ]
        );
        let temperature = &configs[0].1;
        assert_eq!(temperature["unique_id"], "node_d5_ch0");
        assert_eq!(temperature["state_topic"], "sensor-hub/node/device/5/state");
        assert_eq!(
            temperature["value_template"],
            "{{ value_json.temperature }}"
        );
        assert_eq!(temperature["unit_of_measurement"], "°C");
        assert_eq!(temperature["device_class"], "temperature");
        assert_eq!(temperature["state_class"], "measurement");
        assert_eq!(temperature["availability_mode"], "all");
        assert_eq!(temperature["device"]["identifiers"][0], "node_d5");
        assert_eq!(temperature["device"]["via_device"], "node_hub");
        assert_eq!(temperature["device"]["sw_version"], "1.2.3");
        assert_eq!(temperature["origin"]["name"], "sensor-hub");
        let door = &configs[1].1;
        assert!(door.get("state_class").is_none(), "{door}");
        assert_eq!(
            door["value_template"],
            "{{ 'ON' if value_json.door else 'OFF' }}"
        );
        assert_eq!(
            configs[2].1["command_topic"],
            "sensor-hub/node/device/5/identify/press"
        );
        assert_eq!(
            configs[4].1["command_topic"],
            "sensor-hub/node/device/5/interval/set"
        );
        assert_eq!(
            device_configs(&topics(), &from, 5, &meta, false).len(),
            2,
            "no buttons without commands"
        );
    }

    #[test]
    fn the_hub_announces_its_own_figures() {
        let configs = hub_configs(&topics(), &Origin { version: "0.1.0" });
        assert_eq!(configs.len(), HUB_SENSORS.len());
        assert_eq!(
            configs[0].0,
            "homeassistant/sensor/node/hub_datagrams_per_s/config"
        );
        assert_eq!(configs[0].1["state_topic"], "sensor-hub/node/hub");
        assert_eq!(configs[0].1["device"]["identifiers"][0], "node_hub");
    }
}
