#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use super::*;
use crate::control::{decode_device_message, decode_hub_message, DecodedHubMessage, Name, Text};
use crate::datagram::{decode_datagram, Reading, Readings, Value};

const KEY: DeviceKey = [7; KEY_LEN];
const HUB: Nonce = [0xa5; NONCE_LEN];
const DEVICE: Nonce = [0xd5; NONCE_LEN];

fn hello() -> Hello {
    Hello {
        device_id: 9,
        name: Name::try_from("porch").unwrap(),
        firmware: Name::try_from("2.0").unwrap(),
        token: Text::new(),
        interval_ms: 500,
        device_time_ms: 42,
        sensors: heapless::Vec::new(),
    }
}

fn datagram(seq: u32) -> Datagram {
    let mut readings = Readings::new();
    readings
        .push(Reading {
            channel: 1,
            value: Value::F32(20.5),
        })
        .unwrap();
    Datagram {
        device_id: 9,
        seq,
        time_ms: 1234,
        readings,
        auth_tag: None,
    }
}

#[test]
fn a_keyed_hello_verifies_only_with_its_key_and_challenge() {
    let mut buf = [0u8; 512];
    let frame = encode_keyed_hello(&hello(), DEVICE, &KEY, &HUB, &mut buf)
        .unwrap()
        .to_vec();
    let body = &frame[FRAME_HEADER_LEN..];
    assert!(verify_keyed_hello(body, &KEY, &HUB));
    assert!(!verify_keyed_hello(body, &[8; KEY_LEN], &HUB), "wrong key");
    assert!(
        !verify_keyed_hello(body, &KEY, &[0; NONCE_LEN]),
        "old challenge"
    );
    for i in 0..body.len() {
        let mut bent = body.to_vec();
        bent[i] ^= 0x01;
        assert!(!verify_keyed_hello(&bent, &KEY, &HUB), "byte {i} flipped");
    }
    assert!(!verify_keyed_hello(&body[..10], &KEY, &HUB));
    assert!(!verify_keyed_hello(&[], &KEY, &HUB));
    // The message form is the same bytes.
    let message = keyed_hello(&hello(), DEVICE, &KEY, &HUB, &mut [0u8; 512]).unwrap();
    assert_eq!(decode_device_message(body), Ok(message));
}

#[test]
fn a_keyed_welcome_proves_the_hub_holds_the_key() {
    let message = keyed_welcome(3, 1_700_000_000_000, 5_000, &KEY, &DEVICE, &HUB);
    let mut buf = [0u8; 128];
    let frame = crate::control::encode_frame(&message, &mut buf).unwrap();
    let body = &frame[FRAME_HEADER_LEN..];
    assert_eq!(
        decode_hub_message(body),
        Ok(DecodedHubMessage::Known(message))
    );
    assert!(verify_keyed_welcome(body, &KEY, &DEVICE, &HUB));
    assert!(
        !verify_keyed_welcome(body, &KEY, &HUB, &DEVICE),
        "nonces swapped"
    );
    assert!(!verify_keyed_welcome(body, &[1; KEY_LEN], &DEVICE, &HUB));
    // A hello proof is never a welcome proof (labels differ).
    let mut hello_buf = [0u8; 512];
    let hello_frame = encode_keyed_hello(&hello(), DEVICE, &KEY, &HUB, &mut hello_buf).unwrap();
    assert!(!verify_keyed_welcome(
        &hello_frame[FRAME_HEADER_LEN..],
        &KEY,
        &DEVICE,
        &HUB
    ));
}

#[test]
fn each_session_has_its_own_datagram_key() {
    let a = session_key(&KEY, &HUB, &DEVICE);
    assert_ne!(a, session_key(&KEY, &DEVICE, &HUB));
    assert_ne!(a, session_key(&KEY, &[0; NONCE_LEN], &DEVICE));
    assert_ne!(a, session_key(&[0; KEY_LEN], &HUB, &DEVICE));
    assert_ne!(&a[..], &KEY[..]);
}

#[test]
fn a_sealed_datagram_decodes_and_verifies_and_nothing_else_does() {
    let key = DatagramKey::derive(&KEY, &HUB, &DEVICE);
    let mut buf = [0u8; 512];
    let bytes = key.seal(&datagram(5), &mut buf).unwrap().to_vec();
    let decoded = decode_datagram(&bytes).unwrap();
    assert_eq!(decoded.seq, 5);
    assert_eq!(
        decoded.auth_tag.as_ref(),
        Some(&key.tag(&bytes[..bytes.len() - 16]))
    );
    assert_eq!(key.verify(&bytes, true), Ok(()));
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut bent = bytes.clone();
            bent[i] ^= 1 << bit;
            let has_tag = decode_datagram(&bent).map(|d| d.auth_tag.is_some());
            if let Ok(has_tag) = has_tag {
                assert!(
                    key.verify(&bent, has_tag).is_err(),
                    "byte {i} bit {bit} flipped and still verified"
                );
            }
        }
    }
    let other = DatagramKey::derive(&KEY, &HUB, &[0; NONCE_LEN]);
    assert_eq!(other.verify(&bytes, true), Err(TagError::Invalid));
    let mut plain = [0u8; 512];
    let unsigned = crate::encode_datagram(&datagram(5), &mut plain).unwrap();
    assert_eq!(key.verify(unsigned, false), Err(TagError::Missing));
    assert_eq!(key.verify(&[], true), Err(TagError::Invalid));
}
