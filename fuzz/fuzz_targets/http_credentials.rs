//! What access control reads of a request: `Host` and `Origin` headers, a
//! presented API token, the `Cookie` header, a history sensor reference.
//! Any bytes are a clear yes or no, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensor_hub::auth::policy::Policy;
use sensor_hub::auth::store::Credentials;
use sensor_hub::auth::Role;
use sensor_hub::history::query::SensorRef;

fuzz_target!(|bytes: &[u8]| {
    let policy = Policy::new(
        &["pi.local".to_string()],
        &["https://grafana.example:3000".to_string()],
        &["hub".to_string()],
    );
    let _ = policy.host_allowed(Some(bytes));
    let _ = policy.origin_allowed(bytes, Some(b"127.0.0.1:8080"));
    if let Ok(text) = std::str::from_utf8(bytes) {
        let mut credentials = Credentials::default();
        if let Ok((_, token)) = credentials.add_token("fuzz", Role::Viewer, 0) {
            assert!(credentials.token(&token).is_some());
        }
        let _ = credentials.token(text);
        let _ = credentials.take_login_code(text, 0);
        let mut headers = http::HeaderMap::new();
        if let Ok(value) = text.parse() {
            headers.insert("cookie", value);
            let _ = sensor_hub::http::access::session_cookie(&headers);
        }
        let _ = SensorRef::parse(text);
    }
});
