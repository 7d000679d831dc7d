//! The HTTP listener over real sockets: the per-address WebSocket cap, a
//! full table of busy connections refusing a new one, and HTTPS with a
//! certificate made at test time (rcgen), checked by a rustls client that
//! trusts only that certificate.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod support;

use std::sync::Arc;
use std::time::Duration;

use sensor_hub_protocol::control::HubMessage;
use support::device::{next, session};
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

const TOKEN: &str = "fleet-secret-for-tests";

/// The head of a WebSocket upgrade request (closed after a refusal).
const UPGRADE: [(&str, &str); 4] = [
    ("Connection", "Upgrade, close"),
    ("Upgrade", "websocket"),
    ("Sec-WebSocket-Version", "13"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
];

#[tokio::test]
async fn websocket_upgrades_beyond_the_per_address_cap_get_429() {
    let hub = start_hub(&[("SENSOR_HUB__WS__MAX_CLIENTS_PER_ADDRESS", "2")]).await;
    let first = hub.ws().await;
    let _second = hub.ws().await;
    let (answer, _) = http_request(hub.http, "GET", "/ws", &UPGRADE, None).await;
    assert_eq!(answer.status, 429, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    let message = body["error"].as_str().unwrap();
    assert!(message.contains("ws.max_clients_per_address"), "{message}");
    assert_eq!(
        hub.metric("sensor_hub_ws_clients_rejected_per_address_total")
            .await,
        1
    );
    assert_eq!(hub.metric("sensor_hub_ws_clients_rejected_total").await, 0);
    // A client that leaves gives its place back.
    drop(first);
    eventually("the first client's session ended", || async {
        hub.metric("sensor_hub_ws_clients").await == 1
    })
    .await;
    let _third = hub.ws().await;
    hub.stop().await;
}

/// Sends a command request on a new connection; its answer is read later.
async fn start_command(hub: &TestHub, device: u32) -> TcpStream {
    let body = r#"{"kind":"identify"}"#;
    let mut s = TcpStream::connect(hub.http).await.unwrap();
    let request = format!(
        "POST /api/devices/{device}/commands?timeout_ms=1000 HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        hub.token,
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    s
}

#[tokio::test]
async fn when_every_connection_is_busy_a_new_one_is_refused_and_counted() {
    let hub = start_hub(&[
        ("SENSOR_HUB__CONTROL__FLEET_TOKEN", TOKEN),
        ("SENSOR_HUB__HTTP__MAX_CONNECTIONS", "3"),
        ("SENSOR_HUB__WS__MAX_CLIENTS", "1"),
    ])
    .await;
    // A device that takes commands and never answers them.
    let mut device = session(hub.control, 5, TOKEN).await;
    let mut busy = Vec::new();
    for _ in 0..3 {
        busy.push(start_command(&hub, 5).await);
    }
    // The device has them all: each request is in flight, its connection
    // busy.
    for _ in 0..3 {
        loop {
            match next(&mut device).await {
                Some(HubMessage::Command { .. }) => break,
                Some(_) => continue,
                None => panic!("the hub closed the device's session"),
            }
        }
    }
    let mut refused = TcpStream::connect(hub.http).await.unwrap();
    let _ = refused
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: hub\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), refused.read_to_end(&mut answer))
        .await
        .expect("the refused connection is closed within 5 s");
    assert!(
        read.is_err() || answer.is_empty(),
        "a refused connection gets no answer: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // The busy requests end (202: the device never answered); then there
    // is room again.
    for mut s in busy {
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw))
            .await
            .expect("the command request ends after its timeout_ms")
            .unwrap();
        assert!(raw.starts_with(b"HTTP/1.1 202"), "{raw:?}");
    }
    assert_eq!(
        hub.metric("sensor_hub_http_connections_closed_total{reason=\"refused\"}")
            .await,
        1
    );
    hub.stop().await;
}

/// A self-signed certificate for `localhost` in files the hub reads, and
/// a client configuration that trusts only it.
struct TestCert {
    dir: TempDir,
    client: rustls::ClientConfig,
}

impl TestCert {
    fn new() -> TestCert {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = TempDir::new("tls");
        std::fs::write(dir.path().join("cert.pem"), generated.cert.pem()).unwrap();
        std::fs::write(
            dir.path().join("key.pem"),
            generated.key_pair.serialize_pem(),
        )
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(generated.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TestCert { dir, client }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// `GET path` with `Connection: close` on `stream`; the status and body.
async fn get_on<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    path: &str,
    token: &str,
) -> (u16, String) {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // A TLS peer may close without close_notify: what was read counts.
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("an answer within 10 s");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

async fn tls_get(cert: &TestCert, hub: &TestHub, path: &str) -> (u16, String) {
    let addr = hub.http;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cert.client.clone()));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.expect("TLS handshake");
    get_on(tls, path, &hub.token).await
}

#[tokio::test]
async fn https_with_a_self_signed_certificate_serves_healthz() {
    let cert = TestCert::new();
    let (cert_path, key_path) = (cert.path("cert.pem"), cert.path("key.pem"));
    let hub = start_hub(&[
        ("SENSOR_HUB__HTTP__TLS_CERT_PATH", cert_path.as_str()),
        ("SENSOR_HUB__HTTP__TLS_KEY_PATH", key_path.as_str()),
    ])
    .await;
    let (status, body) = tls_get(&cert, &hub, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"{"status":"ok"}"#);

    // Plain HTTP to the HTTPS port: the handshake fails and is counted.
    let plain = TcpStream::connect(hub.http).await.unwrap();
    let mut plain = plain;
    let _ = plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let mut ignored = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut ignored))
        .await
        .expect("the hub closes a plain connection to its HTTPS port");
    let (_, metrics) = tls_get(&cert, &hub, "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "sensor_hub_http_tls_handshake_failures_total 1"),
        "{metrics}"
    );
    hub.stop().await;
}
