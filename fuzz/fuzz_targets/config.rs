//! A configuration file: any text is a configuration or an error naming
//! what is wrong, never a panic. (The file is the owner's, not a
//! stranger's, but a typo must not crash the hub.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_hub::config::HubConfig;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = HubConfig::load_text(Some(("fuzz.toml", text)), Some(Default::default()));
    }
});
