//! The bounded queue between ingest and the history writer: readings and
//! device records waiting for the next flush.
//!
//! Overflow policy: at most `capacity` readings wait. A datagram whose
//! readings do not all fit is not queued at all (its readings are counted
//! as dropped, `queue_full`), so ingest never waits for the disk. Device
//! records are few (one per device, the latest replacing the earlier) and
//! always kept. Values that are not finite cannot be stored and are counted
//! as `not_finite`. Pure: the writer thread and ingest share it behind a
//! lock.

use std::collections::BTreeMap;

use sensor_hub_protocol::DeviceId;

use super::Reading;
use crate::registry::DeviceRecord;
use crate::state::{numeric, LiveDatagram};

/// Readings not queued, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDrops {
    /// The queue was full.
    pub queue_full: u64,
    /// NaN or infinite values.
    pub not_finite: u64,
}

/// What one flush writes.
#[derive(Debug, Default, PartialEq)]
pub struct Batch {
    /// Readings in arrival order.
    pub readings: Vec<Reading>,
    /// Latest record of each device that changed, by id.
    pub devices: Vec<DeviceRecord>,
    /// Devices whose record is deleted (written before `devices`).
    pub forgotten: Vec<DeviceId>,
}

impl Batch {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty() && self.devices.is_empty() && self.forgotten.is_empty()
    }
}

/// Readings and device records waiting to be written.
#[derive(Debug)]
pub struct Queue {
    capacity: usize,
    readings: Vec<Reading>,
    devices: BTreeMap<DeviceId, DeviceRecord>,
    forgotten: std::collections::BTreeSet<DeviceId>,
    queued: u64,
    drops: QueueDrops,
}

impl Queue {
    /// An empty queue holding at most `capacity` readings.
    pub fn new(capacity: usize) -> Queue {
        Queue {
            capacity,
            readings: Vec::new(),
            devices: BTreeMap::new(),
            forgotten: std::collections::BTreeSet::new(),
            queued: 0,
            drops: QueueDrops::default(),
        }
    }

    /// Queues the readings of accepted datagrams, stamped with their hub
    /// receive time.
    pub fn push_datagrams(&mut self, datagrams: &[LiveDatagram]) {
        for datagram in datagrams {
            let finite = datagram
                .readings
                .iter()
                .filter(|r| numeric(r.value).is_finite())
                .count();
            self.drops.not_finite += (datagram.readings.len() - finite) as u64;
            if self.readings.len() + finite > self.capacity {
                self.drops.queue_full += finite as u64;
                continue;
            }
            self.queued += finite as u64;
            self.readings
                .extend(datagram.readings.iter().filter_map(|r| {
                    let value = numeric(r.value);
                    value.is_finite().then_some(Reading {
                        device: datagram.device,
                        channel: r.channel,
                        t_ms: datagram.received_ms,
                        value,
                    })
                }));
        }
    }

    /// Queues device records; a later record of a device replaces an
    /// earlier one still waiting.
    pub fn push_devices(&mut self, records: Vec<DeviceRecord>) {
        for record in records {
            self.devices.insert(record.id, record);
        }
    }

    /// Deletes a device's record (and any still waiting).
    pub fn forget_device(&mut self, device: DeviceId) {
        self.devices.remove(&device);
        self.forgotten.insert(device);
    }

    /// Puts back deletions a failed flush could not write.
    pub fn requeue_forgotten(&mut self, devices: Vec<DeviceId>) {
        self.forgotten.extend(devices);
    }

    /// Puts back records a failed flush could not write, unless a newer
    /// record of the same device is already waiting.
    pub fn requeue_devices(&mut self, records: Vec<DeviceRecord>) {
        for record in records {
            self.devices.entry(record.id).or_insert(record);
        }
    }

    /// Takes everything waiting.
    pub fn take(&mut self) -> Batch {
        Batch {
            readings: std::mem::take(&mut self.readings),
            devices: std::mem::take(&mut self.devices).into_values().collect(),
            forgotten: std::mem::take(&mut self.forgotten).into_iter().collect(),
        }
    }

    /// Most readings that may wait.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Readings waiting now.
    pub fn len(&self) -> usize {
        self.readings.len()
    }

    /// No readings waiting.
    pub fn is_empty(&self) -> bool {
        self.readings.is_empty()
    }

    /// Readings ever queued.
    pub fn queued(&self) -> u64 {
        self.queued
    }

    /// Readings not queued, by reason.
    pub fn drops(&self) -> QueueDrops {
        self.drops
    }

    /// Waiting readings of one sensor with `from_ms <= t_ms < to_ms`.
    pub fn waiting(&self, device: DeviceId, channel: u8, from_ms: u64, to_ms: u64) -> Vec<Reading> {
        self.readings
            .iter()
            .filter(|r| {
                r.device == device && r.channel == channel && r.t_ms >= from_ms && r.t_ms < to_ms
            })
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::DeviceStatus;
    use sensor_hub_protocol::{Reading as Wire, Value};

    fn datagram(device: u32, received_ms: u64, values: &[Value]) -> LiveDatagram {
        LiveDatagram {
            device,
            seq: 0,
            time_ms: received_ms,
            received_ms,
            readings: values
                .iter()
                .enumerate()
                .map(|(i, &value)| Wire {
                    channel: i as u8,
                    value,
                })
                .collect(),
        }
    }

    #[test]
    fn readings_are_stamped_with_the_receive_time_and_taken_in_order() {
        let mut q = Queue::new(10);
        q.push_datagrams(&[
            datagram(1, 100, &[Value::F32(1.5), Value::I32(-3)]),
            datagram(2, 101, &[Value::Bool(true)]),
        ]);
        assert_eq!(q.len(), 3);
        let batch = q.take();
        assert_eq!(
            batch.readings,
            vec![
                Reading {
                    device: 1,
                    channel: 0,
                    t_ms: 100,
                    value: 1.5
                },
                Reading {
                    device: 1,
                    channel: 1,
                    t_ms: 100,
                    value: -3.0
                },
                Reading {
                    device: 2,
                    channel: 0,
                    t_ms: 101,
                    value: 1.0
                },
            ]
        );
        assert!(q.is_empty());
        assert_eq!(q.queued(), 3);
    }

    #[test]
    fn a_datagram_that_does_not_fit_is_dropped_whole_and_counted() {
        let mut q = Queue::new(4);
        let three = [Value::F32(1.0), Value::F32(2.0), Value::F32(3.0)];
        q.push_datagrams(&[datagram(1, 1, &three), datagram(1, 2, &three)]);
        assert_eq!(q.len(), 3, "the second would overflow");
        assert_eq!(q.drops().queue_full, 3);
        q.push_datagrams(&[datagram(1, 3, &[Value::F32(4.0)])]);
        assert_eq!(q.len(), 4, "one more still fits");
        q.take();
        q.push_datagrams(&[datagram(1, 4, &three)]);
        assert_eq!(q.len(), 3, "room again after a flush");
        assert_eq!(q.queued(), 7);
    }

    #[test]
    fn values_that_are_not_finite_are_counted_not_queued() {
        let mut q = Queue::new(10);
        q.push_datagrams(&[datagram(
            1,
            1,
            &[
                Value::F32(f32::NAN),
                Value::F32(2.0),
                Value::F32(f32::INFINITY),
            ],
        )]);
        assert_eq!(q.len(), 1);
        assert_eq!(
            q.drops(),
            QueueDrops {
                queue_full: 0,
                not_finite: 2
            }
        );
    }

    #[test]
    fn the_latest_record_of_a_device_wins() {
        let mut q = Queue::new(1);
        let record = |id, status| DeviceRecord {
            id,
            info: None,
            status,
            status_since_ms: 0,
            last_seen_ms: None,
        };
        q.push_devices(vec![
            record(2, DeviceStatus::Online),
            record(1, DeviceStatus::Online),
        ]);
        q.push_devices(vec![record(2, DeviceStatus::Offline)]);
        let batch = q.take();
        assert_eq!(
            batch.devices,
            vec![
                record(1, DeviceStatus::Online),
                record(2, DeviceStatus::Offline)
            ]
        );
        assert!(q.take().is_empty());
    }

    #[test]
    fn waiting_filters_by_sensor_and_range() {
        let mut q = Queue::new(100);
        for t in 0..10 {
            q.push_datagrams(&[datagram(1, t, &[Value::F32(t as f32), Value::F32(0.0)])]);
            q.push_datagrams(&[datagram(2, t, &[Value::F32(0.0)])]);
        }
        let got: Vec<u64> = q.waiting(1, 0, 3, 6).iter().map(|r| r.t_ms).collect();
        assert_eq!(got, vec![3, 4, 5]);
        assert!(q.waiting(3, 0, 0, 10).is_empty());
    }
}
