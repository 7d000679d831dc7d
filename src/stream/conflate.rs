//! Coalescing for `aggregate` subscriptions: readings are folded per device
//! and sensor until the next `aggregates` message, so a slow client gets
//! fresher data rather than a longer queue. Memory is one entry per
//! (device, channel) the subscription covers, whatever the rate.

use std::collections::BTreeMap;

use sensor_hub_protocol::{Channel, DeviceId, Value};

use crate::state::{numeric, LiveDatagram};

/// What was folded for one sensor since the last message.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Folded {
    /// Latest value.
    pub last: Value,
    /// Device time of the latest value, Unix ms.
    pub time_ms: u64,
    /// Readings folded.
    pub count: u64,
    /// Of those, the finite ones (NaN and infinities are counted in
    /// `count` but left out of min, max, sum and so the mean).
    pub finite: u64,
    /// Smallest (numeric; booleans as 0/1).
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Sum, for the mean.
    pub sum: f64,
}

/// The per-client fold.
#[derive(Debug, Default)]
pub struct Conflator {
    sensors: BTreeMap<(DeviceId, Channel), Folded>,
}

impl Conflator {
    /// Folds the readings of already-filtered datagrams.
    pub fn add(&mut self, batch: &[LiveDatagram]) {
        for d in batch {
            for r in &d.readings {
                let v = numeric(r.value);
                self.sensors
                    .entry((d.device, r.channel))
                    .and_modify(|f| {
                        f.last = r.value;
                        f.time_ms = d.time_ms;
                        f.count += 1;
                        if v.is_finite() {
                            f.finite += 1;
                            f.min = f.min.min(v);
                            f.max = f.max.max(v);
                            f.sum += v;
                        }
                    })
                    .or_insert(Folded {
                        last: r.value,
                        time_ms: d.time_ms,
                        count: 1,
                        finite: u64::from(v.is_finite()),
                        min: if v.is_finite() { v } else { f64::INFINITY },
                        max: if v.is_finite() { v } else { f64::NEG_INFINITY },
                        sum: if v.is_finite() { v } else { 0.0 },
                    });
            }
        }
    }

    /// Nothing folded since the last take.
    pub fn is_empty(&self) -> bool {
        self.sensors.is_empty()
    }

    /// Sensors folded (the memory this client costs).
    pub fn len(&self) -> usize {
        self.sensors.len()
    }

    /// Everything folded, ordered by device and channel; starts afresh.
    pub fn take(&mut self) -> Vec<((DeviceId, Channel), Folded)> {
        std::mem::take(&mut self.sensors).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_hub_protocol::Reading;

    fn datagram(device: DeviceId, time_ms: u64, values: &[(u8, f32)]) -> LiveDatagram {
        LiveDatagram {
            device,
            seq: 0,
            time_ms,
            received_ms: time_ms,
            readings: values
                .iter()
                .map(|&(channel, v)| Reading {
                    channel,
                    value: Value::F32(v),
                })
                .collect(),
        }
    }

    #[test]
    fn latest_wins_and_statistics_cover_everything_folded() {
        let mut c = Conflator::default();
        for (t, v) in [(1, 5.0), (2, 1.0), (3, 3.0)] {
            c.add(&[datagram(7, t, &[(0, v)])]);
        }
        c.add(&[datagram(8, 4, &[(1, 9.0)])]);
        assert_eq!(c.len(), 2);
        let taken = c.take();
        assert!(c.is_empty());
        let ((device, channel), f) = taken[0];
        assert_eq!((device, channel), (7, 0));
        assert_eq!(f.last, Value::F32(3.0));
        assert_eq!((f.count, f.min, f.max, f.time_ms), (3, 1.0, 5.0, 3));
        assert_eq!(f.sum / f.count as f64, 3.0);
        assert_eq!(taken[1].0, (8, 1));
    }

    #[test]
    fn not_finite_values_do_not_drag_the_mean() {
        // Regression: the mean divided the finite sum by every reading.
        let mut c = Conflator::default();
        for v in [4.0, f32::NAN, 2.0, f32::INFINITY] {
            c.add(&[datagram(1, 1, &[(0, v)])]);
        }
        let (_, f) = c.take()[0];
        assert_eq!((f.count, f.finite), (4, 2));
        assert_eq!(f.sum / f.finite as f64, 3.0);
    }

    #[test]
    fn memory_does_not_grow_with_rate() {
        let mut c = Conflator::default();
        for t in 0..10_000 {
            c.add(&[datagram(1, t, &[(0, 1.0), (1, 2.0)])]);
        }
        assert_eq!(c.len(), 2);
    }
}
