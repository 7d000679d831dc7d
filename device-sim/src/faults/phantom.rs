//! Phantom devices: a fleet-wide flood of tiny untagged keep-alives from
//! ids no device of the fleet uses, as a scanner or a misconfigured
//! neighbour would send. A fixed set of ids ([`phantom_ids`], drawn from a
//! seed) takes turns in order, each with its own sequence starting at 0,
//! so what the hub makes of them follows from how many were sent
//! ([`super::InjectedFaults::phantom_admitted`]). [`PhantomFlood`] makes
//! the datagrams and says when the next is due. Pure: the caller passes
//! the time in and owns the socket.

use std::collections::HashSet;
use std::time::Duration;

use sensor_hub_protocol::{encode_datagram, Datagram, DeviceId, Readings, MAX_DATAGRAM_LEN};

use crate::device::SimDevice;

/// Phantom ids are drawn from this id upward (ids of 4 and 5 bytes on the
/// wire, above any fleet `device-sim` builds by default).
pub const PHANTOM_FIRST_ID: DeviceId = 0x1000_0000;

/// Salt of the phantom ids' seed.
const PHANTOM_SALT: u64 = 0x9A47_0000_1D5E_ED00;

/// `count` distinct phantom ids for the fleet `devices`: drawn from a seed
/// derived from the fleet's, at or above [`PHANTOM_FIRST_ID`], none of them
/// a fleet device's id. The same fleet always gets the same ids, in the
/// same order.
pub fn phantom_ids(devices: &[SimDevice], count: u32) -> Vec<DeviceId> {
    let fleet: HashSet<DeviceId> = devices.iter().map(|d| d.id).collect();
    let seed = devices
        .iter()
        .fold(PHANTOM_SALT, |seed, d| seed.rotate_left(5) ^ d.seed());
    let mut rng = fastrand::Rng::with_seed(super::injector_seed(seed, 0));
    let mut chosen = HashSet::new();
    let mut ids = Vec::new();
    while ids.len() < count as usize {
        let id = rng.u32(PHANTOM_FIRST_ID..);
        if !fleet.contains(&id) && chosen.insert(id) {
            ids.push(id);
        }
    }
    ids
}

/// A flood of phantom datagrams at a fixed rate.
#[derive(Debug, Clone)]
pub struct PhantomFlood {
    ids: Vec<DeviceId>,
    /// Next sequence number of each id.
    seqs: Vec<u32>,
    per_s: f64,
    sent: u64,
}

impl PhantomFlood {
    /// `per_s` datagrams per second from `ids` in turn; `None` if there is
    /// no id or no positive rate.
    pub fn new(ids: Vec<DeviceId>, per_s: f64) -> Option<PhantomFlood> {
        if ids.is_empty() || per_s.is_nan() || per_s <= 0.0 {
            return None;
        }
        Some(PhantomFlood {
            seqs: vec![0; ids.len()],
            ids,
            per_s,
            sent: 0,
        })
    }

    /// When the next datagram is due, counted from the start of the flood.
    pub fn next_due(&self) -> Duration {
        Duration::try_from_secs_f64(self.sent as f64 / self.per_s).unwrap_or(Duration::MAX)
    }

    /// The next datagram, stamped `time_ms` (Unix ms): a keep-alive from
    /// the next id in turn. Counted as sent: the caller puts it on the
    /// wire.
    pub fn next_datagram(&mut self, time_ms: u64) -> Vec<u8> {
        let turn = (self.sent % self.ids.len() as u64) as usize;
        self.sent += 1;
        let (Some(&device_id), Some(seq)) = (self.ids.get(turn), self.seqs.get_mut(turn)) else {
            unreachable!("turn is below the number of ids");
        };
        let datagram = Datagram {
            device_id,
            seq: *seq,
            time_ms: time_ms as u32,
            readings: Readings::new(),
            auth_tag: None,
        };
        *seq = seq.wrapping_add(1);
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        match encode_datagram(&datagram, &mut buf) {
            Ok(bytes) => bytes.to_vec(),
            Err(_) => unreachable!("a keep-alive is far below the size limit"),
        }
    }

    /// Datagrams made so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Distinct ids that sent so far.
    pub fn ids_used(&self) -> u64 {
        self.sent.min(self.ids.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{build_fleet, FleetSpec};
    use sensor_hub_protocol::decode_datagram;

    fn fleet(first_id: DeviceId, seed: u64) -> Vec<SimDevice> {
        build_fleet(&FleetSpec {
            devices: 3,
            first_id,
            seed,
            ..FleetSpec::default()
        })
    }

    #[test]
    fn ids_are_distinct_high_stable_and_never_the_fleets() {
        let devices = fleet(1, 4);
        let ids = phantom_ids(&devices, 200);
        assert_eq!(ids.len(), 200);
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 200);
        assert!(ids.iter().all(|&id| id >= PHANTOM_FIRST_ID));
        assert_eq!(phantom_ids(&devices, 200), ids);
        assert_eq!(phantom_ids(&devices, 5), ids[..5]);
        assert_ne!(phantom_ids(&fleet(1, 5), 5), ids[..5]);
        assert!(phantom_ids(&devices, 0).is_empty());
        // A fleet up where phantoms live keeps its ids to itself.
        let high = fleet(PHANTOM_FIRST_ID, 4);
        let taken: HashSet<DeviceId> = high.iter().map(|d| d.id).collect();
        assert!(phantom_ids(&high, 500).iter().all(|id| !taken.contains(id)));
    }

    #[test]
    fn ids_take_turns_each_with_its_own_sequence() {
        let mut flood = PhantomFlood::new(vec![PHANTOM_FIRST_ID, PHANTOM_FIRST_ID + 9], 100.0)
            .expect("a flood");
        let sent: Vec<(DeviceId, u32, u32, usize)> = (0..5)
            .map(|i| {
                let bytes = flood.next_datagram(1_000 + i);
                let d = decode_datagram(&bytes).expect("valid");
                assert_eq!(d.auth_tag, None);
                (d.device_id, d.seq, d.time_ms, d.readings.len())
            })
            .collect();
        let (a, b) = (PHANTOM_FIRST_ID, PHANTOM_FIRST_ID + 9);
        assert_eq!(
            sent,
            [
                (a, 0, 1_000, 0),
                (b, 0, 1_001, 0),
                (a, 1, 1_002, 0),
                (b, 1, 1_003, 0),
                (a, 2, 1_004, 0)
            ]
        );
        assert_eq!((flood.sent(), flood.ids_used()), (5, 2));
    }

    #[test]
    fn datagrams_are_due_at_the_rate() {
        let mut flood = PhantomFlood::new(vec![PHANTOM_FIRST_ID], 250.0).expect("a flood");
        assert_eq!(flood.next_due(), Duration::ZERO);
        flood.next_datagram(0);
        assert_eq!(flood.next_due(), Duration::from_millis(4));
        for _ in 0..249 {
            flood.next_datagram(0);
        }
        assert_eq!(flood.next_due(), Duration::from_secs(1));
        assert_eq!(flood.ids_used(), 1);
        assert!(PhantomFlood::new(Vec::new(), 1.0).is_none());
        assert!(PhantomFlood::new(vec![PHANTOM_FIRST_ID], 0.0).is_none());
    }
}
