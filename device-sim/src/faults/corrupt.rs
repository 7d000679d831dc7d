//! How a corrupted datagram is damaged: four fixed kinds of damage, each
//! chosen so the hub drops the datagram under one known reason (see "Drop
//! reasons" in docs/PROTOCOL.md), and [`CorruptedCounts`], the count per
//! reason. Pure.

use serde::Serialize;

/// Bytes cut off the end by [`Corruption::Truncate`].
pub const TRUNCATED_BYTES: usize = 3;
/// Version byte written by [`Corruption::BadVersion`].
pub const BAD_VERSION: u8 = 9;

/// One kind of damage. Applied to a valid v1 datagram (which is always
/// longer than [`TRUNCATED_BYTES`] + 2 and shorter than the 512-byte limit),
/// each makes the hub count exactly one drop under [`Corruption::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Corruption {
    /// The last 3 bytes are cut off (hub: `truncated`).
    Truncate,
    /// The magic byte is set to `0x00` (hub: `bad_magic`).
    BadMagic,
    /// The version byte is set to 9 (hub: `bad_version`).
    BadVersion,
    /// One byte is appended (hub: `undecodable`, bytes left over).
    TrailingByte,
}

impl Corruption {
    /// Every kind, in the order an injector takes turns with them.
    pub const ALL: [Corruption; 4] = [
        Corruption::Truncate,
        Corruption::BadMagic,
        Corruption::BadVersion,
        Corruption::TrailingByte,
    ];

    /// The hub's drop reason for a datagram damaged this way.
    pub const fn reason(self) -> &'static str {
        match self {
            Corruption::Truncate => "truncated",
            Corruption::BadMagic => "bad_magic",
            Corruption::BadVersion => "bad_version",
            Corruption::TrailingByte => "undecodable",
        }
    }

    /// A copy of `datagram` damaged this way.
    pub fn apply(self, datagram: &[u8]) -> Vec<u8> {
        let mut bytes = datagram.to_vec();
        match self {
            Corruption::Truncate => bytes.truncate(bytes.len().saturating_sub(TRUNCATED_BYTES)),
            Corruption::BadMagic => {
                if let Some(magic) = bytes.first_mut() {
                    *magic = 0x00;
                }
            }
            Corruption::BadVersion => {
                if let Some(version) = bytes.get_mut(1) {
                    *version = BAD_VERSION;
                }
            }
            Corruption::TrailingByte => bytes.push(0x00),
        }
        bytes
    }
}

/// Corrupted datagrams put on the wire, by the hub's drop reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CorruptedCounts {
    /// Cut short (hub: `truncated`).
    pub truncated: u64,
    /// Magic byte zeroed (hub: `bad_magic`).
    pub bad_magic: u64,
    /// Version byte set to 9 (hub: `bad_version`).
    pub bad_version: u64,
    /// A byte appended (hub: `undecodable`).
    pub undecodable: u64,
}

impl CorruptedCounts {
    /// All corrupted datagrams.
    pub fn total(&self) -> u64 {
        self.truncated + self.bad_magic + self.bad_version + self.undecodable
    }

    /// How many were damaged as `kind`.
    pub fn get(&self, kind: Corruption) -> u64 {
        match kind {
            Corruption::Truncate => self.truncated,
            Corruption::BadMagic => self.bad_magic,
            Corruption::BadVersion => self.bad_version,
            Corruption::TrailingByte => self.undecodable,
        }
    }

    /// Counts one datagram damaged as `kind`.
    pub fn count(&mut self, kind: Corruption) {
        let counter = match kind {
            Corruption::Truncate => &mut self.truncated,
            Corruption::BadMagic => &mut self.bad_magic,
            Corruption::BadVersion => &mut self.bad_version,
            Corruption::TrailingByte => &mut self.undecodable,
        };
        *counter += 1;
    }

    /// Adds another device's counts.
    pub fn add(&mut self, other: &CorruptedCounts) {
        self.truncated += other.truncated;
        self.bad_magic += other.bad_magic;
        self.bad_version += other.bad_version;
        self.undecodable += other.undecodable;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::{build_fleet, FleetSpec};
    use sensor_hub_protocol::{
        decode_datagram, encode_datagram, Datagram, Reading, Readings, Value, MAX_DATAGRAM_LEN,
        MAX_READINGS,
    };

    /// Real datagrams of every shape the simulator sends, plus the
    /// shortest (no readings) and longest (64 wide readings) v1 allows.
    fn datagrams() -> Vec<Vec<u8>> {
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let mut out = Vec::new();
        let fleet = build_fleet(&FleetSpec {
            devices: 6,
            first_id: 16_000,
            ..FleetSpec::default()
        });
        for mut device in fleet {
            for i in 0..50u64 {
                let datagram = device.next_datagram(1_700_000_000_000 + i * 997);
                let bytes = encode_datagram(&datagram, &mut buf).expect("fits");
                out.push(bytes.to_vec());
            }
        }
        let mut edge = |readings: Readings| {
            let datagram = Datagram {
                device_id: 0,
                seq: 0,
                time_ms: 0,
                readings,
                auth_tag: None,
            };
            let bytes = encode_datagram(&datagram, &mut buf).expect("fits");
            out.push(bytes.to_vec());
        };
        edge(Readings::new());
        let mut wide = Readings::new();
        for channel in 0..MAX_READINGS as u8 {
            let reading = Reading {
                channel,
                value: Value::I32(i32::MIN),
            };
            wide.push(reading).expect("room");
        }
        edge(wide);
        out
    }

    #[test]
    fn each_kind_of_damage_hits_exactly_its_drop_reason() {
        for bytes in datagrams() {
            assert!(decode_datagram(&bytes).is_ok());
            for kind in Corruption::ALL {
                let damaged = kind.apply(&bytes);
                let reason = decode_datagram(&damaged).map(|_| "accepted");
                assert_eq!(
                    reason.map_err(|e| e.reason()),
                    Err(kind.reason()),
                    "{kind:?} on {bytes:02x?}"
                );
            }
        }
    }

    #[test]
    fn the_damage_is_the_documented_one() {
        let bytes = [0xB5, 0x01, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06];
        assert_eq!(Corruption::Truncate.apply(&bytes), bytes[..5]);
        assert_eq!(Corruption::BadMagic.apply(&bytes)[0], 0x00);
        assert_eq!(Corruption::BadVersion.apply(&bytes)[1], BAD_VERSION);
        let trailing = Corruption::TrailingByte.apply(&bytes);
        assert_eq!((trailing.len(), &trailing[..8]), (9, &bytes[..]));
    }

    #[test]
    fn counts_per_reason_add_up() {
        let mut counts = CorruptedCounts::default();
        for (i, kind) in Corruption::ALL.into_iter().enumerate() {
            for _ in 0..=i {
                counts.count(kind);
            }
        }
        let per_kind: Vec<u64> = Corruption::ALL.map(|k| counts.get(k)).to_vec();
        assert_eq!(per_kind, [1, 2, 3, 4]);
        let mut sum = counts;
        sum.add(&counts);
        assert_eq!((counts.total(), sum.total()), (10, 20));
    }
}
