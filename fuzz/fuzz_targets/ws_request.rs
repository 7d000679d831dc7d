//! A WebSocket client message: any text is a request or a typed refusal,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_hub::ws::requests::parse;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = parse(text, 100);
    }
});
