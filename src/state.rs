//! The pure core of ingest: what the hub knows about each device and its
//! sensors, and the counters of every datagram read. No sockets, no clock:
//! the caller passes the bytes (or their decoding), the sender's address
//! and the current [`Now`], so everything here is unit-tested directly.
//! Which devices may be tracked at all is the [`Registry`]'s one rule
//! (`limits.max_devices` counts a device once, whichever plane it used).
//!
//! A duplicated datagram (a sequence number the device already delivered)
//! is counted — as accepted and under `duplicated` — but not applied again:
//! its readings are not re-counted, re-streamed or re-stored.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;

use sensor_hub_protocol::auth::{DatagramKey, DeviceKey, TagError};
use sensor_hub_protocol::{
    decode_datagram, restore_time_ms, Channel, Datagram, DecodeError, DeviceId, Reading, Value,
};

use crate::aggregate::budget::Budget;
use crate::aggregate::latency::LatencyHistogram;
use crate::aggregate::replay::{ReplayVerdict, ReplayWindow};
use crate::aggregate::sequence::{SeqCounts, SeqTracker, SeqVerdict};
use crate::aggregate::window::{Window, WindowStats};
use crate::clock::Now;
use crate::registry::{Refusal, Registry};

/// Why a datagram was not accepted. Every read datagram is either accepted
/// or counted under exactly one of these (the metrics label is the
/// snake_case name).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumCount, strum::EnumIter, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum DropReason {
    /// Longer than the largest valid datagram.
    Oversized,
    /// Ends early (or fewer than 2 bytes).
    Truncated,
    /// First byte is not the magic: not our traffic.
    BadMagic,
    /// A version this hub does not speak.
    BadVersion,
    /// Not a valid v1 body.
    Undecodable,
    /// Valid, but a new adopted device while `limits.max_devices` are
    /// tracked.
    DeviceLimit,
    /// From a device with a key, without a tag.
    Unauthenticated,
    /// From a device with a key, with a tag its current session key does
    /// not make (forged, altered, or from an earlier session).
    BadTag,
    /// Tag valid, but its sequence number was accepted before in this
    /// session or is older than the replay window.
    Replayed,
    /// From a device with a key that has no session key yet (it has not
    /// said hello since the hub started).
    NoSession,
    /// From an unknown id while `devices.accept_unknown` is false.
    UnknownDevice,
    /// From an unknown id while `devices.max_discovered` discovered devices
    /// are tracked.
    DiscoveredLimit,
    /// Over the device's `devices.max_readings_per_s`.
    OverBudget,
}

impl DropReason {
    /// Metrics label.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Index into [`IngestCounters::dropped`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl From<DecodeError> for DropReason {
    fn from(e: DecodeError) -> DropReason {
        match e {
            DecodeError::Oversized => DropReason::Oversized,
            DecodeError::Truncated => DropReason::Truncated,
            DecodeError::BadMagic => DropReason::BadMagic,
            DecodeError::BadVersion(_) => DropReason::BadVersion,
            DecodeError::Undecodable => DropReason::Undecodable,
        }
    }
}

/// A datagram as decoded from the wire, in the compact form the hub keeps
/// (readings allocated to their exact number: a decoded [`Datagram`] holds
/// room for 64). Made before the core's lock is taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// Sender.
    pub device_id: DeviceId,
    /// Sequence number.
    pub seq: u32,
    /// Low 32 bits of the device's clock, ms.
    pub time_ms: u32,
    /// The readings.
    pub readings: Box<[Reading]>,
    /// Whether it carries an auth tag (then its last 16 bytes).
    pub tagged: bool,
}

impl Decoded {
    /// Decodes `bytes`, the part read of a datagram of `wire_len` bytes.
    pub fn decode(bytes: &[u8], wire_len: usize) -> Result<Decoded, DecodeError> {
        if wire_len > bytes.len() {
            return Err(DecodeError::Oversized);
        }
        let d: Datagram = decode_datagram(bytes)?;
        Ok(Decoded {
            device_id: d.device_id,
            seq: d.seq,
            time_ms: d.time_ms,
            readings: Box::from(&d.readings[..]),
            tagged: d.auth_tag.is_some(),
        })
    }
}

/// What became of an accepted datagram.
#[derive(Debug, Clone, PartialEq)]
pub enum Ingested {
    /// New data: applied, to be streamed, and stored when its device is
    /// adopted (a discovered device's readings are shown, never stored).
    Applied {
        /// What live subscribers see.
        live: LiveDatagram,
        /// Whether its device is adopted.
        adopted: bool,
    },
    /// A copy of one already applied: counted, nothing else.
    Duplicate,
}

/// Counters over all datagrams read from the UDP socket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestCounters {
    /// Datagrams read, valid or not.
    pub datagrams_received: u64,
    /// Bytes of the datagrams read, at their length on the wire (an
    /// oversized datagram counts whole, though only its start is read).
    pub bytes_received: u64,
    /// Datagrams accepted (duplicates included: they are valid traffic).
    pub datagrams_accepted: u64,
    /// Accepted datagrams that were copies of one already applied.
    pub datagrams_duplicated: u64,
    /// Readings applied (a duplicate's readings are not counted again).
    pub readings_accepted: u64,
    /// Datagrams dropped, indexed by [`DropReason::index`].
    pub dropped: [u64; <DropReason as strum::EnumCount>::COUNT],
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
    /// Hub wall time at which it arrived, Unix ms.
    pub received_ms: u64,
    /// Monotonic time of its first reading (window ages).
    first_mono_ms: u64,
    /// Readings received.
    pub count: u64,
    /// One rolling window per configured length, on monotonic time.
    windows: Vec<Window>,
}

impl SensorState {
    /// Statistics of every window at `now`.
    pub fn window_stats(&self, now: Now) -> Vec<WindowStats> {
        let age = now.mono_ms.saturating_sub(self.first_mono_ms);
        self.windows
            .iter()
            .map(|w| w.stats(now.mono_ms, age))
            .collect()
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
    /// Wall time of the first datagram, Unix ms.
    pub first_seen_ms: u64,
    /// Wall time of the latest datagram, Unix ms.
    pub last_seen_ms: u64,
    /// Monotonic time of the first datagram (rate window age).
    first_seen_mono_ms: u64,
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
    /// Its ingest budget.
    budget: Budget,
}

impl DeviceState {
    /// Datagrams per second over the first rolling window, at `now`.
    pub fn rate_per_s(&self, now: Now) -> f64 {
        let age = now.mono_ms.saturating_sub(self.first_seen_mono_ms);
        self.rate.stats(now.mono_ms, age).rate_per_s
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

/// The fleet as seen through the data plane: per-device and per-sensor
/// state, and the counters of every datagram read.
#[derive(Debug)]
pub struct HubState {
    devices: HashMap<DeviceId, DeviceState>,
    counters: IngestCounters,
    windows: WindowConfig,
    latency: LatencyHistogram,
    /// Devices with a key: the key, and their current session's datagram
    /// key.
    keyed: HashMap<DeviceId, (DeviceKey, Option<SessionAuth>)>,
    /// `devices.max_readings_per_s`.
    budget_rate: u32,
}

/// A keyed device's current session: its datagram key and replay window.
#[derive(Debug, Clone)]
pub struct SessionAuth {
    key: DatagramKey,
    window: ReplayWindow,
}

impl SessionAuth {
    /// A new session's state (empty window).
    pub fn new(key: DatagramKey) -> SessionAuth {
        SessionAuth {
            key,
            window: ReplayWindow::default(),
        }
    }
}

impl HubState {
    /// Empty state; `windows` sets the rolling statistics,
    /// `budget_rate` each device's readings per second.
    pub fn new(windows: WindowConfig, budget_rate: u32) -> HubState {
        HubState {
            devices: HashMap::new(),
            counters: IngestCounters::default(),
            windows,
            latency: LatencyHistogram::default(),
            keyed: HashMap::new(),
            budget_rate,
        }
    }

    /// The devices that have a key now, and their keys: their datagrams
    /// must carry a tag of their session key. Sessions of devices whose
    /// key is unchanged are kept; returns the devices whose key changed
    /// while they had a session (that session is void now).
    pub fn set_keyed<'k>(
        &mut self,
        keyed: impl IntoIterator<Item = (DeviceId, &'k DeviceKey)>,
    ) -> Vec<DeviceId> {
        let mut voided = Vec::new();
        let mut next: HashMap<DeviceId, (DeviceKey, Option<SessionAuth>)> = HashMap::new();
        for (id, key) in keyed {
            let session = match self.keyed.remove(&id) {
                Some((old, session)) if old == *key => session,
                Some((_, Some(_))) => {
                    voided.push(id);
                    None
                }
                _ => None,
            };
            next.insert(id, (*key, session));
        }
        self.keyed = next;
        voided.sort_unstable();
        voided
    }

    /// Whether `device` must tag its datagrams.
    pub fn is_keyed(&self, device: DeviceId) -> bool {
        self.keyed.contains_key(&device)
    }

    /// A keyed device said hello: datagrams from now on must carry tags of
    /// this session's key (the replay window starts empty). Ignored for a
    /// device without a key.
    pub fn start_session(&mut self, device: DeviceId, auth: SessionAuth) {
        if let Some((_, session)) = self.keyed.get_mut(&device) {
            *session = Some(auth);
        }
    }

    /// Forgets a device's data-plane state (its key entry stays while the
    /// device file lists it).
    pub fn remove_device(&mut self, device: DeviceId) {
        self.devices.remove(&device);
        if let Some((_, session)) = self.keyed.get_mut(&device) {
            *session = None;
        }
    }

    /// Decodes and takes one datagram of `wire_len` bytes on the wire, of
    /// which `bytes` were read (see [`HubState::apply`]).
    pub fn ingest(
        &mut self,
        registry: &mut Registry,
        bytes: &[u8],
        wire_len: usize,
        from: SocketAddr,
        now: Now,
    ) -> Result<Ingested, DropReason> {
        let decoded = Decoded::decode(bytes, wire_len);
        self.apply(registry, decoded, bytes, wire_len, from, now)
    }

    /// Takes one decoded datagram (or its decoding error) read as `bytes`,
    /// `wire_len` bytes on the wire, received at `now`. A keyed device's
    /// tag and sequence number are checked first: a datagram that fails
    /// changes nothing but its drop counter. The registry admits new
    /// devices and hears of every accepted datagram. Returns what live
    /// subscribers and the history should see, or why it was dropped;
    /// either way it has been counted.
    pub fn apply(
        &mut self,
        registry: &mut Registry,
        decoded: Result<Decoded, DecodeError>,
        bytes: &[u8],
        wire_len: usize,
        from: SocketAddr,
        now: Now,
    ) -> Result<Ingested, DropReason> {
        self.counters.datagrams_received += 1;
        self.counters.bytes_received = self
            .counters
            .bytes_received
            .saturating_add(u64::try_from(wire_len).unwrap_or(u64::MAX));
        let result = decoded
            .map_err(DropReason::from)
            .and_then(|datagram| self.accept(registry, datagram, bytes, wire_len, from, now));
        match &result {
            Ok(Ingested::Applied { live, .. }) => {
                self.counters.datagrams_accepted += 1;
                self.counters.readings_accepted += live.readings.len() as u64;
            }
            Ok(Ingested::Duplicate) => {
                self.counters.datagrams_accepted += 1;
                self.counters.datagrams_duplicated += 1;
            }
            Err(reason) => self.counters.dropped[reason.index()] += 1,
        }
        result
    }

    /// Checks a keyed device's tag and replay window; returns the
    /// extended sequence number to record once the datagram is accepted
    /// (`None` for a device without a key).
    fn authenticate(&self, datagram: &Decoded, bytes: &[u8]) -> Result<Option<u64>, DropReason> {
        let Some((_, session)) = self.keyed.get(&datagram.device_id) else {
            return Ok(None);
        };
        let Some(session) = session else {
            return Err(DropReason::NoSession);
        };
        session
            .key
            .verify(bytes, datagram.tagged)
            .map_err(|e| match e {
                TagError::Missing => DropReason::Unauthenticated,
                TagError::Invalid => DropReason::BadTag,
            })?;
        match session.window.check(datagram.seq) {
            ReplayVerdict::Fresh(extended) => Ok(Some(extended)),
            ReplayVerdict::Replayed => Err(DropReason::Replayed),
        }
    }

    fn accept(
        &mut self,
        registry: &mut Registry,
        datagram: Decoded,
        bytes: &[u8],
        wire_len: usize,
        from: SocketAddr,
        now: Now,
    ) -> Result<Ingested, DropReason> {
        let extended = self.authenticate(&datagram, bytes)?;
        // The budget of a device already tracked is checked before the
        // registry records the arrival; a new device starts full.
        if let Some(device) = self.devices.get_mut(&datagram.device_id) {
            if !device
                .budget
                .take(datagram.readings.len(), self.budget_rate, now.mono_ms)
            {
                return Err(DropReason::OverBudget);
            }
        }
        // Admits the device (or refuses it) and records the datagram's
        // arrival for liveness, in one lookup.
        let (offset, adopted) = registry
            .data_seen(datagram.device_id, now)
            .map_err(|refusal| match refusal {
                Refusal::DeviceLimit => DropReason::DeviceLimit,
                Refusal::UnknownDevice => DropReason::UnknownDevice,
                Refusal::DiscoveredLimit => DropReason::DiscoveredLimit,
            })?;
        if let (Some(extended), Some((_, Some(session)))) =
            (extended, self.keyed.get_mut(&datagram.device_id))
        {
            session.window.accept(extended);
        }
        let now_ms = now.wall_ms;
        let budget_rate = self.budget_rate;
        let device = match self.devices.entry(datagram.device_id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(DeviceState {
                id: datagram.device_id,
                addr: from,
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
                first_seen_mono_ms: now.mono_ms,
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
                    now.mono_ms,
                ),
                budget: {
                    let mut budget = Budget::full(budget_rate, now.mono_ms);
                    budget.take(datagram.readings.len(), budget_rate, now.mono_ms);
                    budget
                },
            }),
        };
        let time_ms = restore_time_ms(datagram.time_ms, now_ms);
        device.addr = from;
        device.last_seen_ms = now_ms;
        device.datagrams += 1;
        device.bytes = device
            .bytes
            .saturating_add(u64::try_from(wire_len).unwrap_or(u64::MAX));
        if device.seq.observe(datagram.seq, time_ms) == SeqVerdict::Duplicate {
            return Ok(Ingested::Duplicate);
        }
        let latency = latency_ms(now_ms, time_ms, offset.unwrap_or(0));
        device.latency.record(latency);
        self.latency.record(latency);
        device.rate.add(now.mono_ms, 1.0);
        device.readings += datagram.readings.len() as u64;
        device.last_seq = datagram.seq;
        for reading in &datagram.readings {
            let sensor = device
                .sensors
                .entry(reading.channel)
                .or_insert_with(|| SensorState {
                    value: reading.value,
                    time_ms,
                    received_ms: now_ms,
                    first_mono_ms: now.mono_ms,
                    count: 0,
                    windows: self
                        .windows
                        .windows_ms
                        .iter()
                        .map(|&w| Window::new(w, self.windows.buckets, now.mono_ms))
                        .collect(),
                });
            sensor.value = reading.value;
            sensor.time_ms = time_ms;
            sensor.received_ms = now_ms;
            sensor.count += 1;
            let value = numeric(reading.value);
            if value.is_finite() {
                for window in &mut sensor.windows {
                    window.add(now.mono_ms, value);
                }
            }
        }
        Ok(Ingested::Applied {
            live: LiveDatagram {
                device: datagram.device_id,
                seq: datagram.seq,
                time_ms,
                received_ms: now_ms,
                readings: datagram.readings,
            },
            adopted,
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

    /// Number of devices that sent data (the registry's
    /// [`device_count`](Registry::device_count) is the fleet).
    pub fn data_device_count(&self) -> usize {
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

/// Receive time minus device time, corrected by the device's clock offset
/// (hub minus device), ms; computed wide and clamped, so no wire value can
/// overflow it.
fn latency_ms(received_ms: u64, device_ms: u64, offset_ms: i64) -> i64 {
    let latency = i128::from(received_ms) - i128::from(device_ms) - i128::from(offset_ms);
    i64::try_from(latency.clamp(i128::from(i64::MIN), i128::from(i64::MAX))).unwrap_or(0)
}

#[cfg(test)]
mod tests;
