//! A UDP datagram: decoding never panics, and whatever decodes encodes
//! to bytes that decode and encode to the same bytes again (round trip;
//! compared as bytes, as a NaN reading is not equal to itself).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_hub_protocol::{decode_datagram, encode_datagram, MAX_DATAGRAM_LEN};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(datagram) = decode_datagram(bytes) {
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let encoded = encode_datagram(&datagram, &mut buf)
            .expect("a decoded datagram fits")
            .to_vec();
        let again = decode_datagram(&encoded).expect("re-encoded decodes");
        let mut buf2 = [0u8; MAX_DATAGRAM_LEN];
        let encoded_again = encode_datagram(&again, &mut buf2).expect("fits");
        assert_eq!(&encoded[..], &encoded_again[..]);
    }
});
