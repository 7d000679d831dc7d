//! What another hub (or anything else with access to the cluster's Redis)
//! writes into the shared stream and the command streams: any payload is
//! an entry, a handed-over command, or a typed error, never a panic; and
//! what decodes encodes back to the same.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use sensor_hub::cluster::wire::{decode_entry, RawEntry, WireEvent, WireForward};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(event) = WireEvent::decode(bytes) {
        // Compared as bytes: a NaN reading is not equal to itself.
        let bytes = event.encode();
        let again = WireEvent::decode(&bytes).expect("what decodes encodes back");
        assert_eq!(again.encode(), bytes);
        let _ = event.into_item("fuzz");
    }
    if let Ok(command) = WireForward::decode(bytes) {
        let again = WireForward::decode(&command.encode()).expect("what decodes encodes back");
        assert_eq!(again, command);
        let _ = command.origin("fuzz");
    }
    // The same bytes as every field of an entry.
    let text = std::str::from_utf8(bytes).unwrap_or("1-0");
    let raw = RawEntry {
        id: text,
        hub: Some(bytes),
        run: Some(bytes),
        number: Some(bytes),
        about: bytes.first().map(|_| bytes),
        payload: Some(bytes),
    };
    let mut intern = |name: &str| -> Arc<str> { name.into() };
    let _ = decode_entry(&raw, "fuzz", "0000", &mut intern);
    let with_id = RawEntry {
        id: "1-0",
        hub: Some(b"hub-a"),
        run: Some(b"1234"),
        number: Some(b"1"),
        about: None,
        payload: Some(bytes),
    };
    let _ = decode_entry(&with_id, "fuzz", "0000", &mut intern);
});
