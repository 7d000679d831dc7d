//! The hub's core: one type, [`Core`], owns the fleet state (data plane
//! [`HubState`] and control plane [`Registry`]) and the event [`Stream`]
//! behind one private lock, and applies every effect of a change in one
//! place ([`Core::apply`]) before the lock is released: stream appends,
//! messages to control sessions, device records and readings for the
//! history, command updates for HTTP waiters. No guard leaves it; every
//! public method takes the current [`Now`] where time matters and returns
//! owned data, so callers serialise JSON after the lock is gone.
//!
//! Critical sections stay small (the model is mini-redis's `Db`):
//! datagrams are decoded before the lock is taken, device views are copied
//! out under it and serialised outside it, and every effect is a
//! non-blocking push into a bounded queue.
//!
//! Consistency rule, kept here rather than in a comment elsewhere: an event
//! is appended under the same lock as the change it describes, so a
//! [`Snapshot`] (taken under that lock) together with its `seq` is exactly
//! consistent with the events after it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use sensor_hub_protocol::auth::DatagramKey;
use sensor_hub_protocol::control::{CommandBody, Hello, Outcome, RejectReason, SensorInfo};
use sensor_hub_protocol::{DecodeError, DeviceId};
use tokio::sync::{broadcast, mpsc, watch, Notify};

use strum::IntoEnumIterator as _;

use crate::aggregate::latency::{LatencyHistogram, BOUNDS_MS};
use crate::aggregate::sequence::SeqCounts;
use crate::clock::Now;
use crate::config::HubConfig;
use crate::device_file::Keyring;
use crate::history::{History, StoredDevice};
use crate::metrics::{
    counter, gauge, histograms, labeled_counters, labeled_gauges, Collector, DescriptorEncoder,
    HistogramSamples,
};
use crate::registry::{
    CommandId, CommandRecord, CommandState, DeviceStatus, Effect, Origin, Registry, RegistryConfig,
    RegistryCounters, SessionId, TrustConfig,
};
use crate::state::{
    Decoded, DropReason, HubState, IngestCounters, Ingested, LiveDatagram, SessionAuth,
    WindowConfig,
};
use crate::stream::subscription::Subscription;
use crate::stream::{DeviceStats, Entry, Event, Gone, Stream};
use crate::views::{self, DeviceView};

/// Command updates kept for HTTP requests waiting on a result; a waiter
/// that falls behind re-reads the command (see [`Core::command`]).
const COMMAND_UPDATES: usize = 1024;

/// What the core asks a control session's task to write.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionMessage {
    /// Send this command.
    Command {
        /// Its id.
        id: CommandId,
        /// What to do.
        body: CommandBody,
    },
    /// Send `Reject { reason }` and close.
    Close(RejectReason),
}

/// One datagram as read from the socket.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// The bytes read (at most one more than the largest valid datagram).
    pub bytes: &'a [u8],
    /// Its length on the wire (larger than `bytes` when it was cut).
    pub wire_len: usize,
    /// Sender.
    pub from: SocketAddr,
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Datagrams applied (new data).
    pub applied: usize,
    /// Datagrams that were copies of one already applied.
    pub duplicates: usize,
    /// Datagrams dropped (counted by reason in the ingest counters).
    pub dropped: usize,
}

/// The fleet as of one position in the stream.
#[derive(Debug)]
pub struct Snapshot {
    /// Sequence number of the newest event it includes; the stream
    /// continues at `seq + 1`.
    pub seq: u64,
    /// The devices, by id.
    pub devices: Vec<DeviceView>,
}

/// A command was not submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The hub knows no such device.
    #[error("unknown device {0}")]
    UnknownDevice(DeviceId),
    /// It finished and was retired at once (`commands.retain_finished` is 0).
    #[error("command {0} finished and was retired before it could be reported (commands.retain_finished)")]
    Retired(CommandId),
}

/// What a device is known to measure, for resolving a sensor by name or
/// channel.
#[derive(Debug, Clone, Default)]
pub struct SensorCatalog {
    /// From its hello.
    pub declared: Vec<SensorInfo>,
    /// Every channel: declared, seen in its data, or known from before a
    /// restart.
    pub channels: std::collections::BTreeSet<u8>,
}

/// Every figure of the core `/metrics` and `/api/hub` show, taken at one
/// moment.
#[derive(Debug, Clone)]
pub struct CoreStats {
    /// Datagram counters.
    pub ingest: IngestCounters,
    /// Devices tracked, adopted and discovered.
    pub devices: usize,
    /// Of which discovered (`devices.max_discovered` bounds it).
    pub discovered: usize,
    /// The registry's counters.
    pub registry: RegistryCounters,
    /// Devices per status, indexed by `status as usize`.
    pub device_status: [usize; 3],
    /// Open control sessions.
    pub control_sessions: usize,
    /// Sequence accounting summed over devices.
    pub seq_totals: SeqCounts,
    /// Latency over all devices.
    pub latency: LatencyHistogram,
    /// Per-device sequence accounting and latency, while at most
    /// `metrics.per_device_max` devices sent data.
    pub per_device: Option<Vec<(DeviceId, SeqCounts, LatencyHistogram)>>,
    /// Estimated bytes in the replay ring.
    pub replay_bytes: usize,
    /// Sequence number of the newest event.
    pub stream_seq: u64,
    /// Messages for control sessions dropped because their queue was full.
    pub session_messages_dropped: u64,
}

/// Fingerprint of the statistics last published for a device: datagrams
/// counted, and the rate to a hundredth.
pub type StatsFingerprint = (u64, u64);

#[derive(Debug)]
struct Shared {
    state: HubState,
    registry: Registry,
    stream: Stream,
}

/// The hub's state and event stream; share it as `Arc<Core>`.
#[derive(Debug)]
pub struct Core {
    shared: Mutex<Shared>,
    head: watch::Sender<u64>,
    epoch: String,
    sessions: Mutex<HashMap<SessionId, mpsc::Sender<SessionMessage>>>,
    session_messages_dropped: AtomicU64,
    command_updates: broadcast::Sender<CommandRecord>,
    deadlines: Notify,
    history: Option<History>,
    per_device_max: usize,
}

impl Core {
    /// An empty core configured from `config`, keeping history in
    /// `history` (none: memory only).
    pub fn new(config: &HubConfig, history: Option<History>) -> Core {
        let registry = Registry::new(RegistryConfig {
            max_devices: config.limits.max_devices,
            default_interval_ms: config.liveness.default_interval_ms,
            late_after_intervals: config.liveness.late_after_intervals,
            offline_after_intervals: config.liveness.offline_after_intervals,
            command_ttl_ms: config.commands.ttl_ms,
            queue_per_device: config.commands.queue_per_device,
            max_in_flight: config.commands.max_in_flight,
            retain_finished: config.commands.retain_finished,
            trust: TrustConfig {
                accept_unknown: config.devices.accept_unknown,
                max_discovered: config.devices.max_discovered,
                discovered_ttl_ms: config.devices.discovered_ttl_ms,
                min_replace_interval_ms: config.control.min_replace_interval_ms,
            },
        });
        let windows = WindowConfig {
            windows_ms: config
                .aggregation
                .windows_s
                .iter()
                .map(|s| s.saturating_mul(1_000))
                .collect(),
            buckets: config.aggregation.buckets_per_window,
        };
        let (head, _) = watch::channel(0);
        let (command_updates, _) = broadcast::channel(COMMAND_UPDATES);
        Core {
            shared: Mutex::new(Shared {
                state: HubState::new(windows, config.devices.max_readings_per_s),
                registry,
                stream: Stream::new(config.ws.replay_bytes),
            }),
            head,
            epoch: format!("{:016x}", fastrand::u64(..)),
            sessions: Mutex::new(HashMap::new()),
            session_messages_dropped: AtomicU64::new(0),
            command_updates,
            deadlines: Notify::new(),
            history,
            per_device_max: config.metrics.per_device_max,
        }
    }

    /// The reading history, unless `storage.enabled` is false.
    pub fn history(&self) -> Option<&History> {
        self.history.as_ref()
    }

    /// Locks the shared state. Every update under it is a few plain
    /// assignments that leave it consistent, so a lock poisoned by a panic
    /// elsewhere is used as is.
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds devices known from before a restart; returns how many fit.
    pub fn restore(&self, devices: Vec<StoredDevice>) -> usize {
        let mut shared = self.lock();
        let restored = devices
            .into_iter()
            .filter(|d| {
                shared
                    .registry
                    .restore(d.record.clone(), d.channels.clone())
            })
            .count();
        // Restored devices are not "changed": nothing to write back.
        let _ = shared.registry.take_changed();
        drop(shared);
        self.deadlines.notify_one();
        restored
    }

    /// Ingests one batch read from the socket at `now`: decodes outside the
    /// lock, applies under it, then publishes the accepted datagrams as one
    /// `Readings` event and queues them for the history.
    pub fn ingest_batch(&self, batch: &[Received<'_>], now: Now) -> BatchOutcome {
        let decoded: Vec<Result<Decoded, DecodeError>> = batch
            .iter()
            .map(|r| Decoded::decode(r.bytes, r.wire_len))
            .collect();
        let mut outcome = BatchOutcome::default();
        let mut accepted: Vec<LiveDatagram> = Vec::with_capacity(batch.len());
        // Whether each accepted datagram's device is adopted (stored).
        let mut adopted_flags: Vec<bool> = Vec::with_capacity(batch.len());
        let mut shared = self.lock();
        let Shared {
            state, registry, ..
        } = &mut *shared;
        for (received, decoded) in batch.iter().zip(decoded) {
            match state.apply(
                registry,
                decoded,
                received.bytes,
                received.wire_len,
                received.from,
                now,
            ) {
                Ok(Ingested::Applied { live, adopted }) => {
                    outcome.applied += 1;
                    adopted_flags.push(adopted);
                    accepted.push(live);
                }
                Ok(Ingested::Duplicate) => outcome.duplicates += 1,
                Err(_) => outcome.dropped += 1,
            }
        }
        // Devices that appeared or came back online, then the readings.
        self.apply(&mut shared);
        if !accepted.is_empty() {
            if let Some(history) = &self.history {
                // Discovered devices' readings are shown live, never stored.
                if adopted_flags.iter().all(|&a| a) {
                    history.record(&accepted);
                } else {
                    let stored: Vec<LiveDatagram> = accepted
                        .iter()
                        .zip(&adopted_flags)
                        .filter(|(_, &adopted)| adopted)
                        .map(|(d, _)| d.clone())
                        .collect();
                    history.record(&stored);
                }
            }
            self.append(&mut shared, Event::Readings(accepted));
        }
        outcome
    }

    /// A device said hello: opens its session, whose messages go to
    /// `outbox`; a keyed hello brings the session's datagram key. Returns
    /// the session id, or why it is refused.
    pub fn open_session(
        &self,
        hello: &Hello,
        outbox: mpsc::Sender<SessionMessage>,
        datagram_key: Option<DatagramKey>,
        now: Now,
    ) -> Result<SessionId, RejectReason> {
        let mut shared = self.lock();
        let Shared {
            state, registry, ..
        } = &mut *shared;
        let opened = registry.open_session(hello, now).inspect(|&session| {
            if let Some(key) = datagram_key {
                state.start_session(hello.device_id, SessionAuth::new(key));
            }
            // Registered before the effects run, so commands pumped at
            // once reach it.
            self.lock_sessions().insert(session, outbox);
        });
        self.apply(&mut shared);
        opened
    }

    /// The device file changed: which ids are adopted, and which must
    /// authenticate their datagrams.
    pub fn set_device_list(&self, keyring: &Keyring, now: Now) {
        let mut shared = self.lock();
        // A device whose key changed must say hello with its new key.
        for device in shared.state.set_keyed(keyring.keyed()) {
            shared.registry.end_session(device, now);
        }
        let unlisted = shared.registry.set_listed(keyring.ids(), now);
        for device in unlisted {
            if shared.registry.forget(device, now) {
                if let Some(history) = &self.history {
                    history.forget_device(device);
                }
            }
        }
        self.apply(&mut shared);
    }

    /// The name a device gave in its hello, if any.
    pub fn device_name(&self, device: DeviceId) -> Option<String> {
        let shared = self.lock();
        shared
            .registry
            .device(device)
            .and_then(|e| e.info.as_ref())
            .map(|i| i.name.clone())
    }

    /// Forgets a device (its session is closed, its data-plane state
    /// dropped, `device_removed` published). Returns whether it was
    /// tracked.
    pub fn forget(&self, device: DeviceId, now: Now) -> bool {
        let forgotten = self.with_registry(|r| r.forget(device, now));
        if forgotten {
            if let Some(history) = &self.history {
                history.forget_device(device);
            }
        }
        forgotten
    }

    /// A control session ended (any reason).
    pub fn close_session(&self, device: DeviceId, session: SessionId, now: Now) {
        self.lock_sessions().remove(&session);
        self.with_registry(|r| r.close_session(device, session, now));
    }

    /// A heartbeat (or another frame) arrived on a device's session.
    pub fn heartbeat(&self, device: DeviceId, device_time_ms: Option<u64>, now: Now) {
        self.with_registry(|r| r.heartbeat(device, device_time_ms, now));
    }

    /// The device confirmed receipt of a command.
    pub fn command_acked(&self, device: DeviceId, id: CommandId, now: Now) {
        self.with_registry(|r| {
            r.heartbeat(device, None, now);
            r.command_acked(device, id, now);
        });
    }

    /// The device reported a command's outcome.
    pub fn command_result(
        &self,
        device: DeviceId,
        id: CommandId,
        outcome: Outcome,
        detail: Option<String>,
        now: Now,
    ) {
        self.with_registry(|r| {
            r.heartbeat(device, None, now);
            r.command_result(device, id, outcome, detail, now);
        });
    }

    /// Submits a command to a known device; returns its record as of now
    /// (possibly already `rejected`, with the reason in `detail`).
    pub fn submit_command(
        &self,
        device: DeviceId,
        body: CommandBody,
        wait: bool,
        origin: Origin,
        now: Now,
    ) -> Result<CommandRecord, SubmitError> {
        self.with_registry(|r| {
            if r.device(device).is_none() {
                return Err(SubmitError::UnknownDevice(device));
            }
            let id = r.submit(device, body, wait, origin, now);
            r.command(id).cloned().ok_or(SubmitError::Retired(id))
        })
    }

    /// A command's current record (in flight, or recently finished).
    pub fn command(&self, id: CommandId) -> Option<CommandRecord> {
        self.lock().registry.command(id).cloned()
    }

    /// A receiver of every command update from now on (bounded; a
    /// receiver that lags re-reads [`Core::command`]).
    pub fn command_updates(&self) -> broadcast::Receiver<CommandRecord> {
        self.command_updates.subscribe()
    }

    /// Advances time: command timeouts and liveness. Returns the monotonic
    /// time (ms) at which it next has work, if any.
    pub fn tick(&self, now: Now) -> Option<u64> {
        self.with_registry(|r| r.tick(now))
    }

    /// Completes when a change may have brought the next deadline closer
    /// than the one [`Core::tick`] returned (a new device, session or
    /// command); the ticker then ticks again.
    pub async fn deadlines_moved(&self) {
        self.deadlines.notified().await;
    }

    /// The devices a subscription covers (all with `None`), with the stream
    /// position they are consistent with.
    pub fn snapshot(&self, subscription: Option<&Subscription>, now: Now) -> Snapshot {
        let shared = self.lock();
        Snapshot {
            seq: shared.stream.head(),
            devices: views::devices(&shared.state, &shared.registry, subscription, now),
        }
    }

    /// Every device's identity, declared sensors and latest values (for
    /// the MQTT bridge).
    pub fn catalog(&self) -> Vec<views::CatalogDevice> {
        let shared = self.lock();
        views::catalog(&shared.state, &shared.registry)
    }

    /// The sensors of a device, or `None` if the hub does not know it.
    pub fn sensor_catalog(&self, device: DeviceId) -> Option<SensorCatalog> {
        let shared = self.lock();
        let data = shared.state.device(device);
        let entry = shared.registry.device(device);
        if data.is_none() && entry.is_none() {
            return None;
        }
        Some(SensorCatalog {
            declared: entry
                .and_then(|e| e.info.as_ref())
                .map(|i| i.sensors.clone())
                .unwrap_or_default(),
            channels: views::sensor_channels(data, entry),
        })
    }

    /// This run's stream epoch: a resume from another epoch gets a resync.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Sequence number of the newest event (0 before the first).
    pub fn stream_head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Wakes whenever an event is appended.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Up to `max` events from sequence number `from` on, or [`Gone`] if
    /// the stream no longer holds some of them.
    pub fn read_stream(&self, from: u64, max: usize) -> Result<Vec<Arc<Entry>>, Gone> {
        self.lock().stream.read_from(from, max)
    }

    /// Publishes `device_stats` for the devices whose statistics changed
    /// since `published` (which it updates); returns how many.
    pub fn publish_device_stats(
        &self,
        published: &mut HashMap<DeviceId, StatsFingerprint>,
        now: Now,
    ) -> usize {
        let mut shared = self.lock();
        let changed: Vec<DeviceStats> = shared
            .state
            .devices_by_id()
            .into_iter()
            .filter_map(|d| {
                let stats = views::device_stats(d, now);
                let rate = (stats.rate_per_s * 100.0).round();
                let fingerprint = (d.datagrams, if rate > 0.0 { rate as u64 } else { 0 });
                (published.insert(d.id, fingerprint) != Some(fingerprint)).then_some(stats)
            })
            .collect();
        let count = changed.len();
        if count > 0 {
            self.append(&mut shared, Event::DeviceStats(changed));
        }
        count
    }

    /// Every figure for `/metrics` and `/api/hub`, at one moment.
    pub fn stats(&self) -> CoreStats {
        let shared = self.lock();
        let state = &shared.state;
        let per_device = (state.data_device_count() <= self.per_device_max).then(|| {
            state
                .devices_by_id()
                .into_iter()
                .map(|d| (d.id, *d.seq.counts(), d.latency.clone()))
                .collect()
        });
        CoreStats {
            ingest: state.counters().clone(),
            devices: shared.registry.device_count(),
            discovered: shared.registry.discovered_count(),
            registry: shared.registry.counters().clone(),
            device_status: shared.registry.status_counts(),
            control_sessions: shared.registry.sessions(),
            seq_totals: state.seq_totals(),
            latency: state.latency().clone(),
            per_device,
            replay_bytes: shared.stream.bytes(),
            stream_seq: shared.stream.head(),
            session_messages_dropped: self.session_messages_dropped.load(Ordering::Relaxed),
        }
    }

    /// Runs `f` on the registry and applies what it queued, under the lock.
    fn with_registry<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut shared = self.lock();
        let result = f(&mut shared.registry);
        self.apply(&mut shared);
        result
    }

    /// The one place effects are applied, in order, before the lock is
    /// released. Every step is a non-blocking push into a bounded queue.
    fn apply(&self, shared: &mut Shared) {
        if shared.registry.take_deadlines_moved() {
            self.deadlines.notify_one();
        }
        let changed = shared.registry.take_changed();
        if let Some(history) = &self.history {
            history.record_devices(changed);
        }
        for effect in shared.registry.take_effects() {
            match effect {
                Effect::Send { session, id, body } => {
                    self.send_to_session(session, SessionMessage::Command { id, body });
                }
                Effect::CloseSession { session, reason } => {
                    self.send_to_session(session, SessionMessage::Close(reason));
                }
                Effect::Command(record) => {
                    tracing::debug!(
                        command = record.id,
                        device = record.device,
                        state = record.state.name(),
                        "command"
                    );
                    // No receiver (no HTTP request waiting) is fine.
                    let _ = self.command_updates.send(record.clone());
                    self.append(shared, Event::CommandStatus(Box::new(record)));
                }
                Effect::DeviceRemoved { device, at_ms } => {
                    tracing::info!(device, "device removed");
                    shared.state.remove_device(device);
                    self.append(shared, Event::DeviceRemoved { device, at_ms });
                }
                Effect::DeviceStatus {
                    device,
                    status,
                    previous,
                    at_ms,
                } => {
                    log_status(device, status, previous);
                    self.append(
                        shared,
                        Event::DeviceStatus {
                            device,
                            status,
                            previous,
                            at_ms,
                        },
                    );
                }
            }
        }
    }

    fn append(&self, shared: &mut Shared, event: Event) {
        let seq = shared.stream.append(event);
        self.head.send_replace(seq);
    }

    /// Queues a message for a control session without waiting. The queue is
    /// sized for the commands a device may have in flight, so a full queue
    /// means a stuck session: the message is dropped, counted, and the
    /// command times out.
    fn send_to_session(&self, session: SessionId, message: SessionMessage) {
        let sessions = self.lock_sessions();
        if let Some(tx) = sessions.get(&session) {
            if tx.try_send(message).is_err() {
                self.session_messages_dropped
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn lock_sessions(&self) -> MutexGuard<'_, HashMap<SessionId, mpsc::Sender<SessionMessage>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn log_status(device: DeviceId, status: DeviceStatus, previous: Option<DeviceStatus>) {
    tracing::info!(
        device,
        status = status.name(),
        previous = previous.map(DeviceStatus::name),
        "device status"
    );
}

#[cfg(test)]
mod tests;

/// The core's families on `/metrics` (see docs/METRICS.md).
#[derive(Debug)]
pub struct CoreMetrics(pub Arc<Core>);

impl Collector for CoreMetrics {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        let s = self.0.stats();
        let i = &s.ingest;
        counter(
            &mut e,
            "sensor_hub_udp_datagrams_received",
            "Datagrams read from the UDP socket, valid or not.",
            i.datagrams_received,
        )?;
        counter(
            &mut e,
            "sensor_hub_udp_bytes_received",
            "Bytes of the datagrams read from the UDP socket, at their length on the wire.",
            i.bytes_received,
        )?;
        counter(
            &mut e,
            "sensor_hub_udp_datagrams_accepted",
            "Datagrams accepted (duplicates included).",
            i.datagrams_accepted,
        )?;
        counter(
            &mut e,
            "sensor_hub_udp_datagrams_duplicated",
            "Accepted datagrams that repeated one already applied (counted, not applied again).",
            i.datagrams_duplicated,
        )?;
        counter(
            &mut e,
            "sensor_hub_readings_accepted",
            "Sensor readings applied (a duplicate's readings are not counted again).",
            i.readings_accepted,
        )?;
        labeled_counters(
            &mut e,
            (
                "sensor_hub_udp_datagrams_dropped",
                "Datagrams read but not accepted, by reason.",
            ),
            "reason",
            DropReason::iter().map(|r| (r.name(), i.dropped[r.index()])),
        )?;
        gauge(
            &mut e,
            "sensor_hub_devices",
            "Devices tracked, adopted and discovered (at most limits.max_devices + devices.max_discovered).",
            s.devices as u64,
        )?;
        gauge(
            &mut e,
            "sensor_hub_devices_discovered",
            "Discovered devices: seen only in datagrams from unknown ids, not adopted (at most devices.max_discovered).",
            s.discovered as u64,
        )?;
        counter(
            &mut e,
            "sensor_hub_devices_discovered_expired",
            "Discovered devices dropped after devices.discovered_ttl_ms of silence.",
            s.registry.discovered_expired,
        )?;
        counter(
            &mut e,
            "sensor_hub_devices_forgotten",
            "Devices the owner forgot (DELETE /api/devices/{id}, sensor-hub device remove).",
            s.registry.forgotten,
        )?;
        counter(
            &mut e,
            "sensor_hub_control_hellos_too_soon",
            "Hellos refused because the device's session started less than control.min_replace_interval_ms before.",
            s.registry.rejected_too_soon,
        )?;
        labeled_gauges(
            &mut e,
            (
                "sensor_hub_devices_by_status",
                "Devices per liveness status.",
            ),
            "status",
            DeviceStatus::iter().map(|st| (st.name(), s.device_status[st as usize] as u64)),
        )?;
        gauge(
            &mut e,
            "sensor_hub_control_sessions",
            "Open control sessions.",
            s.control_sessions as u64,
        )?;
        counter(
            &mut e,
            "sensor_hub_control_sessions_opened",
            "Control sessions opened (hello accepted).",
            s.registry.sessions_opened,
        )?;
        counter(
            &mut e,
            "sensor_hub_control_sessions_replaced",
            "Control sessions replaced by a newer hello of the same device.",
            s.registry.sessions_replaced,
        )?;
        counter(
            &mut e,
            "sensor_hub_control_unmatched_replies",
            "Command acks or results naming no pending command of that device.",
            s.registry.unmatched_replies,
        )?;
        counter(
            &mut e,
            "sensor_hub_control_outbound_dropped",
            "Messages for a control session dropped because its queue was full.",
            s.session_messages_dropped,
        )?;
        labeled_counters(
            &mut e,
            (
                "sensor_hub_commands_finished",
                "Commands that reached a final state, by state.",
            ),
            "state",
            CommandState::iter()
                .filter(|st| st.is_final())
                .map(|st| (st.name(), s.registry.commands_final[st.index()])),
        )?;
        labeled_counters(
            &mut e,
            (
                "sensor_hub_sequence",
                "Datagram accounting from sequence numbers, over all devices.",
            ),
            "kind",
            seq_series(&s.seq_totals),
        )?;
        histograms(
            &mut e,
            (
                "sensor_hub_latency_ms",
                "Hub receive time minus device time (clock-offset corrected), ms.",
            ),
            [(None, latency_samples(&s.latency))],
        )?;
        if let Some(devices) = &s.per_device {
            let mut family = e.encode_descriptor(
                "sensor_hub_device_sequence",
                "Per-device datagram accounting (while at most metrics.per_device_max devices sent data).",
                None,
                prometheus_client::metrics::MetricType::Counter,
            )?;
            for (device, counts, _) in devices {
                let device = device.to_string();
                for (kind, v) in seq_series(counts) {
                    family
                        .encode_family(&[("device", device.as_str()), ("kind", kind)])?
                        .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                            &v, None,
                        )?;
                }
            }
            histograms(
                &mut e,
                (
                    "sensor_hub_device_latency_ms",
                    "Per-device latency, ms (while at most metrics.per_device_max devices sent data).",
                ),
                devices
                    .iter()
                    .map(|(d, _, h)| (Some(("device", d.to_string())), latency_samples(h))),
            )?;
        }
        gauge(
            &mut e,
            "sensor_hub_stream_seq",
            "Sequence number of the newest event in the WebSocket stream.",
            s.stream_seq,
        )?;
        gauge(
            &mut e,
            "sensor_hub_stream_replay_bytes",
            "Estimated bytes held in the replay buffer (ws.replay_bytes).",
            s.replay_bytes as u64,
        )
    }
}

fn seq_series(c: &SeqCounts) -> [(&'static str, u64); 5] {
    [
        ("received", c.received),
        ("lost", c.lost),
        ("reordered", c.reordered),
        ("duplicated", c.duplicated),
        ("restarts", c.restarts),
    ]
}

/// A latency histogram in the metrics' form.
pub fn latency_samples(h: &LatencyHistogram) -> HistogramSamples {
    let buckets = h
        .buckets()
        .iter()
        .enumerate()
        .map(|(i, &count)| {
            let bound = BOUNDS_MS.get(i).map_or(f64::INFINITY, |&b| b as f64);
            (bound, count)
        })
        .collect();
    HistogramSamples {
        buckets,
        sum: h.sum_ms() as f64,
        count: h.count(),
    }
}
