//! What an attacker on the network makes of a keyed device's datagrams: a
//! forged copy (one byte of the tag flipped, so the hub drops it as
//! `bad_tag`), a spoof (an untagged datagram in the device's name with its
//! next sequence number and absurd readings: `unauthenticated`), and the
//! device's recent accepted datagrams, kept to be replayed within their
//! session (`replayed`) or after the next one began (`bad_tag`). Pure.

use std::collections::VecDeque;

use sensor_hub_protocol::{
    decode_datagram, encode_datagram, Reading, Value, AUTH_TAG_LEN, MAX_DATAGRAM_LEN,
};

use super::spec::MAX_REPLAY_AFTER_REBOOT;

/// What a spoofed float reading says (no sensor of the fleet comes near).
pub const SPOOFED_F32: f32 = 1.0e9;
/// What a spoofed integer reading says.
pub const SPOOFED_I32: i32 = i32::MIN;

/// A copy of the tagged datagram `bytes` with byte `index % 16` of its tag
/// inverted; `None` if `bytes` is too short to carry a tag.
pub fn forged(bytes: &[u8], index: usize) -> Option<Vec<u8>> {
    let tag_start = bytes.len().checked_sub(AUTH_TAG_LEN)?;
    let mut copy = bytes.to_vec();
    let byte = copy.get_mut(tag_start + index % AUTH_TAG_LEN)?;
    *byte = !*byte;
    Some(copy)
}

/// An untagged datagram in the name of the sender of `bytes`: its next
/// sequence number, its time, and each reading replaced by an absurd value
/// (floats [`SPOOFED_F32`], integers [`SPOOFED_I32`], booleans inverted);
/// `None` if `bytes` is not a valid datagram.
pub fn spoofed(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut datagram = decode_datagram(bytes).ok()?;
    datagram.seq = datagram.seq.wrapping_add(1);
    datagram.auth_tag = None;
    for reading in datagram.readings.iter_mut() {
        *reading = Reading {
            channel: reading.channel,
            value: match reading.value {
                Value::F32(_) => Value::F32(SPOOFED_F32),
                Value::I32(_) => Value::I32(SPOOFED_I32),
                Value::Bool(b) => Value::Bool(!b),
            },
        };
    }
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    encode_datagram(&datagram, &mut buf)
        .ok()
        .map(|encoded| encoded.to_vec())
}

/// How many of a session's latest accepted datagrams are kept for replays.
pub(crate) const KEPT_RECENT: usize = MAX_REPLAY_AFTER_REBOOT as usize;

/// Datagrams of one session that the hub accepted: the session's first
/// one (after 128 more it is older than the hub's replay window, which
/// refuses it as well) and the latest [`KEPT_RECENT`] ones.
#[derive(Debug, Clone, Default)]
pub(crate) struct AcceptedRecord {
    first: Option<Vec<u8>>,
    recent: VecDeque<Vec<u8>>,
}

impl AcceptedRecord {
    /// The hub accepted `bytes`.
    pub fn record(&mut self, bytes: &[u8]) {
        if self.first.is_none() {
            self.first = Some(bytes.to_vec());
            return;
        }
        if self.recent.len() == KEPT_RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(bytes.to_vec());
    }

    /// How many datagrams are kept.
    pub fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.recent.len()
    }

    /// The kept datagram at `index` (below [`AcceptedRecord::len`]): the
    /// session's first, then the latest from oldest to newest.
    pub fn get(&self, index: usize) -> Option<&[u8]> {
        match (&self.first, index) {
            (Some(first), 0) => Some(first),
            (Some(_), i) => self.recent.get(i - 1).map(Vec::as_slice),
            (None, i) => self.recent.get(i).map(Vec::as_slice),
        }
    }

    /// Ends the session: its latest `count` datagrams (at most what is
    /// kept), oldest first, and an empty record for the next session.
    pub fn end_session(&mut self, count: usize) -> Vec<Vec<u8>> {
        let record = std::mem::take(self);
        let kept: Vec<Vec<u8>> = record.first.into_iter().chain(record.recent).collect();
        let skip = kept.len().saturating_sub(count);
        kept.into_iter().skip(skip).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sensor_hub_protocol::auth::DatagramKey;
    use sensor_hub_protocol::{Datagram, Readings};

    fn datagram(seq: u32) -> Datagram {
        let mut readings = Readings::new();
        for (channel, value) in [
            (0, Value::F32(21.5)),
            (1, Value::I32(415)),
            (2, Value::Bool(false)),
        ] {
            readings.push(Reading { channel, value }).expect("room");
        }
        Datagram {
            device_id: 300,
            seq,
            time_ms: 77,
            readings,
            auth_tag: None,
        }
    }

    fn sealed(seq: u32) -> (DatagramKey, Vec<u8>) {
        let key = DatagramKey::new(&[7; 32]);
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let bytes = key.seal(&datagram(seq), &mut buf).expect("fits").to_vec();
        (key, bytes)
    }

    #[test]
    fn a_forged_copy_differs_in_one_tag_byte_and_fails_only_the_tag() {
        let (key, bytes) = sealed(5);
        assert_eq!(key.verify(&bytes, true), Ok(()));
        for index in [0, 15, 16, 33] {
            let forged = forged(&bytes, index).expect("tagged");
            let differing: Vec<usize> = (0..bytes.len())
                .filter(|&i| forged[i] != bytes[i])
                .collect();
            assert_eq!(differing, [bytes.len() - 16 + index % 16]);
            let decoded = decode_datagram(&forged).expect("still decodes");
            assert_eq!(decoded.seq, 5);
            assert!(key.verify(&forged, true).is_err());
        }
        assert_eq!(forged(&[0xB5; 15], 0), None);
    }

    #[test]
    fn a_spoof_names_the_device_with_its_next_number_and_absurd_readings() {
        let (_, bytes) = sealed(u32::MAX);
        let spoof = decode_datagram(&spoofed(&bytes).expect("valid")).expect("decodes");
        assert_eq!((spoof.device_id, spoof.seq, spoof.time_ms), (300, 0, 77));
        assert_eq!(spoof.auth_tag, None);
        let values: Vec<Value> = spoof.readings.iter().map(|r| r.value).collect();
        assert_eq!(
            values,
            [
                Value::F32(SPOOFED_F32),
                Value::I32(SPOOFED_I32),
                Value::Bool(true)
            ]
        );
        assert_eq!(spoofed(&bytes[..10]), None);
    }

    #[test]
    fn the_record_keeps_the_first_and_the_latest_of_a_session() {
        let mut record = AcceptedRecord::default();
        assert_eq!((record.len(), record.get(0)), (0, None));
        for seq in 0..20u8 {
            record.record(&[seq]);
        }
        assert_eq!(record.len(), 1 + KEPT_RECENT);
        let kept: Vec<u8> = (0..record.len())
            .map(|i| record.get(i).expect("kept")[0])
            .collect();
        assert_eq!(kept, [0, 12, 13, 14, 15, 16, 17, 18, 19]);
        assert_eq!(record.end_session(3), [vec![17], vec![18], vec![19]]);
        assert_eq!(record.len(), 0, "the next session starts empty");
        record.record(&[1]);
        record.record(&[2]);
        assert_eq!(record.end_session(5), [vec![1], vec![2]]);
    }
}
