//! The pure core of ingest: what the hub knows about each device and its
//! sensors, and the counters of every datagram read. No sockets, no clock:
//! the caller passes the bytes, the sender's address and the current time,
//! so everything here is unit-tested directly.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use sensor_hub_protocol::{
    decode_datagram, restore_time_ms, Channel, DecodeError, DeviceId, Reading, Value,
};

use crate::aggregate::latency::LatencyHistogram;
use crate::aggregate::sequence::{SeqCounts, SeqTracker};
use crate::aggregate::window::{Window, WindowStats};
use crate::registry::Registry;

/// Why a datagram was not accepted. Every read datagram is either accepted
/// or counted under exactly one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Not a valid v1 datagram.
    Decode(DecodeError),
    /// Valid, but from a new device while `limits.max_devices` are tracked.
    DeviceLimit,
}

impl DropReason {
    /// Number of distinct reasons (size of [`IngestCounters::dropped`]).
    pub const COUNT: usize = DecodeError::ALL.len() + 1;

    /// Metric label of each index of [`IngestCounters::dropped`].
    pub fn label(index: usize) -> &'static str {
        match DecodeError::ALL.get(index) {
            Some(e) => e.reason(),
            None => "device_limit",
        }
    }

    /// Index into [`IngestCounters::dropped`].
    pub fn index(&self) -> usize {
        match self {
            DropReason::Decode(e) => e.index(),
            DropReason::DeviceLimit => DecodeError::ALL.len(),
        }
    }
}

/// Counters over all datagrams read from the UDP socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestCounters {
    /// Datagrams read, valid or not.
    pub datagrams_received: u64,
    /// Bytes read (an oversized datagram counts as the bytes read of it).
    pub bytes_received: u64,
    /// Datagrams accepted into the state.
    pub datagrams_accepted: u64,
    /// Readings in accepted datagrams.
    pub readings_accepted: u64,
    /// Datagrams dropped, indexed by [`DropReason::index`].
    pub dropped: [u64; DropReason::COUNT],
}

impl IngestCounters {
    /// All dropped datagrams, whatever the reason.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }
}

/// Latest value and rolling statistics of one sensor.
#[derive(Debug, Clone)]
pub struct SensorState {
    /// The value.
    pub value: Value,
    /// Device time of the reading, Unix ms (restored to 64 bits).
    pub time_ms: u64,
    /// Hub time at which it arrived, Unix ms.
    pub received_ms: u64,
    /// Hub time of its first reading.
    pub first_ms: u64,
    /// Readings received.
    pub count: u64,
    /// One rolling window per configured length.
    windows: Vec<Window>,
}

impl SensorState {
    /// Statistics of every window at `now_ms`.
    pub fn window_stats(&self, now_ms: u64) -> Vec<WindowStats> {
        let age = now_ms.saturating_sub(self.first_ms);
        self.windows.iter().map(|w| w.stats(now_ms, age)).collect()
    }
}

/// The numeric form of a value for statistics (booleans as 0 and 1).
pub fn numeric(value: Value) -> f64 {
    match value {
        Value::F32(f) => f64::from(f),
        Value::I32(i) => f64::from(i),
        Value::Bool(b) => f64::from(u8::from(b)),
    }
}

/// Rolling-window settings (`[aggregation]`).
#[derive(Debug, Clone)]
pub struct WindowConfig {
    /// Window lengths, ms.
    pub windows_ms: Vec<u64>,
    /// Slices per window.
    pub buckets: usize,
}

/// What the hub knows about one device.
#[derive(Debug, Clone)]
pub struct DeviceState {
    /// Numeric id.
    pub id: DeviceId,
    /// Address of the latest datagram.
    pub addr: SocketAddr,
    /// Hub time of the first datagram, Unix ms.
    pub first_seen_ms: u64,
    /// Hub time of the latest datagram, Unix ms.
    pub last_seen_ms: u64,
    /// Datagrams accepted from it.
    pub datagrams: u64,
    /// Readings accepted from it.
    pub readings: u64,
    /// Bytes of its accepted datagrams.
    pub bytes: u64,
    /// Sequence number of the latest datagram.
    pub last_seq: u32,
    /// Latest value per channel (at most 256).
    pub sensors: BTreeMap<Channel, SensorState>,
    /// Loss, reordering and duplicates from sequence numbers.
    pub seq: SeqTracker,
    /// Receive time minus device time (offset-corrected when known).
    pub latency: LatencyHistogram,
    /// Datagram rate over the first configured window.
    rate: Window,
}

impl DeviceState {
    /// Datagrams per second over the first rolling window, at `now_ms`.
    pub fn rate_per_s(&self, now_ms: u64) -> f64 {
        self.rate
            .stats(now_ms, now_ms.saturating_sub(self.first_seen_ms))
            .rate_per_s
    }
}

/// An accepted datagram, as passed on to live subscribers.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveDatagram {
    /// Sender.
    pub device: DeviceId,
    /// Its sequence number.
    pub seq: u32,
    /// Device time, Unix ms (restored to 64 bits).
    pub time_ms: u64,
    /// Hub receive time, Unix ms.
    pub received_ms: u64,
    /// The readings, allocated to their exact number (the replay ring holds
    /// many of these; a fixed 64-reading array would cost 512 bytes each).
    pub readings: Box<[Reading]>,
}

/// The fleet as seen through the data plane, plus the control plane's
/// [`Registry`], under one lock so ingest feeds liveness without a second one.
#[derive(Debug)]
pub struct HubState {
    devices: HashMap<DeviceId, DeviceState>,
    max_devices: usize,
    counters: IngestCounters,
    windows: WindowConfig,
    latency: LatencyHistogram,
    /// Sessions, liveness and commands; told of every accepted datagram.
    pub registry: Registry,
}

impl HubState {
    /// Empty state tracking at most `max_devices` devices.
    pub fn new(max_devices: usize, windows: WindowConfig, registry: Registry) -> HubState {
        HubState {
            devices: HashMap::new(),
            max_devices,
            counters: IngestCounters::default(),
            windows,
            latency: LatencyHistogram::default(),
            registry,
        }
    }

    /// Takes one datagram as read from the socket at `now_ms` (Unix ms).
    /// Returns what live subscribers should see, or why it was dropped;
    /// either way it has been counted.
    pub fn ingest(
        &mut self,
        bytes: &[u8],
        from: SocketAddr,
        now_ms: u64,
    ) -> Result<LiveDatagram, DropReason> {
        self.counters.datagrams_received += 1;
        self.counters.bytes_received += bytes.len() as u64;
        let result = self.accept(bytes, from, now_ms);
        match &result {
            Ok(live) => {
                self.counters.datagrams_accepted += 1;
                self.counters.readings_accepted += live.readings.len() as u64;
            }
            Err(reason) => self.counters.dropped[reason.index()] += 1,
        }
        result
    }

    fn accept(
        &mut self,
        bytes: &[u8],
        from: SocketAddr,
        now_ms: u64,
    ) -> Result<LiveDatagram, DropReason> {
        let datagram = decode_datagram(bytes).map_err(DropReason::Decode)?;
        let tracked = self.devices.len();
        let device = match self.devices.entry(datagram.device_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(_) if tracked >= self.max_devices => return Err(DropReason::DeviceLimit),
            Entry::Vacant(e) => e.insert(DeviceState {
                id: datagram.device_id,
                addr: from,
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
                datagrams: 0,
                readings: 0,
                bytes: 0,
                last_seq: datagram.seq,
                sensors: BTreeMap::new(),
                seq: SeqTracker::default(),
                latency: LatencyHistogram::default(),
                rate: Window::new(
                    self.windows.windows_ms.first().copied().unwrap_or(10_000),
                    self.windows.buckets,
                    now_ms,
                ),
            }),
        };
        let offset = self.registry.data_seen(datagram.device_id, now_ms);
        let time_ms = restore_time_ms(datagram.time_ms, now_ms);
        let latency = now_ms as i64 - time_ms as i64 - offset.unwrap_or(0);
        device.latency.record(latency);
        self.latency.record(latency);
        device.seq.observe(datagram.seq, time_ms);
        device.rate.add(now_ms, 1.0);
        device.addr = from;
        device.last_seen_ms = now_ms;
        device.datagrams += 1;
        device.readings += datagram.readings.len() as u64;
        device.bytes += bytes.len() as u64;
        device.last_seq = datagram.seq;
        for reading in &datagram.readings {
            let sensor = device
                .sensors
                .entry(reading.channel)
                .or_insert_with(|| SensorState {
                    value: reading.value,
                    time_ms,
                    received_ms: now_ms,
                    first_ms: now_ms,
                    count: 0,
                    windows: self
                        .windows
                        .windows_ms
                        .iter()
                        .map(|&w| Window::new(w, self.windows.buckets, now_ms))
                        .collect(),
                });
            sensor.value = reading.value;
            sensor.time_ms = time_ms;
            sensor.received_ms = now_ms;
            sensor.count += 1;
            let value = numeric(reading.value);
            if value.is_finite() {
                for window in &mut sensor.windows {
                    window.add(now_ms, value);
                }
            }
        }
        Ok(LiveDatagram {
            device: datagram.device_id,
            seq: datagram.seq,
            time_ms,
            received_ms: now_ms,
            readings: Box::from(&datagram.readings[..]),
        })
    }

    /// Latency over all devices.
    pub fn latency(&self) -> &LatencyHistogram {
        &self.latency
    }

    /// Sequence counts summed over all devices.
    pub fn seq_totals(&self) -> SeqCounts {
        let mut total = SeqCounts::default();
        for d in self.devices.values() {
            total.add(d.seq.counts());
        }
        total
    }

    /// Counters over every datagram read so far.
    pub fn counters(&self) -> &IngestCounters {
        &self.counters
    }

    /// Number of tracked devices.
    pub fn device_count(&self) -> usize {
        self.devices.len()
    }

    /// One device, if tracked.
    pub fn device(&self, id: DeviceId) -> Option<&DeviceState> {
        self.devices.get(&id)
    }

    /// Every tracked device, ordered by id.
    pub fn devices_by_id(&self) -> Vec<&DeviceState> {
        let mut devices: Vec<&DeviceState> = self.devices.values().collect();
        devices.sort_unstable_by_key(|d| d.id);
        devices
    }
}

#[cfg(test)]
mod tests;
