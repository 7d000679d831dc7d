//! [`InjectedFaults`]: what a device's fault injector put on the wire, in
//! the terms the hub counts it in. Pure data.

use serde::Serialize;

use super::corrupt::CorruptedCounts;

/// What was injected into datagrams, as the hub will count it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InjectedFaults {
    /// Intact datagrams put on the wire, extra copies included (hub:
    /// sequence `received`). Corrupted ones are not among them.
    pub sent: u64,
    /// Datagrams dropped or corrupted that the hub can see missing (hub:
    /// `lost`).
    pub lost: u64,
    /// Held datagrams sent after a higher number (hub: `reordered`).
    pub reordered: u64,
    /// Extra copies sent (hub: `duplicated`).
    pub duplicated: u64,
    /// Corrupted datagrams put on the wire, by the hub's drop reason (hub:
    /// `sensor_hub_udp_datagrams_dropped_total{reason}`).
    pub corrupted: CorruptedCounts,
    /// New sequences (after a reboot, commanded or random) begun on the
    /// wire after the device's first one (hub: `restarts`).
    pub restarts: u64,
}

impl InjectedFaults {
    /// Adds another device's report.
    pub fn add(&mut self, other: &InjectedFaults) {
        self.sent += other.sent;
        self.lost += other.lost;
        self.reordered += other.reordered;
        self.duplicated += other.duplicated;
        self.corrupted.add(&other.corrupted);
        self.restarts += other.restarts;
    }

    /// Datagram faults so far: lost, reordered, duplicated, corrupted.
    pub fn faults(&self) -> u64 {
        self.lost + self.reordered + self.duplicated + self.corrupted.total()
    }

    /// All datagrams put on the wire, corrupted ones included (hub:
    /// `sensor_hub_udp_datagrams_received_total`).
    pub fn on_wire(&self) -> u64 {
        self.sent + self.corrupted.total()
    }
}
