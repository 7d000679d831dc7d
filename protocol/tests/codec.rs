//! The tokio_util frame codec: partial input, limits before allocation,
//! and encode/decode symmetry.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use bytes::BytesMut;
use sensor_hub_protocol::codec::{CodecError, FrameCodec};
use sensor_hub_protocol::control::*;
use tokio_util::codec::{Decoder as _, Encoder as _};

type HubSide = FrameCodec<DeviceMessage, HubMessage>;
type DeviceSide = FrameCodec<DecodedHubMessage, DeviceMessage>;

#[test]
fn frames_round_trip_through_both_sides() {
    let mut device = DeviceSide::new(4096);
    let mut hub = HubSide::new(4096);
    let mut wire = BytesMut::new();
    device
        .encode(DeviceMessage::Heartbeat { device_time_ms: 42 }, &mut wire)
        .unwrap();
    device.encode(DeviceMessage::Bye, &mut wire).unwrap();
    assert_eq!(
        hub.decode(&mut wire).unwrap(),
        Some(DeviceMessage::Heartbeat { device_time_ms: 42 })
    );
    assert_eq!(hub.decode(&mut wire).unwrap(), Some(DeviceMessage::Bye));
    assert_eq!(hub.decode(&mut wire).unwrap(), None);

    hub.encode(HubMessage::HeartbeatAck { hub_time_ms: 7 }, &mut wire)
        .unwrap();
    assert_eq!(
        device.decode(&mut wire).unwrap(),
        Some(DecodedHubMessage::Known(HubMessage::HeartbeatAck {
            hub_time_ms: 7
        }))
    );
}

#[test]
fn partial_frames_wait_for_more_bytes() {
    let mut device = DeviceSide::new(4096);
    let mut hub = HubSide::new(4096);
    let mut whole = BytesMut::new();
    device
        .encode(DeviceMessage::CommandAck { id: 70_000 }, &mut whole)
        .unwrap();
    let mut wire = BytesMut::new();
    for (i, byte) in whole.iter().enumerate() {
        wire.extend_from_slice(&[*byte]);
        let decoded = hub.decode(&mut wire).unwrap();
        if i + 1 < whole.len() {
            assert_eq!(decoded, None, "after {} bytes", i + 1);
        } else {
            assert_eq!(decoded, Some(DeviceMessage::CommandAck { id: 70_000 }));
        }
    }
}

#[test]
fn oversized_length_is_refused_before_reserving() {
    let mut hub = HubSide::new(1024);
    let mut wire = BytesMut::from(&[0xFF, 0xFF, 0x00][..]);
    let capacity = wire.capacity();
    match hub.decode(&mut wire) {
        Err(CodecError::Protocol(ControlError::Oversized { len: 65_535 })) => {}
        other => panic!("expected oversized, got {other:?}"),
    }
    assert_eq!(wire.capacity(), capacity, "nothing reserved for the body");
}

#[test]
fn garbage_body_is_a_protocol_error() {
    let mut hub = HubSide::new(1024);
    let mut wire = BytesMut::from(&[0x00, 0x03, 0xEE, 0xEE, 0xEE][..]);
    assert!(matches!(
        hub.decode(&mut wire),
        Err(CodecError::Protocol(ControlError::Undecodable))
    ));
}

#[test]
fn encoder_refuses_bodies_over_its_limit() {
    let mut hub = HubSide::new(8);
    let mut wire = BytesMut::new();
    let big = HubMessage::Reject {
        reason: RejectReason::BadToken,
        detail: Text::try_from("a detail longer than eight bytes").unwrap(),
    };
    assert!(matches!(
        hub.encode(big, &mut wire),
        Err(CodecError::Protocol(ControlError::Oversized { .. }))
    ));
    assert!(wire.is_empty());
}
