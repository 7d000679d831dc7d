//! Configuration loading: defaults, layering, and error messages.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Option<HashMap<String, String>> {
    Some(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn file(text: &str) -> tempfile_lite::TempToml {
    tempfile_lite::TempToml::new(text)
}

/// A minimal temp-file helper (the tests need one file at a time).
mod tempfile_lite {
    use std::path::PathBuf;

    pub struct TempToml(pub PathBuf);

    impl TempToml {
        pub fn new(text: &str) -> TempToml {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "sensor-hub-config-test-{}-{n}.toml",
                std::process::id()
            ));
            std::fs::write(&path, text).unwrap();
            TempToml(path)
        }
    }

    impl Drop for TempToml {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

#[test]
fn defaults_load_and_match_the_documented_values() {
    let c = HubConfig::defaults().unwrap();
    assert_eq!(c.udp.bind, "0.0.0.0:47100".parse().unwrap());
    assert_eq!(c.control.bind, "0.0.0.0:47101".parse().unwrap());
    assert_eq!(c.http.bind, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(c.udp.recv_buffer_bytes, 8 * 1024 * 1024);
    assert_eq!(c.udp.batch_max, 256);
    assert_eq!(c.ws.max_clients, 256);
    assert_eq!(c.limits.max_devices, 10_000);
    assert_eq!(c.shutdown.drain_timeout_ms, 5_000);
}

#[test]
fn file_layers_over_defaults() {
    let f = file("[udp]\nbind = \"127.0.0.1:0\"\n\n[limits]\nmax_devices = 3\n");
    let c = HubConfig::load(Some(&f.0), env(&[])).unwrap();
    assert_eq!(c.udp.bind, "127.0.0.1:0".parse().unwrap());
    assert_eq!(c.limits.max_devices, 3);
    // Untouched keys keep their defaults.
    assert_eq!(c.udp.batch_max, 256);
}

#[test]
fn environment_overrides_file_and_defaults() {
    let f = file("[udp]\nbind = \"127.0.0.1:0\"\n");
    let c = HubConfig::load(
        Some(&f.0),
        env(&[
            ("SENSOR_HUB__UDP__BIND", "0.0.0.0:47999"),
            ("SENSOR_HUB__UDP__RECV_BUFFER_BYTES", "1048576"),
            ("SENSOR_HUB__WS__MAX_CLIENTS", "9"),
        ]),
    )
    .unwrap();
    assert_eq!(c.udp.bind, "0.0.0.0:47999".parse().unwrap());
    assert_eq!(c.udp.recv_buffer_bytes, 1_048_576);
    assert_eq!(c.ws.max_clients, 9);
}

#[test]
fn unknown_key_in_file_is_an_error_naming_it() {
    let f = file("[udp]\nbnd = \"127.0.0.1:0\"\n");
    let err = HubConfig::load(Some(&f.0), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bnd"), "{err}");
    assert!(err.contains("udp"), "{err}");
}

#[test]
fn unknown_section_is_an_error_naming_it() {
    let f = file("[udpp]\nbind = \"127.0.0.1:0\"\n");
    let err = HubConfig::load(Some(&f.0), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("udpp"), "{err}");
}

#[test]
fn unknown_environment_key_is_an_error_naming_it() {
    let err = HubConfig::load(None, env(&[("SENSOR_HUB__HTTP__PORT", "80")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("port"), "{err}");
}

#[test]
fn bad_value_is_an_error_naming_key_and_expectation() {
    let f = file("[udp]\nbind = \"not an address\"\n");
    let err = HubConfig::load(Some(&f.0), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("udp.bind"), "{err}");
    assert!(err.contains("expected IP:PORT"), "{err}");

    let f = file("[ws]\nmax_clients = \"many\"\n");
    let err = HubConfig::load(Some(&f.0), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("ws.max_clients"), "{err}");
}

#[test]
fn out_of_range_value_is_an_error_naming_the_key() {
    let err = HubConfig::load(None, env(&[("SENSOR_HUB__UDP__BATCH_MAX", "0")]))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "bad value for `udp.batch_max`: a whole number of at least 1"
    );
}

#[test]
fn receive_sockets_is_one_to_sixty_four() {
    assert_eq!(HubConfig::defaults().unwrap().udp.receive_sockets, 1);
    for ok in ["1", "2", "64"] {
        let c = HubConfig::load(None, env(&[("SENSOR_HUB__UDP__RECEIVE_SOCKETS", ok)])).unwrap();
        assert_eq!(c.udp.receive_sockets.to_string(), ok);
    }
    for bad in ["0", "65", "1000"] {
        let err =
            HubConfig::load(None, env(&[("SENSOR_HUB__UDP__RECEIVE_SOCKETS", bad)])).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::OutOfRange {
                    key: "udp.receive_sockets",
                    ..
                }
            ),
            "{bad}: {err}"
        );
        assert!(err.to_string().contains("between 1 and 64"), "{err}");
    }
    let f = file("[udp]\nreceive_sockets = -1\n");
    let err = HubConfig::load(Some(&f.0), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("receive_sockets"), "{err}");
}

#[test]
fn missing_file_and_syntax_errors_name_the_file() {
    let missing = std::path::Path::new("/nonexistent/sensor-hub.toml");
    let err = HubConfig::load(Some(missing), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/sensor-hub.toml"), "{err}");

    let f = file("[udp\nbind = 1\n");
    let err = HubConfig::load(Some(&f.0), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains(&f.0.display().to_string()), "{err}");
}

#[test]
fn device_tokens_parse_and_bad_ones_name_the_key() {
    let f = file("[control.tokens]\n\"17\" = \"a-long-enough-token\"\n");
    let c = HubConfig::load(Some(&f.0), env(&[])).unwrap();
    assert_eq!(c.device_tokens().unwrap()[&17], "a-long-enough-token");

    let f = file("[control.tokens]\nkitchen = \"a-long-enough-token\"\n");
    let err = HubConfig::load(Some(&f.0), env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("control.tokens.kitchen"), "{err}");

    let err = HubConfig::load(None, env(&[("SENSOR_HUB__CONTROL__TOKENS__9", "")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("control.tokens.9"), "{err}");
}

#[test]
fn weak_device_tokens_are_refused_saying_how_to_make_one() {
    for (key, value) in [
        ("SENSOR_HUB__CONTROL__FLEET_TOKEN", "x"),
        ("SENSOR_HUB__CONTROL__FLEET_TOKEN", "fifteen-chars!!"),
        ("SENSOR_HUB__CONTROL__TOKENS__9", "short"),
    ] {
        let err = HubConfig::load(None, env(&[(key, value)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("16"), "{key}={value}: {err}");
        assert!(err.contains("openssl rand"), "{key}={value}: {err}");
    }
    let ok = HubConfig::load(
        None,
        env(&[("SENSOR_HUB__CONTROL__FLEET_TOKEN", "sixteen-chars!!!")]),
    );
    assert!(ok.is_ok());
}

#[test]
fn related_limits_are_checked_together() {
    let err = HubConfig::load(
        None,
        env(&[("SENSOR_HUB__CONTROL__IDLE_TIMEOUT_MS", "1000")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("control.idle_timeout_ms"), "{err}");
    let err = HubConfig::load(
        None,
        env(&[("SENSOR_HUB__LIVENESS__OFFLINE_AFTER_INTERVALS", "2")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("liveness.offline_after_intervals"), "{err}");
    let err = HubConfig::load(
        None,
        env(&[("SENSOR_HUB__CONTROL__MAX_FRAME_BYTES", "70000")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("control.max_frame_bytes"), "{err}");
}

#[test]
fn the_listener_defaults_and_the_open_files_they_need() {
    let c = HubConfig::defaults().unwrap();
    assert_eq!(c.http.header_read_timeout_ms, 10_000);
    assert_eq!(c.http.idle_timeout_ms, 60_000);
    assert_eq!(c.http.max_connections, 512);
    assert_eq!(c.http.history_queries_per_address, 2);
    assert_eq!(c.ws.max_clients_per_address, 32);
    assert_eq!(c.http.tls_paths(), None);
    // 512 HTTP + 1,024 control connections + the hub's own files: more
    // than systemd's default soft limit (1,024), which the hub raises to
    // the hard limit (524,288) at start.
    assert_eq!(
        c.open_files_needed(),
        512 + 1_024 + crate::config::RESERVED_FILES
    );
}

#[test]
fn one_tls_path_without_the_other_is_an_error_naming_the_missing_key() {
    let err = HubConfig::load(
        None,
        env(&[(
            "SENSOR_HUB__HTTP__TLS_CERT_PATH",
            "/etc/sensor-hub/cert.pem",
        )]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`http.tls_key_path`"), "{err}");
    assert!(err.contains("http.tls_cert_path"), "{err}");

    let err = HubConfig::load(
        None,
        env(&[("SENSOR_HUB__HTTP__TLS_KEY_PATH", "/etc/sensor-hub/key.pem")]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`http.tls_cert_path`"), "{err}");

    let c = HubConfig::load(
        None,
        env(&[
            (
                "SENSOR_HUB__HTTP__TLS_CERT_PATH",
                "/etc/sensor-hub/cert.pem",
            ),
            ("SENSOR_HUB__HTTP__TLS_KEY_PATH", "/etc/sensor-hub/key.pem"),
        ]),
    )
    .unwrap();
    assert_eq!(
        c.http.tls_paths(),
        Some((
            Path::new("/etc/sensor-hub/cert.pem"),
            Path::new("/etc/sensor-hub/key.pem")
        ))
    );
}

#[test]
fn websockets_must_leave_room_among_http_connections() {
    let err = HubConfig::load(
        None,
        env(&[
            ("SENSOR_HUB__WS__MAX_CLIENTS", "600"),
            ("SENSOR_HUB__HTTP__MAX_CONNECTIONS", "600"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`http.max_connections`"), "{err}");
    assert!(err.contains("ws.max_clients"), "{err}");
    for key in [
        "SENSOR_HUB__HTTP__HEADER_READ_TIMEOUT_MS",
        "SENSOR_HUB__HTTP__IDLE_TIMEOUT_MS",
        "SENSOR_HUB__HTTP__HISTORY_QUERIES_PER_ADDRESS",
        "SENSOR_HUB__WS__MAX_CLIENTS_PER_ADDRESS",
    ] {
        assert!(HubConfig::load(None, env(&[(key, "0")])).is_err(), "{key}");
    }
}
