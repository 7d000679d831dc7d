//! A command as HTTP and WebSocket clients write it in JSON: any JSON value
//! is a command or a message saying what is wrong, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_hub::command_json::parse_command;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) {
        let _ = parse_command(&value);
    }
});
