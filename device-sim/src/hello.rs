//! The `Hello` a simulated device opens every control session with:
//! identity, credential, firmware, and a description of each sensor (value
//! type, unit, plausible range). Pure: the parts are kept once per device,
//! compactly (a full `Hello` holds room for 64 sensors inline, about 6 KB),
//! and a hello is built with the current interval and clock for each
//! session.

use core::fmt;

use sensor_hub_protocol::control::{
    fit, Hello, Name, SensorInfo, Text, ValueKind, MAX_SENSORS, TEXT_LEN,
};

use crate::device::{SimDevice, SimSensor};
use crate::signal::SignalKind;

/// Firmware text a simulated device announces.
pub const FIRMWARE: &str = concat!("device-sim ", env!("CARGO_PKG_VERSION"));

/// Why a device cannot say hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelloError {
    /// The token is longer than the protocol allows (it is never cut).
    TokenTooLong {
        /// Its length in bytes.
        len: usize,
    },
}

impl fmt::Display for HelloError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HelloError::TokenTooLong { len } => write!(
                f,
                "the control token is {len} bytes; the protocol allows at most {TEXT_LEN}"
            ),
        }
    }
}

impl std::error::Error for HelloError {}

/// A device's hello, less what changes between sessions.
#[derive(Clone)]
pub(crate) struct HelloTemplate {
    device_id: u32,
    name: Name,
    token: Text,
    /// At most [`MAX_SENSORS`].
    sensors: Vec<SensorInfo>,
}

// Manual: the hello carries the token, which must not end up in logs.
impl fmt::Debug for HelloTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HelloTemplate")
            .field("device_id", &self.device_id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl HelloTemplate {
    /// The hello of `device` authenticating with `token`. A long name is
    /// cut to fit; sensors beyond the protocol's limit are left out.
    pub fn new(device: &SimDevice, token: &str) -> Result<HelloTemplate, HelloError> {
        let token = token
            .try_into()
            .map_err(|_| HelloError::TokenTooLong { len: token.len() })?;
        Ok(HelloTemplate {
            device_id: device.id,
            name: fit(&device.name),
            token,
            sensors: device
                .sensors
                .iter()
                .take(MAX_SENSORS)
                .map(sensor_info)
                .collect(),
        })
    }

    /// The device id it announces.
    pub fn device_id(&self) -> u32 {
        self.device_id
    }

    /// The hello for a session opened at `now_ms` (Unix ms) by a device
    /// sending every `interval_ms`.
    pub fn hello(&self, interval_ms: u64, now_ms: u64) -> Hello {
        let mut hello = Hello {
            device_id: self.device_id,
            name: self.name.clone(),
            firmware: fit(FIRMWARE),
            token: self.token.clone(),
            interval_ms: u32::try_from(interval_ms).unwrap_or(u32::MAX),
            device_time_ms: now_ms,
            sensors: Default::default(),
        };
        for sensor in &self.sensors {
            // Cannot fail: the template keeps at most MAX_SENSORS.
            let _ = hello.sensors.push(sensor.clone());
        }
        hello
    }
}

/// How `sensor` describes itself in a hello.
pub fn sensor_info(sensor: &SimSensor) -> SensorInfo {
    let kind = sensor.kind();
    let (min, max) = plausible_range(kind);
    SensorInfo {
        channel: sensor.channel,
        name: fit(sensor.name()),
        unit: fit(sensor.unit()),
        kind: value_kind(kind),
        min,
        max,
    }
}

/// The value type a signal of `kind` produces.
pub fn value_kind(kind: SignalKind) -> ValueKind {
    match kind {
        SignalKind::Co2 => ValueKind::I32,
        SignalKind::Motion => ValueKind::Bool,
        SignalKind::Temperature
        | SignalKind::Humidity
        | SignalKind::Pressure
        | SignalKind::Battery => ValueKind::F32,
    }
}

/// The range a real sensor of `kind` can report (none for booleans).
pub fn plausible_range(kind: SignalKind) -> (Option<f32>, Option<f32>) {
    match kind {
        SignalKind::Temperature => (Some(-40.0), Some(85.0)),
        SignalKind::Humidity => (Some(0.0), Some(100.0)),
        SignalKind::Pressure => (Some(300.0), Some(1_100.0)),
        SignalKind::Co2 => (Some(0.0), Some(5_000.0)),
        SignalKind::Battery => (Some(0.0), Some(5.0)),
        SignalKind::Motion => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Signal;
    use sensor_hub_protocol::control::{encode_frame, DeviceMessage, MAX_FRAME_BODY};
    use sensor_hub_protocol::Value;

    fn device(kinds: &[SignalKind], name: &str) -> SimDevice {
        let sensors = kinds
            .iter()
            .enumerate()
            .map(|(i, &kind)| SimSensor {
                channel: i as u8,
                signal: Signal::new(kind, 0.0),
            })
            .collect();
        SimDevice::new(9, name.into(), 750, sensors, 1)
    }

    #[test]
    fn hello_carries_identity_token_interval_clock_and_sensors() {
        let d = device(
            &[SignalKind::Temperature, SignalKind::Co2, SignalKind::Motion],
            "office-9",
        );
        let hello = HelloTemplate::new(&d, "s3cret")
            .expect("short token")
            .hello(250, 1_700_000_000_000);
        assert_eq!(hello.device_id, 9);
        assert_eq!(hello.name, "office-9");
        assert_eq!(hello.token, "s3cret");
        assert!(hello.firmware.starts_with("device-sim "));
        assert_eq!(hello.interval_ms, 250);
        assert_eq!(hello.device_time_ms, 1_700_000_000_000);
        let described: Vec<_> = hello
            .sensors
            .iter()
            .map(|s| (s.channel, s.name.as_str(), s.unit.as_str(), s.kind))
            .collect();
        assert_eq!(
            described,
            [
                (0, "temperature", "°C", ValueKind::F32),
                (1, "co2", "ppm", ValueKind::I32),
                (2, "motion", "", ValueKind::Bool),
            ]
        );
        assert_eq!(hello.sensors[0].min, Some(-40.0));
        assert_eq!(hello.sensors[1].max, Some(5_000.0));
        assert_eq!(hello.sensors[2].min, None);
        let mut buf = [0u8; MAX_FRAME_BODY];
        encode_frame(&DeviceMessage::Hello(hello), &mut buf).expect("encodes");
    }

    #[test]
    fn value_kinds_match_what_the_signals_produce() {
        let mut rng = fastrand::Rng::with_seed(3);
        for kind in [
            SignalKind::Temperature,
            SignalKind::Humidity,
            SignalKind::Pressure,
            SignalKind::Co2,
            SignalKind::Battery,
            SignalKind::Motion,
        ] {
            let value = Signal::new(kind, 0.0).sample(1_700_000_000_000, &mut rng);
            let matches = matches!(
                (value, value_kind(kind)),
                (Value::F32(_), ValueKind::F32)
                    | (Value::I32(_), ValueKind::I32)
                    | (Value::Bool(_), ValueKind::Bool)
            );
            assert!(matches, "{kind:?}");
        }
    }

    #[test]
    fn a_long_name_is_cut_but_a_long_token_is_refused() {
        let d = device(&[SignalKind::Battery], &"n".repeat(40));
        let hello = HelloTemplate::new(&d, "t").expect("ok").hello(1, 0);
        assert_eq!(hello.name.len(), 32);
        assert_eq!(
            HelloTemplate::new(&d, &"t".repeat(129)).err(),
            Some(HelloError::TokenTooLong { len: 129 })
        );
    }

    #[test]
    fn an_interval_beyond_u32_is_announced_as_the_maximum() {
        let d = device(&[SignalKind::Battery], "b");
        let hello = HelloTemplate::new(&d, "").expect("ok").hello(u64::MAX, 0);
        assert_eq!(hello.interval_ms, u32::MAX);
    }

    #[test]
    fn the_template_debug_output_hides_the_token() {
        let d = device(&[SignalKind::Battery], "b");
        let template = HelloTemplate::new(&d, "hunter2").expect("ok");
        assert!(!format!("{template:?}").contains("hunter2"));
    }
}
