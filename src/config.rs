//! Hub configuration: the typed settings, and loading them in layers
//! (built-in `config/default.toml` < `--config FILE` < `SENSOR_HUB__…`
//! environment variables) with errors that name the key at fault.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use config::{Environment, File, FileFormat};
use serde::Deserialize;

/// The documented defaults; also the first configuration layer.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Shortest device token (`control.fleet_token`, `control.tokens`) the hub
/// accepts, bytes: 16 random characters resist online guessing for good.
pub const MIN_DEVICE_TOKEN_BYTES: usize = 16;

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "SENSOR_HUB";

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named with `--config` could not be read or parsed.
    #[error("cannot read configuration file {path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A key is unknown or its value has the wrong type or syntax.
    #[error("{0} (see config/default.toml for every key and its default)")]
    Invalid(String),
    /// A value is well-formed but outside what the hub accepts.
    #[error("bad value for `{key}`: {expected}")]
    OutOfRange {
        /// Dotted key, e.g. `udp.batch_max`.
        key: &'static str,
        /// What would be accepted.
        expected: &'static str,
    },
}

/// Everything the hub can be told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// UDP data plane.
    pub udp: UdpConfig,
    /// TCP control plane.
    pub control: ControlConfig,
    /// HTTP and WebSocket.
    pub http: HttpConfig,
    /// WebSocket fan-out limits.
    pub ws: WsConfig,
    /// Bounds on tracked state.
    pub limits: LimitsConfig,
    /// Liveness thresholds.
    pub liveness: LivenessConfig,
    /// Command lifecycle bounds.
    pub commands: CommandsConfig,
    /// Rolling statistics.
    pub aggregation: AggregationConfig,
    /// `/metrics` options.
    pub metrics: MetricsConfig,
    /// Graceful shutdown.
    pub shutdown: ShutdownConfig,
    /// Reading history on disk.
    pub storage: StorageConfig,
    /// Who may use the dashboard, the API and `/ws`.
    pub auth: AuthConfig,
    /// Which devices may feed the hub: adoption, keys, discovery, budget.
    pub devices: DevicesConfig,
    /// The MQTT bridge (Home Assistant); docs/MQTT.md.
    pub mqtt: MqttConfig,
    /// Several hubs sharing one fleet through Redis; docs/CLUSTER.md.
    pub cluster: ClusterConfig,
}

/// `[cluster]`: every key is described in docs/CLUSTER.md.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Share the fleet with the other hubs on `redis_url`.
    pub enabled: bool,
    /// `redis://[:password@]host:port/[db]` (`rediss://` for TLS); never
    /// printed, since it may hold the password.
    pub redis_url: String,
    /// A file whose first line is the Redis URL (it holds the password);
    /// used when `redis_url` is empty.
    pub redis_url_file: PathBuf,
    /// This hub's name in the cluster, unique among the hubs; empty: the
    /// machine's host name.
    pub hub_name: String,
    /// First part of every Redis key, so several clusters can share one
    /// Redis.
    pub key_prefix: String,
    /// Entries the shared stream keeps (trimmed approximately, oldest
    /// first): how far back a hub that was cut off can catch up.
    pub stream_max_len: u64,
    /// Events waiting to be shared are written at least this often, ms.
    pub flush_interval_ms: u64,
    /// Redis unanswered (or events unshared) this long, ms: the hub goes
    /// on alone, and reports the link down.
    pub link_timeout_ms: u64,
    /// A hub's hold on its devices (and on its name) lasts this long
    /// unless renewed, ms; renewed every third of it.
    pub lease_ttl_ms: u64,
    /// Events kept to be shared late while the link is down (estimated
    /// bytes as JSON); beyond it the oldest are dropped and counted.
    pub outage_bytes: usize,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry the Redis password: never printed.
        f.debug_struct("ClusterConfig")
            .field("enabled", &self.enabled)
            .field(
                "redis_url",
                &if self.redis_url.is_empty() {
                    ""
                } else {
                    "<set>"
                },
            )
            .field("redis_url_file", &self.redis_url_file)
            .field("hub_name", &self.hub_name)
            .field("key_prefix", &self.key_prefix)
            .field("stream_max_len", &self.stream_max_len)
            .field("link_timeout_ms", &self.link_timeout_ms)
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let name_safe = |s: &str| {
            s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        };
        let checks: [(bool, &'static str, &'static str); 7] = [
            (
                name_safe(&self.hub_name),
                "cluster.hub_name",
                "up to 64 characters from A-Z, a-z, 0-9, _, - and . (empty: the host name)",
            ),
            (
                !self.key_prefix.is_empty() && name_safe(&self.key_prefix),
                "cluster.key_prefix",
                "1 to 64 characters from A-Z, a-z, 0-9, _, - and .",
            ),
            (
                (1_000..=100_000_000).contains(&self.stream_max_len),
                "cluster.stream_max_len",
                "between 1000 and 100000000 entries",
            ),
            (
                (1..=1_000).contains(&self.flush_interval_ms),
                "cluster.flush_interval_ms",
                "between 1 and 1000 ms",
            ),
            (
                (200..=60_000).contains(&self.link_timeout_ms),
                "cluster.link_timeout_ms",
                "between 200 and 60000 ms",
            ),
            (
                (3_000..=600_000).contains(&self.lease_ttl_ms),
                "cluster.lease_ttl_ms",
                "between 3000 and 600000 ms",
            ),
            (
                (65_536..=1 << 30).contains(&self.outage_bytes),
                "cluster.outage_bytes",
                "between 65536 and 1073741824 bytes",
            ),
        ];
        for (ok, key, expected) in checks {
            if !ok {
                return Err(ConfigError::OutOfRange { key, expected });
            }
        }
        if self.enabled && self.redis_url.is_empty() && self.redis_url_file.as_os_str().is_empty() {
            return Err(ConfigError::OutOfRange {
                key: "cluster.redis_url",
                expected: "a redis:// URL (or cluster.redis_url_file) when cluster.enabled is true",
            });
        }
        if !self.redis_url.is_empty() && !self.redis_url_file.as_os_str().is_empty() {
            return Err(ConfigError::OutOfRange {
                key: "cluster.redis_url",
                expected: "empty when cluster.redis_url_file is set (give the URL one way)",
            });
        }
        Ok(())
    }
}

/// `[mqtt]`: every key is described in docs/MQTT.md.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Run the bridge.
    pub enabled: bool,
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// MQTT client id; empty: `sensor-hub-<node_id>`.
    pub client_id: String,
    /// Empty: no credentials.
    pub username: String,
    /// A file whose first line is the password.
    pub password_file: PathBuf,
    /// The password itself (for the environment); never printed.
    pub password: String,
    /// Connect with TLS.
    pub tls: bool,
    /// PEM CA file for the broker's certificate; empty: system roots.
    pub ca_file: PathBuf,
    /// MQTT keep-alive, seconds.
    pub keep_alive_s: u64,
    /// `[A-Za-z0-9_-]{1,64}`: part of every topic and unique_id.
    pub node_id: String,
    /// First level of the hub's own topics.
    pub base_topic: String,
    /// Publish Home Assistant discovery.
    pub discovery: bool,
    /// Home Assistant's discovery prefix.
    pub discovery_prefix: String,
    /// QoS of states, availability and command results.
    pub qos_state: u8,
    /// QoS of discovery configs and the hub's status.
    pub qos_discovery: u8,
    /// Retain states.
    pub retain_state: bool,
    /// A device's state is published at most this often, ms.
    pub min_interval_ms: u64,
    /// A late device is reported offline.
    pub late_is_offline: bool,
    /// Accept commands from MQTT (operator role).
    pub commands: bool,
    /// How often the hub's own figures are published, ms.
    pub hub_interval_ms: u64,
    /// Command results waiting for the broker.
    pub max_results: usize,
}

impl std::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Everything but the password, which is never printed.
        f.debug_struct("MqttConfig")
            .field("enabled", &self.enabled)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field(
                "password",
                &if self.password.is_empty() {
                    ""
                } else {
                    "<set>"
                },
            )
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .field("node_id", &self.node_id)
            .field("base_topic", &self.base_topic)
            .field("discovery_prefix", &self.discovery_prefix)
            .field("commands", &self.commands)
            .finish_non_exhaustive()
    }
}

impl MqttConfig {
    /// The MQTT client id the bridge connects with.
    pub fn effective_client_id(&self) -> String {
        if self.client_id.is_empty() {
            format!("sensor-hub-{}", self.node_id)
        } else {
            self.client_id.clone()
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let topic_safe = |s: &str| {
            !s.is_empty()
                && !s.contains(['+', '#', '\0'])
                && !s.starts_with('/')
                && !s.ends_with('/')
        };
        let checks: [(bool, &'static str, &'static str); 10] = [
            (
                !self.node_id.is_empty()
                    && self.node_id.len() <= 64
                    && self
                        .node_id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "mqtt.node_id",
                "1 to 64 characters from A-Z, a-z, 0-9, _ and - (Home Assistant's rule for ids)",
            ),
            (
                topic_safe(&self.base_topic),
                "mqtt.base_topic",
                "a topic without +, # or a leading/trailing /, e.g. \"sensor-hub\"",
            ),
            (
                topic_safe(&self.discovery_prefix),
                "mqtt.discovery_prefix",
                "a topic without +, # or a leading/trailing /, e.g. \"homeassistant\"",
            ),
            (
                !self.host.is_empty(),
                "mqtt.host",
                "the broker's host name or address",
            ),
            (
                self.port != 0,
                "mqtt.port",
                "a port from 1 to 65535, usually 1883 (8883 with TLS)",
            ),
            (self.qos_state <= 2, "mqtt.qos_state", "0, 1 or 2"),
            (self.qos_discovery <= 2, "mqtt.qos_discovery", "0, 1 or 2"),
            (
                (5..=65_535).contains(&self.keep_alive_s),
                "mqtt.keep_alive_s",
                "between 5 and 65535 seconds",
            ),
            (
                self.hub_interval_ms >= 100,
                "mqtt.hub_interval_ms",
                "at least 100 ms",
            ),
            (
                (1..=100_000).contains(&self.max_results),
                "mqtt.max_results",
                "between 1 and 100000",
            ),
        ];
        for (ok, key, expected) in checks {
            if !ok {
                return Err(ConfigError::OutOfRange { key, expected });
            }
        }
        if !self.password.is_empty() && !self.password_file.as_os_str().is_empty() {
            return Err(ConfigError::OutOfRange {
                key: "mqtt.password",
                expected: "empty when mqtt.password_file is set (give the password one way)",
            });
        }
        Ok(())
    }
}

/// `[devices]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicesConfig {
    /// The device file: adopted devices and their keys (mode 0600).
    pub keys_path: PathBuf,
    /// Whether datagrams from unknown ids create discovered entries
    /// (false: they are dropped as `unknown_device`).
    pub accept_unknown: bool,
    /// Most discovered devices at once.
    pub max_discovered: usize,
    /// A discovered device silent this long is dropped, ms.
    pub discovered_ttl_ms: u64,
    /// Readings per second each device may send (two seconds' worth at
    /// once); more are dropped as `over_budget`.
    pub max_readings_per_s: u32,
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The credentials file (owner password hash, API token digests,
    /// one-time login codes); created on first start, mode 0600.
    pub credentials_path: PathBuf,
    /// A browser session lasts this long after login, ms.
    pub session_ttl_ms: u64,
    /// Most sessions at once; a new login past it ends the oldest.
    pub max_sessions: usize,
    /// A one-time login link works this long, ms.
    pub login_link_ttl_ms: u64,
    /// First wait imposed on an address after a failed login or token, ms.
    pub failure_delay_ms: u64,
    /// The wait doubles with each further failure up to this, ms.
    pub max_failure_delay_ms: u64,
    /// Failed logins logged per minute (the rest are counted, and summed
    /// up in one line).
    pub failure_log_per_minute: u32,
}

/// `[udp]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UdpConfig {
    /// Listen address for datagrams.
    pub bind: SocketAddr,
    /// Requested SO_RCVBUF in bytes.
    pub recv_buffer_bytes: usize,
    /// Most datagrams per receive cycle.
    pub batch_max: usize,
    /// UDP sockets bound to `bind` with SO_REUSEPORT, each read by its own
    /// ingest task (1 to [`MAX_RECEIVE_SOCKETS`]; more than 1 on Linux
    /// only). The kernel spreads senders across them by flow hash, so one
    /// device always lands on the same socket and its order is kept.
    pub receive_sockets: usize,
}

/// Most UDP receive sockets (`udp.receive_sockets`).
pub const MAX_RECEIVE_SOCKETS: usize = 64;

/// `[control]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// Listen address of the TCP control channel.
    pub bind: SocketAddr,
    /// Token any device may use ("" for none).
    pub fleet_token: String,
    /// Largest frame body, bytes.
    pub max_frame_bytes: usize,
    /// Deadline for preamble and hello, ms.
    pub handshake_timeout_ms: u64,
    /// Heartbeat period asked of devices, ms.
    pub heartbeat_interval_ms: u64,
    /// Session closed after this long without a frame, ms.
    pub idle_timeout_ms: u64,
    /// Most concurrent control connections.
    pub max_connections: usize,
    /// Per-device tokens, keyed by device id.
    pub tokens: HashMap<String, String>,
    /// Connections that have not yet said a valid hello, at most; a new one
    /// ends the oldest.
    pub max_handshaking: usize,
    /// First wait imposed on an address after a hello with a bad token, ms.
    pub failure_delay_ms: u64,
    /// The wait doubles with each further failure up to this, ms.
    pub max_failure_delay_ms: u64,
    /// Failed hellos logged per minute (the rest are counted).
    pub failure_log_per_minute: u32,
    /// A session younger than this is not replaced by a new hello of the
    /// same device (it gets `Reject { TooSoon }`), ms.
    pub min_replace_interval_ms: u64,
}

/// `[liveness]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LivenessConfig {
    /// Cadence assumed before a device declares one, ms.
    pub default_interval_ms: u64,
    /// Missed intervals before `late`.
    pub late_after_intervals: u32,
    /// Missed intervals before `offline`.
    pub offline_after_intervals: u32,
    /// Longest wait between two evaluations of liveness and command
    /// timeouts, ms (they run at the next deadline, or sooner).
    pub tick_ms: u64,
}

/// `[aggregation]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregationConfig {
    /// Rolling window lengths, seconds.
    pub windows_s: Vec<u64>,
    /// Slices per window.
    pub buckets_per_window: usize,
}

/// `[metrics]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Per-device series are exported while at most this many devices are tracked.
    pub per_device_max: usize,
    /// `/metrics` answers without a token (for a scraper on a trusted
    /// network); otherwise it takes a viewer token like the API.
    pub open: bool,
}

/// `[commands]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandsConfig {
    /// Time from submission to result before `timed_out`, ms.
    pub ttl_ms: u64,
    /// Waiting commands per device.
    pub queue_per_device: usize,
    /// Unanswered commands per device.
    pub max_in_flight: usize,
    /// Finished commands kept.
    pub retain_finished: usize,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Listen address of the dashboard, API and WebSocket.
    pub bind: SocketAddr,
    /// Host names (besides loopback names, IP addresses and this machine's
    /// own name) the hub answers to, e.g. `["pi.local"]`.
    pub allowed_hosts: Vec<String>,
    /// Origins (besides the hub's own) whose pages may open `/ws` and send
    /// requests with a session, e.g. `["https://grafana.example:3000"]`.
    pub allowed_origins: Vec<String>,
    /// A connection that has not sent a whole request head this long after
    /// it opened (or after the first byte of a later request) is closed, ms;
    /// the TLS handshake counts against it, and a request's body must
    /// follow its head within as long again.
    pub header_read_timeout_ms: u64,
    /// A keep-alive connection with no request in flight is closed after
    /// this long, ms.
    pub idle_timeout_ms: u64,
    /// Most HTTP connections open at once, upgraded WebSockets included.
    pub max_connections: usize,
    /// History queries one address may have running at once.
    pub history_queries_per_address: usize,
    /// PEM certificate chain for HTTPS ("" for plain HTTP).
    pub tls_cert_path: PathBuf,
    /// PEM private key for HTTPS ("" for plain HTTP).
    pub tls_key_path: PathBuf,
}

impl HttpConfig {
    /// The certificate and key paths when TLS is on (both set).
    pub fn tls_paths(&self) -> Option<(&Path, &Path)> {
        let set = |p: &PathBuf| !p.as_os_str().is_empty();
        (set(&self.tls_cert_path) && set(&self.tls_key_path))
            .then_some((self.tls_cert_path.as_path(), self.tls_key_path.as_path()))
    }
}

/// `[ws]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsConfig {
    /// Most concurrent WebSocket clients.
    pub max_clients: usize,
    /// Most concurrent WebSocket clients from one address (an IPv6 client
    /// counts by its /64 network).
    pub max_clients_per_address: usize,
    /// Largest accepted client message, bytes.
    pub max_client_message_bytes: usize,
    /// Replay buffer bound, bytes (estimated JSON size).
    pub replay_bytes: usize,
    /// Bytes a client may have waiting.
    pub client_budget_bytes: usize,
    /// Time over budget before eviction, ms.
    pub slow_grace_ms: u64,
    /// Ping period, ms.
    pub ping_interval_ms: u64,
    /// Extra time allowed for the pong, ms.
    pub pong_timeout_ms: u64,
    /// Average client messages per second.
    pub client_messages_per_s: u32,
    /// Client message burst.
    pub client_message_burst: u32,
    /// Period of `device_stats`, ms.
    pub stats_interval_ms: u64,
    /// Shortest aggregate interval, ms.
    pub min_aggregate_interval_ms: u64,
    /// Bytes all clients together may have waiting; over it no client
    /// takes new events and the clients furthest behind are closed first.
    pub total_budget_bytes: usize,
    /// Latency budget of coalesced fan-out, ms (0 = off): a live client
    /// takes new events at most once per this long, so readings that
    /// arrive meanwhile leave together as one message.
    pub coalesce_ms: u64,
    /// Coalescing applies only while at least this many clients are
    /// connected (with fewer, a message per event costs little).
    pub coalesce_from_clients: usize,
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most devices tracked at once.
    pub max_devices: usize,
}

/// `[shutdown]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// Drain deadline after a shutdown signal, milliseconds.
    pub drain_timeout_ms: u64,
}

/// `[storage]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Keep history in a database (false: memory only, no history).
    pub enabled: bool,
    /// The SQLite database file; created on first start.
    pub path: PathBuf,
    /// Readings are written in one transaction this often, ms.
    pub flush_interval_ms: u64,
    /// Readings waiting to be written; more are dropped (counted).
    pub queue_readings: usize,
    /// Raw readings are kept this long, hours.
    pub raw_retention_hours: u64,
    /// 1-minute aggregates are kept this long, days.
    pub minute_retention_days: u64,
    /// 1-hour aggregates are kept this long, days.
    pub hour_retention_days: u64,
}

impl HubConfig {
    /// Built-in defaults only.
    pub fn defaults() -> Result<HubConfig, ConfigError> {
        HubConfig::load(None, Some(HashMap::new()))
    }

    /// Loads defaults, then `file` if given, then environment overrides.
    /// `env` replaces the process environment when given (for tests).
    pub fn load(
        file: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> Result<HubConfig, ConfigError> {
        let text = match file {
            // Read it ourselves so a missing file or a syntax error names the file.
            Some(path) => Some((
                path.display().to_string(),
                std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?,
            )),
            None => None,
        };
        HubConfig::load_text(text.as_ref().map(|(p, t)| (p.as_str(), t.as_str())), env)
    }

    /// Like [`HubConfig::load`], with the file's `(name, text)` already
    /// read: the one entry point for configuration text (the fuzz target
    /// `config` calls it with any text).
    pub fn load_text(
        file: Option<(&str, &str)>,
        env: Option<HashMap<String, String>>,
    ) -> Result<HubConfig, ConfigError> {
        let mut builder =
            config::Config::builder().add_source(File::from_str(DEFAULT_TOML, FileFormat::Toml));
        if let Some((path, text)) = file {
            toml_syntax_check(text).map_err(|message| ConfigError::File {
                path: path.to_string(),
                message,
            })?;
            builder = builder.add_source(File::from_str(text, FileFormat::Toml));
        }
        builder = builder.add_source(
            Environment::with_prefix(ENV_PREFIX)
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(env),
        );
        let layered = builder
            .build()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let config: HubConfig = layered
            .try_deserialize()
            .map_err(|e| ConfigError::Invalid(explain(e.to_string())))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges the types alone cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive: [(&'static str, usize); 29] = [
            (
                "http.header_read_timeout_ms",
                self.http.header_read_timeout_ms as usize,
            ),
            ("http.idle_timeout_ms", self.http.idle_timeout_ms as usize),
            ("http.max_connections", self.http.max_connections),
            (
                "http.history_queries_per_address",
                self.http.history_queries_per_address,
            ),
            (
                "ws.max_clients_per_address",
                self.ws.max_clients_per_address,
            ),
            (
                "storage.flush_interval_ms",
                self.storage.flush_interval_ms as usize,
            ),
            ("storage.queue_readings", self.storage.queue_readings),
            (
                "storage.raw_retention_hours",
                self.storage.raw_retention_hours as usize,
            ),
            (
                "storage.minute_retention_days",
                self.storage.minute_retention_days as usize,
            ),
            ("ws.client_budget_bytes", self.ws.client_budget_bytes),
            ("ws.ping_interval_ms", self.ws.ping_interval_ms as usize),
            (
                "ws.client_messages_per_s",
                self.ws.client_messages_per_s as usize,
            ),
            (
                "ws.client_message_burst",
                self.ws.client_message_burst as usize,
            ),
            ("ws.stats_interval_ms", self.ws.stats_interval_ms as usize),
            (
                "ws.min_aggregate_interval_ms",
                self.ws.min_aggregate_interval_ms as usize,
            ),
            ("control.max_connections", self.control.max_connections),
            (
                "control.handshake_timeout_ms",
                self.control.handshake_timeout_ms as usize,
            ),
            (
                "control.heartbeat_interval_ms",
                self.control.heartbeat_interval_ms as usize,
            ),
            (
                "liveness.default_interval_ms",
                self.liveness.default_interval_ms as usize,
            ),
            (
                "liveness.late_after_intervals",
                self.liveness.late_after_intervals as usize,
            ),
            ("liveness.tick_ms", self.liveness.tick_ms as usize),
            ("commands.ttl_ms", self.commands.ttl_ms as usize),
            ("commands.queue_per_device", self.commands.queue_per_device),
            ("commands.max_in_flight", self.commands.max_in_flight),
            ("udp.recv_buffer_bytes", self.udp.recv_buffer_bytes),
            ("udp.batch_max", self.udp.batch_max),
            ("ws.max_clients", self.ws.max_clients),
            ("ws.replay_bytes", self.ws.replay_bytes),
            ("limits.max_devices", self.limits.max_devices),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(ConfigError::OutOfRange {
                    key,
                    expected: "a whole number of at least 1",
                });
            }
        }
        if !(64..=65_535).contains(&self.control.max_frame_bytes) {
            return Err(ConfigError::OutOfRange {
                key: "control.max_frame_bytes",
                expected: "between 64 and 65535 bytes",
            });
        }
        if self.control.idle_timeout_ms <= self.control.heartbeat_interval_ms {
            return Err(ConfigError::OutOfRange {
                key: "control.idle_timeout_ms",
                expected: "longer than control.heartbeat_interval_ms (e.g. three times it)",
            });
        }
        if self.control.heartbeat_interval_ms > u64::from(u32::MAX) {
            return Err(ConfigError::OutOfRange {
                key: "control.heartbeat_interval_ms",
                expected: "at most 4294967295",
            });
        }
        if self.liveness.offline_after_intervals <= self.liveness.late_after_intervals {
            return Err(ConfigError::OutOfRange {
                key: "liveness.offline_after_intervals",
                expected: "more than liveness.late_after_intervals",
            });
        }
        if self.devices.max_readings_per_s < 32 {
            return Err(ConfigError::OutOfRange {
                key: "devices.max_readings_per_s",
                expected: "at least 32 (a datagram may carry 64 readings; the budget holds two seconds' worth)",
            });
        }
        if self.devices.discovered_ttl_ms == 0 {
            return Err(ConfigError::OutOfRange {
                key: "devices.discovered_ttl_ms",
                expected: "a whole number of at least 1",
            });
        }
        let fleet = &self.control.fleet_token;
        if !fleet.is_empty() && !(MIN_DEVICE_TOKEN_BYTES..=128).contains(&fleet.len()) {
            return Err(ConfigError::OutOfRange {
                key: "control.fleet_token",
                expected: "empty, or 16 to 128 bytes (the hello's token field): a shorter token \
                           is guessed quickly; e.g. `openssl rand -hex 16`",
            });
        }
        self.device_tokens()?;
        self.mqtt.validate()?;
        self.cluster.validate()?;
        let windows = &self.aggregation.windows_s;
        if windows.is_empty()
            || windows.len() > 4
            || windows.iter().any(|&w| !(1..=86_400).contains(&w))
        {
            return Err(ConfigError::OutOfRange {
                key: "aggregation.windows_s",
                expected:
                    "a list of 1 to 4 window lengths between 1 and 86400 seconds, e.g. [10, 60]",
            });
        }
        if !(1..=120).contains(&self.aggregation.buckets_per_window) {
            return Err(ConfigError::OutOfRange {
                key: "aggregation.buckets_per_window",
                expected: "between 1 and 120",
            });
        }
        if self.ws.max_client_message_bytes < 256 {
            return Err(ConfigError::OutOfRange {
                key: "ws.max_client_message_bytes",
                expected: "at least 256 bytes",
            });
        }
        if !(1..=MAX_RECEIVE_SOCKETS).contains(&self.udp.receive_sockets) {
            return Err(ConfigError::OutOfRange {
                key: "udp.receive_sockets",
                expected: "between 1 and 64 (sockets sharing udp.bind, each read by its own task)",
            });
        }
        if self.udp.batch_max > 4096 {
            return Err(ConfigError::OutOfRange {
                key: "udp.batch_max",
                expected: "at most 4096 (work per cycle is capped to keep the hub responsive)",
            });
        }
        if self.storage.flush_interval_ms > 60_000 {
            return Err(ConfigError::OutOfRange {
                key: "storage.flush_interval_ms",
                expected: "at most 60000 (a crash loses up to this much history)",
            });
        }
        if self.storage.hour_retention_days.saturating_mul(24) < self.storage.raw_retention_hours
            || self.storage.hour_retention_days < self.storage.minute_retention_days
        {
            return Err(ConfigError::OutOfRange {
                key: "storage.hour_retention_days",
                expected: "at least storage.minute_retention_days and storage.raw_retention_hours (coarser tiers are kept longer)",
            });
        }
        if self.storage.enabled && self.storage.path.as_os_str().is_empty() {
            return Err(ConfigError::OutOfRange {
                key: "storage.path",
                expected: "a file path, e.g. \"/var/lib/sensor-hub/history.db\" (or storage.enabled = false)",
            });
        }
        for (key, value) in [
            ("auth.session_ttl_ms", self.auth.session_ttl_ms),
            ("auth.max_sessions", self.auth.max_sessions as u64),
            ("auth.login_link_ttl_ms", self.auth.login_link_ttl_ms),
            ("auth.failure_delay_ms", self.auth.failure_delay_ms),
            (
                "control.max_handshaking",
                self.control.max_handshaking as u64,
            ),
            ("control.failure_delay_ms", self.control.failure_delay_ms),
        ] {
            if value == 0 {
                return Err(ConfigError::OutOfRange {
                    key,
                    expected: "a whole number of at least 1",
                });
            }
        }
        if self.control.max_failure_delay_ms < self.control.failure_delay_ms {
            return Err(ConfigError::OutOfRange {
                key: "control.max_failure_delay_ms",
                expected: "at least control.failure_delay_ms",
            });
        }
        if self.auth.max_failure_delay_ms < self.auth.failure_delay_ms {
            return Err(ConfigError::OutOfRange {
                key: "auth.max_failure_delay_ms",
                expected: "at least auth.failure_delay_ms",
            });
        }
        if self.auth.credentials_path.as_os_str().is_empty() {
            return Err(ConfigError::OutOfRange {
                key: "auth.credentials_path",
                expected: "a file path, e.g. \"/var/lib/sensor-hub/credentials.json\"",
            });
        }
        for origin in &self.http.allowed_origins {
            let lower = origin.to_ascii_lowercase();
            let authority = lower
                .strip_prefix("http://")
                .or_else(|| lower.strip_prefix("https://"));
            if authority.is_none_or(|a| a.is_empty() || a.contains('/')) {
                return Err(ConfigError::Invalid(format!(
                    "bad value {origin:?} in `http.allowed_origins`: expected scheme://host[:port] \
                     with no path, e.g. \"https://grafana.example:3000\""
                )));
            }
        }
        for host in &self.http.allowed_hosts {
            if host.is_empty() || host.contains(['/', ':', ' ']) {
                return Err(ConfigError::Invalid(format!(
                    "bad value {host:?} in `http.allowed_hosts`: expected a host name without \
                     scheme or port, e.g. \"pi.local\""
                )));
            }
        }
        if self.ws.max_clients >= self.http.max_connections {
            return Err(ConfigError::OutOfRange {
                key: "http.max_connections",
                expected: "more than ws.max_clients (upgraded WebSockets are HTTP connections too; leave room for page loads and API calls)",
            });
        }
        let cert_set = !self.http.tls_cert_path.as_os_str().is_empty();
        let key_set = !self.http.tls_key_path.as_os_str().is_empty();
        if cert_set && !key_set {
            return Err(ConfigError::OutOfRange {
                key: "http.tls_key_path",
                expected: "the PEM private key of http.tls_cert_path: the two are set together (or both left empty for plain HTTP)",
            });
        }
        if key_set && !cert_set {
            return Err(ConfigError::OutOfRange {
                key: "http.tls_cert_path",
                expected: "the PEM certificate of http.tls_key_path: the two are set together (or both left empty for plain HTTP)",
            });
        }
        if self.ws.replay_bytes < self.ws.client_budget_bytes {
            return Err(ConfigError::OutOfRange {
                key: "ws.replay_bytes",
                expected: "at least ws.client_budget_bytes (a client may lag by its budget)",
            });
        }
        if self.ws.total_budget_bytes < self.ws.client_budget_bytes {
            return Err(ConfigError::OutOfRange {
                key: "ws.total_budget_bytes",
                expected: "at least ws.client_budget_bytes (all clients together may hold at least what one may)",
            });
        }
        if self.ws.coalesce_ms > 1_000 {
            return Err(ConfigError::OutOfRange {
                key: "ws.coalesce_ms",
                expected:
                    "0 (off) to 1000 ms; a few ms is enough to put many readings in one message",
            });
        }
        Ok(())
    }
}

/// Adds what a valid value looks like where the parser's message does not.
fn explain(message: String) -> String {
    if message.contains("socket address") {
        format!("{message}: expected IP:PORT, e.g. \"0.0.0.0:47100\" or \"[::]:47100\"")
    } else {
        message
    }
}

/// Open files the hub needs besides its connections: listening sockets,
/// the history database (file, write-ahead log, shared memory, a reader),
/// the runtime's own descriptors, logs, and a connection accepted only to
/// be refused.
pub const RESERVED_FILES: u64 = 128;

impl HubConfig {
    /// Open files the configured connection caps may need at once:
    /// `http.max_connections` (WebSockets included) plus
    /// `control.max_connections` plus [`RESERVED_FILES`].
    pub fn open_files_needed(&self) -> u64 {
        let http = u64::try_from(self.http.max_connections).unwrap_or(u64::MAX);
        let control = u64::try_from(self.control.max_connections).unwrap_or(u64::MAX);
        http.saturating_add(control).saturating_add(RESERVED_FILES)
    }

    /// `control.tokens` with parsed device ids.
    pub fn device_tokens(&self) -> Result<HashMap<u32, String>, ConfigError> {
        self.control
            .tokens
            .iter()
            .map(|(id, token)| {
                let device: u32 = id.parse().map_err(|_| {
                    ConfigError::Invalid(format!(
                        "key `control.tokens.{id}` is not a device id: expected a whole number like \"17\""
                    ))
                })?;
                if !(MIN_DEVICE_TOKEN_BYTES..=128).contains(&token.len()) {
                    return Err(ConfigError::Invalid(format!(
                        "bad value for `control.tokens.{id}`: expected a token of \
                         {MIN_DEVICE_TOKEN_BYTES} to 128 bytes (a shorter one is guessed \
                         quickly; e.g. `openssl rand -hex 16`)"
                    )));
                }
                Ok((device, token.clone()))
            })
            .collect()
    }
}

/// Parses `text` as TOML to report syntax errors with their line.
fn toml_syntax_check(text: &str) -> Result<(), String> {
    config::Config::builder()
        .add_source(File::from_str(text, FileFormat::Toml))
        .build()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests;
