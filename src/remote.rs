//! Devices held by the other hubs of a cluster, as the shared event stream
//! describes them: who holds each one, what it said in its hello, its
//! liveness, latest value per sensor and latest statistics. Plain state
//! driven by events (no I/O, no clock of its own), so a snapshot taken
//! under the core's lock is consistent with the stream position, as for
//! local devices.
//!
//! A device is either local or remote, never both: when a device opens a
//! session here, the core drops its remote record ([`RemoteFleet::remove`]).
//! The map is bounded ([`RemoteFleet::new`]); beyond it new devices are
//! not tracked, and counted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use sensor_hub_protocol::control::SensorInfo;
use sensor_hub_protocol::{DeviceId, Value};

use sensor_hub_protocol::control::CommandBody;

use crate::registry::{DeviceStatus, Origin};
use crate::state::LiveDatagram;
use crate::stream::{DeviceStats, Event};

/// A command for a device another hub holds, to be handed to that hub.
#[derive(Debug, Clone, PartialEq)]
pub struct Forward {
    /// The hub holding the device.
    pub hub: Arc<str>,
    /// The device.
    pub device: DeviceId,
    /// What to do.
    pub body: CommandBody,
    /// Wait for the device if it is offline.
    pub wait: bool,
    /// Who asked, here (with the ticket its statuses will carry).
    pub origin: Origin,
}

/// One entry read from the shared stream.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedEntry {
    /// Its position in the shared stream (the same on every hub).
    pub position: u64,
    /// The hub it is about: the hub that appended it, or the hub whose
    /// devices another hub reports lost.
    pub hub: Arc<str>,
    /// Appended by this hub's own run (its item is then
    /// [`SharedItem::Own`]).
    pub own: bool,
    /// Its number in the appending run (see [`crate::outbox`]).
    pub number: u64,
    /// What it says.
    pub item: SharedItem,
}

/// What an entry of the shared stream says.
#[derive(Debug, Clone, PartialEq)]
pub enum SharedItem {
    /// An event, as every hub's browsers receive it.
    Event(Event),
    /// One of this hub's own events, read back (the hub has it as it was
    /// queued: not decoded again).
    Own,
    /// The devices the hub holds, as they described themselves in their
    /// hellos (renewed periodically, so a hub that joins later learns
    /// them); not shown to browsers.
    Holdings(Vec<Holding>),
}

/// One device a hub holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Holding {
    /// The device.
    pub device: DeviceId,
    /// Its hello.
    pub info: RemoteInfo,
    /// The hub holds a control session with it.
    pub connected: bool,
}

/// What a device said in its hello, and how its hub admits it.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteInfo {
    /// Human name.
    pub name: String,
    /// Firmware version text.
    pub firmware: String,
    /// Report interval, ms.
    pub interval_ms: u32,
    /// Declared sensors.
    pub sensors: Vec<SensorInfo>,
    /// Adopted (listed or admitted by a hello), or only discovered.
    pub adopted: bool,
    /// Its datagrams carry tags of its session key.
    pub keyed: bool,
}

/// The latest value of one sensor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RemoteValue {
    /// The value.
    pub value: Value,
    /// Device time, Unix ms.
    pub time_ms: u64,
    /// When its hub received it, Unix ms.
    pub received_ms: u64,
    /// Readings of this sensor seen in the stream.
    pub count: u64,
}

/// One device of another hub.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteDevice {
    /// The hub its latest event came from.
    pub hub: Arc<str>,
    /// From its hello, once its hub described it.
    pub info: Option<RemoteInfo>,
    /// Liveness, as its hub last reported it.
    pub status: Option<DeviceStatus>,
    /// Since when (Unix ms).
    pub status_since_ms: Option<u64>,
    /// Its hub holds a control session with it.
    pub connected: bool,
    /// First datagram seen in the stream, Unix ms.
    pub first_seen_ms: Option<u64>,
    /// Latest datagram seen in the stream, Unix ms.
    pub last_seen_ms: Option<u64>,
    /// Datagrams seen in the stream.
    pub datagrams: u64,
    /// Readings seen in the stream.
    pub readings: u64,
    /// Sequence number of the latest datagram.
    pub last_seq: Option<u32>,
    /// Its hub's latest statistics of it.
    pub stats: Option<DeviceStats>,
    /// Latest value per channel.
    pub latest: BTreeMap<u8, RemoteValue>,
}

impl RemoteDevice {
    fn new(hub: Arc<str>) -> RemoteDevice {
        RemoteDevice {
            hub,
            info: None,
            status: None,
            status_since_ms: None,
            connected: false,
            first_seen_ms: None,
            last_seen_ms: None,
            datagrams: 0,
            readings: 0,
            last_seq: None,
            stats: None,
            latest: BTreeMap::new(),
        }
    }

    fn apply_datagram(&mut self, d: &LiveDatagram) {
        self.datagrams += 1;
        self.readings += d.readings.len() as u64;
        self.last_seq = Some(d.seq);
        self.first_seen_ms.get_or_insert(d.received_ms);
        self.last_seen_ms = Some(self.last_seen_ms.unwrap_or(0).max(d.received_ms));
        for r in d.readings.iter() {
            let entry = self.latest.entry(r.channel).or_insert(RemoteValue {
                value: r.value,
                time_ms: d.time_ms,
                received_ms: d.received_ms,
                count: 0,
            });
            entry.value = r.value;
            entry.time_ms = d.time_ms;
            entry.received_ms = d.received_ms;
            entry.count += 1;
        }
    }
}

/// The other hubs' devices.
#[derive(Debug)]
pub struct RemoteFleet {
    devices: HashMap<DeviceId, RemoteDevice>,
    max_devices: usize,
    /// Events about devices not tracked because the map was full.
    untracked: u64,
}

impl RemoteFleet {
    /// An empty fleet tracking at most `max_devices` devices.
    pub fn new(max_devices: usize) -> RemoteFleet {
        RemoteFleet {
            devices: HashMap::new(),
            max_devices,
            untracked: 0,
        }
    }

    /// The record of `device` from `hub`, made if there is room; a device
    /// seen from a new hub moved there.
    fn entry(&mut self, hub: &Arc<str>, device: DeviceId) -> Option<&mut RemoteDevice> {
        if !self.devices.contains_key(&device) && self.devices.len() >= self.max_devices {
            self.untracked += 1;
            return None;
        }
        let record = self
            .devices
            .entry(device)
            .or_insert_with(|| RemoteDevice::new(hub.clone()));
        if record.hub != *hub {
            record.hub = hub.clone();
        }
        Some(record)
    }

    /// Applies one event `hub` shared.
    pub fn apply(&mut self, hub: &Arc<str>, event: &Event) {
        match event {
            Event::Readings(batch) => {
                for d in batch {
                    if let Some(record) = self.entry(hub, d.device) {
                        record.apply_datagram(d);
                    }
                }
            }
            Event::DeviceStatus {
                device,
                status,
                at_ms,
                ..
            } => {
                if let Some(record) = self.entry(hub, *device) {
                    record.status = Some(*status);
                    record.status_since_ms = Some(*at_ms);
                }
            }
            Event::DeviceRemoved { device, .. } => {
                // Only its holder removes it: a hub that lost a device to
                // another hub does not remove it for the cluster.
                if self.devices.get(device).is_some_and(|d| d.hub == *hub) {
                    self.devices.remove(device);
                }
            }
            Event::CommandStatus(_) => {}
            Event::DeviceStats(stats) => {
                for s in stats {
                    if let Some(record) = self.devices.get_mut(&s.device) {
                        if record.hub == *hub {
                            record.stats = Some(s.clone());
                        }
                    }
                }
            }
        }
    }

    /// `hub` describes a device it holds: its hello, and whether it holds a
    /// control session with it.
    pub fn describe(
        &mut self,
        hub: &Arc<str>,
        device: DeviceId,
        info: RemoteInfo,
        connected: bool,
    ) {
        if let Some(record) = self.entry(hub, device) {
            record.info = Some(info);
            record.connected = connected;
        }
    }

    /// `hub` is gone (its lease lapsed): its devices are offline as of
    /// `at_ms`. Returns them.
    pub fn hub_lost(&mut self, hub: &str, at_ms: u64) -> Vec<DeviceId> {
        let mut lost: Vec<DeviceId> = self
            .devices
            .iter_mut()
            .filter(|(_, d)| &*d.hub == hub)
            .map(|(&id, d)| {
                if d.status != Some(DeviceStatus::Offline) {
                    d.status = Some(DeviceStatus::Offline);
                    d.status_since_ms = Some(at_ms);
                }
                d.connected = false;
                id
            })
            .collect();
        lost.sort_unstable();
        lost
    }

    /// The device is local now (or forgotten): drops its record.
    pub fn remove(&mut self, device: DeviceId) -> Option<RemoteDevice> {
        self.devices.remove(&device)
    }

    /// One device.
    pub fn get(&self, device: DeviceId) -> Option<&RemoteDevice> {
        self.devices.get(&device)
    }

    /// Every device, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (DeviceId, &RemoteDevice)> {
        self.devices.iter().map(|(&id, d)| (id, d))
    }

    /// Devices tracked.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// No device tracked.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Events about devices not tracked because the map was full.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Devices per hub, by hub name.
    pub fn per_hub(&self) -> BTreeMap<Arc<str>, usize> {
        let mut counts = BTreeMap::new();
        for d in self.devices.values() {
            *counts.entry(d.hub.clone()).or_insert(0) += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_hub_protocol::Reading;

    fn batch(device: DeviceId, seq: u32, value: f32) -> Event {
        Event::Readings(vec![LiveDatagram {
            device,
            seq,
            time_ms: 1_000 + u64::from(seq),
            received_ms: 2_000 + u64::from(seq),
            readings: vec![Reading {
                channel: 0,
                value: Value::F32(value),
            }]
            .into_boxed_slice(),
        }])
    }

    #[test]
    fn readings_status_and_stats_build_a_device() {
        let a: Arc<str> = "a".into();
        let mut fleet = RemoteFleet::new(10);
        fleet.apply(&a, &batch(7, 1, 20.0));
        fleet.apply(&a, &batch(7, 2, 21.5));
        fleet.apply(
            &a,
            &Event::DeviceStatus {
                device: 7,
                status: DeviceStatus::Online,
                previous: None,
                at_ms: 5,
            },
        );
        let d = fleet.get(7).unwrap();
        assert_eq!(&*d.hub, "a");
        assert_eq!((d.datagrams, d.readings, d.last_seq), (2, 2, Some(2)));
        assert_eq!(d.first_seen_ms, Some(2_001));
        assert_eq!(d.last_seen_ms, Some(2_002));
        let latest = d.latest[&0];
        assert_eq!((latest.value, latest.count), (Value::F32(21.5), 2));
        assert_eq!(d.status, Some(DeviceStatus::Online));
        assert_eq!(d.status_since_ms, Some(5));
    }

    #[test]
    fn a_device_moves_with_its_events_and_only_its_holder_removes_it() {
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut fleet = RemoteFleet::new(10);
        fleet.apply(&a, &batch(7, 1, 1.0));
        fleet.apply(&b, &batch(7, 2, 2.0));
        assert_eq!(&*fleet.get(7).unwrap().hub, "b");
        // The old holder's late removal does not remove it from b.
        fleet.apply(
            &a,
            &Event::DeviceRemoved {
                device: 7,
                at_ms: 9,
            },
        );
        assert!(fleet.get(7).is_some());
        fleet.apply(
            &b,
            &Event::DeviceRemoved {
                device: 7,
                at_ms: 9,
            },
        );
        assert!(fleet.is_empty());
    }

    #[test]
    fn a_lost_hub_takes_its_devices_offline() {
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut fleet = RemoteFleet::new(10);
        fleet.apply(&a, &batch(1, 1, 1.0));
        fleet.apply(&a, &batch(2, 1, 1.0));
        fleet.apply(&b, &batch(3, 1, 1.0));
        assert_eq!(fleet.hub_lost("a", 77), [1, 2]);
        assert_eq!(fleet.get(1).unwrap().status, Some(DeviceStatus::Offline));
        assert_eq!(fleet.get(1).unwrap().status_since_ms, Some(77));
        assert_eq!(fleet.get(3).unwrap().status, None);
        assert_eq!(fleet.per_hub().get("a"), Some(&2));
    }

    #[test]
    fn the_map_is_bounded_and_counts_what_it_leaves_out() {
        let a: Arc<str> = "a".into();
        let mut fleet = RemoteFleet::new(2);
        for device in 1..=4 {
            fleet.apply(&a, &batch(device, 1, 1.0));
        }
        assert_eq!(fleet.len(), 2);
        assert_eq!(fleet.untracked(), 2);
        // Known devices still update.
        fleet.apply(&a, &batch(1, 2, 1.0));
        assert_eq!(fleet.get(1).unwrap().datagrams, 2);
    }
}
