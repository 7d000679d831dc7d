//! What the MQTT broker hands the bridge: any topic and payload (the first
//! byte splits the input) is a command request, a counted refusal with a
//! `rejected` result, or ignored, never a panic; and whatever it does, the
//! bridge's bounded queues stay bounded.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sensor_hub::config::{HubConfig, MqttConfig};
use sensor_hub::mqtt::bridge::Bridge;

fuzz_target!(|bytes: &[u8]| {
    let Some((&split, rest)) = bytes.split_first() else {
        return;
    };
    let at = usize::from(split).min(rest.len());
    let (topic, payload) = rest.split_at(at);
    // Parsing the default configuration costs more than the rest: once.
    static CONFIG: OnceLock<MqttConfig> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut config = HubConfig::defaults()
            .expect("the built-in defaults load")
            .mqtt;
        config.commands = true;
        config.max_results = 2;
        config
    });
    let mut bridge = Bridge::new(config, "fuzz");
    bridge.handle_connected(0);
    // Topics of ours with the fuzzed payload, and the fuzzed topic.
    let topic = String::from_utf8_lossy(topic);
    for topic in [
        "sensor-hub/sensor_hub/device/1/command",
        "sensor-hub/sensor_hub/device/1/interval/set",
        "homeassistant/status",
        &topic,
    ] {
        if let Some(request) = bridge.handle_message(topic, payload, 1) {
            bridge.handle_submitted(request, None);
        }
    }
    let mut published = 0;
    while bridge.poll_publish(1).is_some() {
        published += 1;
        assert!(published < 64, "the bridge's output is bounded");
    }
});
