//! The exact-byte vectors of docs/PROTOCOL.md, checked both ways: the
//! encoder produces the documented bytes and the decoder reads them back
//! (or rejects them with the documented reason).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use sensor_hub_protocol::*;

const DOC: &str = include_str!("../../docs/PROTOCOL.md");

/// `(kind, name, bytes)` for every ```vector / ```vector-bad block.
fn doc_vectors() -> Vec<(String, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        let Some(header) = line.strip_prefix("```vector") else {
            continue;
        };
        let (kind, name) = match header.strip_prefix("-bad ") {
            Some(name) => ("bad", name),
            None => ("good", header.trim_start()),
        };
        let mut bytes = Vec::new();
        for body in lines.by_ref().take_while(|l| !l.starts_with("```")) {
            for hex in body.split_whitespace() {
                bytes.push(u8::from_str_radix(hex, 16).expect("hex byte in vector"));
            }
        }
        out.push((kind.to_string(), name.trim().to_string(), bytes));
    }
    out
}

fn readings(list: &[(u8, Value)]) -> Readings {
    list.iter()
        .map(|&(channel, value)| Reading { channel, value })
        .collect()
}

fn expected(name: &str) -> Datagram {
    match name {
        "three-f32" => Datagram {
            device_id: 1000,
            seq: 42,
            time_ms: 0x6553_F100,
            readings: readings(&[
                (0, Value::F32(21.5)),
                (1, Value::F32(48.25)),
                (2, Value::F32(1013.25)),
            ]),
            auth_tag: None,
        },
        "mixed-kinds" => Datagram {
            device_id: 7,
            seq: u32::MAX,
            time_ms: 3000,
            readings: readings(&[
                (3, Value::I32(-5)),
                (4, Value::Bool(true)),
                (5, Value::I32(300)),
            ]),
            auth_tag: None,
        },
        "keepalive-auth" => Datagram {
            device_id: 1,
            seq: 0,
            time_ms: 0,
            readings: Readings::new(),
            auth_tag: Some(core::array::from_fn(|i| i as u8)),
        },
        "budget-32" => Datagram {
            device_id: 16_383,
            seq: (1 << 28) - 1,
            time_ms: u32::MAX,
            readings: readings(&[
                (0, Value::F32(-1.0)),
                (1, Value::F32(0.5)),
                (2, Value::F32(100.0)),
            ]),
            auth_tag: None,
        },
        other => panic!("docs/PROTOCOL.md has a vector `{other}` this test does not know"),
    }
}

#[test]
fn documented_vectors_match_encoder_and_decoder() {
    let vectors = doc_vectors();
    let good: Vec<_> = vectors.iter().filter(|(k, _, _)| k == "good").collect();
    assert_eq!(good.len(), 4, "expected four valid vectors in the doc");
    for (_, name, bytes) in good {
        let datagram = expected(name);
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let encoded = encode_datagram(&datagram, &mut buf).expect("fits");
        assert_eq!(encoded, &bytes[..], "encoding of `{name}`");
        assert_eq!(decode_datagram(bytes), Ok(datagram), "decoding of `{name}`");
    }
    let budget = vectors
        .iter()
        .find(|(_, n, _)| n == "budget-32")
        .expect("budget vector");
    assert_eq!(budget.2.len(), 32);
}

#[test]
fn documented_bad_vectors_fail_with_their_reason() {
    let bad: Vec<_> = doc_vectors()
        .into_iter()
        .filter(|(k, _, _)| k == "bad")
        .collect();
    assert!(bad.len() >= 5, "expected the malformed vectors in the doc");
    for (_, reason, bytes) in bad {
        let err = decode_datagram(&bytes).expect_err("a bad vector must not decode");
        assert_eq!(err.reason(), reason, "vector {bytes:02x?}");
    }
}

#[test]
fn documented_drop_reasons_cover_every_decode_error() {
    for reason in DecodeError::ALL {
        assert!(
            DOC.contains(&format!("| `{}` |", reason.reason())),
            "docs/PROTOCOL.md does not document drop reason `{}`",
            reason.reason()
        );
    }
}
