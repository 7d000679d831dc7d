//! Control frames both ways: a frame body decodes as a device → hub and a
//! hub → device message without panicking, decoded messages round-trip,
//! and the hub's frame codec takes any byte stream, in any split, with
//! bounded buffering.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sensor_hub_protocol::codec::{FrameCodec, WithBody};
use sensor_hub_protocol::control::{
    decode_device_message, decode_hub_message, encode_frame, DecodedHubMessage, DeviceMessage,
    HubMessage, FRAME_HEADER_LEN, MAX_FRAME_BODY,
};
use tokio_util::codec::Decoder as _;

fuzz_target!(|bytes: &[u8]| {
    // Round trips compare bytes: a NaN sensor bound is not equal to itself.
    let mut buf = vec![0u8; FRAME_HEADER_LEN + MAX_FRAME_BODY];
    let mut buf2 = vec![0u8; FRAME_HEADER_LEN + MAX_FRAME_BODY];
    if let Ok(message) = decode_device_message(bytes) {
        let frame = encode_frame(&message, &mut buf).expect("a decoded message fits");
        let again = decode_device_message(&frame[FRAME_HEADER_LEN..]).expect("round trip");
        let frame_again = encode_frame(&again, &mut buf2).expect("fits");
        assert_eq!(frame, frame_again);
    }
    if let Ok(DecodedHubMessage::Known(message)) = decode_hub_message(bytes) {
        let frame = encode_frame(&message, &mut buf).expect("a decoded message fits");
        match decode_hub_message(&frame[FRAME_HEADER_LEN..]) {
            Ok(DecodedHubMessage::Known(again)) => {
                let frame_again = encode_frame(&again, &mut buf2).expect("fits");
                assert_eq!(frame, frame_again);
            }
            other => panic!("round trip failed: {other:?}"),
        }
    }
    // The first byte chooses where the stream is split.
    let Some((&split, stream)) = bytes.split_first() else {
        return;
    };
    // The hub's own codec: device frames keep their bodies (keyed hellos).
    let mut codec = FrameCodec::<WithBody<DeviceMessage>, HubMessage>::new(512);
    let mut src = BytesMut::new();
    for chunk in stream.chunks(usize::from(split).max(1)) {
        src.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut src) {
                Ok(Some(frame)) => {
                    // The body kept is the body decoded.
                    assert!(frame.body.len() <= 512);
                    continue;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(src.len() <= FRAME_HEADER_LEN + 512 + chunk.len());
    }
});
