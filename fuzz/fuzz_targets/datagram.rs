//! A UDP datagram: decoding never panics, and whatever decodes encodes
//! to bytes that decode and encode to the same bytes again (round trip;
//! compared as bytes, as a NaN reading is not equal to itself). Checking
//! its tag never panics and never accepts a tag the key did not make; a
//! datagram sealed with the key verifies, and decodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_hub_protocol::auth::DatagramKey;
use sensor_hub_protocol::{decode_datagram, encode_datagram, MAX_DATAGRAM_LEN};

fuzz_target!(|bytes: &[u8]| {
    let key = DatagramKey::new(&[0x42; 32]);
    if let Ok(datagram) = decode_datagram(bytes) {
        // Random bytes never carry this key's tag (2^-128).
        assert!(key.verify(bytes, datagram.auth_tag.is_some()).is_err());
        let mut sealed = [0u8; MAX_DATAGRAM_LEN];
        let sealed = key
            .seal(&datagram, &mut sealed)
            .expect("a decoded datagram fits");
        assert_eq!(key.verify(sealed, true), Ok(()));
        let opened = decode_datagram(sealed).expect("a sealed datagram decodes");
        assert_eq!(opened.seq, datagram.seq);
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
