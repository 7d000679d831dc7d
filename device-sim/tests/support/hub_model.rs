//! A copy of the hub's per-device sequence accounting
//! (`src/aggregate/sequence.rs`), rule for rule, with a set in place of
//! its bitmap, and of its first step, decoding, which counts every
//! datagram that is not valid under one drop reason (docs/PROTOCOL.md,
//! "Drop reasons"; the decoder is the protocol crate's, as in the hub).
//! The fault injector's reports are checked against it, both by the
//! injector's unit tests and by the fleet's integration tests.

#![allow(dead_code)] // each includer uses a part

use std::collections::{BTreeMap, HashMap, HashSet};

use sensor_hub_protocol::{decode_datagram, restore_time_ms, DeviceId};

/// How far back the hub recognises late arrivals.
pub const REORDER_WINDOW: u32 = 1024;
/// Largest forward jump the hub still counts as loss.
pub const MAX_GAP: u32 = 1 << 16;

/// The hub's counters for one device (or summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub received: u64,
    pub lost: u64,
    pub reordered: u64,
    pub duplicated: u64,
    pub restarts: u64,
}

impl Counts {
    pub fn add(&mut self, other: &Counts) {
        self.received += other.received;
        self.lost += other.lost;
        self.reordered += other.reordered;
        self.duplicated += other.duplicated;
        self.restarts += other.restarts;
    }
}

/// The hub's sequence state of one device.
#[derive(Debug, Default)]
pub struct HubModel {
    started: bool,
    epoch_start: u32,
    max_seq: u32,
    max_time_ms: u64,
    /// Numbers of the current epoch received (the hub keeps only the
    /// window below `max_seq`; older ones are never looked up).
    seen: HashSet<u32>,
    pub counts: Counts,
}

impl HubModel {
    /// Accounts for one datagram, as the hub does.
    pub fn observe(&mut self, seq: u32, time_ms: u64) {
        self.counts.received += 1;
        if !self.started {
            self.started = true;
            self.begin_epoch(seq, time_ms);
            return;
        }
        let ahead = seq.wrapping_sub(self.max_seq);
        let newer_clock = time_ms > self.max_time_ms;
        if ahead != 0 && ahead < 1 << 31 {
            if ahead > MAX_GAP && newer_clock {
                self.restart(seq, time_ms);
                return;
            }
            self.counts.lost += u64::from(ahead - 1);
            self.seen.insert(seq);
            self.max_seq = seq;
            self.max_time_ms = self.max_time_ms.max(time_ms);
            return;
        }
        if newer_clock {
            self.restart(seq, time_ms);
            return;
        }
        let back = self.max_seq.wrapping_sub(seq);
        let before_epoch = seq.wrapping_sub(self.epoch_start) >= 1 << 31;
        if back >= REORDER_WINDOW || before_epoch {
            self.counts.reordered += 1;
            return;
        }
        if !self.seen.insert(seq) {
            self.counts.duplicated += 1;
            return;
        }
        self.counts.lost = self.counts.lost.saturating_sub(1);
        self.counts.reordered += 1;
    }

    fn begin_epoch(&mut self, seq: u32, time_ms: u64) {
        self.epoch_start = seq;
        self.max_seq = seq;
        self.max_time_ms = time_ms;
        self.seen.clear();
        self.seen.insert(seq);
    }

    fn restart(&mut self, seq: u32, time_ms: u64) {
        self.counts.restarts += 1;
        self.begin_epoch(seq, time_ms);
    }
}

/// The whole hub's first steps: every datagram read, each either dropped
/// under a reason or accounted to its device's sequence.
#[derive(Debug, Default)]
pub struct Hub {
    /// Datagrams read, valid or not (hub: `udp_datagrams_received_total`).
    pub datagrams: u64,
    /// Datagrams dropped, by reason (hub: `udp_datagrams_dropped_total`).
    pub dropped: BTreeMap<&'static str, u64>,
    /// Sequence accounting per device.
    pub devices: HashMap<DeviceId, HubModel>,
}

impl Hub {
    /// Reads one datagram at hub time `now_ms` (Unix ms), as the hub does.
    pub fn read(&mut self, bytes: &[u8], now_ms: u64) {
        self.datagrams += 1;
        match decode_datagram(bytes) {
            Ok(datagram) => {
                let time_ms = restore_time_ms(datagram.time_ms, now_ms);
                self.devices
                    .entry(datagram.device_id)
                    .or_default()
                    .observe(datagram.seq, time_ms);
            }
            Err(e) => *self.dropped.entry(e.reason()).or_default() += 1,
        }
    }

    /// Datagrams dropped under `reason`.
    pub fn dropped(&self, reason: &str) -> u64 {
        self.dropped.get(reason).copied().unwrap_or(0)
    }

    /// The sequence counters summed over devices.
    pub fn totals(&self) -> Counts {
        let mut totals = Counts::default();
        for device in self.devices.values() {
            totals.add(&device.counts);
        }
        totals
    }
}
