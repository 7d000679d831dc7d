//! What HTTP requests carry besides credentials: query strings of the
//! history and command endpoints (parsed as warp does, then checked), the
//! sensor reference in a history path, and the adopt body. Any input is a
//! value or a message for the client, never a panic; a history range that
//! validates is bounded.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use sensor_hub::history::query::SensorRef;
use sensor_hub::http::devices::AdoptBody;
use sensor_hub::http::{range_request, CommandQuery};

/// A fixed hub time, so runs are reproducible.
const NOW_MS: u64 = 1_700_000_000_000;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        let _ = AdoptBody::parse(bytes);
        return;
    };
    let _ = AdoptBody::parse(bytes);
    let _ = SensorRef::parse(text);
    if let Ok(query) = serde_urlencoded::from_str::<HashMap<String, String>>(text) {
        let _ = CommandQuery::parse(&query);
        if let Ok(request) = range_request(&query) {
            if let Ok(range) = request.validate(NOW_MS) {
                assert!(range.from_ms < range.to_ms, "{range:?}");
                assert!(
                    (1..=sensor_hub::history::query::MAX_POINTS_LIMIT).contains(&range.max_points),
                    "{range:?}"
                );
            }
        }
    }
});
