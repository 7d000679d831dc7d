//! [`InjectedFaults`]: what a device's fault injector (and the fleet's
//! phantom flood) put on the wire, in the terms the hub counts it in, and
//! what a phantom flood comes to for a given number of free discovered
//! slots. Pure data.

use serde::Serialize;

use super::corrupt::CorruptedCounts;

/// What was injected into datagrams, as the hub will count it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InjectedFaults {
    /// Datagrams the hub accepts (hub: sequence `received`): every intact
    /// datagram put on the wire once, and for a device without a key its
    /// extra copies too. Corrupted, forged, replayed and spoofed ones are
    /// not among them, nor are phantoms.
    pub sent: u64,
    /// Datagrams dropped or corrupted that the hub can see missing (hub:
    /// `lost`).
    pub lost: u64,
    /// Held datagrams sent after a higher number (hub: `reordered`).
    pub reordered: u64,
    /// Extra copies sent by devices without a key (hub: `duplicated`). A
    /// keyed device's copy is counted under `replayed`.
    pub duplicated: u64,
    /// Corrupted datagrams put on the wire, by the hub's drop reason (hub:
    /// `sensor_hub_udp_datagrams_dropped_total{reason}`).
    pub corrupted: CorruptedCounts,
    /// New sequences (after a reboot, commanded or random) begun on the
    /// wire after the device's first one (hub: `restarts`).
    pub restarts: u64,
    /// Datagrams of keyed devices sent again within their session: extra
    /// copies and injected replays (hub: dropped as `replayed`).
    pub replayed: u64,
    /// Datagrams of keyed devices whose tag the hub's current session key
    /// does not make: forged copies, and datagrams of an earlier session
    /// sent after a new one began (hub: dropped as `bad_tag`).
    pub bad_tag: u64,
    /// Untagged datagrams a stranger sent in a keyed device's name (hub:
    /// dropped as `unauthenticated`).
    pub unauthenticated: u64,
    /// Datagrams from phantom ids, fleet-wide (see
    /// [`InjectedFaults::phantom_admitted`] for what the hub makes of them).
    pub phantom_sent: u64,
    /// Distinct phantom ids that sent, which took turns in a fixed order.
    pub phantom_ids: u64,
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
        self.replayed += other.replayed;
        self.bad_tag += other.bad_tag;
        self.unauthenticated += other.unauthenticated;
        self.phantom_sent += other.phantom_sent;
        self.phantom_ids += other.phantom_ids;
    }

    /// Datagram faults so far: lost, reordered, duplicated, corrupted,
    /// replayed, bad tags, spoofs and phantoms.
    pub fn faults(&self) -> u64 {
        self.lost
            + self.reordered
            + self.duplicated
            + self.corrupted.total()
            + self.impersonations()
            + self.phantom_sent
    }

    /// Datagrams an attacker sent in the name of keyed devices: replayed,
    /// with a bad tag, or spoofed (all dropped by the hub).
    pub fn impersonations(&self) -> u64 {
        self.replayed + self.bad_tag + self.unauthenticated
    }

    /// All datagrams put on the wire, corrupted, impersonating and phantom
    /// ones included (hub: `sensor_hub_udp_datagrams_received_total`).
    pub fn on_wire(&self) -> u64 {
        self.sent + self.corrupted.total() + self.impersonations() + self.phantom_sent
    }

    /// The phantom datagrams the hub accepts when `free_slots` discovered
    /// devices may still be added (`devices.max_discovered` less those
    /// discovered otherwise): the ids take turns in a fixed order, so the
    /// first `free_slots` of them to send get a slot and every datagram of
    /// theirs is accepted, while the others' are all refused (as long as
    /// no discovered device expires during the run).
    pub fn phantom_admitted(&self, free_slots: u64) -> u64 {
        let (sent, ids) = (self.phantom_sent, self.phantom_ids);
        if ids == 0 {
            return 0;
        }
        let admitted_ids = free_slots.min(ids);
        (sent / ids) * admitted_ids + (sent % ids).min(admitted_ids)
    }

    /// The phantom datagrams the hub refuses when `free_slots` discovered
    /// devices may still be added (hub: `discovered_limit`, or
    /// `unknown_device` with `free_slots` 0 when unknown ids are refused).
    pub fn phantom_refused(&self, free_slots: u64) -> u64 {
        self.phantom_sent - self.phantom_admitted(free_slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flood(sent: u64, ids: u64) -> InjectedFaults {
        InjectedFaults {
            phantom_sent: sent,
            phantom_ids: ids,
            ..InjectedFaults::default()
        }
    }

    #[test]
    fn phantoms_with_a_slot_are_accepted_and_the_others_refused() {
        // Ids a b c d e take turns: a b c d e a b c d e a b.
        let twelve = flood(12, 5);
        assert_eq!(twelve.phantom_admitted(5), 12);
        assert_eq!(twelve.phantom_admitted(9), 12);
        // a and b got slots: 3 datagrams each.
        assert_eq!(twelve.phantom_admitted(2), 6);
        assert_eq!(twelve.phantom_refused(2), 6);
        // a b c: 3 + 3 + 2.
        assert_eq!(twelve.phantom_admitted(3), 8);
        assert_eq!(twelve.phantom_admitted(0), 0);
        assert_eq!(twelve.phantom_refused(0), 12);
        // Fewer datagrams than ids: each id sent once.
        assert_eq!(flood(3, 3).phantom_admitted(2), 2);
        assert_eq!(flood(0, 0).phantom_admitted(4), 0);
    }

    #[test]
    fn everything_put_on_the_wire_is_counted_once() {
        let mut report = InjectedFaults {
            sent: 10,
            lost: 1,
            replayed: 2,
            bad_tag: 3,
            unauthenticated: 4,
            ..flood(5, 2)
        };
        report.corrupted.bad_magic = 6;
        assert_eq!(report.on_wire(), 10 + 2 + 3 + 4 + 5 + 6);
        assert_eq!(report.faults(), 1 + 2 + 3 + 4 + 5 + 6);
        let mut twice = report;
        twice.add(&report);
        assert_eq!(twice.on_wire(), 2 * report.on_wire());
        assert_eq!(twice.impersonations(), 18);
    }
}
