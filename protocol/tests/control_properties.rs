//! Property tests of the control channel: every device → hub and hub →
//! device message round-trips through a frame, and keyed hellos and
//! welcomes verify with their own key and nonces only.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use proptest::prelude::*;
use sensor_hub_protocol::auth::*;
use sensor_hub_protocol::control::*;

fn bounded<const N: usize>() -> impl Strategy<Value = heapless::String<N>> {
    "\\PC{0,12}".prop_map(|s: String| fit::<N>(&s))
}

fn finite() -> impl Strategy<Value = f32> {
    any::<f32>().prop_filter("NaN never equals itself", |f| !f.is_nan())
}

fn sensor() -> impl Strategy<Value = SensorInfo> {
    (
        any::<u8>(),
        bounded::<NAME_LEN>(),
        bounded::<UNIT_LEN>(),
        prop_oneof![
            Just(ValueKind::F32),
            Just(ValueKind::I32),
            Just(ValueKind::Bool)
        ],
        proptest::option::of(finite()),
        proptest::option::of(finite()),
    )
        .prop_map(|(channel, name, unit, kind, min, max)| SensorInfo {
            channel,
            name,
            unit,
            kind,
            min,
            max,
        })
}

fn hello() -> impl Strategy<Value = Hello> {
    (
        any::<u32>(),
        bounded::<NAME_LEN>(),
        bounded::<NAME_LEN>(),
        bounded::<TEXT_LEN>(),
        any::<u32>(),
        any::<u64>(),
        proptest::collection::vec(sensor(), 0..4),
    )
        .prop_map(
            |(device_id, name, firmware, token, interval_ms, device_time_ms, sensors)| Hello {
                device_id,
                name,
                firmware,
                token,
                interval_ms,
                device_time_ms,
                sensors: sensors.into_iter().collect(),
            },
        )
}

fn device_message() -> impl Strategy<Value = DeviceMessage> {
    prop_oneof![
        hello().prop_map(DeviceMessage::Hello),
        any::<u64>().prop_map(|device_time_ms| DeviceMessage::Heartbeat { device_time_ms }),
        any::<u32>().prop_map(|id| DeviceMessage::CommandAck { id }),
        (
            any::<u32>(),
            any::<bool>(),
            proptest::option::of(bounded::<TEXT_LEN>())
        )
            .prop_map(|(id, ok, detail)| DeviceMessage::CommandResult {
                id,
                outcome: if ok {
                    Outcome::Succeeded
                } else {
                    Outcome::Failed
                },
                detail,
            }),
        Just(DeviceMessage::Bye),
        Just(DeviceMessage::ChallengeRequest),
        (hello(), any::<[u8; 16]>(), any::<[u8; 16]>()).prop_map(|(hello, device_nonce, proof)| {
            DeviceMessage::KeyedHello(KeyedHello {
                hello,
                device_nonce,
                proof,
            })
        }),
    ]
}

fn command() -> impl Strategy<Value = CommandBody> {
    prop_oneof![
        any::<u32>().prop_map(|ms| CommandBody::SetInterval { ms }),
        Just(CommandBody::Identify),
        Just(CommandBody::Reboot),
        (bounded::<NAME_LEN>(), bounded::<TEXT_LEN>())
            .prop_map(|(key, value)| CommandBody::SetConfig { key, value }),
        (bounded::<NAME_LEN>(), bounded::<TEXT_LEN>())
            .prop_map(|(name, args)| CommandBody::Custom { name, args }),
    ]
}

fn hub_message() -> impl Strategy<Value = HubMessage> {
    let reasons = prop_oneof![
        Just(RejectReason::UnsupportedVersion),
        Just(RejectReason::BadHello),
        Just(RejectReason::BadToken),
        Just(RejectReason::TooManyDevices),
        Just(RejectReason::TooManyConnections),
        Just(RejectReason::Replaced),
        Just(RejectReason::ShuttingDown),
        Just(RejectReason::TooSoon),
    ];
    prop_oneof![
        (any::<u64>(), any::<u64>(), any::<u32>()).prop_map(
            |(session_id, hub_time_ms, heartbeat_ms)| HubMessage::Welcome {
                session_id,
                hub_time_ms,
                heartbeat_ms
            }
        ),
        (reasons, bounded::<TEXT_LEN>())
            .prop_map(|(reason, detail)| HubMessage::Reject { reason, detail }),
        (any::<u32>(), command()).prop_map(|(id, body)| HubMessage::Command { id, body }),
        any::<u64>().prop_map(|hub_time_ms| HubMessage::HeartbeatAck { hub_time_ms }),
        any::<[u8; 16]>().prop_map(|nonce| HubMessage::Challenge { nonce }),
        (any::<u64>(), any::<u64>(), any::<u32>(), any::<[u8; 16]>()).prop_map(
            |(session_id, hub_time_ms, heartbeat_ms, proof)| HubMessage::KeyedWelcome {
                session_id,
                hub_time_ms,
                heartbeat_ms,
                proof
            }
        ),
    ]
}

proptest! {
    #[test]
    fn every_device_message_round_trips(m in device_message()) {
        let mut buf = vec![0u8; FRAME_HEADER_LEN + MAX_FRAME_BODY];
        let frame = encode_frame(&m, &mut buf).unwrap();
        prop_assert_eq!(decode_device_message(&frame[FRAME_HEADER_LEN..]), Ok(m));
    }

    #[test]
    fn every_hub_message_round_trips(m in hub_message()) {
        let mut buf = vec![0u8; FRAME_HEADER_LEN + MAX_FRAME_BODY];
        let frame = encode_frame(&m, &mut buf).unwrap();
        prop_assert_eq!(
            decode_hub_message(&frame[FRAME_HEADER_LEN..]),
            Ok(DecodedHubMessage::Known(m))
        );
    }

    #[test]
    fn keyed_hellos_and_welcomes_verify_with_their_own_secrets_only(
        hello in hello(),
        key in any::<[u8; 32]>(),
        other_key in any::<[u8; 32]>(),
        hub_nonce in any::<[u8; 16]>(),
        device_nonce in any::<[u8; 16]>(),
        flip in any::<prop::sample::Index>(),
        session_id in any::<u64>(),
    ) {
        prop_assume!(key != other_key);
        let mut buf = vec![0u8; FRAME_HEADER_LEN + MAX_FRAME_BODY];
        let frame = encode_keyed_hello(&hello, device_nonce, &key, &hub_nonce, &mut buf).unwrap().to_vec();
        let body = &frame[FRAME_HEADER_LEN..];
        prop_assert!(verify_keyed_hello(body, &key, &hub_nonce));
        prop_assert!(!verify_keyed_hello(body, &other_key, &hub_nonce));
        let mut bent = body.to_vec();
        let at = flip.index(bent.len());
        bent[at] ^= 0x80;
        prop_assert!(!verify_keyed_hello(&bent, &key, &hub_nonce));

        let welcome = keyed_welcome(session_id, 1, 2, &key, &device_nonce, &hub_nonce);
        let frame = encode_frame(&welcome, &mut buf).unwrap();
        let body = &frame[FRAME_HEADER_LEN..];
        prop_assert!(verify_keyed_welcome(body, &key, &device_nonce, &hub_nonce));
        prop_assert!(!verify_keyed_welcome(body, &other_key, &device_nonce, &hub_nonce));
    }
}
