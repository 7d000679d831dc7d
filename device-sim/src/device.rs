//! One simulated device: identity, sensors, and the datagrams it sends.
//! Pure: [`SimDevice::next_datagram`] takes the current time and returns
//! the datagram to send, advancing the sequence number.

use sensor_hub_protocol::{Channel, Datagram, DeviceId, Reading, Readings};

use crate::signal::{Signal, SignalKind};

/// One sensor of a simulated device.
#[derive(Debug, Clone)]
pub struct SimSensor {
    /// Channel number on the wire.
    pub channel: Channel,
    /// The signal it produces.
    pub signal: Signal,
}

impl SimSensor {
    /// Human name of the sensor.
    pub fn name(&self) -> &'static str {
        self.signal.kind().name()
    }

    /// Unit of its values.
    pub fn unit(&self) -> &'static str {
        self.signal.kind().unit()
    }

    /// What it measures.
    pub fn kind(&self) -> SignalKind {
        self.signal.kind()
    }
}

/// A simulated device.
#[derive(Debug, Clone)]
pub struct SimDevice {
    /// Numeric id on the wire.
    pub id: DeviceId,
    /// Human name (announced on the control channel).
    pub name: String,
    /// Report interval in milliseconds.
    pub interval_ms: u64,
    /// Its sensors; every datagram carries one reading of each.
    pub sensors: Vec<SimSensor>,
    /// Sequence number of the next datagram.
    next_seq: u32,
    /// The seed it was built with.
    seed: u64,
    rng: fastrand::Rng,
}

impl SimDevice {
    /// A device with the given identity and sensors, seeded for reproducibility.
    pub fn new(
        id: DeviceId,
        name: String,
        interval_ms: u64,
        sensors: Vec<SimSensor>,
        seed: u64,
    ) -> SimDevice {
        SimDevice {
            id,
            name,
            interval_ms,
            sensors,
            next_seq: 0,
            seed,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// The seed the device was built with (its fault injector derives its
    /// own from it).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Sequence number the next datagram will carry.
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// Restarts the sequence at 0, as after a reboot.
    pub fn reset_seq(&mut self) {
        self.next_seq = 0;
    }

    /// Samples every sensor at `now_ms` (Unix milliseconds) and returns the
    /// datagram carrying those readings.
    pub fn next_datagram(&mut self, now_ms: u64) -> Datagram {
        let mut readings = Readings::new();
        for sensor in &mut self.sensors {
            let value = sensor.signal.sample(now_ms, &mut self.rng);
            // A device has at most MAX_READINGS sensors (enforced by the fleet
            // builder); a sensor beyond that would be left out, not sent.
            let _ = readings.push(Reading {
                channel: sensor.channel,
                value,
            });
        }
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        Datagram {
            device_id: self.id,
            seq,
            time_ms: now_ms as u32,
            readings,
            auth_tag: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_hub_protocol::{decode_datagram, encode_datagram, restore_time_ms};

    fn device() -> SimDevice {
        let sensors = [SignalKind::Temperature, SignalKind::Co2, SignalKind::Motion]
            .into_iter()
            .enumerate()
            .map(|(i, kind)| SimSensor {
                channel: i as u8,
                signal: Signal::new(kind, 0.1),
            })
            .collect();
        SimDevice::new(42, "test".into(), 1_000, sensors, 9)
    }

    #[test]
    fn datagrams_count_up_and_carry_every_sensor() {
        let mut d = device();
        let t = 1_700_000_123_456;
        for expected_seq in 0..5 {
            let dg = d.next_datagram(t + expected_seq as u64 * 1_000);
            assert_eq!(dg.device_id, 42);
            assert_eq!(dg.seq, expected_seq);
            assert_eq!(dg.readings.len(), 3);
            let channels: Vec<u8> = dg.readings.iter().map(|r| r.channel).collect();
            assert_eq!(channels, [0, 1, 2]);
            assert_eq!(
                restore_time_ms(dg.time_ms, t),
                t + expected_seq as u64 * 1_000
            );
        }
        assert_eq!(d.next_seq(), 5);
    }

    #[test]
    fn reset_seq_restarts_the_sequence_at_zero() {
        let mut d = device();
        for _ in 0..3 {
            d.next_datagram(1_700_000_000_000);
        }
        d.reset_seq();
        assert_eq!(d.next_seq(), 0);
        assert_eq!(d.next_datagram(1_700_000_003_000).seq, 0);
        assert_eq!(d.next_seq(), 1);
    }

    #[test]
    fn datagrams_encode_and_decode() {
        let mut d = device();
        let dg = d.next_datagram(1_700_000_000_000);
        let mut buf = [0u8; 512];
        let bytes = encode_datagram(&dg, &mut buf).expect("fits");
        assert_eq!(decode_datagram(bytes), Ok(dg));
    }
}
