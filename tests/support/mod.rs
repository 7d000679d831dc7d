//! Shared helpers of the integration tests: a real hub on port 0 with its
//! history database in a temporary directory, raw HTTP requests, datagram
//! encoding, WebSocket reads with a deadline, and what tests that run
//! processes of their own (hubs, Redis, Mosquitto) share: free ports,
//! installed programs, a hub's standard error read in a thread.
#![allow(dead_code)] // each test file uses a different subset

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use sensor_hub::config::HubConfig;
use sensor_hub::server::{run, Listeners};
use sensor_hub_protocol::{encode_datagram, Datagram, Reading, Value, MAX_DATAGRAM_LEN};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A directory removed (with what is in it) when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty directory, unique to this process and call.
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sensor-hub-test-{}-{}-{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A history database path inside it.
    pub fn db(&self) -> PathBuf {
        self.0.join("history.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// API tokens of the hubs this process started, by HTTP address: the
/// request helpers send the hub's operator token unless told otherwise.
static TOKENS: std::sync::Mutex<Vec<(SocketAddr, String)>> = std::sync::Mutex::new(Vec::new());

/// The operator token of the test hub listening on `addr`, if any.
pub fn token_for(addr: SocketAddr) -> Option<String> {
    TOKENS
        .lock()
        .unwrap()
        .iter()
        .rev()
        .find(|(a, _)| *a == addr)
        .map(|(_, t)| t.clone())
}

/// Lets the request helpers send `token` to the hub at `addr`.
pub fn register_token(addr: SocketAddr, token: &str) {
    TOKENS.lock().unwrap().push((addr, token.to_string()));
}

/// Makes a credentials file in `dir` with an operator token; returns its
/// path and the token.
pub fn credentials_with_token(dir: &Path, role: sensor_hub::auth::Role) -> (PathBuf, String) {
    let path = dir.join("credentials.json");
    let file = sensor_hub::auth::store::CredentialFile::new(&path);
    let name = format!("test-{}", role.name());
    let (_, token) = file
        .update(|c| c.add_token(&name, role, 0))
        .expect("test credentials");
    (path, token)
}

/// A hub running in this test's runtime on loopback port 0.
pub struct TestHub {
    pub udp: SocketAddr,
    pub control: SocketAddr,
    pub http: SocketAddr,
    /// An operator API token of this hub.
    pub token: String,
    /// Holds its credentials file.
    pub auth_dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Holds its database unless the test named `SENSOR_HUB__STORAGE__PATH`.
    _storage: Option<TempDir>,
    /// Holds the device file of [`start_hub_adopting`].
    _devices: Option<TempDir>,
}

/// Starts a hub with loopback port-0 binds plus `overrides`
/// (`SENSOR_HUB__…` style keys).
pub async fn start_hub(overrides: &[(&str, &str)]) -> TestHub {
    start_hub_on(["127.0.0.1:0"; 3].map(String::from), overrides).await
}

/// Starts a hub (as [`start_hub`]) whose device file adopts `ids`
/// without keys: UDP-only devices whose data is stored and persisted.
pub async fn start_hub_adopting(overrides: &[(&str, &str)], ids: &[u32]) -> TestHub {
    let dir = TempDir::new("devices");
    let path = dir.path().join("devices.json");
    adopt(&path, ids, &[]);
    let path_text = path.display().to_string();
    let mut all: Vec<(&str, &str)> = overrides.to_vec();
    all.push(("SENSOR_HUB__DEVICES__KEYS_PATH", &path_text));
    let mut hub = start_hub(&all).await;
    hub._devices = Some(dir);
    hub
}

/// Writes `ids` (no key) and `keyed` (id, key) into the device file at
/// `path`, replacing entries of the same ids.
pub fn adopt(path: &Path, ids: &[u32], keyed: &[(u32, [u8; 32])]) {
    sensor_hub::device_file::DeviceFile::new(path)
        .update(|list| {
            for &id in ids {
                list.remove(id);
                list.add(id, "", None, 0)?;
            }
            for &(id, key) in keyed {
                list.remove(id);
                list.add(id, "", Some(key), 0)?;
            }
            Ok(())
        })
        .expect("writing the device file");
}

/// Starts a hub bound to `[udp, control, http]`, plus `overrides`.
pub async fn start_hub_on(binds: [String; 3], overrides: &[(&str, &str)]) -> TestHub {
    let [udp, control, http] = binds;
    let mut env: HashMap<String, String> = [
        ("SENSOR_HUB__UDP__BIND", udp),
        ("SENSOR_HUB__CONTROL__BIND", control),
        ("SENSOR_HUB__HTTP__BIND", http),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (k, v) in overrides {
        env.insert(k.to_string(), v.to_string());
    }
    let storage = (!env.contains_key("SENSOR_HUB__STORAGE__PATH")).then(|| {
        let dir = TempDir::new("hub");
        env.insert(
            "SENSOR_HUB__STORAGE__PATH".into(),
            dir.db().display().to_string(),
        );
        dir
    });
    let auth_dir = TempDir::new("auth");
    let (credentials, token) =
        credentials_with_token(auth_dir.path(), sensor_hub::auth::Role::Operator);
    env.entry("SENSOR_HUB__AUTH__CREDENTIALS_PATH".into())
        .or_insert_with(|| credentials.display().to_string());
    // Never the working directory's device file.
    env.entry("SENSOR_HUB__DEVICES__KEYS_PATH".into())
        .or_insert_with(|| auth_dir.path().join("devices.json").display().to_string());
    let config = HubConfig::load(None, Some(env)).expect("test config");
    let listeners = Listeners::bind(&config).await.expect("bind");
    let (udp, control, http) = (
        listeners.udp_addr().unwrap(),
        listeners.control_addr().unwrap(),
        listeners.http_addr().unwrap(),
    );
    register_token(http, &token);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(run(config, listeners, async move {
        let _ = stopped.await;
    }));
    TestHub {
        udp,
        control,
        http,
        token,
        auth_dir,
        stop: Some(stop),
        task,
        _storage: storage,
        _devices: None,
    }
}

impl TestHub {
    /// Its three addresses, to start another hub on the same ports.
    pub fn binds(&self) -> [String; 3] {
        [self.udp, self.control, self.http].map(|a| a.to_string())
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("hub stops within its drain deadline")
            .expect("hub task")
            .expect("hub run result");
    }

    /// A WebSocket client with this hub's operator token.
    pub async fn ws(&self) -> Client {
        ws_connect(self.http, Some(&self.token)).await
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.http, path).await
    }

    /// Value of one sample line of /metrics, e.g.
    /// `sensor_hub_udp_datagrams_dropped_total{reason="bad_magic"}`.
    pub async fn metric(&self, series: &str) -> u64 {
        let (_, text) = self.get("/metrics").await;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}"))
            .parse()
            .expect("integer metric")
    }
}

/// The upgrade request for `/ws` of the hub at `addr`, with `token` if
/// given.
pub fn ws_request(
    addr: SocketAddr,
    token: Option<&str>,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

/// A WebSocket client of the hub at `addr`, with `token` if given.
pub async fn ws_connect(addr: SocketAddr, token: Option<&str>) -> Client {
    let (ws, _) = tokio_tungstenite::connect_async(ws_request(addr, token))
        .await
        .expect("WebSocket connect");
    ws
}

/// `Authorization: Bearer …` for the test hub at `addr` ("" if unknown).
fn authorization(addr: SocketAddr) -> String {
    token_for(addr)
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default()
}

/// A minimal HTTP/1.1 GET with `Connection: close` and the hub's token.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let auth = authorization(addr);
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// An HTTP answer as it came off the socket.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A minimal HTTP/1.1 request with `Connection: close` and the given extra
/// headers; with a body, a `Content-Length` is added. The test hub's token
/// is sent unless `headers` has an `Authorization` entry (an empty value
/// sends none). A `101` answer is
/// returned as soon as its head is read, with no body (the connection then
/// belongs to the upgraded protocol, so its stream is returned too); any
/// other answer is read to the end.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> (RawResponse, TcpStream) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    if !headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("connection"))
    {
        request.push_str("Connection: close\r\n");
    }
    let own_auth = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("authorization"));
    if !own_auth {
        request.push_str(&authorization(addr));
    }
    for (name, value) in headers.iter().filter(|(_, v)| !v.is_empty()) {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    s.write_all(&bytes).await.unwrap();

    let mut raw = Vec::new();
    let head_end = loop {
        if let Some(i) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("an HTTP answer within 10 s")
            .unwrap();
        assert!(n > 0, "connection closed before a whole HTTP head: {raw:?}");
        raw.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {head}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    // After a 101, what follows the head is the upgraded protocol's, not a body.
    let mut body = if status == 101 {
        Vec::new()
    } else {
        raw[head_end + 4..].to_vec()
    };
    if status != 101 {
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut body))
            .await
            .expect("the hub closes the connection within 10 s (Connection: close)")
            .unwrap();
    }
    let response = RawResponse {
        status,
        headers,
        body,
    };
    assert!(
        response.header("transfer-encoding").is_none(),
        "this helper reads only Content-Length bodies: {head}"
    );
    (response, s)
}

/// Encodes a v1 datagram stamped with the current time.
pub fn datagram(device_id: u32, seq: u32, readings: &[(u8, Value)]) -> Vec<u8> {
    datagram_at(device_id, seq, sensor_hub::clock::wall_ms(), readings)
}

/// Encodes a v1 datagram stamped `time_ms` (Unix ms, sent as its low 32 bits).
pub fn datagram_at(device_id: u32, seq: u32, time_ms: u64, readings: &[(u8, Value)]) -> Vec<u8> {
    let d = Datagram {
        device_id,
        seq,
        time_ms: time_ms as u32,
        readings: readings
            .iter()
            .map(|&(channel, value)| Reading { channel, value })
            .collect(),
        auth_tag: None,
    };
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    encode_datagram(&d, &mut buf).unwrap().to_vec()
}

/// Next message of the socket within 5 s.
pub async fn next(ws: &mut Client) -> Message {
    tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("a message within 5 s")
        .expect("socket open")
        .expect("no socket error")
}

/// Next text message, parsed as JSON.
pub async fn next_json(ws: &mut Client) -> serde_json::Value {
    loop {
        match next(ws).await {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON text"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Sends a `subscribe` (fields of `request` plus the type) and returns
/// the `snapshot` that answers it.
pub async fn subscribe(ws: &mut Client, mut request: serde_json::Value) -> serde_json::Value {
    use futures_util::SinkExt as _;
    request["type"] = "subscribe".into();
    ws.send(Message::text(request.to_string())).await.unwrap();
    loop {
        let msg = next_json(ws).await;
        if msg["type"] == "snapshot" {
            return msg;
        }
    }
}

/// Connects, reads `hello`, and subscribes to everything, live.
pub async fn subscribed_client(hub: &TestHub) -> Client {
    let mut ws = hub.ws().await;
    assert_eq!(next_json(&mut ws).await["type"], "hello");
    subscribe(
        &mut ws,
        serde_json::json!({"devices": "all", "sensors": "all", "mode": "live"}),
    )
    .await;
    ws
}

/// Polls `check` every 20 ms for up to 5 s.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..250 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A hand-driven device on the control channel.
pub mod device {
    use std::net::SocketAddr;
    use std::time::Duration;

    use futures_util::{SinkExt as _, StreamExt as _};
    use sensor_hub_protocol::codec::{CodecError, FrameCodec};
    use sensor_hub_protocol::control::*;
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::TcpStream;
    use tokio_util::codec::Framed;

    pub type DeviceFramed = Framed<TcpStream, FrameCodec<DecodedHubMessage, DeviceMessage>>;

    pub fn hello(device_id: u32, token: &str, interval_ms: u32) -> DeviceMessage {
        DeviceMessage::Hello(Hello {
            device_id,
            name: Name::try_from("test-device").unwrap(),
            firmware: Name::try_from("test 1.0").unwrap(),
            token: Text::try_from(token).unwrap(),
            interval_ms,
            device_time_ms: sensor_hub::clock::wall_ms(),
            sensors: [SensorInfo {
                channel: 0,
                name: Name::try_from("temperature").unwrap(),
                unit: "°C".try_into().unwrap(),
                kind: ValueKind::F32,
                min: Some(-40.0),
                max: Some(85.0),
            }]
            .into_iter()
            .collect(),
        })
    }

    /// Connects and sends the preamble.
    pub async fn connect(addr: SocketAddr) -> DeviceFramed {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&PREAMBLE).await.unwrap();
        Framed::new(stream, FrameCodec::new(MAX_FRAME_BODY))
    }

    /// Connects, says hello, and expects a welcome.
    pub async fn session(addr: SocketAddr, device_id: u32, token: &str) -> DeviceFramed {
        let mut framed = connect(addr).await;
        framed.send(hello(device_id, token, 1_000)).await.unwrap();
        match next(&mut framed).await {
            Some(HubMessage::Welcome { .. }) => framed,
            other => panic!("expected welcome, got {other:?}"),
        }
    }

    /// Next hub message within 5 s; `None` when the hub closed the connection.
    pub async fn next(framed: &mut DeviceFramed) -> Option<HubMessage> {
        match tokio::time::timeout(Duration::from_secs(5), framed.next())
            .await
            .expect("a hub message or a close within 5 s")
        {
            None | Some(Err(CodecError::Io(_))) => None,
            Some(Ok(DecodedHubMessage::Known(m))) => Some(m),
            other => panic!("unexpected frame: {other:?}"),
        }
    }

    /// Reads until the hub closes the connection; returns the reject, if any.
    pub async fn closed(framed: &mut DeviceFramed) -> Option<(RejectReason, String)> {
        let mut rejected = None;
        while let Some(m) = next(framed).await {
            if let HubMessage::Reject { reason, detail } = m {
                rejected = Some((reason, detail.to_string()));
            }
        }
        rejected
    }
}

/// A simulated fleet (device-sim) with control sessions, stopped by
/// [`Sim::stop`].
pub struct Sim {
    cancel: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<device_sim::FleetStats>>,
}

impl Sim {
    /// Devices 1..=`devices` of `hub`, sending every `interval_ms` and
    /// saying hello with `token` (device-sim's fleet with `seed`: which
    /// sensors each device declares follows from its id).
    pub fn start(hub: &TestHub, devices: u32, interval_ms: u64, token: &str, seed: u64) -> Sim {
        let fleet = device_sim::build_fleet(&device_sim::FleetSpec {
            devices,
            first_id: 1,
            interval_ms,
            seed,
        });
        let options = device_sim::FleetOptions {
            udp: hub.udp,
            control: Some(device_sim::ControlTarget {
                addr: hub.control,
                token: token.into(),
                key_seed: None,
            }),
            boot_pause_ms: 300,
            faults: device_sim::FaultSpec::NONE,
            device_faults: Vec::new(),
            failover: Vec::new(),
        };
        let cancel = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(device_sim::run_fleet(fleet, options, cancel.clone()));
        Sim { cancel, task }
    }

    /// Stops the fleet and returns its figures.
    pub async fn stop(self) -> device_sim::FleetStats {
        self.cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the simulated fleet stops within 10 s")
            .expect("fleet task")
            .expect("fleet result")
    }
}

/// Logs in to `hub` as the owner with a one-time code; returns the
/// session cookie (`name=value`).
pub async fn owner_cookie(hub: &TestHub) -> String {
    let code =
        sensor_hub::auth::store::CredentialFile::new(hub.auth_dir.path().join("credentials.json"))
            .update(|c| c.add_login_code(u64::MAX))
            .expect("a login code");
    let body = format!(r#"{{"code":"{code}"}}"#);
    let (response, _) = http_request(
        hub.http,
        "POST",
        "/api/login",
        &[("Content-Type", "application/json"), ("Authorization", "")],
        Some(body.as_bytes()),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.text());
    response
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string()
}

// ---------------------------------------------------------------------------
// Processes a test runs (hubs, Redis, Mosquitto)

/// A program's path: where Debian installs it (`debian`, often not on a
/// user's PATH) if it is there, else its `name`, looked for on PATH.
pub fn installed(debian: &'static str, name: &'static str) -> &'static str {
    if Path::new(debian).exists() {
        debian
    } else {
        name
    }
}

/// A free TCP port on 127.0.0.1 (free when asked: a server binds it a
/// moment later, so whoever starts it retries if someone took it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

/// Reads a hub process's standard error in a thread until it closes, so
/// the hub never blocks on a full pipe: every line is added to the log
/// returned, and the "sensor-hub listening" line (its addresses) is also
/// sent on the channel returned. The thread's handle comes last.
pub fn drain_hub_stderr(
    stderr: std::process::ChildStderr,
) -> (
    std::sync::Arc<std::sync::Mutex<String>>,
    std::sync::mpsc::Receiver<String>,
    std::thread::JoinHandle<()>,
) {
    use std::io::BufRead as _;
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, listening) = std::sync::mpsc::channel();
    let drain = {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("sensor-hub listening") {
                    let _ = tx.send(line.clone());
                }
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    (log, listening, drain)
}

/// `key=ADDR` of the "sensor-hub listening" line.
pub fn listening_addr(line: &str, key: &str) -> SocketAddr {
    let start = line
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
        + key.len()
        + 1;
    let rest = &line[start..];
    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
    rest[..end]
        .parse()
        .unwrap_or_else(|e| panic!("{key}= in {line}: {e}"))
}
