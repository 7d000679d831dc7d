//! The real hub, for checking device-sim's fault reports against what the
//! hub counts: every datagram goes through sensor-hub's pure ingest core
//! (`sensor_hub::state::HubState`: decoding and drop reasons, keyed
//! devices' tags and replay windows, the device limit and discovered
//! devices, per-device sequence accounting of
//! `sensor_hub::aggregate::sequence`) as the hub's UDP loop feeds it. This module is the only place where
//! device-sim's tests name the hub: when the hub core's constructors or its
//! clock change, only this file changes. Used by the injector's unit tests
//! (src/faults/tests.rs) and the fleet's integration tests.

#![allow(dead_code)] // each includer uses a part

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use sensor_hub::clock::Now;
use sensor_hub::registry::{Registry, RegistryConfig};
use sensor_hub::state::{DropReason, HubState, Ingested, SessionAuth, WindowConfig};
use sensor_hub_protocol::auth::{DatagramKey, DeviceKey};
use sensor_hub_protocol::{decode_datagram, restore_time_ms, DeviceId};
use strum::IntoEnumIterator as _;

/// The hub's sequence counters, per device or summed.
pub use sensor_hub::aggregate::sequence::SeqCounts as Counts;

/// Devices the hub tracks; more than any test runs.
const MAX_DEVICES: usize = 1_024;

/// The sender address given to the hub (it accounts by device id, not by
/// address).
const FROM: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9));

/// An accepted datagram, as the hub read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// Sender.
    pub device: DeviceId,
    /// Its sequence number.
    pub seq: u32,
    /// Device time, Unix ms, as the hub restored it to 64 bits.
    pub time_ms: u64,
}

/// What the hub made of one datagram: accepted, or dropped under a reason
/// (a `udp_datagrams_dropped_total` label, e.g. `truncated`).
pub type Verdict = Result<Accepted, &'static str>;

/// What the hub counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HubCounts {
    /// Datagrams read, valid or not (`udp_datagrams_received_total`).
    pub datagrams: u64,
    /// Datagrams dropped, by reason (`udp_datagrams_dropped_total`).
    pub dropped: BTreeMap<&'static str, u64>,
    /// Sequence accounting summed over devices.
    pub seq: Counts,
    /// Devices tracked.
    pub devices: usize,
    /// Of which discovered (not adopted).
    pub discovered: usize,
}

impl HubCounts {
    /// Datagrams dropped under `reason`.
    pub fn dropped(&self, reason: &str) -> u64 {
        self.dropped.get(reason).copied().unwrap_or(0)
    }
}

/// The hub's ingest core, empty.
#[derive(Debug)]
pub struct Hub {
    state: HubState,
    registry: Registry,
    /// Devices adopted (listed in the device file), keyed or not.
    listed: Vec<DeviceId>,
    /// Devices with a key, and their device keys (placeholders: only
    /// session keys tag datagrams).
    keyed: Vec<(DeviceId, DeviceKey)>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub::with_max_discovered(MAX_DEVICES)
    }
}

impl Hub {
    /// An empty hub core that tracks at most `max_discovered` discovered
    /// devices.
    pub fn with_max_discovered(max_discovered: usize) -> Hub {
        let registry = Registry::new(RegistryConfig {
            max_devices: MAX_DEVICES,
            default_interval_ms: 1_000,
            late_after_intervals: 3,
            offline_after_intervals: 10,
            command_ttl_ms: 10_000,
            queue_per_device: 1,
            max_in_flight: 1,
            retain_finished: 1,
            // Fleets here send data only: discovered devices, as many as
            // the limit above.
            trust: sensor_hub::registry::TrustConfig {
                max_discovered,
                ..Default::default()
            },
        });
        let windows = WindowConfig {
            windows_ms: vec![10_000],
            buckets: 10,
        };
        Hub {
            state: HubState::new(windows, u32::MAX),
            registry,
            listed: Vec::new(),
            keyed: Vec::new(),
        }
    }

    /// Lists `device` in the device file, without a key: adopted, so it
    /// takes no discovered slot.
    pub fn adopt(&mut self, device: DeviceId) {
        self.listed.push(device);
        self.registry
            .set_listed(self.listed.iter().copied(), Now::at(0, 0));
    }

    /// `device` has a key (it is listed with it) and said hello: from now
    /// on its datagrams must carry tags of `key`, in a fresh replay window.
    pub fn start_session(&mut self, device: DeviceId, key: DatagramKey) {
        if !self.keyed.iter().any(|&(id, _)| id == device) {
            self.keyed.push((device, [0x6B; 32]));
            self.state
                .set_keyed(self.keyed.iter().map(|(id, key)| (*id, key)));
            self.adopt(device);
        }
        self.state.start_session(device, SessionAuth::new(key));
    }

    /// Reads one datagram at hub time `now_ms` (Unix ms), as the hub does.
    pub fn read(&mut self, bytes: &[u8], now_ms: u64) -> Verdict {
        let now = Now::at(now_ms, now_ms);
        match self
            .state
            .ingest(&mut self.registry, bytes, bytes.len(), FROM, now)
        {
            Ok(Ingested::Applied { live, .. }) => Ok(Accepted {
                device: live.device,
                seq: live.seq,
                time_ms: live.time_ms,
            }),
            // Accepted and counted, not applied again: what it was is in
            // its bytes, which the hub decoded already.
            Ok(Ingested::Duplicate) => {
                let d = decode_datagram(bytes).map_err(|_| "a duplicate decodes")?;
                Ok(Accepted {
                    device: d.device_id,
                    seq: d.seq,
                    time_ms: restore_time_ms(d.time_ms, now_ms),
                })
            }
            Err(reason) => Err(reason.name()),
        }
    }

    /// Everything counted so far.
    pub fn counts(&self) -> HubCounts {
        let counters = self.state.counters();
        HubCounts {
            datagrams: counters.datagrams_received,
            dropped: DropReason::iter()
                .map(|r| (r.name(), counters.dropped[r.index()]))
                .collect(),
            seq: self.state.seq_totals(),
            devices: self.registry.device_count(),
            discovered: self.registry.discovered_count(),
        }
    }
}

/// A fresh hub reads `wire` in order at hub time `now_ms`: what it made
/// of each datagram, and what it counted.
pub fn hub_accounting(wire: &[Vec<u8>], now_ms: u64) -> (Vec<Verdict>, HubCounts) {
    let mut hub = Hub::default();
    let verdicts = wire.iter().map(|bytes| hub.read(bytes, now_ms)).collect();
    (verdicts, hub.counts())
}
