//! The MQTT bridge (`[mqtt]`, docs/MQTT.md): the fleet on an MQTT broker
//! for Home Assistant and anything else that speaks MQTT, and commands
//! from it. [`bridge`] is the state machine (no I/O) that decides what to
//! publish; [`discovery`] builds Home Assistant's config messages; this
//! module is the thin shell: one task drives the `rumqttc` event loop
//! (connection, keep-alive, reconnects with backoff), another owns the
//! [`bridge::Bridge`] and feeds it the hub's event stream, the broker's
//! messages and the time, submits the commands it asks for and hands its
//! messages to the client. Ingest never waits for either: the bridge reads
//! the stream at its own pace and re-reads the fleet if it falls behind.

pub mod bridge;
pub mod discovery;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use rumqttc::{
    AsyncClient, ConnectionError, Event as MqttEvent, LastWill, MqttOptions, Packet, QoS,
};
use tokio::sync::mpsc;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::MqttConfig;
use crate::core::{Core, SubmitError};
use crate::metrics::{counter, gauge, labeled_counters, Collector, DescriptorEncoder};
use crate::registry::{DeviceStatus, Origin};
use crate::state::DropReason;

use bridge::{Bridge, BridgeCounters, CommandOutcome, HubFigures, PublishKind};

/// Largest message the bridge accepts from the broker (commands and Home
/// Assistant's status are a few hundred bytes); larger packets end the
/// connection (rumqttc's limit) and are counted as a disconnect.
const MAX_INCOMING_BYTES: usize = 16 * 1024;

/// Largest message the bridge sends (a device's discovery config with a
/// long name is about 1 KiB; a state of 64 sensors about 2 KiB).
const MAX_OUTGOING_BYTES: usize = 64 * 1024;

/// Requests (publishes, subscriptions) waiting in the client for the
/// connection (a few hundred bytes each); beyond it the bridge waits and
/// keeps coalescing. One state tick's worth for 10,000 states a second.
const CLIENT_QUEUE: usize = 512;

/// With the client's queue full, the bridge tries again after this, ms.
const CLIENT_FULL_RETRY_MS: u64 = 5;

/// Events the connection task hands to the bridge task.
const EVENT_QUEUE: usize = 256;

/// Stream entries read per wake-up.
const STREAM_BATCH: usize = 256;

/// The fleet is re-read at most this often after events that may change
/// it (a hello, adoption), ms.
const CATALOG_MIN_INTERVAL_MS: u64 = 250;

/// New stream events are read at most this often, ms (the bridge's state
/// tick): at 1,000 devices sending one datagram each second, waking for
/// every datagram cost more than publishing. Commands from the broker are
/// not delayed.
const STREAM_READ_INTERVAL_MS: u64 = bridge::STATE_TICK_MS;

/// Reconnect backoff, ms.
const BACKOFF_MIN_MS: u64 = 500;
const BACKOFF_MAX_MS: u64 = 30_000;

/// The bridge's state as `/api/hub` and `/metrics` show it; shared, its
/// lock held only to copy or replace the figures.
#[derive(Debug, Default)]
pub struct MqttStatus {
    inner: Mutex<StatusView>,
}

/// One reading of [`MqttStatus`].
#[derive(Debug, Clone, Default)]
pub struct StatusView {
    /// The bridge is configured.
    pub enabled: bool,
    /// `host:port`.
    pub broker: String,
    /// The broker accepted the connection and it is up.
    pub connected: bool,
    /// Connections after the first.
    pub reconnects: u64,
    /// Connections that failed or broke.
    pub connection_errors: u64,
    /// Why the last connection failed or broke (never a secret).
    pub last_error: Option<String>,
    /// The bridge's counters.
    pub counters: BridgeCounters,
}

impl MqttStatus {
    /// The status of a bridge configured by `config` (disabled or not yet
    /// connected).
    pub fn new(config: &MqttConfig) -> MqttStatus {
        MqttStatus {
            inner: Mutex::new(StatusView {
                enabled: config.enabled,
                broker: format!("{}:{}", config.host, config.port),
                ..StatusView::default()
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, StatusView> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A copy of the current figures.
    pub fn view(&self) -> StatusView {
        self.lock().clone()
    }

    /// The JSON `/api/hub` shows under `mqtt`.
    pub fn json(&self) -> serde_json::Value {
        let v = self.view();
        let published: serde_json::Map<String, serde_json::Value> = kinds()
            .map(|(name, i)| (name.to_string(), v.counters.published[i].into()))
            .collect();
        serde_json::json!({
            "enabled": v.enabled,
            "broker": v.enabled.then_some(v.broker),
            "state": if !v.enabled { "disabled" } else if v.connected { "connected" } else { "connecting" },
            "reconnects": v.reconnects,
            "connection_errors": v.connection_errors,
            "last_error": v.last_error,
            "published": published,
            "states_coalesced": v.counters.states_coalesced,
            "dropped": {
                "results_full": v.counters.dropped_results_full,
                "removals_full": v.counters.dropped_removals_full,
            },
            "stream_gaps": v.counters.stream_gaps,
        })
    }
}

fn kinds() -> impl Iterator<Item = (&'static str, usize)> {
    use strum::IntoEnumIterator as _;
    PublishKind::iter().map(|k| (<&'static str>::from(k), k as usize))
}

/// Writes the bridge's families (docs/METRICS.md).
#[derive(Debug)]
pub struct MqttCollector(pub Arc<MqttStatus>);

impl Collector for MqttCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        use strum::IntoEnumIterator as _;
        let v = self.0.view();
        gauge(
            &mut e,
            "sensor_hub_mqtt_enabled",
            "1 when the MQTT bridge is configured (mqtt.enabled)",
            i64::from(v.enabled),
        )?;
        gauge(
            &mut e,
            "sensor_hub_mqtt_connected",
            "1 while the MQTT bridge is connected to its broker",
            i64::from(v.connected),
        )?;
        counter(
            &mut e,
            "sensor_hub_mqtt_reconnects",
            "Connections to the broker after the first",
            v.reconnects,
        )?;
        counter(
            &mut e,
            "sensor_hub_mqtt_connection_errors",
            "Broker connections that failed or broke",
            v.connection_errors,
        )?;
        labeled_counters(
            &mut e,
            (
                "sensor_hub_mqtt_published",
                "Messages handed to the broker connection, by what they carry",
            ),
            "kind",
            kinds().map(|(name, i)| (name, v.counters.published[i])),
        )?;
        counter(
            &mut e,
            "sensor_hub_mqtt_states_coalesced",
            "Device states superseded by newer values before they were published (the newest goes out)",
            v.counters.states_coalesced,
        )?;
        labeled_counters(
            &mut e,
            (
                "sensor_hub_mqtt_dropped",
                "Messages the bridge dropped because its bounded queues were full",
            ),
            "reason",
            [
                ("results_full", v.counters.dropped_results_full),
                ("removals_full", v.counters.dropped_removals_full),
            ],
        )?;
        counter(
            &mut e,
            "sensor_hub_mqtt_stream_gaps",
            "Times the bridge fell behind the hub's event stream and re-read the fleet",
            v.counters.stream_gaps,
        )?;
        labeled_counters(
            &mut e,
            (
                "sensor_hub_mqtt_commands",
                "Command requests received over MQTT, by outcome",
            ),
            "outcome",
            CommandOutcome::iter()
                .map(|o| (<&'static str>::from(o), v.counters.commands[o as usize])),
        )?;
        counter(
            &mut e,
            "sensor_hub_mqtt_ignored_messages",
            "Messages from the broker on no topic of the bridge's",
            v.counters.ignored_messages,
        )
    }
}

/// What the connection task tells the bridge task.
#[derive(Debug)]
enum LinkEvent {
    Connected,
    Disconnected(String),
    Message { topic: String, payload: Vec<u8> },
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// The client options of `config`: credentials, TLS, last will.
pub fn options(config: &MqttConfig) -> anyhow::Result<MqttOptions> {
    let topics = discovery::Topics::new(config);
    let mut options = MqttOptions::new(config.effective_client_id(), &config.host, config.port);
    options
        .set_keep_alive(Duration::from_secs(config.keep_alive_s))
        .set_clean_session(true)
        .set_max_packet_size(MAX_INCOMING_BYTES, MAX_OUTGOING_BYTES)
        .set_request_channel_capacity(CLIENT_QUEUE)
        .set_last_will(LastWill::new(
            topics.status(),
            "offline",
            qos(config.qos_discovery),
            true,
        ));
    if !config.username.is_empty() {
        options.set_credentials(&config.username, password(config)?);
    }
    if config.tls {
        options.set_transport(rumqttc::Transport::tls_with_config(
            tls_config(config)?.into(),
        ));
    }
    Ok(options)
}

fn password(config: &MqttConfig) -> anyhow::Result<String> {
    if config.password_file.as_os_str().is_empty() {
        return Ok(config.password.clone());
    }
    if let Ok(meta) = std::fs::metadata(&config.password_file) {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %config.password_file.display(),
                "mqtt.password_file can be read by other users; chmod 600 it"
            );
        }
    }
    let text = std::fs::read_to_string(&config.password_file).with_context(|| {
        format!(
            "reading mqtt.password_file {}; check the path and that the hub's user may read it",
            config.password_file.display()
        )
    })?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

fn tls_config(config: &MqttConfig) -> anyhow::Result<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    if config.ca_file.as_os_str().is_empty() {
        let found = rustls_native_certs::load_native_certs();
        for cert in found.certs {
            // A system certificate rustls cannot use is skipped, as every
            // TLS client does.
            let _ = roots.add(cert);
        }
        anyhow::ensure!(
            !roots.is_empty(),
            "mqtt.tls is on but the system has no CA certificates (install ca-certificates) and mqtt.ca_file is empty"
        );
    } else {
        let pem = read_ca(&config.ca_file)?;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.with_context(|| {
                format!(
                    "mqtt.ca_file {} is not a PEM certificate file",
                    config.ca_file.display()
                )
            })?;
            roots.add(cert).with_context(|| {
                format!(
                    "mqtt.ca_file {}: unusable certificate",
                    config.ca_file.display()
                )
            })?;
        }
        anyhow::ensure!(
            !roots.is_empty(),
            "mqtt.ca_file {} holds no certificate",
            config.ca_file.display()
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS for the MQTT bridge")?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn read_ca(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| {
        format!(
            "reading mqtt.ca_file {}; check the path and that the hub's user may read it",
            path.display()
        )
    })
}

/// Runs the bridge until `cancel`: connects (and reconnects) with
/// `options` (from [`options`], made once when the hub starts, so files
/// are read and warned about once), publishes and takes commands.
pub async fn run(
    core: Arc<Core>,
    config: MqttConfig,
    options: MqttOptions,
    clock: Clock,
    status: Arc<MqttStatus>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let (client, eventloop) = AsyncClient::new(options, CLIENT_QUEUE);
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    // Not a child of `cancel`: it must outlive the bridge long enough to
    // send the goodbye below.
    let link_cancel = CancellationToken::new();
    let link = tokio::spawn(drive_connection(eventloop, events_tx, link_cancel.clone()));
    let result = drive_bridge(
        core,
        &config,
        client.clone(),
        clock,
        status,
        events_rx,
        cancel,
    )
    .await;
    // Say goodbye: the retained status goes offline now rather than when
    // the broker notices (the last will covers a crash).
    let topics = discovery::Topics::new(&config);
    let _ = client.try_publish(topics.status(), qos(config.qos_discovery), true, "offline");
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(2), link).await;
    link_cancel.cancel();
    result
}

/// Polls the client's event loop: that is what connects, keeps alive,
/// sends and receives; after an error the next poll reconnects, after a
/// backoff that doubles up to [`BACKOFF_MAX_MS`].
async fn drive_connection(
    mut eventloop: rumqttc::EventLoop,
    events: mpsc::Sender<LinkEvent>,
    cancel: CancellationToken,
) {
    let mut backoff_ms = BACKOFF_MIN_MS;
    loop {
        let polled = tokio::select! {
            polled = eventloop.poll() => polled,
            () = cancel.cancelled() => return,
        };
        let event = match polled {
            Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                backoff_ms = BACKOFF_MIN_MS;
                LinkEvent::Connected
            }
            Ok(MqttEvent::Incoming(Packet::Publish(publish))) => LinkEvent::Message {
                topic: publish.topic,
                payload: publish.payload.to_vec(),
            },
            Ok(MqttEvent::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                // Our own goodbye: let it go out, then stop.
                let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
                return;
            }
            Ok(_) => continue,
            Err(ConnectionError::RequestsDone) => return,
            Err(e) => {
                if events
                    .send(LinkEvent::Disconnected(describe(&e)))
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
                    () = cancel.cancelled() => return,
                }
                backoff_ms = (backoff_ms * 2).min(BACKOFF_MAX_MS);
                continue;
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
    }
}

/// A connection error for people (rumqttc's words; no credentials in them).
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!(
            "the broker refused the connection ({code:?}); check mqtt.username and the password"
        ),
        other => other.to_string(),
    }
}

/// Owns the [`Bridge`]: feeds it and publishes what it asks.
async fn drive_bridge(
    core: Arc<Core>,
    config: &MqttConfig,
    client: AsyncClient,
    clock: Clock,
    status: Arc<MqttStatus>,
    mut events: mpsc::Receiver<LinkEvent>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut bridge = Bridge::new(config, env!("CARGO_PKG_VERSION"));
    let mut head = core.watch_head();
    let mut cursor = core.stream_head();
    let mut link = Link {
        client: &client,
        status: &status,
        connections: 0,
    };
    let mut last_catalog_ms: Option<u64> = None;
    let mut pending: Option<bridge::Publish> = None;
    let mut rate = RateMeter::default();
    loop {
        let now_ms = clock.now().mono_ms;
        // The fleet: at start, after a gap, and when events say it changed.
        let catalog_due = last_catalog_ms.is_none_or(|t| now_ms >= t + CATALOG_MIN_INTERVAL_MS);
        if bridge.catalog_wanted() && catalog_due {
            // The cursor stays: the events after it are read below even
            // where the catalog already has their values (they come
            // newest last), so no command status is skipped.
            let catalog = core.catalog();
            bridge.handle_catalog(&catalog, now_ms);
            last_catalog_ms = Some(now_ms);
        }
        // The stream, as far as it goes now.
        loop {
            match core.read_stream(cursor + 1, STREAM_BATCH) {
                Ok(entries) => {
                    let Some(last) = entries.last() else { break };
                    cursor = last.seq;
                    for entry in &entries {
                        bridge.handle_event(&entry.event, now_ms);
                    }
                }
                Err(_gone) => {
                    bridge.handle_stream_gap();
                    cursor = core.stream_head();
                    break;
                }
            }
        }
        if bridge.hub_due(now_ms) {
            bridge.handle_hub_figures(rate.figures(&core, now_ms));
            // Adoption changes come with no event: re-read the fleet too.
            if last_catalog_ms.is_none_or(|t| now_ms >= t + config.hub_interval_ms) {
                let catalog = core.catalog();
                bridge.handle_catalog(&catalog, now_ms);
                last_catalog_ms = Some(now_ms);
            }
        }
        // Hand what is due to the client, until its queue is full.
        let mut client_full = false;
        while let Some(publish) = pending.take().or_else(|| bridge.poll_publish(now_ms)) {
            match client.try_publish(
                publish.topic.clone(),
                qos(publish.qos),
                publish.retain,
                publish.payload.clone(),
            ) {
                Ok(()) => {}
                Err(rumqttc::ClientError::TryRequest(_)) => {
                    pending = Some(publish);
                    client_full = true;
                    break;
                }
                Err(rumqttc::ClientError::Request(_)) => {
                    // The connection task is gone: we are stopping.
                    break;
                }
            }
        }
        {
            let mut view = status.lock();
            view.counters = bridge.counters().clone();
        }
        // Sleep until the next event, stream entry or deadline.
        let wake_ms = match (bridge.poll_timeout(), client_full) {
            (_, true) => Some(now_ms + CLIENT_FULL_RETRY_MS),
            (Some(t), false) => Some(t.max(now_ms)),
            (None, false) => None,
        };
        let wake_ms = match (wake_ms, bridge.catalog_wanted(), last_catalog_ms) {
            (w, true, Some(t)) => Some(w.map_or(t + CATALOG_MIN_INTERVAL_MS, |w| {
                w.min(t + CATALOG_MIN_INTERVAL_MS)
            })),
            (w, _, _) => w,
        };
        let started = tokio::time::Instant::now();
        let wake_at = wake_ms.map(|at| started + Duration::from_millis(at.saturating_sub(now_ms)));
        let sleep = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            changed = head.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
                // Let more events gather before reading them, serving the
                // broker's messages meanwhile.
                // Work due sooner (states to publish) cuts the wait short.
                let mut until = tokio::time::Instant::now()
                    + Duration::from_millis(STREAM_READ_INTERVAL_MS);
                if let Some(at) = wake_at {
                    until = until.min(at);
                }
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => return Ok(()),
                        () = tokio::time::sleep_until(until) => break,
                        event = events.recv() => {
                            let Some(event) = event else { return Ok(()) };
                            link.handle(event, &mut bridge, &core, &clock).await;
                        }
                    }
                }
            }
            event = events.recv() => {
                let Some(event) = event else { return Ok(()) };
                link.handle(event, &mut bridge, &core, &clock).await;
            }
            () = sleep => {}
        }
    }
}

/// What the bridge task does with the connection task's news.
struct Link<'a> {
    client: &'a AsyncClient,
    status: &'a MqttStatus,
    connections: u64,
}

impl Link<'_> {
    async fn handle(&mut self, event: LinkEvent, bridge: &mut Bridge, core: &Core, clock: &Clock) {
        let now = clock.now();
        match event {
            LinkEvent::Connected => {
                self.connections += 1;
                bridge.handle_connected(now.mono_ms);
                for filter in bridge.subscriptions() {
                    // At QoS 1; right after a connection the client's queue
                    // has room, or the subscription goes out with the backlog.
                    let _ = self.client.subscribe(filter, QoS::AtLeastOnce).await;
                }
                let mut view = self.status.lock();
                view.connected = true;
                if self.connections > 1 {
                    view.reconnects += 1;
                }
                tracing::info!(broker = %view.broker, "MQTT bridge connected");
            }
            LinkEvent::Disconnected(error) => {
                let was = bridge.is_connected();
                bridge.handle_disconnected();
                let mut view = self.status.lock();
                view.connected = false;
                view.connection_errors += 1;
                // One line per outage, not per retry.
                if was || view.last_error.as_deref() != Some(error.as_str()) {
                    tracing::warn!(
                        broker = %view.broker,
                        %error,
                        "MQTT bridge: no connection to the broker; retrying"
                    );
                }
                view.last_error = Some(error);
            }
            LinkEvent::Message { topic, payload } => {
                if let Some(request) = bridge.handle_message(&topic, &payload, now.mono_ms) {
                    let submitted = core.submit_command(
                        request.device,
                        request.body.clone(),
                        request.wait,
                        Origin {
                            request_id: request.request_id.clone(),
                            client: None,
                            source: Some("mqtt"),
                            ..Default::default()
                        },
                        now,
                    );
                    let record = match submitted {
                        Ok(record) => Some(record),
                        // The bridge offers only this hub's devices; one
                        // that moved to another hub is not commanded here.
                        Err(
                            SubmitError::UnknownDevice(_)
                            | SubmitError::Forwarded { .. }
                            | SubmitError::ClusterBusy,
                        ) => None,
                        Err(SubmitError::Retired(id)) => core.command(id),
                    };
                    bridge.handle_submitted(request, record);
                }
            }
        }
    }
}

/// The datagram rate between two publications of the hub's figures.
#[derive(Debug, Default)]
struct RateMeter {
    last: Option<(u64, u64)>,
}

impl RateMeter {
    fn figures(&mut self, core: &Core, now_ms: u64) -> HubFigures {
        let stats = core.stats();
        let accepted = stats.ingest.datagrams_accepted;
        let datagrams_per_s = match self.last {
            Some((at, before)) if now_ms > at => {
                accepted.saturating_sub(before) as f64 * 1_000.0 / (now_ms - at) as f64
            }
            _ => 0.0,
        };
        self.last = Some((now_ms, accepted));
        HubFigures {
            datagrams_per_s,
            devices: stats.devices,
            devices_online: stats.device_status[DeviceStatus::Online as usize],
            datagrams_dropped: {
                use strum::IntoEnumIterator as _;
                DropReason::iter()
                    .map(|r| stats.ingest.dropped[r.index()])
                    .sum()
            },
        }
    }
}
