//! The HTTP application without a server, through `warp::test`.

use super::*;
use crate::clock::{Clock, Now};
use crate::config::HubConfig;
use crate::core::{CoreMetrics, Received, SessionMessage};
use crate::ingest::IngestCollector;
use crate::net::RecvBuffer;
use crate::ws::client::WsMetrics;
use crate::ws::WsCollector;
use sensor_hub_protocol::control::{CommandBody, Hello, Name, Outcome, Text};
use sensor_hub_protocol::{encode_datagram, Datagram, Reading, Value};
use tokio::sync::{broadcast, mpsc};

type Hub = HttpContext;

/// One credentials file for every test hub of this binary, with an
/// operator token.
fn credentials() -> &'static (std::path::PathBuf, String) {
    static FILE: std::sync::OnceLock<(std::path::PathBuf, String)> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sensor-hub-http-unit-{}", std::process::id()));
        let path = dir.join("credentials.json");
        let _ = std::fs::remove_file(&path);
        let (_, token) = crate::auth::store::CredentialFile::new(&path)
            .update(|c| c.add_token("unit", Role::Operator, 0))
            .unwrap();
        (path, token)
    })
}

/// A request as the hub's own dashboard host sees it, with the operator
/// token and a JSON content type.
fn authed() -> warp::test::RequestBuilder {
    warp::test::request()
        .header("host", "127.0.0.1:8080")
        .header("authorization", format!("Bearer {}", credentials().1))
        .header("content-type", "application/json")
}

/// An HTTP application over a fresh core, on the system clock.
fn hub() -> Hub {
    let mut config = HubConfig::defaults().unwrap();
    config.auth.credentials_path = credentials().0.clone();
    let auth = crate::auth::Auth::open(&config.auth, &config.http).unwrap();
    let core = Arc::new(Core::new(&config, None));
    let clock = Clock::system();
    let ingest = Arc::new(IngestMetrics::new(
        vec![None],
        RecvBuffer {
            requested: 1 << 20,
            reported: 2 << 20,
        },
    ));
    let ws_metrics = Arc::new(WsMetrics::default());
    let mut registry = metrics::Registry::default();
    registry.register_collector(Box::new(CoreMetrics(core.clone())));
    registry.register_collector(Box::new(IngestCollector(ingest.clone())));
    registry.register_collector(Box::new(WsCollector(ws_metrics.clone())));
    let health = Health::default();
    registry.register_collector(Box::new(crate::supervisor::HealthCollector(health.clone())));
    HttpContext {
        cluster: None,
        core: core.clone(),
        ws: WsContext::new(
            core,
            &config,
            clock.clone(),
            ws_metrics,
            tokio_util::sync::CancellationToken::new(),
            auth.clone(),
        ),
        tasks: TaskTracker::new(),
        metrics: Arc::new(registry),
        health,
        ingest,
        started_mono_ms: clock.now().mono_ms,
        auth,
        metrics_open: false,
        devices: Arc::new(
            crate::device_file::DeviceDirectory::open(
                crate::device_file::DeviceFile::new(std::env::temp_dir().join(format!(
                    "sensor-hub-http-unit-{}/devices-{}.json",
                    std::process::id(),
                    NEXT_HUB.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ))),
                1_000,
            )
            .unwrap(),
        ),
        mqtt: Arc::new(crate::mqtt::MqttStatus::new(&config.mqtt)),
    }
}

/// Numbers each test hub's device file.
static NEXT_HUB: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn now(hub: &Hub) -> Now {
    hub.ws.clock.now()
}

fn ingest_bytes(hub: &Hub, bytes: &[u8]) {
    let received = Received {
        bytes,
        wire_len: bytes.len(),
        from: "127.0.0.1:9".parse().unwrap(),
    };
    hub.core.ingest_batch(&[received], now(hub));
}

fn ingest(hub: &Hub, device_id: u32, seq: u32) {
    let d = Datagram {
        device_id,
        seq,
        time_ms: now(hub).wall_ms as u32,
        readings: [Reading {
            channel: 2,
            value: Value::F32(19.25),
        }]
        .into_iter()
        .collect(),
        auth_tag: None,
    };
    let mut buf = [0u8; 512];
    let bytes = encode_datagram(&d, &mut buf).unwrap();
    ingest_bytes(hub, bytes);
}

async fn get(hub: &Hub, path: &str) -> warp::http::Response<Bytes> {
    authed().path(path).reply(&routes(hub.clone())).await
}

#[tokio::test]
async fn healthz_names_the_tasks_that_are_down() {
    let hub = hub();
    let mut supervisor = crate::supervisor::Supervisor::new(
        hub.health.clone(),
        tokio_util::sync::CancellationToken::new(),
    );
    supervisor.spawn_once("ingest", async { Err("the UDP socket failed".to_string()) });
    let why = supervisor.watch().await.unwrap_err();
    assert!(why.contains("ingest"), "{why}");
    let r = get(&hub, "/healthz").await;
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"status": "failed", "failed_tasks": ["ingest"]})
    );
    let text = String::from_utf8(get(&hub, "/metrics").await.body().to_vec()).unwrap();
    assert!(
        text.contains("sensor_hub_task_failures_total{task=\"ingest\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn dashboard_files_are_served_with_their_types() {
    let hub = hub();
    for (path, ty, marker) in [
        ("/", "text/html", "<html"),
        ("/app.js", "text/javascript", "/stream.js"),
        ("/stream.js", "text/javascript", "WebSocket"),
        ("/style.css", "text/css", "{"),
    ] {
        let r = get(&hub, path).await;
        assert_eq!(r.status(), 200, "{path}");
        let content_type = r.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(ty), "{path}: {content_type}");
        let body = String::from_utf8(r.body().to_vec()).unwrap();
        assert!(body.contains(marker), "{path}");
    }
}

#[tokio::test]
async fn the_icon_is_served_at_both_icon_paths() {
    let hub = hub();
    for path in ["/favicon.svg", "/favicon.ico"] {
        let r = get(&hub, path).await;
        assert_eq!(r.status(), 200, "{path}");
        let content_type = r.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with("image/"), "{path}: {content_type}");
        let body = String::from_utf8(r.body().to_vec()).unwrap();
        assert!(body.contains("<svg"), "{path}: {body}");
    }
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let r = get(&hub(), "/nope").await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn api_devices_lists_devices_with_sensors() {
    let hub = hub();
    ingest(&hub, 20, 0);
    ingest(&hub, 10, 0);
    ingest(&hub, 10, 1);
    let r = get(&hub, "/api/devices").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    let devices = v["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0]["id"], 10);
    assert_eq!(devices[0]["datagrams"], 2);
    assert_eq!(devices[0]["last_seq"], 1);
    assert_eq!(devices[0]["addr"], "127.0.0.1:9");
    assert_eq!(devices[0]["sensors"][0]["channel"], 2);
    assert_eq!(devices[0]["sensors"][0]["value"], 19.25);
    assert_eq!(devices[1]["id"], 20);
    assert!(v["hub_time_ms"].as_u64().unwrap() > 1_600_000_000_000);
}

#[tokio::test]
async fn healthz_and_metrics_answer() {
    let hub = hub();
    ingest(&hub, 1, 0);
    ingest_bytes(&hub, b"junk");
    let r = get(&hub, "/healthz").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.body().as_ref(), br#"{"status":"ok"}"#);

    let r = get(&hub, "/metrics").await;
    assert_eq!(r.status(), 200);
    let text = String::from_utf8(r.body().to_vec()).unwrap();
    assert!(
        text.contains("sensor_hub_udp_datagrams_received_total 2\n"),
        "{text}"
    );
    assert!(text.contains("sensor_hub_udp_datagrams_dropped_total{reason=\"bad_magic\"} 1\n"));
    assert!(text.contains("sensor_hub_devices 1\n"));
    assert!(text.contains("sensor_hub_udp_receive_buffer_bytes 1048576\n"));
}

#[tokio::test]
async fn api_hub_has_the_metrics_figures_as_json() {
    let hub = hub();
    ingest(&hub, 1, 0);
    ingest_bytes(&hub, b"junk");
    let r = get(&hub, "/api/hub").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["datagrams_received"], 2);
    assert_eq!(v["datagrams_accepted"], 1);
    assert_eq!(v["dropped"]["bad_magic"], 1);
    assert_eq!(v["devices"], 1);
    assert_eq!(v["devices_by_status"]["online"], 1);
    assert_eq!(v["sequence"]["received"], 1);
    assert_eq!(v["ws_clients"], 0);
    assert!(v["uptime_s"].as_f64().unwrap() >= 0.0);
}

#[tokio::test]
async fn ws_without_upgrade_headers_is_a_clear_400() {
    let r = get(&hub(), "/ws").await;
    assert_eq!(r.status(), 400);
    let body = String::from_utf8(r.body().to_vec()).unwrap();
    assert!(body.contains("WebSocket upgrade"), "{body}");
}

async fn post(hub: &Hub, path: &str, body: &str) -> warp::http::Response<Bytes> {
    authed()
        .method("POST")
        .path(path)
        .body(body)
        .reply(&routes(hub.clone()))
        .await
}

/// `post` on its own task, so the test can play the device meanwhile.
fn spawn_post(
    hub: &Hub,
    path: &'static str,
    body: &'static str,
) -> tokio::task::JoinHandle<warp::http::Response<Bytes>> {
    let hub = hub.clone();
    tokio::spawn(async move { post(&hub, path, body).await })
}

fn json(r: &warp::http::Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(r.body())
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(r.body())))
}

/// Opens a control session for `device` the way the control listener does;
/// what the hub sends the device arrives on the receiver.
fn connect(hub: &Hub, device: u32) -> mpsc::Receiver<SessionMessage> {
    let (tx, rx) = mpsc::channel(8);
    let hello = Hello {
        device_id: device,
        name: Name::try_from("dev").unwrap(),
        firmware: Name::try_from("1.0").unwrap(),
        token: Text::new(),
        interval_ms: 1_000,
        device_time_ms: now(hub).wall_ms,
        sensors: Default::default(),
    };
    hub.core.open_session(&hello, tx, None, now(hub)).unwrap();
    rx
}

/// The next state the registry publishes for any command.
async fn next_update(updates: &mut broadcast::Receiver<CommandRecord>) -> CommandRecord {
    tokio::time::timeout(Duration::from_secs(5), updates.recv())
        .await
        .expect("a command update within 5 s")
        .unwrap()
}

#[test]
fn the_command_wait_defaults_to_five_seconds_and_is_capped_at_ten_minutes() {
    let parse = |pairs: &[(&str, &str)]| {
        let query = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CommandQuery::parse(&query)
    };
    assert_eq!(DEFAULT_COMMAND_WAIT_MS, 5_000);
    assert_eq!(parse(&[]).unwrap().wait(), Duration::from_secs(5));
    assert_eq!(
        parse(&[("timeout_ms", "50")]).unwrap().wait(),
        Duration::from_millis(50)
    );
    assert_eq!(
        parse(&[("timeout_ms", "99999999999")]).unwrap().wait(),
        Duration::from_secs(600)
    );
    assert_eq!(
        parse(&[("wait", "false")]).unwrap(),
        CommandQuery {
            wait: Some(false),
            timeout_ms: None
        }
    );
    for (pairs, expected) in [
        (&[("wait", "no")][..], "`wait` must be true or false"),
        (
            &[("timeout_ms", "-1")][..],
            "`timeout_ms` must be a whole number",
        ),
        (&[("timeout", "5")][..], "unknown query parameter `timeout`"),
    ] {
        let err = parse(pairs).unwrap_err();
        assert!(err.contains(expected), "{pairs:?}: {err}");
    }
}

#[tokio::test]
async fn a_command_to_an_unknown_device_is_404_at_once_and_submits_nothing() {
    let hub = hub();
    ingest(&hub, 1, 0);
    let mut updates = hub.core.command_updates();
    // Well within the default wait: the hub must not wait for anything.
    let r = tokio::time::timeout(
        Duration::from_secs(1),
        post(&hub, "/api/devices/77/commands", r#"{"kind":"identify"}"#),
    )
    .await
    .expect("an answer without waiting");
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(json(&r), serde_json::json!({"error": "unknown device 77"}));
    assert!(matches!(
        updates.try_recv(),
        Err(broadcast::error::TryRecvError::Empty)
    ));
    assert!(hub.core.command(1).is_none(), "no command was recorded");
}

#[tokio::test]
async fn bad_command_requests_are_400_with_what_is_wrong() {
    let hub = hub();
    ingest(&hub, 1, 0);
    for (path, body, expected) in [
        (
            "/api/devices/1/commands",
            "not json",
            "the body must be a JSON command",
        ),
        (
            "/api/devices/1/commands",
            r#"{"kind":"set_interval"}"#,
            "needs `ms`",
        ),
        (
            "/api/devices/1/commands?wait=perhaps",
            r#"{"kind":"identify"}"#,
            "`wait` must be true or false",
        ),
        (
            "/api/devices/1/commands?timeout_ms=soon",
            r#"{"kind":"identify"}"#,
            "`timeout_ms` must be a whole number",
        ),
        (
            "/api/devices/1/commands?retry=1",
            r#"{"kind":"identify"}"#,
            "unknown query parameter `retry`",
        ),
    ] {
        let r = post(&hub, path, body).await;
        assert_eq!(r.status(), 400, "{path} {body}");
        let error = json(&r)["error"].as_str().unwrap().to_string();
        assert!(error.contains(expected), "{path} {body}: {error}");
    }
}

#[tokio::test]
async fn a_command_the_device_answers_within_the_wait_is_200_with_its_outcome() {
    let hub = hub();
    let mut session = connect(&hub, 5);
    for (outcome, state, detail) in [
        (Outcome::Succeeded, "succeeded", None),
        (Outcome::Failed, "failed", Some("no LED")),
    ] {
        let request = spawn_post(&hub, "/api/devices/5/commands", r#"{"kind":"identify"}"#);
        let Some(SessionMessage::Command { id, .. }) = session.recv().await else {
            panic!("the device gets the command");
        };
        hub.core.command_acked(5, id, now(&hub));
        hub.core
            .command_result(5, id, outcome, detail.map(String::from), now(&hub));
        let r = request.await.unwrap();
        assert_eq!(r.status(), 200);
        let v = json(&r);
        assert_eq!(v["command_id"], id);
        assert_eq!(v["device"], 5);
        assert_eq!(v["kind"], "identify");
        assert_eq!(v["state"], state);
        assert_eq!(v["detail"], serde_json::json!(detail));
    }
}

#[tokio::test]
async fn a_command_whose_ttl_passes_within_the_wait_is_200_timed_out() {
    let hub = hub();
    ingest(&hub, 6, 0);
    let mut updates = hub.core.command_updates();
    let request = spawn_post(&hub, "/api/devices/6/commands", r#"{"kind":"reboot"}"#);
    let queued = next_update(&mut updates).await;
    assert_eq!(queued.state, CommandState::Queued);
    let ttl = HubConfig::defaults().unwrap().commands.ttl_ms;
    hub.core.tick(now(&hub).after(ttl));
    let r = request.await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(json(&r)["state"], "timed_out");
}

#[tokio::test]
async fn a_command_the_hub_rejects_is_409_with_the_reason() {
    let hub = hub();
    ingest(&hub, 7, 0);
    // No control session and told not to wait for one.
    let r = post(
        &hub,
        "/api/devices/7/commands?wait=false",
        r#"{"kind":"identify"}"#,
    )
    .await;
    assert_eq!(r.status(), 409);
    let v = json(&r);
    assert_eq!(v["state"], "rejected");
    assert!(
        v["detail"].as_str().unwrap().contains("no control session"),
        "{v}"
    );

    // The device's queue is full.
    let room = HubConfig::defaults().unwrap().commands.queue_per_device;
    for _ in 0..room {
        hub.core
            .submit_command(7, CommandBody::Identify, true, Origin::default(), now(&hub))
            .unwrap();
    }
    let r = post(&hub, "/api/devices/7/commands", r#"{"kind":"identify"}"#).await;
    assert_eq!(r.status(), 409);
    let v = json(&r);
    assert_eq!(v["state"], "rejected");
    assert!(
        v["detail"].as_str().unwrap().contains("commands waiting"),
        "{v}"
    );
}

#[tokio::test]
async fn a_command_still_on_its_way_when_the_wait_ends_is_202_with_its_state() {
    let hub = hub();
    ingest(&hub, 8, 0);
    // Queued for a session that never comes.
    let r = post(
        &hub,
        "/api/devices/8/commands?timeout_ms=1",
        r#"{"kind":"identify"}"#,
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(json(&r)["state"], "queued");

    // Sent to a device that does not answer.
    let _session = connect(&hub, 9);
    let r = post(
        &hub,
        "/api/devices/9/commands?timeout_ms=1",
        r#"{"kind":"identify"}"#,
    )
    .await;
    assert_eq!(r.status(), 202);
    assert_eq!(json(&r)["state"], "sent");
}

#[tokio::test]
async fn requests_no_route_takes_get_json_errors() {
    let hub = hub();
    ingest(&hub, 1, 0);
    let routes = routes(hub.clone());
    let huge = authed()
        .method("POST")
        .path("/api/devices/1/commands")
        .header("content-length", "20000")
        .body(vec![b' '; 20_000])
        .reply(&routes)
        .await;
    let unsized_body = authed()
        .method("POST")
        .path("/api/devices/1/commands")
        .reply(&routes)
        .await;
    let wrong_method = authed()
        .method("POST")
        .path("/api/hub")
        .reply(&routes)
        .await;
    let nowhere = get(&hub, "/nope").await;
    for (r, status, expected) in [
        (huge, 413, "larger than 16384 bytes"),
        (unsized_body, 411, "Content-Length"),
        (wrong_method, 405, "does not take that method"),
        (nowhere, 404, "no such path"),
    ] {
        assert_eq!(r.status(), status);
        assert_eq!(r.headers()["content-type"], "application/json");
        let error = json(&r)["error"].as_str().unwrap().to_string();
        assert!(error.contains(expected), "{status}: {error}");
    }
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let hub = hub();
    for path in ["/", "/app.js", "/api/hub", "/api/devices", "/nope"] {
        let r = get(&hub, path).await;
        let h = r.headers();
        assert_eq!(
            h["content-security-policy"],
            crate::response::CONTENT_SECURITY_POLICY,
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
    }
}

async fn ws_request(hub: &Hub, origin: Option<&str>) -> warp::http::Response<Bytes> {
    let mut request = authed()
        .path("/ws")
        .header("host", "127.0.0.1:8080")
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.reply(&routes(hub.clone())).await
}

#[tokio::test]
async fn a_websocket_from_another_sites_page_is_refused() {
    // Cross-site WebSocket hijacking: any page a browser on the LAN opens
    // could read the stream and send commands.
    let hub = hub();
    for origin in [
        "http://attacker.example",
        "http://127.0.0.1:9999",
        "https://127.0.0.1:8080.attacker.example",
        "null",
    ] {
        let r = ws_request(&hub, Some(origin)).await;
        assert_eq!(r.status(), 403, "{origin}");
        let body = String::from_utf8(r.body().to_vec()).unwrap();
        assert!(body.contains("cross-origin"), "{body}");
    }
    assert_eq!(hub.ws.metrics.foreign_origin_refused.get(), 4);
    // The hub's own page, in any letter case, and clients that are not
    // browsers (no Origin) pass this check (warp::test cannot upgrade, so
    // they stop at the upgrade itself: 400).
    for origin in [
        Some("http://127.0.0.1:8080"),
        Some("HTTP://127.0.0.1:8080"),
        None,
    ] {
        assert_eq!(ws_request(&hub, origin).await.status(), 400, "{origin:?}");
    }
    assert_eq!(hub.ws.metrics.foreign_origin_refused.get(), 4);
}
