//! The cluster side of tests/cluster.rs: a real Redis per test
//! ([`RedisServer`]: Debian's `redis-server` on its own port of 127.0.0.1,
//! a password, an append-only file fsynced at every write in a temporary
//! directory, stopped and started again on the same port and directory so
//! its streams survive, as a production Redis with AOF would), real hub
//! processes in cluster mode sharing it ([`ClusterHub`]: `sensor-hub run`
//! on port-0 binds, killed with SIGKILL or stopped with SIGTERM), a
//! simulated fleet run in the test's runtime whose devices can fail over to
//! other hubs ([`Fleet`], device-sim), and a WebSocket client that
//! subscribes to everything and records every message in order, and can
//! resume on another hub ([`Recorder`]).
//!
//! Needs `mod support;` beside `mod cluster_support;` in the test crate:
//! the hubs' credentials, tokens and WebSocket upgrades come from there.
#![allow(dead_code)] // each test uses a different subset

use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{json, Value as Json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::Message;

use crate::support;

// ---------------------------------------------------------------------------
// Redis

/// The password every test Redis requires.
pub const REDIS_PASSWORD: &str = "cluster-test-redis-password-5e1b9a";

/// What to say when Redis is missing.
const REDIS_INSTALL_HINT: &str = "install Debian's `redis-server` package \
     (`apt-get install redis-server`; scripts/test installs it): \
     tests/cluster.rs runs a real Redis, it is never skipped";

/// How long Redis may take to answer PING after it was started.
const REDIS_START_DEADLINE: Duration = Duration::from_secs(15);

/// Debian's binary (/usr/bin/redis-server), else whatever is on PATH.
fn redis_bin() -> &'static str {
    support::installed("/usr/bin/redis-server", "redis-server")
}

/// A Redis server run by this test: on 127.0.0.1 only, protected mode, a
/// password ([`REDIS_PASSWORD`]), an append-only file fsynced at every
/// write and no RDB snapshots, everything in a temporary directory.
/// Killed, and its directory removed, on drop (its log printed first if
/// the test is failing).
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts Redis on a free port and waits until it answers PING with
    /// the password.
    pub fn start() -> RedisServer {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sensor-hub-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the Redis directory");
        set_mode(&dir, 0o700);
        let mut server = RedisServer {
            port: 0,
            dir,
            child: None,
        };
        let mut failures = Vec::new();
        for _ in 0..5 {
            server.port = support::free_port();
            match server.launch() {
                Ok(()) => return server,
                // Someone took the port between free_port and the bind.
                Err(why) => failures.push(why),
            }
        }
        panic!(
            "Redis did not start in 5 tries:\n{}",
            failures.join("\n---\n")
        );
    }

    /// The URL hubs and clients connect with: `redis://:PASSWORD@127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}/", self.port)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its temporary directory (append-only files, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its process id; panics while it is stopped.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .map(Child::id)
            .expect("pid: Redis is not running")
    }

    /// Whether its process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// What it logged so far (its log file, then anything on stdout or
    /// stderr).
    pub fn log(&self) -> String {
        let mut text = fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default();
        let output = fs::read_to_string(self.dir.join("output.log")).unwrap_or_default();
        if !output.trim().is_empty() {
            text.push_str("\n(stdout/stderr) ");
            text.push_str(&output);
        }
        text
    }

    /// Stops it with SIGTERM and waits for it to exit (SIGKILL after
    /// 10 s). Its append-only file is complete: a [`RedisServer::start_again`]
    /// has every key and stream entry it had.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "Redis on port {} did not exit within 10 s of SIGTERM: killed",
            self.port
        );
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL, then reap it. With `appendfsync always` nothing a client
    /// was told is written is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same directory (after
    /// [`RedisServer::stop`] or [`RedisServer::kill`]): it loads its
    /// append-only file, so the data survives.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again: Redis is running");
        let mut failures = Vec::new();
        for _ in 0..10 {
            match self.launch() {
                Ok(()) => return,
                Err(why) => {
                    failures.push(why);
                    std::thread::sleep(Duration::from_millis(300));
                }
            }
        }
        panic!(
            "Redis did not start again on port {} in 10 tries:\n{}",
            self.port,
            failures.join("\n---\n")
        );
    }

    /// CPU time its process used so far, user plus system, in ms (from
    /// /proc/<pid>/stat), for benchmarks.
    pub fn cpu_ms(&self) -> u64 {
        let pid = self.pid();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_else(|e| panic!("reading /proc/{pid}/stat: {e}"));
        // The command name, field 2, is in parentheses and may hold
        // spaces: the fields counted from 3 follow the last ')'.
        let rest = &stat[stat.rfind(')').expect("/proc/<pid>/stat has (comm)") + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime is field 14 and stime field 15: indices 11 and 12 from field 3.
        let ticks = |i: usize| -> u64 {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .unwrap_or_else(|| panic!("/proc/{pid}/stat: no field {}: {stat}", i + 3))
        };
        (ticks(11) + ticks(12)) * 1_000 / clock_ticks_per_second()
    }

    /// `used_memory` of `INFO memory`, bytes.
    pub fn used_memory(&self) -> u64 {
        let info = value_text(&self.cmd(&["INFO", "memory"]));
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no used_memory in INFO memory:\n{info}"))
    }

    /// Runs one command on a new connection and returns its answer;
    /// panics (with the log) if it fails.
    pub fn cmd(&self, args: &[&str]) -> redis::Value {
        self.try_cmd(args).unwrap_or_else(|e| {
            panic!(
                "Redis on port {}: {args:?} failed: {e}\nits log:\n{}",
                self.port,
                self.log()
            )
        })
    }

    /// Runs one command on a new connection (2 s to connect, 5 s for the
    /// answer).
    pub fn try_cmd(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let (name, rest) = args.split_first().expect("cmd: a command name");
        let client = redis::Client::open(self.url().as_str())?;
        let mut connection = client.get_connection_with_timeout(Duration::from_secs(2))?;
        connection.set_read_timeout(Some(Duration::from_secs(5)))?;
        connection.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut command = redis::cmd(name);
        for arg in rest {
            command.arg(*arg);
        }
        command.query(&mut connection)
    }

    /// The keys starting with `prefix` (SCAN), sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut keys = BTreeSet::new();
        let mut cursor = "0".to_string();
        let pattern = format!("{prefix}*");
        loop {
            let answer = self.cmd(&["SCAN", &cursor, "MATCH", &pattern, "COUNT", "1000"]);
            let redis::Value::Array(parts) = answer else {
                panic!("SCAN answered {answer:?}");
            };
            cursor = value_text(&parts[0]);
            if let Some(redis::Value::Array(found)) = parts.get(1) {
                keys.extend(found.iter().map(value_text));
            }
            if cursor == "0" {
                return keys.into_iter().collect();
            }
        }
    }

    /// Starts `redis-server` on `self.port` and waits until it answers PING
    /// with the password; on failure it is killed and the reason (with its
    /// log) returned.
    fn launch(&mut self) -> Result<(), String> {
        let log = self.dir.join("redis.log");
        let output = fs::File::create(self.dir.join("output.log")).expect("create output.log");
        let output2 = output.try_clone().expect("clone output.log");
        let child = Command::new(redis_bin())
            .arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--protected-mode", "yes"])
            .args(["--requirepass", REDIS_PASSWORD])
            .args(["--appendonly", "yes"])
            .args(["--appendfsync", "always"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(["--daemonize", "no"])
            // Debian's service file sets these; a foreground run does not need them.
            .args(["--supervised", "no"])
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(output2)
            .spawn()
            .unwrap_or_else(|e| {
                if e.kind() == ErrorKind::NotFound {
                    panic!("{} not found: {REDIS_INSTALL_HINT}", redis_bin())
                }
                panic!("starting {}: {e}", redis_bin())
            });
        self.child = Some(child);
        let deadline = Instant::now() + REDIS_START_DEADLINE;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(format!(
                    "redis-server on port {} exited ({status}); its log:\n{}",
                    self.port,
                    self.log()
                ));
            }
            // The password makes sure the answer is ours, not another
            // program's on the same port; LOADING answers while the
            // append-only file is read.
            match self.try_cmd(&["PING"]) {
                Ok(redis::Value::SimpleString(s)) if s == "PONG" => return Ok(()),
                Ok(other) => {
                    self.kill();
                    return Err(format!(
                        "port {}: PING answered {other:?}, not PONG (another server?)",
                        self.port
                    ));
                }
                Err(_) => {}
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "redis-server did not answer PING on port {} within {:?}; its log:\n{}",
                    self.port,
                    REDIS_START_DEADLINE,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "----- Redis log (port {}, last 60 lines) -----\n{}\n----- end of the Redis log -----",
                self.port,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A status, bulk or verbatim string answer as text (an integer as its
/// digits); panics on anything else.
pub fn value_text(value: &redis::Value) -> String {
    match value {
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::VerbatimString { text, .. } => text.clone(),
        redis::Value::Int(i) => i.to_string(),
        redis::Value::Okay => "OK".into(),
        other => panic!("not a string answer: {other:?}"),
    }
}

/// The kernel's clock ticks per second for /proc (USER_HZ): `getconf
/// CLK_TCK`, 100 if that fails (it is 100 on every Linux architecture).
fn clock_ticks_per_second() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&t: &u64| t > 0)
            .unwrap_or(100)
    })
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------
// Hubs in cluster mode

/// The hub binary under test.
const BIN: &str = env!("CARGO_BIN_EXE_sensor-hub");
/// The fleet token every hub accepts (`control.fleet_token`), so a device
/// can open its control session on any of them.
pub const FLEET_TOKEN: &str = "cluster-test-fleet-token-0123456789";
/// How long a hub may take to listen and answer `/healthz`, or to exit.
const HUB_DEADLINE: Duration = Duration::from_secs(30);
/// How long one HTTP request to a hub may take.
const HTTP_DEADLINE: Duration = Duration::from_secs(10);

/// A `sensor-hub run` process in cluster mode: its own temporary directory
/// (history database, credentials file with an operator token, device
/// file), loopback port-0 binds, the shared [`FLEET_TOKEN`], and the
/// `[cluster]` section set through the environment. Killed (SIGKILL) and
/// reaped on drop, its stderr printed then if the test is failing.
pub struct ClusterHub {
    /// Its `cluster.hub_name`.
    pub name: String,
    pub udp: SocketAddr,
    pub control: SocketAddr,
    pub http: SocketAddr,
    /// An operator API token of this hub.
    pub token: String,
    child: Child,
    /// Set once it was reaped.
    exited: Option<ExitStatus>,
    log: Arc<Mutex<String>>,
    drain: Option<JoinHandle<()>>,
    dir: support::TempDir,
}

impl std::fmt::Debug for ClusterHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHub")
            .field("name", &self.name)
            .field("pid", &self.child.id())
            .field("udp", &self.udp)
            .field("control", &self.control)
            .field("http", &self.http)
            .finish_non_exhaustive()
    }
}

impl ClusterHub {
    /// Starts hub `name` in cluster mode on `redis` with key prefix
    /// `prefix`, plus `extra_env` (`SENSOR_HUB__…` variables, which win),
    /// and waits until it listens and `/healthz` answers (any status).
    pub async fn start(
        name: &str,
        redis: &RedisServer,
        prefix: &str,
        extra_env: &[(&str, &str)],
    ) -> ClusterHub {
        let dir = support::TempDir::new(&format!("cluster-hub-{name}"));
        let (credentials, token) =
            support::credentials_with_token(dir.path(), sensor_hub::auth::Role::Operator);
        let path = |file: &str| dir.path().join(file).display().to_string();
        let env: Vec<(String, String)> = [
            ("SENSOR_HUB__UDP__BIND", "127.0.0.1:0".to_string()),
            ("SENSOR_HUB__CONTROL__BIND", "127.0.0.1:0".to_string()),
            ("SENSOR_HUB__HTTP__BIND", "127.0.0.1:0".to_string()),
            ("SENSOR_HUB__STORAGE__PATH", path("history.db")),
            (
                "SENSOR_HUB__AUTH__CREDENTIALS_PATH",
                credentials.display().to_string(),
            ),
            ("SENSOR_HUB__DEVICES__KEYS_PATH", path("devices.json")),
            ("SENSOR_HUB__DEVICES__ACCEPT_UNKNOWN", "true".to_string()),
            ("SENSOR_HUB__CONTROL__FLEET_TOKEN", FLEET_TOKEN.to_string()),
            ("SENSOR_HUB__CLUSTER__ENABLED", "true".to_string()),
            ("SENSOR_HUB__CLUSTER__REDIS_URL", redis.url()),
            ("SENSOR_HUB__CLUSTER__HUB_NAME", name.to_string()),
            ("SENSOR_HUB__CLUSTER__KEY_PREFIX", prefix.to_string()),
            ("RUST_LOG", "info".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut command = Command::new(BIN);
        command
            .arg("run")
            // Relative paths of the defaults land in its own directory.
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Nothing of the caller's environment configures it by accident.
        for (key, _) in std::env::vars() {
            if key.starts_with("SENSOR_HUB__") {
                command.env_remove(key);
            }
        }
        for (key, value) in &env {
            command.env(key, value);
        }
        for (key, value) in extra_env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {BIN}: {e}"));
        let stderr = child.stderr.take().expect("piped stderr");
        let (log, listening, drain) = support::drain_hub_stderr(stderr);
        let mut hub = ClusterHub {
            name: name.to_string(),
            udp: unspecified(),
            control: unspecified(),
            http: unspecified(),
            token,
            child,
            exited: None,
            log,
            drain: Some(drain),
            dir,
        };
        // Its addresses, from the "sensor-hub listening" line.
        let deadline = Instant::now() + HUB_DEADLINE;
        let line = loop {
            match listening.try_recv() {
                Ok(line) => break line,
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    hub.reap_exited(Duration::from_secs(5));
                    panic!(
                        "hub {name} exited before it listened ({:?}); its stderr:\n{}",
                        hub.exited,
                        hub.log()
                    )
                }
            }
            if let Ok(Some(status)) = hub.child.try_wait() {
                hub.exited = Some(status);
                hub.join_drain();
                // The line may have come with its last words.
                if let Ok(line) = listening.try_recv() {
                    break line;
                }
                panic!(
                    "hub {name} exited before it listened ({status}); its stderr:\n{}",
                    hub.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "hub {name}: no \"sensor-hub listening\" line within {HUB_DEADLINE:?}; its stderr:\n{}",
                hub.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        hub.udp = support::listening_addr(&line, "udp");
        hub.control = support::listening_addr(&line, "control");
        hub.http = support::listening_addr(&line, "http");
        support::register_token(hub.http, &hub.token);
        // Serving: /healthz answers, whatever it says.
        loop {
            if try_http(hub.http, "GET", "/healthz", None, None)
                .await
                .is_ok()
            {
                break;
            }
            if let Ok(Some(status)) = hub.child.try_wait() {
                hub.exited = Some(status);
                hub.join_drain();
                panic!(
                    "hub {name} exited before /healthz answered ({status}); its stderr:\n{}",
                    hub.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "hub {name}: /healthz did not answer within {HUB_DEADLINE:?}; its stderr:\n{}",
                hub.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        hub
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether its process is still running.
    pub fn is_running(&mut self) -> bool {
        if self.exited.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exited = Some(status);
                false
            }
            _ => true,
        }
    }

    /// An authenticated WebSocket client (its operator token).
    pub async fn ws(&self) -> support::Client {
        support::ws_connect(self.http, Some(&self.token)).await
    }

    /// `GET path` with its token: status and body. Panics (with its
    /// stderr) if it does not answer within 10 s.
    pub async fn get(&self, path: &str) -> (u16, String) {
        match try_http(self.http, "GET", path, Some(&self.token), None).await {
            Ok(answer) => answer,
            Err(e) => panic!(
                "hub {}: GET {path}: {e}; its stderr:\n{}",
                self.name,
                self.log()
            ),
        }
    }

    /// `GET path`, `Err` instead of a panic if the hub does not answer.
    pub async fn try_get(&self, path: &str) -> Result<(u16, String), String> {
        try_http(self.http, "GET", path, Some(&self.token), None).await
    }

    /// `GET path`, expecting 200 and JSON.
    pub async fn get_json(&self, path: &str) -> Json {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "hub {}: GET {path}: {body}", self.name);
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("hub {}: GET {path}: {e}: {body}", self.name))
    }

    /// `POST path` with a JSON body and its token: status and body.
    pub async fn post_json(&self, path: &str, body: &Json) -> (u16, String) {
        let body = body.to_string();
        match try_http(self.http, "POST", path, Some(&self.token), Some(&body)).await {
            Ok(answer) => answer,
            Err(e) => panic!(
                "hub {}: POST {path}: {e}; its stderr:\n{}",
                self.name,
                self.log()
            ),
        }
    }

    /// `GET /healthz`: its status and JSON body (`Null` if the body is
    /// not JSON); `None` if it does not answer.
    pub async fn healthz(&self) -> Option<(u16, Json)> {
        let (status, body) = self.try_get("/healthz").await.ok()?;
        Some((status, serde_json::from_str(&body).unwrap_or(Json::Null)))
    }

    /// The devices of `GET /api/devices`.
    pub async fn devices(&self) -> Vec<Json> {
        let v = self.get_json("/api/devices").await;
        v["devices"]
            .as_array()
            .unwrap_or_else(|| panic!("hub {}: /api/devices: {v}", self.name))
            .clone()
    }

    /// Value of one sample line of /metrics, e.g.
    /// `sensor_hub_udp_datagrams_accepted_total` (as `TestHub::metric`);
    /// panics if the series is not there.
    pub async fn metric(&self, series: &str) -> u64 {
        let (status, text) = self.get("/metrics").await;
        assert_eq!(status, 200, "hub {}: GET /metrics: {text}", self.name);
        metric_in(&text, series)
            .unwrap_or_else(|| panic!("hub {}: {series} not in /metrics:\n{text}", self.name))
    }

    /// [`ClusterHub::metric`], `None` if the series is not served (or the
    /// hub does not answer).
    pub async fn try_metric(&self, series: &str) -> Option<u64> {
        let (status, text) = self.try_get("/metrics").await.ok()?;
        (status == 200).then(|| metric_in(&text, series)).flatten()
    }

    /// SIGKILL, then reap it.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        let _ = self.child.kill();
        let status = self.child.wait().expect("reap the killed hub");
        self.exited = Some(status);
        self.join_drain();
        status
    }

    /// SIGTERM, waits (10 s at most) for it to exit, and asserts it
    /// exited with 0.
    pub fn stop(&mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(sent.success(), "kill -TERM {}", self.child.id());
        self.reap_exited(Duration::from_secs(10));
        let status = self.exited.unwrap_or_else(|| {
            panic!(
                "hub {}: still running 10 s after SIGTERM; its stderr:\n{}",
                self.name,
                self.log()
            )
        });
        assert!(
            status.success(),
            "hub {}: exited with {status} after SIGTERM; its stderr:\n{}",
            self.name,
            self.log()
        );
    }

    /// Waits up to `within` for the process to exit by itself.
    fn reap_exited(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        while self.exited.is_none() && Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                self.join_drain();
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn join_drain(&mut self) {
        if let Some(drain) = self.drain.take() {
            let _ = drain.join();
        }
    }
}

impl Drop for ClusterHub {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.join_drain();
        if std::thread::panicking() {
            eprintln!(
                "----- stderr of hub {} (pid {}) -----\n{}----- end of its stderr -----",
                self.name,
                self.child.id(),
                self.log()
            );
        }
    }
}

fn unspecified() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 0))
}

/// The value of `series` in a /metrics text (an integer; a float sample
/// is truncated).
pub fn metric_in(text: &str, series: &str) -> Option<u64> {
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))?;
    let value = value.split_whitespace().next()?;
    value
        .parse::<u64>()
        .ok()
        .or_else(|| value.parse::<f64>().ok().map(|f| f as u64))
}

/// One HTTP/1.1 request with `Connection: close` (and `token`, and a JSON
/// body); `Err` if the hub cannot be reached or does not answer within
/// [`HTTP_DEADLINE`].
async fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let mut request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(token) = token {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(body) = body {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(body.unwrap_or_default());
        s.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text
            .split_once("\r\n\r\n")
            .ok_or_else(|| format!("not an HTTP answer: {text:?}"))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("not an HTTP status line: {head:?}"))?;
        Ok((status, body.to_string()))
    };
    tokio::time::timeout(HTTP_DEADLINE, exchange)
        .await
        .map_err(|_| format!("{method} {path}: no answer within {HTTP_DEADLINE:?}"))?
}

// ---------------------------------------------------------------------------
// A simulated fleet

/// A device-sim fleet run in the test's runtime: devices
/// `first_id..first_id + devices`, each with a control session (hello with
/// [`FLEET_TOKEN`]) on one hub, and the hubs to fail over to.
pub struct Fleet {
    pub ids: Vec<u32>,
    cancel: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<device_sim::FleetStats>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("ids", &self.ids)
            .field("running", &!self.task.is_finished())
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// `devices` devices from `first_id`, every `interval_ms`, on `hub`.
    pub fn start(hub: &ClusterHub, first_id: u32, devices: u32, interval_ms: u64) -> Fleet {
        Fleet::start_with_failover(hub, first_id, devices, interval_ms, &[])
    }

    /// [`Fleet::start`], the devices moving to the hubs of `failover` (in
    /// that order) when they lose `hub` (device-sim's
    /// `FleetOptions::failover`).
    pub fn start_with_failover(
        hub: &ClusterHub,
        first_id: u32,
        devices: u32,
        interval_ms: u64,
        failover: &[&ClusterHub],
    ) -> Fleet {
        let fleet = device_sim::build_fleet(&device_sim::FleetSpec {
            devices,
            first_id,
            interval_ms,
            seed: 17,
        });
        let ids = fleet.iter().map(|d| d.id).collect();
        let options = device_sim::FleetOptions {
            udp: hub.udp,
            control: Some(device_sim::ControlTarget {
                addr: hub.control,
                token: FLEET_TOKEN.into(),
                key_seed: None,
            }),
            boot_pause_ms: 300,
            faults: device_sim::FaultSpec::NONE,
            device_faults: Vec::new(),
            failover: failover
                .iter()
                .map(|h| device_sim::HubAddrs {
                    udp: h.udp,
                    control: h.control,
                })
                .collect(),
        };
        let cancel = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(device_sim::run_fleet(fleet, options, cancel.clone()));
        Fleet { ids, cancel, task }
    }

    /// Whether it is still running (it stops only when told, or on an
    /// error).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
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

// ---------------------------------------------------------------------------
// A recording WebSocket client

/// One datagram of a `readings` message: device id and the datagram's
/// sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dg {
    pub device: u32,
    pub seq: u32,
}

/// What a [`Recorder`] saw, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    /// A WebSocket connection to hub `hub` opened.
    Connected {
        hub: String,
    },
    Hello {
        epoch: String,
        seq: u64,
    },
    /// The answer to its `subscribe`.
    Snapshot {
        epoch: String,
        seq: u64,
        devices: Vec<u32>,
    },
    /// `id` is that of its `resume` when it answers one; `None`: sent
    /// unsolicited (the cluster link went down or came back).
    Resync {
        id: Option<Json>,
        epoch: String,
        seq: u64,
        devices: Vec<u32>,
    },
    Ack {
        id: Option<Json>,
        of: String,
        seq: u64,
    },
    /// The stream went on in a new numbering with nothing missed (the
    /// cluster link went down or came back).
    Renumbered {
        epoch: String,
        seq: u64,
    },
    /// One `readings` event: its `seq` and its datagrams in order.
    Readings {
        seq: u64,
        datagrams: Vec<Dg>,
    },
    CommandStatus(Json),
    /// Anything else, as received.
    Other(Json),
    /// The connection ended (`why`: the close frame or error, or the test
    /// disconnected).
    Closed {
        why: String,
    },
}

impl Entry {
    /// The event `seq` of a streamed event (readings, statuses, statistics,
    /// …); `None` for hello, snapshot, resync, ack and the rest.
    pub fn event_seq(&self) -> Option<u64> {
        match self {
            Entry::Readings { seq, .. } => Some(*seq),
            Entry::CommandStatus(v) => v["seq"].as_u64(),
            Entry::Other(v) if v["type"] != "pong" && v["type"] != "error" => v["seq"].as_u64(),
            _ => None,
        }
    }

    /// Whether it marks a change of numbering: `renumbered`, or an
    /// unsolicited `resync`.
    pub fn is_renumbering(&self) -> bool {
        matches!(
            self,
            Entry::Renumbered { .. } | Entry::Resync { id: None, .. }
        )
    }
}

/// One datagram as a recorder saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Index of its `readings` entry in the record.
    pub index: usize,
    /// The event's `seq`.
    pub event_seq: u64,
    pub dg: Dg,
}

/// Every datagram of `entries`, in order.
pub fn datagrams(entries: &[Entry]) -> Vec<Seen> {
    entries
        .iter()
        .enumerate()
        .flat_map(|(index, e)| match e {
            Entry::Readings { seq, datagrams } => datagrams
                .iter()
                .map(|&dg| Seen {
                    index,
                    event_seq: *seq,
                    dg,
                })
                .collect(),
            _ => Vec::new(),
        })
        .collect()
}

/// The last `n` entries, one a line, for failure reports.
pub fn tail(entries: &[Entry], n: usize) -> String {
    let from = entries.len().saturating_sub(n);
    entries[from..]
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let text = match e {
                Entry::Readings { seq, datagrams } => format!(
                    "readings seq {seq}: {}",
                    datagrams
                        .iter()
                        .map(|d| format!("{}#{}", d.device, d.seq))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                other => {
                    let s = format!("{other:?}");
                    s.chars().take(300).collect()
                }
            };
            format!("  [{}] {text}", from + i)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What a recorder's reader task shares with the recorder.
#[derive(Debug, Default)]
struct Shared {
    entries: Vec<Entry>,
    /// The newest epoch (hello, snapshot, resync).
    epoch: Option<String>,
    /// The newest stream position processed: snapshot, resync, ack or
    /// event `seq`.
    last_seq: Option<u64>,
    /// Entries taken out by [`Recorder::take`] so far (indices stay
    /// meaningful across takes).
    taken: usize,
}

/// How a hub answered a `resume`.
#[derive(Debug, Clone, PartialEq)]
pub enum ResumeAnswer {
    Ack { seq: u64 },
    Resync { epoch: String, seq: u64 },
}

/// A WebSocket client that subscribes to everything, live
/// (`{"type":"subscribe","devices":"all","sensors":"all","mode":"live"}`),
/// and records every message in order (see [`Entry`]); it can disconnect
/// and resume on another hub. Its reader task is aborted on drop.
pub struct Recorder {
    pub label: String,
    shared: Arc<Mutex<Shared>>,
    outgoing: Option<tokio::sync::mpsc::UnboundedSender<Message>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("label", &self.label)
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

/// How long a recorder waits for an answer of the hub (hello, snapshot,
/// resume answer).
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

impl Recorder {
    /// Connects to `hub`, reads `hello`, subscribes to everything, live,
    /// and returns once the `snapshot` has arrived; records from then on.
    pub async fn start(hub: &ClusterHub) -> Recorder {
        let mut recorder = Recorder {
            label: format!("recorder on {}", hub.name),
            shared: Arc::default(),
            outgoing: None,
            task: None,
        };
        recorder.connect(hub).await;
        recorder
            .wait_for("hello", ANSWER_DEADLINE, |e| {
                e.iter().any(|e| matches!(e, Entry::Hello { .. }))
            })
            .await;
        recorder.send(json!({
            "type": "subscribe",
            "id": "record",
            "devices": "all",
            "sensors": "all",
            "mode": "live",
        }));
        recorder
            .wait_for("the snapshot answering subscribe", ANSWER_DEADLINE, |e| {
                e.iter().any(|e| matches!(e, Entry::Snapshot { .. }))
            })
            .await;
        recorder
    }

    /// Opens a connection to `hub` and starts its reader task.
    async fn connect(&mut self, hub: &ClusterHub) {
        assert!(self.task.is_none(), "{}: already connected", self.label);
        let mut ws = tokio::time::timeout(ANSWER_DEADLINE, hub.ws())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: no WebSocket connection to hub {} within {ANSWER_DEADLINE:?}",
                    self.label, hub.name
                )
            });
        self.push(Entry::Connected {
            hub: hub.name.clone(),
        });
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Message>();
        let shared = self.shared.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    out = rx.recv() => match out {
                        Some(message) => {
                            if let Err(e) = ws.send(message).await {
                                push(&shared, Entry::Closed { why: format!("send failed: {e}") });
                                return;
                            }
                        }
                        None => {
                            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
                            push(&shared, Entry::Closed { why: "disconnected by the test".into() });
                            return;
                        }
                    },
                    incoming = ws.next() => match incoming {
                        Some(Ok(Message::Text(text))) => record(&shared, &text),
                        Some(Ok(Message::Close(frame))) => {
                            push(&shared, Entry::Closed { why: format!("closed by the hub: {frame:?}") });
                            return;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            push(&shared, Entry::Closed { why: format!("socket error: {e}") });
                            return;
                        }
                        None => {
                            push(&shared, Entry::Closed { why: "stream ended".into() });
                            return;
                        }
                    },
                }
            }
        });
        self.outgoing = Some(tx);
        self.task = Some(task);
    }

    /// Sends one message (a JSON object) on the current connection.
    pub fn send(&self, message: Json) {
        let sent = self
            .outgoing
            .as_ref()
            .map(|tx| tx.send(Message::text(message.to_string())));
        assert!(
            matches!(sent, Some(Ok(()))),
            "{}: not connected, cannot send {message}",
            self.label
        );
    }

    /// Closes the connection (a close frame) and ends its reader task;
    /// returns the position to resume from: the newest epoch and the
    /// newest `seq` processed.
    pub async fn disconnect(&mut self) -> (String, u64) {
        self.outgoing = None;
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
                self.push(Entry::Closed {
                    why: "reader task aborted".into(),
                });
            }
        }
        self.position()
    }

    /// The newest epoch and `seq` processed (what a `resume` sends).
    pub fn position(&self) -> (String, u64) {
        let shared = self.lock();
        (
            shared
                .epoch
                .clone()
                .unwrap_or_else(|| panic!("{}: no epoch seen yet", self.label)),
            shared
                .last_seq
                .unwrap_or_else(|| panic!("{}: no seq seen yet", self.label)),
        )
    }

    /// Connects to `hub` (after [`Recorder::disconnect`]), reads its
    /// `hello` and sends `{"type":"resume","epoch":…,"last_seq":…,"devices":"all"}`
    /// from [`Recorder::position`]; returns the answer, `ack` or `resync`
    /// (recorded too), and goes on recording.
    pub async fn resume(&mut self, hub: &ClusterHub) -> ResumeAnswer {
        let (epoch, last_seq) = self.position();
        let from = self.len();
        self.connect(hub).await;
        self.label = format!("{} (resumed on {})", self.label, hub.name);
        self.wait_for("hello", ANSWER_DEADLINE, |e| {
            e[from..].iter().any(|e| matches!(e, Entry::Hello { .. }))
        })
        .await;
        self.send(json!({
            "type": "resume",
            "id": "resume",
            "epoch": epoch,
            "last_seq": last_seq,
            "devices": "all",
            "sensors": "all",
            "mode": "live",
        }));
        let resume_id = json!("resume");
        let answer = self
            .wait_for("the answer to resume", ANSWER_DEADLINE, |e| {
                e[from..].iter().any(|e| match e {
                    Entry::Ack { id, .. } | Entry::Resync { id, .. } => {
                        id.as_ref() == Some(&resume_id)
                    }
                    Entry::Other(v) => v["type"] == "error",
                    _ => false,
                })
            })
            .await;
        let found = answer[from..].iter().find_map(|e| match e {
            Entry::Ack { id, seq, .. } if id.as_ref() == Some(&resume_id) => {
                Some(ResumeAnswer::Ack { seq: *seq })
            }
            Entry::Resync { id, epoch, seq, .. } if id.as_ref() == Some(&resume_id) => {
                Some(ResumeAnswer::Resync {
                    epoch: epoch.clone(),
                    seq: *seq,
                })
            }
            Entry::Other(v) if v["type"] == "error" => {
                panic!("{}: resume answered with an error: {v}", self.label)
            }
            _ => None,
        });
        found.expect("an answer")
    }

    /// A copy of the record so far (from the last [`Recorder::take`]).
    pub fn entries(&self) -> Vec<Entry> {
        self.lock().entries.clone()
    }

    /// Takes the record so far out, leaving it empty (the position to
    /// resume from is kept).
    pub fn take(&self) -> Vec<Entry> {
        let mut shared = self.lock();
        let taken = std::mem::take(&mut shared.entries);
        shared.taken += taken.len();
        taken
    }

    /// How many entries the record holds.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every datagram recorded, in order.
    pub fn datagrams(&self) -> Vec<Seen> {
        datagrams(&self.lock().entries)
    }

    /// How many datagrams were recorded.
    pub fn datagram_count(&self) -> usize {
        self.lock()
            .entries
            .iter()
            .map(|e| match e {
                Entry::Readings { datagrams, .. } => datagrams.len(),
                _ => 0,
            })
            .sum()
    }

    /// The epoch of the first `hello` recorded.
    pub fn hello_epoch(&self) -> Option<String> {
        self.lock().entries.iter().find_map(|e| match e {
            Entry::Hello { epoch, .. } => Some(epoch.clone()),
            _ => None,
        })
    }

    /// The epoch of the first `snapshot` recorded.
    pub fn snapshot_epoch(&self) -> Option<String> {
        self.lock().entries.iter().find_map(|e| match e {
            Entry::Snapshot { epoch, .. } => Some(epoch.clone()),
            _ => None,
        })
    }

    /// Polls the record every 20 ms until `check` holds, for up to
    /// `within`; returns the record then. Panics with its tail otherwise.
    pub async fn wait_for(
        &self,
        what: &str,
        within: Duration,
        check: impl Fn(&[Entry]) -> bool,
    ) -> Vec<Entry> {
        let deadline = Instant::now() + within;
        loop {
            let entries = self.entries();
            if check(&entries) {
                return entries;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: within {within:?}, not: {what}\n{} entries, the last 40:\n{}",
                    self.label,
                    entries.len(),
                    tail(&entries, 40)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its last `n` entries, for failure reports.
    pub fn report(&self, n: usize) -> String {
        let entries = self.entries();
        format!(
            "{}: {} entries, the last {n}:\n{}",
            self.label,
            entries.len(),
            tail(&entries, n)
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, entry: Entry) {
        push(&self.shared, entry);
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn push(shared: &Mutex<Shared>, entry: Entry) {
    shared
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entries
        .push(entry);
}

/// Device ids of a snapshot's or resync's `devices`.
fn device_ids(v: &Json) -> Vec<u32> {
    v["devices"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["id"].as_u64())
                .map(|id| id as u32)
                .collect()
        })
        .unwrap_or_default()
}

/// Records one text message.
fn record(shared: &Mutex<Shared>, text: &str) {
    let v: Json = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            push(
                shared,
                Entry::Other(json!({"type": "not JSON", "error": e.to_string(), "text": text})),
            );
            return;
        }
    };
    let seq = v["seq"].as_u64();
    let epoch = v["epoch"].as_str().map(String::from);
    let id = v.get("id").cloned();
    let entry = match v["type"].as_str().unwrap_or_default() {
        "hello" => Entry::Hello {
            epoch: epoch.clone().unwrap_or_default(),
            seq: seq.unwrap_or_default(),
        },
        "snapshot" => Entry::Snapshot {
            epoch: epoch.clone().unwrap_or_default(),
            seq: seq.unwrap_or_default(),
            devices: device_ids(&v),
        },
        "resync" => Entry::Resync {
            id,
            epoch: epoch.clone().unwrap_or_default(),
            seq: seq.unwrap_or_default(),
            devices: device_ids(&v),
        },
        "renumbered" => Entry::Renumbered {
            epoch: epoch.clone().unwrap_or_default(),
            seq: seq.unwrap_or_default(),
        },
        "ack" => Entry::Ack {
            id,
            of: v["of"].as_str().unwrap_or_default().to_string(),
            seq: seq.unwrap_or_default(),
        },
        "readings" => Entry::Readings {
            seq: seq.unwrap_or_default(),
            datagrams: v["datagrams"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|d| Dg {
                            device: d["device"].as_u64().unwrap_or(u64::MAX) as u32,
                            seq: d["seq"].as_u64().unwrap_or(u64::MAX) as u32,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        },
        "command_status" => Entry::CommandStatus(v.clone()),
        _ => Entry::Other(v.clone()),
    };
    let mut shared = shared.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(epoch) = epoch {
        shared.epoch = Some(epoch);
    }
    let position = match &entry {
        // A hello's seq is the hub's, not a position of this client.
        Entry::Hello { .. } => None,
        Entry::Snapshot { seq, .. } | Entry::Resync { seq, .. } | Entry::Renumbered { seq, .. } => {
            Some(*seq)
        }
        Entry::Ack { seq, of, .. } if of == "resume" => Some(*seq),
        other => other.event_seq(),
    };
    if let Some(seq) = position {
        shared.last_seq = Some(seq);
    }
    shared.entries.push(entry);
}
