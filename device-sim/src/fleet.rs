//! Builds a varied, reproducible fleet: devices get names, a profile of
//! sensors (covering every value type) and a phase of their daily cycle,
//! all derived from a seed.

use sensor_hub_protocol::DeviceId;

use crate::device::{SimDevice, SimSensor};
use crate::signal::{Signal, SignalKind};

/// What fleet to build.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// How many devices.
    pub devices: u32,
    /// Id of the first device; the others follow consecutively.
    pub first_id: DeviceId,
    /// Report interval of every device, in milliseconds.
    pub interval_ms: u64,
    /// Seed for names, phases and noise.
    pub seed: u64,
}

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            devices: 5,
            first_id: 1,
            interval_ms: 1_000,
            seed: 1,
        }
    }
}

const ROOMS: [&str; 10] = [
    "kitchen",
    "living-room",
    "bedroom",
    "office",
    "garage",
    "greenhouse",
    "hallway",
    "cellar",
    "attic",
    "porch",
];

/// Sensor sets; together they use every value type (f32, i32, bool).
const PROFILES: [&[SignalKind]; 3] = [
    &[
        SignalKind::Temperature,
        SignalKind::Humidity,
        SignalKind::Pressure,
    ],
    &[SignalKind::Temperature, SignalKind::Co2, SignalKind::Motion],
    &[
        SignalKind::Temperature,
        SignalKind::Humidity,
        SignalKind::Battery,
    ],
];

/// Builds the fleet described by `spec`.
pub fn build_fleet(spec: &FleetSpec) -> Vec<SimDevice> {
    let mut rng = fastrand::Rng::with_seed(spec.seed);
    (0..spec.devices)
        .map(|i| {
            let id = spec.first_id.wrapping_add(i);
            let profile = PROFILES[i as usize % PROFILES.len()];
            let phase = rng.f64() * 0.1;
            let sensors = profile
                .iter()
                .enumerate()
                .map(|(channel, &kind)| SimSensor {
                    channel: channel as u8,
                    signal: Signal::new(kind, phase),
                })
                .collect();
            let name = format!("{}-{}", ROOMS[i as usize % ROOMS.len()], id);
            SimDevice::new(id, name, spec.interval_ms, sensors, rng.u64(..))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_hub_protocol::Value;

    #[test]
    fn fleet_has_consecutive_ids_unique_names_and_every_value_type() {
        let fleet = build_fleet(&FleetSpec {
            devices: 12,
            first_id: 100,
            interval_ms: 500,
            seed: 3,
        });
        let ids: Vec<u32> = fleet.iter().map(|d| d.id).collect();
        assert_eq!(ids, (100..112).collect::<Vec<_>>());
        let mut names: Vec<&str> = fleet.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 12);
        let (mut f, mut i, mut b) = (false, false, false);
        for mut device in fleet {
            assert_eq!(device.interval_ms, 500);
            for r in device.next_datagram(1_700_000_000_000).readings {
                match r.value {
                    Value::F32(_) => f = true,
                    Value::I32(_) => i = true,
                    Value::Bool(_) => b = true,
                }
            }
        }
        assert!(f && i && b);
    }

    #[test]
    fn same_seed_same_fleet() {
        let spec = FleetSpec::default();
        let a: Vec<_> = build_fleet(&spec)
            .into_iter()
            .map(|mut d| d.next_datagram(1_700_000_000_000))
            .collect();
        let b: Vec<_> = build_fleet(&spec)
            .into_iter()
            .map(|mut d| d.next_datagram(1_700_000_000_000))
            .collect();
        assert_eq!(a, b);
    }
}
