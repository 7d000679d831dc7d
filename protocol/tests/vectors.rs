//! The exact-byte vectors of docs/PROTOCOL.md, checked both ways: the
//! encoder produces the documented bytes and the decoder reads them back
//! (or rejects them with the documented reason).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use sensor_hub_protocol::control::*;
use sensor_hub_protocol::*;

const DOC: &str = include_str!("../../docs/PROTOCOL.md");

/// `(kind, name, bytes)` for every ```vector / ```vector-bad block.
fn doc_vectors() -> Vec<(String, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut lines = DOC.lines();
    while let Some(line) = lines.next() {
        let (kind, name) = if let Some(name) = line.strip_prefix("```vector-bad ") {
            ("bad", name)
        } else if let Some(name) = line.strip_prefix("```vector ") {
            ("good", name)
        } else if let Some(name) = line.strip_prefix("```control-vector ") {
            ("control", name)
        } else if let Some(name) = line.strip_prefix("```auth-vector ") {
            ("auth", name)
        } else {
            continue;
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

fn name(s: &str) -> Name {
    Name::try_from(s).unwrap()
}

fn text(s: &str) -> Text {
    Text::try_from(s).unwrap()
}

#[allow(clippy::large_enum_variant)] // test data, built once
enum Control {
    Device(DeviceMessage),
    Hub(HubMessage),
}

fn expected_control(vector: &str) -> Control {
    match vector {
        "hello" => Control::Device(DeviceMessage::Hello(Hello {
            device_id: 17,
            name: name("kitchen"),
            firmware: name("1.4.2"),
            token: text("s3cret"),
            interval_ms: 1000,
            device_time_ms: 1_700_000_000_000,
            sensors: [SensorInfo {
                channel: 0,
                name: name("temp"),
                unit: "C".try_into().unwrap(),
                kind: ValueKind::F32,
                min: Some(-40.0),
                max: None,
            }]
            .into_iter()
            .collect(),
        })),
        "welcome" => Control::Hub(HubMessage::Welcome {
            session_id: 1,
            hub_time_ms: 1_700_000_000_250,
            heartbeat_ms: 5000,
        }),
        "set-interval" => Control::Hub(HubMessage::Command {
            id: 7,
            body: CommandBody::SetInterval { ms: 500 },
        }),
        "ack" => Control::Device(DeviceMessage::CommandAck { id: 7 }),
        "result-succeeded" => Control::Device(DeviceMessage::CommandResult {
            id: 7,
            outcome: Outcome::Succeeded,
            detail: None,
        }),
        "heartbeat" => Control::Device(DeviceMessage::Heartbeat {
            device_time_ms: 1_700_000_005_000,
        }),
        "reject-bad-token" => Control::Hub(HubMessage::Reject {
            reason: RejectReason::BadToken,
            detail: text("bad token"),
        }),
        other => panic!("docs/PROTOCOL.md has a control vector `{other}` this test does not know"),
    }
}

#[test]
fn documented_control_frames_match_encoder_and_decoder() {
    let vectors: Vec<_> = doc_vectors()
        .into_iter()
        .filter(|(k, _, _)| k == "control")
        .collect();
    assert_eq!(
        vectors.len(),
        7,
        "expected seven control vectors in the doc"
    );
    for (_, vector, bytes) in vectors {
        let mut buf = [0u8; 1024];
        let body = &bytes[FRAME_HEADER_LEN..];
        assert_eq!(
            frame_body_len([bytes[0], bytes[1]], MAX_FRAME_BODY),
            Ok(body.len()),
            "header of `{vector}`"
        );
        match expected_control(&vector) {
            Control::Device(m) => {
                assert_eq!(
                    encode_frame(&m, &mut buf).unwrap(),
                    &bytes[..],
                    "`{vector}`"
                );
                assert_eq!(decode_device_message(body), Ok(m), "`{vector}`");
            }
            Control::Hub(m) => {
                assert_eq!(
                    encode_frame(&m, &mut buf).unwrap(),
                    &bytes[..],
                    "`{vector}`"
                );
                assert_eq!(
                    decode_hub_message(body),
                    Ok(DecodedHubMessage::Known(m)),
                    "`{vector}`"
                );
            }
        }
    }
}

#[test]
fn documented_preamble_is_the_crate_preamble() {
    assert!(DOC.contains("preamble** `b5 01`"));
    assert_eq!(PREAMBLE, [0xb5, 0x01]);
}

fn auth_vector(name: &str) -> Vec<u8> {
    doc_vectors()
        .into_iter()
        .find(|(k, n, _)| k == "auth" && n == name)
        .unwrap_or_else(|| panic!("docs/PROTOCOL.md lacks auth-vector `{name}`"))
        .2
}

fn array<const N: usize>(name: &str) -> [u8; N] {
    auth_vector(name).try_into().expect("vector length")
}

#[test]
fn documented_authentication_vectors_match_both_ways() {
    use sensor_hub_protocol::auth::*;
    let key: DeviceKey = array("device-key");
    let hub: Nonce = array("hub-nonce");
    let device: Nonce = array("device-nonce");
    let mut buf = [0u8; 1024];

    // Challenge request and challenge.
    let request = auth_vector("challenge-request");
    assert_eq!(
        encode_frame(&DeviceMessage::ChallengeRequest, &mut buf).unwrap(),
        &request[..]
    );
    assert_eq!(
        decode_device_message(&request[FRAME_HEADER_LEN..]),
        Ok(DeviceMessage::ChallengeRequest)
    );
    let challenge = auth_vector("challenge");
    let message = HubMessage::Challenge { nonce: hub };
    assert_eq!(encode_frame(&message, &mut buf).unwrap(), &challenge[..]);
    assert_eq!(
        decode_hub_message(&challenge[FRAME_HEADER_LEN..]),
        Ok(DecodedHubMessage::Known(message))
    );

    // Keyed hello: encoder and proof give the documented bytes; the
    // decoder and the verifier accept them.
    let Control::Device(DeviceMessage::Hello(mut hello)) = expected_control("hello") else {
        panic!("the hello vector is a device hello");
    };
    hello.token = Text::new();
    let keyed = auth_vector("keyed-hello");
    assert_eq!(
        encode_keyed_hello(&hello, device, &key, &hub, &mut buf).unwrap(),
        &keyed[..]
    );
    let body = &keyed[FRAME_HEADER_LEN..];
    let decoded = decode_device_message(body).unwrap();
    assert_eq!(
        decoded,
        keyed_hello(&hello, device, &key, &hub, &mut [0u8; 1024]).unwrap()
    );
    assert!(verify_keyed_hello(body, &key, &hub));

    // Keyed welcome.
    let welcome = auth_vector("keyed-welcome");
    let message = keyed_welcome(1, 1_700_000_000_250, 5000, &key, &device, &hub);
    assert_eq!(encode_frame(&message, &mut buf).unwrap(), &welcome[..]);
    assert_eq!(
        decode_hub_message(&welcome[FRAME_HEADER_LEN..]),
        Ok(DecodedHubMessage::Known(message))
    );
    assert!(verify_keyed_welcome(
        &welcome[FRAME_HEADER_LEN..],
        &key,
        &device,
        &hub
    ));

    // Session key and a tagged datagram.
    assert_eq!(session_key(&key, &hub, &device), array::<32>("session-key"));
    let tagged = auth_vector("tagged-datagram");
    let datagram_key = DatagramKey::derive(&key, &hub, &device);
    let mut datagram_buf = [0u8; MAX_DATAGRAM_LEN];
    assert_eq!(
        datagram_key
            .seal(&expected("three-f32"), &mut datagram_buf)
            .unwrap(),
        &tagged[..]
    );
    let decoded = decode_datagram(&tagged).unwrap();
    assert_eq!(
        Datagram {
            auth_tag: None,
            ..decoded.clone()
        },
        expected("three-f32")
    );
    assert_eq!(
        datagram_key.verify(&tagged, decoded.auth_tag.is_some()),
        Ok(())
    );
}
