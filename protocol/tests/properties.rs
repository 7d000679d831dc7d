//! Property tests: any datagram round-trips, any bytes decode without
//! panicking, and restored timestamps are exact within the window.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use proptest::prelude::*;
use sensor_hub_protocol::*;

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<f32>()
            .prop_filter("NaN never equals itself", |f| !f.is_nan())
            .prop_map(Value::F32),
        any::<i32>().prop_map(Value::I32),
        any::<bool>().prop_map(Value::Bool),
    ]
}

fn datagram() -> impl Strategy<Value = Datagram> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        proptest::collection::vec((any::<u8>(), value()), 0..=MAX_READINGS),
        any::<Option<[u8; AUTH_TAG_LEN]>>(),
    )
        .prop_map(|(device_id, seq, time_ms, readings, auth_tag)| Datagram {
            device_id,
            seq,
            time_ms,
            readings: readings
                .into_iter()
                .map(|(channel, value)| Reading { channel, value })
                .collect(),
            auth_tag,
        })
}

proptest! {
    #[test]
    fn every_datagram_round_trips(d in datagram()) {
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let bytes = encode_datagram(&d, &mut buf).expect("any v1 datagram fits MAX_DATAGRAM_LEN");
        prop_assert_eq!(decode_datagram(bytes), Ok(d));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_datagram(&bytes);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_prefix_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..520)
    ) {
        let mut bytes = vec![MAGIC, VERSION];
        bytes.extend_from_slice(&body);
        match decode_datagram(&bytes) {
            Ok(d) => {
                // Whatever decodes re-encodes (canonically) to the same datagram.
                let mut buf = [0u8; MAX_DATAGRAM_LEN];
                let again = encode_datagram(&d, &mut buf).expect("fits");
                let d_bits = format!("{d:?}");
                prop_assert_eq!(format!("{:?}", decode_datagram(again)), format!("Ok({d_bits})"));
            }
            Err(e) => prop_assert!(e != DecodeError::BadMagic && !matches!(e, DecodeError::BadVersion(_))),
        }
    }

    #[test]
    fn restored_time_is_exact_within_24_days(
        now in 1_000_000_000_000u64..4_000_000_000_000u64,
        skew in -2_000_000_000i64..2_000_000_000i64,
    ) {
        let device = now.wrapping_add_signed(skew);
        prop_assert_eq!(restore_time_ms(device as u32, now), device);
    }
}
