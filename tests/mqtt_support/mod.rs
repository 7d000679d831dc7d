//! The MQTT side of tests/mqtt.rs: a real Mosquitto broker per test
//! ([`Broker`]: its own port on 127.0.0.1, password file, configuration
//! and log in a temporary directory, stopped and started again on the same
//! port to simulate an outage) and an MQTT client that records everything
//! it receives ([`Probe`], on `rumqttc`, plain TCP). Nothing here knows
//! the hub: tests/mqtt.rs checks the bridge against docs/MQTT.md with
//! these two.
//!
//! Needs `mod support;` beside `mod mqtt_support;` in the test crate (free
//! ports, the installed programs).
#![allow(dead_code)] // each test uses a different subset

use std::collections::HashSet;
use std::fs;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, ConnectionError, Event, MqttOptions, Packet, QoS};

use crate::support;

/// The user every test broker accepts.
pub const USER: &str = "sensor-hub-test";
/// Its password.
pub const PASSWORD: &str = "mqtt-test-password-0451";

/// What to say when Mosquitto is missing.
const INSTALL_HINT: &str = "install Debian's `mosquitto` package \
     (`apt-get install mosquitto`; scripts/test installs it): tests/mqtt.rs \
     runs a real broker";

/// How long a broker may take to accept connections.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// The broker's binary: Debian puts it in /usr/sbin, often not on a
/// user's PATH.
fn mosquitto_bin() -> &'static str {
    support::installed("/usr/sbin/mosquitto", "mosquitto")
}

fn mosquitto_passwd_bin() -> &'static str {
    support::installed("/usr/bin/mosquitto_passwd", "mosquitto_passwd")
}

/// A Mosquitto broker run by this test: on 127.0.0.1 only, a password
/// required ([`USER`], [`PASSWORD`]), nothing persisted (so a restart
/// loses every retained message). Killed, and its directory removed, on
/// drop.
#[derive(Debug)]
pub struct Broker {
    port: u16,
    /// A second listener with TLS ([`Broker::start_with_tls`]).
    tls_port: Option<u16>,
    dir: PathBuf,
    child: Option<Child>,
}

impl Broker {
    /// Starts a broker on a free port and waits until it accepts
    /// connections.
    pub fn start() -> Broker {
        Broker::start_inner(false)
    }

    /// Like [`Broker::start`], with a second listener on [`Broker::tls_port`]
    /// serving TLS with a certificate for `127.0.0.1` and `localhost`,
    /// signed by a CA made here (its PEM: [`Broker::ca_file`]).
    pub fn start_with_tls() -> Broker {
        Broker::start_inner(true)
    }

    /// The TLS listener's port (brokers from [`Broker::start_with_tls`]).
    pub fn tls_port(&self) -> u16 {
        self.tls_port.expect("a broker started with TLS")
    }

    /// The PEM file of the CA that signed the TLS listener's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn start_inner(tls: bool) -> Broker {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sensor-hub-mqtt-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create the broker's directory");
        set_mode(&dir, 0o700);
        let passwords = dir.join("passwords");
        let made = Command::new(mosquitto_passwd_bin())
            .arg("-c")
            .arg("-b")
            .arg(&passwords)
            .args([USER, PASSWORD])
            .output()
            .unwrap_or_else(|e| {
                if e.kind() == ErrorKind::NotFound {
                    panic!("mosquitto_passwd not found: {INSTALL_HINT}")
                }
                panic!("running mosquitto_passwd: {e}")
            });
        assert!(
            made.status.success(),
            "mosquitto_passwd failed: {}{}",
            String::from_utf8_lossy(&made.stdout),
            String::from_utf8_lossy(&made.stderr)
        );
        // mosquitto_passwd 2.0.11 creates it world-readable.
        set_mode(&passwords, 0o600);
        if tls {
            write_tls_files(&dir);
        }
        let mut broker = Broker {
            port: 0,
            tls_port: None,
            dir,
            child: None,
        };
        let mut failures = Vec::new();
        for _ in 0..5 {
            broker.port = support::free_port();
            if tls {
                broker.tls_port = Some(support::free_port());
            }
            match broker.launch() {
                Ok(()) => return broker,
                // Someone took the port between free_port and the bind.
                Err(why) => failures.push(why),
            }
        }
        panic!(
            "Mosquitto did not start in 5 tries:\n{}",
            failures.join("\n---\n")
        );
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address clients connect to.
    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    pub fn user(&self) -> &'static str {
        USER
    }

    pub fn password(&self) -> &'static str {
        PASSWORD
    }

    /// Its temporary directory (configuration, password file, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        let mut text = fs::read_to_string(self.dir.join("mosquitto.log")).unwrap_or_default();
        let stderr = fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default();
        if !stderr.trim().is_empty() {
            text.push_str("\n(stderr) ");
            text.push_str(&stderr);
        }
        text
    }

    /// Whether its process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops it with SIGTERM and waits for it to exit (SIGKILL after 10 s).
    /// Its clients lose their connections; it keeps nothing (no
    /// persistence).
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
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts it again on the same port with the same configuration (after
    /// [`Broker::stop`]); it has no retained message any more.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again: the broker is running");
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
            "Mosquitto did not start again on port {} in 10 tries:\n{}",
            self.port,
            failures.join("\n---\n")
        );
    }

    /// Writes the configuration for `self.port`, starts the broker and
    /// waits until it accepts connections; on failure it is killed and the
    /// reason (with its log) returned.
    fn launch(&mut self) -> Result<(), String> {
        let config = self.dir.join("mosquitto.conf");
        let log = self.dir.join("mosquitto.log");
        let _ = fs::remove_file(&log);
        fs::write(
            &config,
            format!(
                "# A broker for one test of tests/mqtt.rs.\n\
                 # Started as root (as in CI), Mosquitto 2.0 switches to the user named\n\
                 # here right after reading this file, before it opens the log and\n\
                 # the password file; its default, `mosquitto`, cannot enter this\n\
                 # test's 0700 directory and the broker exits. Staying root avoids\n\
                 # that; run as any other user, Mosquitto ignores this setting.\n\
                 user root\n\
                 listener {port} 127.0.0.1\n\
                 allow_anonymous false\n\
                 password_file {passwords}\n\
                 persistence false\n\
                 log_dest file {log}\n\
                 log_type error\n\
                 log_type warning\n\
                 log_type notice\n\
                 log_type information\n\
                 connection_messages true\n\
                 log_timestamp_format %H:%M:%S\n\
                 # Probes subscribe to whole trees: never drop what they are owed.\n\
                 max_queued_messages 100000\n",
                port = self.port,
                passwords = self.dir.join("passwords").display(),
                log = log.display(),
            ) + &self
                .tls_port
                .map(|port| {
                    format!(
                        "listener {port} 127.0.0.1\n\
                         cafile {ca}\n\
                         certfile {cert}\n\
                         keyfile {key}\n",
                        ca = self.dir.join("ca.pem").display(),
                        cert = self.dir.join("server.pem").display(),
                        key = self.dir.join("server.key").display(),
                    )
                })
                .unwrap_or_default(),
        )
        .expect("write mosquitto.conf");
        let stderr = fs::File::create(self.dir.join("stderr.log")).expect("create stderr.log");
        let child = Command::new(mosquitto_bin())
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                if e.kind() == ErrorKind::NotFound {
                    panic!("mosquitto not found: {INSTALL_HINT}")
                }
                panic!("starting mosquitto: {e}")
            });
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(format!(
                    "mosquitto on port {} exited ({status}); its log:\n{}",
                    self.port,
                    self.log()
                ));
            }
            // "running" is logged once every listener is open, so the
            // connection is ours, not another program's on the same port.
            let running = self.log().contains(" running");
            if running && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "mosquitto did not accept connections on port {} within {:?}; its log:\n{}",
                    self.port,
                    START_DEADLINE,
                    self.log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// One PUBLISH a probe received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    /// Set by the broker only on retained messages sent because of a new
    /// subscription (MQTT 3.1.1 §3.3.1.3); a message forwarded live has it
    /// clear even if it was published retained.
    pub retain: bool,
}

impl Message {
    /// The payload as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The payload as JSON; panics naming the topic if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "payload on {} is not JSON ({e}): {:?}",
                self.topic,
                self.text()
            )
        })
    }
}

/// What a probe's event loop shares with the probe.
#[derive(Debug, Default)]
struct Shared {
    messages: Mutex<Vec<Message>>,
    /// Payloads seen on the probe's own sync topic.
    syncs: Mutex<HashSet<String>>,
    /// PUBACKs received: one per QoS 1 publish the broker took.
    pubacks: AtomicU64,
    /// CONNACKs accepted (1 after connecting, more after reconnects).
    connections: AtomicU64,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
    stopping: AtomicBool,
}

/// An MQTT client (clean session, QoS 1 subscriptions) that records every
/// message it receives. Its event loop runs in a task of the test's
/// runtime and survives broker restarts: it reconnects and subscribes
/// again. Aborted on drop.
#[derive(Debug)]
pub struct Probe {
    client: AsyncClient,
    client_id: String,
    sync_topic: String,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Probe {
    /// Connects to `broker` as [`USER`], subscribes to `filters` (QoS 1)
    /// and returns once every retained message matching them that the
    /// broker held at that moment has arrived.
    pub async fn connect(broker: &Broker, client_id: &str, filters: &[&str]) -> Probe {
        Probe::connect_as(broker, client_id, USER, PASSWORD, filters)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "probe {client_id} could not connect to the broker on port {}: {e}\nbroker log:\n{}",
                    broker.port(),
                    broker.log()
                )
            })
    }

    /// As [`Probe::connect`] with these credentials (an empty `user`: none,
    /// anonymous); the error of the first connection attempt (e.g.
    /// `ConnectionRefused(NotAuthorized)`) if the broker refuses it.
    pub async fn connect_as(
        broker: &Broker,
        client_id: &str,
        user: &str,
        password: &str,
        filters: &[&str],
    ) -> Result<Probe, Box<ConnectionError>> {
        let mut options = MqttOptions::new(client_id, broker.host(), broker.port());
        if !user.is_empty() {
            options.set_credentials(user, password);
        }
        options
            .set_keep_alive(Duration::from_secs(5))
            .set_clean_session(true)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let sync_topic = format!("mqtt-probe/{client_id}/sync");
        let mut subscriptions: Vec<String> = filters.iter().map(|f| f.to_string()).collect();
        subscriptions.push(sync_topic.clone());
        let shared = Arc::new(Shared::default());

        // The first connection and subscription, here, so that a refusal
        // is returned and nothing published after this call is missed.
        let deadline = Instant::now() + START_DEADLINE;
        let mut subscribed = false;
        while !subscribed {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(polled) = tokio::time::timeout(left, eventloop.poll()).await else {
                panic!("probe {client_id}: no CONNACK and SUBACK within {START_DEADLINE:?}")
            };
            let event = polled.map_err(Box::new)?;
            match event {
                Event::Incoming(Packet::ConnAck(_)) => {
                    shared.connections.fetch_add(1, Ordering::SeqCst);
                    shared.connected.store(true, Ordering::SeqCst);
                    client
                        .subscribe_many(subscribe_filters(&subscriptions))
                        .await
                        .expect("queue the subscription");
                }
                Event::Incoming(Packet::SubAck(_)) => subscribed = true,
                Event::Incoming(packet) => record(&shared, &sync_topic, packet),
                Event::Outgoing(_) => {}
            }
        }

        let task = tokio::spawn(run_loop(
            eventloop,
            client.clone(),
            subscriptions,
            sync_topic.clone(),
            Arc::clone(&shared),
        ));
        let probe = Probe {
            client,
            client_id: client_id.to_string(),
            sync_topic,
            shared,
            task: Some(task),
        };
        probe.sync().await;
        Ok(probe)
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Every message received so far, in order.
    pub fn messages(&self) -> Vec<Message> {
        self.shared.messages.lock().unwrap().clone()
    }

    /// Forgets every message received so far.
    pub fn clear(&self) {
        self.shared.messages.lock().unwrap().clear();
    }

    /// The newest message on `topic`, if any.
    pub fn latest(&self, topic: &str) -> Option<Message> {
        let messages = self.shared.messages.lock().unwrap();
        messages.iter().rev().find(|m| m.topic == topic).cloned()
    }

    /// How many connections the broker accepted (more than one after a
    /// reconnect).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Whether it is connected now.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    /// The first message received (earliest first) that satisfies `pred`,
    /// waiting up to `deadline` for one; panics saying `what` was missing
    /// and what arrived last.
    pub async fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        pred: impl Fn(&Message) -> bool,
    ) -> Message {
        let end = Instant::now() + deadline;
        loop {
            let found = self
                .shared
                .messages
                .lock()
                .unwrap()
                .iter()
                .find(|m| pred(m))
                .cloned();
            if let Some(m) = found {
                return m;
            }
            if Instant::now() > end {
                panic!(
                    "probe {}: no message within {deadline:?}: {what}\n{}",
                    self.client_id,
                    self.report()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits up to `deadline` until the newest message on `topic`
    /// satisfies `pred`, and returns it; panics saying `what` was missing.
    pub async fn wait_latest(
        &self,
        what: &str,
        topic: &str,
        deadline: Duration,
        pred: impl Fn(&Message) -> bool,
    ) -> Message {
        let end = Instant::now() + deadline;
        loop {
            if let Some(m) = self.latest(topic).filter(|m| pred(m)) {
                return m;
            }
            if Instant::now() > end {
                panic!(
                    "probe {}: within {deadline:?}, the newest message on {topic} was not: {what}\n\
                     newest: {:?}\n{}",
                    self.client_id,
                    self.latest(topic).map(|m| m.text()),
                    self.report()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Publishes at QoS 1 and waits (10 s at most) until the broker has
    /// acknowledged it. Not for concurrent use on one probe.
    pub async fn publish(&self, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
        let before = self.shared.pubacks.load(Ordering::SeqCst);
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .unwrap_or_else(|e| panic!("probe {}: publish to {topic}: {e}", self.client_id));
        let end = Instant::now() + Duration::from_secs(10);
        while self.shared.pubacks.load(Ordering::SeqCst) == before {
            if Instant::now() > end {
                panic!(
                    "probe {}: the broker did not acknowledge a publish to {topic} within 10 s\n{}",
                    self.client_id,
                    self.report()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A barrier: publishes a unique marker to the probe's own topic and
    /// waits until it comes back. The broker delivers to one client in
    /// order, so every QoS 1 message it sent this probe before the marker,
    /// such as the retained messages of its subscription, has been
    /// recorded when this returns.
    pub async fn sync(&self) {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let marker = format!("sync-{}", NEXT.fetch_add(1, Ordering::Relaxed));
        self.publish(&self.sync_topic, marker.clone(), false).await;
        let end = Instant::now() + Duration::from_secs(10);
        while !self.shared.syncs.lock().unwrap().contains(&marker) {
            if Instant::now() > end {
                panic!(
                    "probe {}: its sync marker did not come back within 10 s\n{}",
                    self.client_id,
                    self.report()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Disconnects cleanly (no will) and ends its event loop.
    pub async fn disconnect(mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = self.client.disconnect().await;
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }

    /// Its connection state and the last 30 messages, for failure reports.
    pub fn report(&self) -> String {
        let messages = self.shared.messages.lock().unwrap();
        let last: Vec<String> = messages
            .iter()
            .rev()
            .take(30)
            .rev()
            .map(|m| {
                let text = m.text();
                let short: String = text.chars().take(100).collect();
                format!(
                    "  {}{} {short:?}",
                    m.topic,
                    if m.retain { " (retained)" } else { "" }
                )
            })
            .collect();
        format!(
            "connected: {}, connections: {}, last error: {:?}; {} messages, the last 30:\n{}",
            self.is_connected(),
            self.connections(),
            self.shared.last_error.lock().unwrap(),
            messages.len(),
            last.join("\n")
        )
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn subscribe_filters(filters: &[String]) -> Vec<rumqttc::SubscribeFilter> {
    filters
        .iter()
        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
        .collect()
}

/// Records what a probe received.
fn record(shared: &Shared, sync_topic: &str, packet: Packet) {
    match packet {
        Packet::Publish(p) if p.topic == sync_topic => {
            let marker = String::from_utf8_lossy(&p.payload).into_owned();
            shared.syncs.lock().unwrap().insert(marker);
        }
        Packet::Publish(p) => shared.messages.lock().unwrap().push(Message {
            topic: p.topic,
            payload: p.payload.to_vec(),
            retain: p.retain,
        }),
        Packet::PubAck(_) => {
            shared.pubacks.fetch_add(1, Ordering::SeqCst);
        }
        _ => {}
    }
}

/// A probe's event loop: records, and after an error waits 200 ms and
/// polls again (which reconnects); subscribes again after each CONNACK
/// (clean sessions keep no subscription).
async fn run_loop(
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    subscriptions: Vec<String>,
    sync_topic: String,
    shared: Arc<Shared>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                shared.connected.store(true, Ordering::SeqCst);
                // Not awaited: this loop is what drains the request queue.
                if let Err(e) = client.try_subscribe_many(subscribe_filters(&subscriptions)) {
                    *shared.last_error.lock().unwrap() = Some(format!("subscribing again: {e}"));
                }
            }
            Ok(Event::Incoming(packet)) => record(&shared, &sync_topic, packet),
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                shared.connected.store(false, Ordering::SeqCst);
                return;
            }
            Ok(Event::Outgoing(_)) => {}
            Err(e) => {
                shared.connected.store(false, Ordering::SeqCst);
                if shared.stopping.load(Ordering::SeqCst) {
                    return;
                }
                *shared.last_error.lock().unwrap() = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// A CA, and a server certificate for 127.0.0.1 and localhost signed by
/// it, as PEM files in `dir` (ca.pem, server.pem, server.key).
fn write_tls_files(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let key = KeyPair::generate().expect("server key");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server params");
    let cert = params
        .signed_by(&key, &ca, &ca_key)
        .expect("server certificate");
    fs::write(dir.join("ca.pem"), ca.pem()).expect("write ca.pem");
    fs::write(dir.join("server.pem"), cert.pem()).expect("write server.pem");
    fs::write(dir.join("server.key"), key.serialize_pem()).expect("write server.key");
    set_mode(&dir.join("server.key"), 0o600);
}
