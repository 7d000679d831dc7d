//! Unit tests of the v1 datagram codec: malformed inputs by reason,
//! size budget, timestamp restoration. Exact-byte vectors live in
//! `protocol/tests/vectors.rs`, read from docs/PROTOCOL.md.

use super::*;

fn datagram(device_id: u32, seq: u32, readings: &[Reading]) -> Datagram {
    Datagram {
        device_id,
        seq,
        time_ms: 0x6553_F100,
        readings: Readings::from_slice(readings).expect("test fits"),
        auth_tag: None,
    }
}

fn f32s(n: u8) -> heapless::Vec<Reading, MAX_READINGS> {
    (0..n)
        .map(|ch| Reading {
            channel: ch,
            value: Value::F32(f32::from(ch) * 1.5),
        })
        .collect()
}

fn encode(d: &Datagram) -> heapless::Vec<u8, MAX_DATAGRAM_LEN> {
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    let out = encode_datagram(d, &mut buf).expect("fits");
    heapless::Vec::from_slice(out).expect("fits")
}

#[test]
fn three_f32_readings_fit_the_32_byte_budget() {
    // Largest device id and sequence number that still meet the budget:
    // ids below 2^14 and sequence numbers below 2^28.
    let mut d = datagram(16_383, (1 << 28) - 1, &[]);
    d.readings = f32s(3);
    assert_eq!(encode(&d).len(), 32);
    // A typical datagram is smaller.
    let mut small = datagram(12, 4_000, &[]);
    small.readings = f32s(3);
    assert_eq!(encode(&small).len(), 29);
}

#[test]
fn widest_valid_datagram_fits_max_len() {
    let readings: Readings = (0..MAX_READINGS as u8)
        .map(|ch| Reading {
            channel: ch,
            value: Value::I32(i32::MIN),
        })
        .collect();
    let d = Datagram {
        device_id: u32::MAX,
        seq: u32::MAX,
        time_ms: u32::MAX,
        readings,
        auth_tag: Some([0xFF; AUTH_TAG_LEN]),
    };
    let bytes = encode(&d);
    assert_eq!(bytes.len(), 482, "docs/PROTOCOL.md quotes this size");
    assert_eq!(decode_datagram(&bytes), Ok(d));
}

#[test]
fn fewer_than_two_bytes_are_truncated_whatever_the_byte() {
    // docs/PROTOCOL.md: fewer than 2 bytes is `truncated` (regression: a
    // single non-B5 byte used to count as `bad_magic`).
    assert_eq!(decode_datagram(&[]), Err(DecodeError::Truncated));
    assert_eq!(decode_datagram(&[MAGIC]), Err(DecodeError::Truncated));
    assert_eq!(decode_datagram(&[0x00]), Err(DecodeError::Truncated));
    assert_eq!(decode_datagram(&[0x00, 0x01]), Err(DecodeError::BadMagic));
}

#[test]
fn foreign_traffic_is_bad_magic() {
    // A DNS query header and an HTTP request line.
    assert_eq!(
        decode_datagram(&[0x12, 0x34, 0x01, 0x00]),
        Err(DecodeError::BadMagic)
    );
    assert_eq!(
        decode_datagram(b"GET / HTTP/1.1\r\n"),
        Err(DecodeError::BadMagic)
    );
}

#[test]
fn other_versions_are_bad_version_with_the_version() {
    let mut bytes = encode(&datagram(1, 1, &[]));
    bytes[1] = 2;
    assert_eq!(decode_datagram(&bytes), Err(DecodeError::BadVersion(2)));
    bytes[1] = 0;
    assert_eq!(decode_datagram(&bytes), Err(DecodeError::BadVersion(0)));
}

#[test]
fn every_strict_prefix_of_a_valid_datagram_is_truncated() {
    let mut d = datagram(300, 70_000, &[]);
    d.readings = f32s(4);
    d.auth_tag = Some([7; AUTH_TAG_LEN]);
    let bytes = encode(&d);
    for cut in 2..bytes.len() {
        assert_eq!(
            decode_datagram(&bytes[..cut]),
            Err(DecodeError::Truncated),
            "prefix of {cut} bytes"
        );
    }
}

#[test]
fn oversized_is_rejected_before_looking_inside() {
    let mut bytes = [0u8; MAX_DATAGRAM_LEN + 1];
    bytes[0] = MAGIC;
    bytes[1] = VERSION;
    assert_eq!(decode_datagram(&bytes), Err(DecodeError::Oversized));
}

#[test]
fn unknown_value_tag_is_undecodable() {
    let mut d = datagram(1, 1, &[]);
    d.readings = f32s(1);
    let mut bytes = encode(&d);
    // prefix(2) id(1) seq(1) time(4) count(1) channel(1) -> tag at 10
    assert_eq!(bytes[10], 0x00);
    bytes[10] = 0x03;
    assert_eq!(decode_datagram(&bytes), Err(DecodeError::Undecodable));
}

#[test]
fn too_many_readings_is_undecodable() {
    let mut bytes = heapless::Vec::<u8, 1024>::new();
    bytes
        .extend_from_slice(&[MAGIC, VERSION, 1, 1, 0, 0, 0, 0])
        .unwrap();
    bytes.push((MAX_READINGS + 1) as u8).unwrap();
    for ch in 0..=MAX_READINGS as u8 {
        bytes.extend_from_slice(&[ch, 2, 1]).unwrap(); // Bool(true)
    }
    bytes.push(0).unwrap();
    assert!(bytes.len() <= MAX_DATAGRAM_LEN);
    assert_eq!(decode_datagram(&bytes), Err(DecodeError::Undecodable));
}

#[test]
fn trailing_bytes_are_undecodable() {
    let mut bytes = encode(&datagram(1, 1, &[]));
    bytes.push(0).unwrap();
    assert_eq!(decode_datagram(&bytes), Err(DecodeError::Undecodable));
}

#[test]
fn bad_bool_and_bad_option_are_undecodable() {
    let d = datagram(
        1,
        1,
        &[Reading {
            channel: 0,
            value: Value::Bool(true),
        }],
    );
    let mut bytes = encode(&d);
    let last = bytes.len() - 1;
    bytes[last] = 2; // auth tag option discriminant
    assert_eq!(decode_datagram(&bytes), Err(DecodeError::Undecodable));
    bytes[last] = 0;
    bytes[last - 1] = 7; // the bool itself
    assert_eq!(decode_datagram(&bytes), Err(DecodeError::Undecodable));
}

#[test]
fn reasons_are_distinct_and_indexed() {
    for (i, reason) in DecodeError::ALL.iter().enumerate() {
        assert_eq!(reason.index(), i);
        for other in &DecodeError::ALL[i + 1..] {
            assert_ne!(reason.reason(), other.reason());
        }
    }
}

#[test]
fn encode_reports_small_buffers() {
    let mut d = datagram(1, 1, &[]);
    d.readings = f32s(3);
    let mut tiny = [0u8; 8];
    assert_eq!(
        encode_datagram(&d, &mut tiny).map(|b| b.len()),
        Err(EncodeError::BufferTooSmall)
    );
    assert_eq!(
        encode_datagram(&d, &mut [0u8; 1]).map(|b| b.len()),
        Err(EncodeError::BufferTooSmall)
    );
}

#[test]
fn restore_time_handles_wrap_in_both_directions() {
    let now: u64 = 1_700_000_000_000;
    assert_eq!(restore_time_ms(now as u32, now), now);
    assert_eq!(restore_time_ms((now - 1_500) as u32, now), now - 1_500);
    assert_eq!(restore_time_ms((now + 900) as u32, now), now + 900);
    // Just across a 2^32 boundary of the reference.
    let boundary: u64 = 0x0000_0190_0000_0000;
    assert_eq!(restore_time_ms(0xFFFF_FFF0, boundary + 5), boundary - 0x10);
    assert_eq!(restore_time_ms(0x0000_0005, boundary - 3), boundary + 5);
}
