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

use std::collections::{HashMap, VecDeque};
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
use crate::outbox::{LinkMode, Outbox, OutboxCounters, Pending};
use crate::registry::{
    CommandId, CommandRecord, CommandState, DeviceStatus, Effect, Origin, Registry, RegistryConfig,
    RegistryCounters, SessionId, TrustConfig,
};
use crate::remote::{Forward, Holding, RemoteFleet, RemoteInfo, SharedEntry, SharedItem};
use crate::state::{
    Decoded, DropReason, HubState, IngestCounters, Ingested, LiveDatagram, SessionAuth,
    WindowConfig,
};
use crate::stream::subscription::Subscription;
use crate::stream::{DeviceStats, Entry, Event, Gone, Stream};
use crate::views::{self, DeviceView};

/// Most devices in one `device_stats` event (a larger set is published
/// as several events in a row).
pub const STATS_PER_EVENT: usize = 64;

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
    /// The numbering `seq` belongs to.
    pub epoch: Arc<str>,
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
    /// Another hub of the cluster holds the device: the command was handed
    /// to it; its statuses come back through the shared stream, marked
    /// with `ticket` in their origin.
    #[error("device {device} is held by another hub; the command was handed to it")]
    Forwarded {
        /// The device.
        device: DeviceId,
        /// The mark of its statuses' origin.
        ticket: u64,
    },
    /// Too many commands wait to be handed to other hubs (the link is
    /// down or slow).
    #[error("commands for devices held by other hubs cannot be handed over now (the cluster link is down or slow); try again")]
    ClusterBusy,
}

/// Commands waiting to be handed to other hubs; beyond it a submission is
/// refused with [`SubmitError::ClusterBusy`].
const FORWARD_QUEUE: usize = 1024;

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
    /// This hub's part in a cluster, if it is in one.
    cluster: Option<ClusterSide>,
}

/// A hub in a cluster: how it is linked to the shared stream, its events
/// waiting to be shared, and the other hubs' devices.
#[derive(Debug)]
struct ClusterSide {
    hub: Arc<str>,
    mode: LinkMode,
    outbox: Outbox,
    remote: RemoteFleet,
    /// The newest shared position read.
    read_position: u64,
    /// Changes of [`LinkMode`] (each starts a new epoch).
    switches: u64,
    /// Commands for devices other hubs hold, waiting to be handed over.
    forwards: VecDeque<Forward>,
    /// Shared entries not delivered because their position was not after
    /// the stream's head (never expected; counted, not silent).
    out_of_order: u64,
}

/// A cluster hub's figures, at one moment.
#[derive(Debug, Clone)]
pub struct ClusterFigures {
    /// This hub's name.
    pub hub: Arc<str>,
    /// Linked to the shared stream, or alone.
    pub mode: LinkMode,
    /// The stream's epoch.
    pub epoch: Arc<str>,
    /// The newest shared position read.
    pub read_position: u64,
    /// Own events waiting to be shared.
    pub outbox_events: usize,
    /// Their estimated bytes.
    pub outbox_bytes: usize,
    /// What was shared, late or never.
    pub outbox: OutboxCounters,
    /// Other hubs' devices tracked.
    pub remote_devices: usize,
    /// Other hubs' devices, by hub.
    pub remote_per_hub: Vec<(Arc<str>, usize)>,
    /// Events about other hubs' devices not tracked (the map was full).
    pub remote_untracked: u64,
    /// Changes between linked and alone.
    pub switches: u64,
    /// This hub's own devices.
    pub local_devices: usize,
    /// Shared entries not delivered: their position was not after the
    /// stream's head.
    pub out_of_order: u64,
}

/// A local epoch: random, so a resume from another run or hub never
/// matches it by chance.
fn new_epoch() -> Arc<str> {
    format!("{:016x}", fastrand::u64(..)).into()
}

/// The hub's state and event stream; share it as `Arc<Core>`.
#[derive(Debug)]
pub struct Core {
    shared: Mutex<Shared>,
    head: watch::Sender<u64>,
    /// The stream's epoch, also kept here (behind a lock of its own) so a
    /// client can check it without taking the core's lock.
    epoch: Mutex<Arc<str>>,
    /// Counts changes of the epoch: a client compares it (one atomic load)
    /// before it looks at the epoch itself.
    epoch_changes: AtomicU64,
    /// Wakes the cluster task when an event waits to be shared.
    outbox_ready: Notify,
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
        let epoch = new_epoch();
        Core {
            shared: Mutex::new(Shared {
                state: HubState::new(windows, config.devices.max_readings_per_s),
                registry,
                stream: Stream::new(config.ws.replay_bytes, epoch.clone()),
                cluster: None,
            }),
            head,
            epoch: Mutex::new(epoch),
            epoch_changes: AtomicU64::new(0),
            outbox_ready: Notify::new(),
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
        self.ingest_batch_received(batch, now, 0)
    }

    /// [`Core::ingest_batch`] of a batch read at `received_us` (µs on the
    /// hub's monotonic clock), which its stream event keeps: the WebSocket
    /// writers measure the hub's share of each reading's latency from it.
    pub fn ingest_batch_received(
        &self,
        batch: &[Received<'_>],
        now: Now,
        received_us: u64,
    ) -> BatchOutcome {
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
            self.append_received(&mut shared, Event::Readings(accepted), received_us);
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
        if let Some(c) = &mut shared.cluster {
            // Held here now, whatever another hub said before.
            c.remote.remove(hello.device_id);
        }
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
        let mut shared = self.lock();
        if shared.registry.device(device).is_none() {
            // Held by another hub of the cluster: hand it over.
            let Some(c) = &mut shared.cluster else {
                return Err(SubmitError::UnknownDevice(device));
            };
            let Some(hub) = c.remote.get(device).map(|d| d.hub.clone()) else {
                return Err(SubmitError::UnknownDevice(device));
            };
            if c.forwards.len() >= FORWARD_QUEUE {
                return Err(SubmitError::ClusterBusy);
            }
            let ticket = fastrand::u64(1..);
            c.forwards.push_back(Forward {
                hub,
                device,
                body,
                wait,
                origin: Origin {
                    ticket: Some(ticket),
                    ..origin
                },
            });
            self.outbox_ready.notify_one();
            return Err(SubmitError::Forwarded { device, ticket });
        }
        let id = shared.registry.submit(device, body, wait, origin, now);
        let record = shared.registry.command(id).cloned();
        self.apply(&mut shared);
        record.ok_or(SubmitError::Retired(id))
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
        let cluster = shared.cluster.as_ref().map(|c| views::ClusterFleet {
            hub: &c.hub,
            remote: &c.remote,
        });
        Snapshot {
            epoch: shared.stream.epoch().clone(),
            seq: shared.stream.head(),
            devices: views::devices(&shared.state, &shared.registry, cluster, subscription, now),
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
            // Another hub's device: its history is kept here too.
            let remote = shared.cluster.as_ref()?.remote.get(device)?;
            let declared = remote
                .info
                .as_ref()
                .map(|i| i.sensors.clone())
                .unwrap_or_default();
            let mut channels: std::collections::BTreeSet<u8> =
                remote.latest.keys().copied().collect();
            channels.extend(declared.iter().map(|s| s.channel));
            return Some(SensorCatalog { declared, channels });
        }
        Some(SensorCatalog {
            declared: entry
                .and_then(|e| e.info.as_ref())
                .map(|i| i.sensors.clone())
                .unwrap_or_default(),
            channels: views::sensor_channels(data, entry),
        })
    }

    /// The stream's epoch: a resume from another epoch gets a resync. A
    /// single hub keeps one for its run; a hub in a cluster shares the
    /// cluster's while linked, and has one of its own while alone.
    pub fn epoch(&self) -> Arc<str> {
        self.epoch.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many times the epoch changed (never for a single hub): a cheap
    /// check before [`Core::epoch`].
    pub fn epoch_changes(&self) -> u64 {
        self.epoch_changes.load(Ordering::Acquire)
    }

    /// Sequence number of the newest event (0 before the first).
    pub fn stream_head(&self) -> u64 {
        *self.head.borrow()
    }

    /// Wakes whenever an event is appended.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Up to `max` events from `from` on of the stream before its last
    /// change of numbering, if `epoch` is that stream's.
    pub fn read_previous(&self, epoch: &Arc<str>, from: u64, max: usize) -> Vec<Arc<Entry>> {
        self.lock().stream.read_previous(epoch, from, max)
    }

    /// If the stream continues `epoch`'s without a gap, the position
    /// before its first event.
    pub fn stream_continues(&self, epoch: &Arc<str>) -> Option<u64> {
        self.lock().stream.continues(epoch)
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
        // In events of at most STATS_PER_EVENT devices: every client's
        // socket writer copies a message whole into its write buffer, and
        // keeps that buffer's size; one message of a thousand devices'
        // statistics (~300 KB) made each of 1,000 clients keep ~300 KB.
        let mut changed = changed.into_iter().peekable();
        while changed.peek().is_some() {
            let part: Vec<DeviceStats> = changed.by_ref().take(STATS_PER_EVENT).collect();
            self.append(&mut shared, Event::DeviceStats(part));
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

    /// Publishes one of this hub's events: into its stream, or, for a hub
    /// linked to a cluster, into the outbox, to reach its browsers (and
    /// every other hub's) through the shared stream. An outbox too full to
    /// take it means the shared stream is not keeping up: the hub goes on
    /// alone rather than lose events.
    fn append(&self, shared: &mut Shared, event: Event) {
        self.append_received(shared, event, 0);
    }

    /// [`Core::append`] of an event read at `received_us` (0: not known).
    /// While linked to a cluster the event reaches the stream through the
    /// shared stream, without it.
    fn append_received(&self, shared: &mut Shared, event: Event, received_us: u64) {
        let linked = match &shared.cluster {
            Some(c) if c.mode == LinkMode::Linked => {
                if c.outbox.fits(&event) {
                    true
                } else {
                    tracing::warn!(
                        "cluster: events are not being shared fast enough; going on alone"
                    );
                    self.go_alone(shared);
                    false
                }
            }
            _ => false,
        };
        match &mut shared.cluster {
            Some(c) if linked => {
                c.outbox.push(Arc::new(event), false);
                self.outbox_ready.notify_one();
            }
            Some(c) => {
                c.outbox.push(Arc::new(event.clone()), true);
                self.outbox_ready.notify_one();
                let seq = shared.stream.append_received(event, received_us);
                self.head.send_replace(seq);
            }
            None => {
                let seq = shared.stream.append_received(event, received_us);
                self.head.send_replace(seq);
            }
        }
    }

    /// Starts a new epoch for the stream at `next_seq`: clients that read
    /// all of the old one go on (`continuous`), or resync.
    fn reset_stream(&self, shared: &mut Shared, epoch: Arc<str>, next_seq: u64, continuous: bool) {
        shared.stream.reset(epoch.clone(), next_seq, continuous);
        *self.epoch.lock().unwrap_or_else(|e| e.into_inner()) = epoch;
        self.epoch_changes.fetch_add(1, Ordering::Release);
        self.head.send_replace(shared.stream.head());
    }

    /// Cut off from the shared stream: a local epoch from the next
    /// position on, and the events still waiting to be shared reach this
    /// hub's browsers now (they are shared later).
    fn go_alone(&self, shared: &mut Shared) {
        let Some(c) = &mut shared.cluster else {
            return;
        };
        if c.mode == LinkMode::Alone {
            return;
        }
        c.mode = LinkMode::Alone;
        c.switches += 1;
        let unseen = c.outbox.take_unseen();
        let next = shared.stream.head() + 1;
        self.reset_stream(shared, new_epoch(), next, true);
        for event in unseen {
            shared.stream.append(Arc::unwrap_or_clone(event));
        }
        self.head.send_replace(shared.stream.head());
    }

    /// Makes this hub a member of a cluster under the name `hub`: until
    /// [`Core::cluster_linked`], it is alone (its events reach its own
    /// browsers at once, and wait to be shared). `outage_bytes` bounds
    /// what waits; `max_remote` the other hubs' devices tracked.
    pub fn join_cluster(&self, hub: Arc<str>, outage_bytes: usize, max_remote: usize) {
        let mut shared = self.lock();
        shared.cluster = Some(ClusterSide {
            hub,
            mode: LinkMode::Alone,
            outbox: Outbox::new(outage_bytes),
            remote: RemoteFleet::new(max_remote),
            read_position: 0,
            switches: 0,
            forwards: VecDeque::new(),
            out_of_order: 0,
        });
    }

    /// Completes when one of this hub's events waits to be shared.
    pub async fn outbox_ready(&self) {
        self.outbox_ready.notified().await;
    }

    /// Up to `max` of the oldest events waiting to be shared.
    pub fn cluster_pending(&self, max: usize) -> Vec<Pending> {
        self.lock()
            .cluster
            .as_ref()
            .map(|c| c.outbox.peek(max))
            .unwrap_or_default()
    }

    /// Commands waiting to be handed to the hubs holding their devices.
    pub fn cluster_take_forwards(&self) -> Vec<Forward> {
        self.lock()
            .cluster
            .as_mut()
            .map(|c| c.forwards.drain(..).collect())
            .unwrap_or_default()
    }

    /// The shared stream holds this run's events up to number `up_to`.
    pub fn cluster_shared(&self, up_to: u64) {
        if let Some(c) = &mut self.lock().cluster {
            c.outbox.confirm(up_to);
        }
    }

    /// The link to the shared stream is lost: go on alone.
    pub fn cluster_lost(&self) {
        let mut shared = self.lock();
        self.go_alone(&mut shared);
    }

    /// The newest shared position read (0: none yet).
    pub fn cluster_read_position(&self) -> u64 {
        self.lock().cluster.as_ref().map_or(0, |c| c.read_position)
    }

    /// Whether the hub is linked to the shared stream.
    pub fn cluster_mode(&self) -> Option<LinkMode> {
        self.lock().cluster.as_ref().map(|c| c.mode)
    }

    /// Linked again (everything shared before `position` was read, and
    /// this hub's waiting events shared): the stream continues in the
    /// cluster's `epoch` after `position`, and clients resync.
    pub fn cluster_linked(&self, epoch: Arc<str>, position: u64) {
        let mut shared = self.lock();
        let Some(c) = &mut shared.cluster else {
            return;
        };
        if c.mode == LinkMode::Linked {
            return;
        }
        c.mode = LinkMode::Linked;
        c.switches += 1;
        c.read_position = position;
        // What waits was seen here already (the hub was alone).
        c.outbox.mark_all_delivered_locally();
        self.reset_stream(&mut shared, epoch, position + 1, true);
    }

    /// A new run reads the shared stream from `position` on (the head when
    /// it first links: what came before is history).
    pub fn cluster_start_reading_at(&self, position: u64) {
        if let Some(c) = &mut self.lock().cluster {
            c.read_position = position;
        }
    }

    /// The shared stream's numbering started again (Redis lost its data):
    /// read from its start.
    pub fn cluster_restart_reading(&self) {
        if let Some(c) = &mut self.lock().cluster {
            c.read_position = 0;
        }
    }

    /// Applies entries read from the shared stream, oldest first: other
    /// hubs' events update their devices (and this hub's history); events
    /// reach this hub's browsers at their shared positions while linked,
    /// or (other hubs' only) at once while alone, catching up. Entries at
    /// or before the newest position read are skipped. Returns how many
    /// other hubs' entries were applied.
    pub fn cluster_receive(&self, entries: Vec<SharedEntry>, up_to: u64, now: Now) -> usize {
        let mut moved: Vec<(Arc<str>, CommandRecord)> = Vec::new();
        let mut shared = self.lock();
        let Shared {
            registry,
            stream,
            cluster,
            ..
        } = &mut *shared;
        let Some(c) = cluster else {
            return 0;
        };
        let mut applied = 0;
        for entry in entries {
            if entry.position <= c.read_position {
                continue;
            }
            c.read_position = entry.position;
            let other_hub = entry.hub != c.hub;
            match entry.item {
                SharedItem::Holdings(holdings) => {
                    if other_hub {
                        applied += 1;
                        for h in holdings {
                            if !held_here(registry, h.device) {
                                c.remote.describe(&entry.hub, h.device, h.info, h.connected);
                            }
                        }
                    }
                }
                SharedItem::Event(event) => {
                    if other_hub {
                        let event = match event {
                            Event::Readings(batch) => {
                                // A device held here is not another hub's.
                                let batch: Vec<LiveDatagram> = batch
                                    .into_iter()
                                    .filter(|d| !held_here(registry, d.device))
                                    .collect();
                                if batch.is_empty() {
                                    continue;
                                }
                                if let Some(history) = &self.history {
                                    // As on their hub: only adopted
                                    // devices' readings are kept (known
                                    // from its holdings).
                                    let adopted = |d: &LiveDatagram| {
                                        c.remote.get(d.device).is_some_and(|r| {
                                            r.info.as_ref().is_some_and(|i| i.adopted)
                                        })
                                    };
                                    if batch.iter().all(adopted) {
                                        history.record(&batch);
                                    } else {
                                        let kept: Vec<LiveDatagram> =
                                            batch.iter().filter(|d| adopted(d)).cloned().collect();
                                        if !kept.is_empty() {
                                            history.record(&kept);
                                        }
                                    }
                                }
                                Event::Readings(batch)
                            }
                            Event::CommandStatus(record) => {
                                // One this hub handed over: its HTTP
                                // request may be waiting.
                                if record.origin.hub.is_none() && record.origin.ticket.is_some() {
                                    let _ = self.command_updates.send((*record).clone());
                                }
                                Event::CommandStatus(record)
                            }
                            other => other,
                        };
                        applied += 1;
                        // A device that left this hub for that one takes
                        // its queued commands along.
                        if let Event::DeviceStatus {
                            device,
                            status: DeviceStatus::Online,
                            ..
                        } = &event
                        {
                            moved.extend(
                                registry
                                    .hand_over_queued(*device, &entry.hub, now)
                                    .into_iter()
                                    .map(|record| (entry.hub.clone(), record)),
                            );
                        }
                        c.remote.apply(&entry.hub, &event);
                        match c.mode {
                            LinkMode::Linked => {
                                if stream.append_at(entry.position, event).is_err() {
                                    c.out_of_order += 1;
                                }
                            }
                            LinkMode::Alone => {
                                stream.append(event);
                            }
                        }
                    } else if c.mode == LinkMode::Linked && !entry.own {
                        // This hub's name, another run (before a restart).
                        if stream.append_at(entry.position, event).is_err() {
                            c.out_of_order += 1;
                        }
                    }
                }
                SharedItem::Own => {
                    if c.mode == LinkMode::Linked {
                        // Unless its browsers saw it while the hub was alone.
                        if let Some(event) = c.outbox.read_back(entry.number) {
                            if stream
                                .append_at(entry.position, Arc::unwrap_or_clone(event))
                                .is_err()
                            {
                                c.out_of_order += 1;
                            }
                        }
                    }
                }
            }
        }
        // Entries that did not decode were read all the same.
        c.read_position = c.read_position.max(up_to);
        for (hub, record) in moved {
            if c.forwards.len() >= FORWARD_QUEUE {
                break;
            }
            c.forwards.push_back(Forward {
                hub,
                device: record.device,
                body: record.body,
                wait: true,
                origin: record.origin,
            });
            self.outbox_ready.notify_one();
        }
        self.head.send_replace(stream.head());
        // The handed-over commands' last statuses here.
        self.apply(&mut shared);
        applied
    }

    /// The shared stream no longer holds the positions between the newest
    /// read and `next` (trimmed while this hub could not read them): the
    /// stream continues at `next`, and clients resync.
    pub fn cluster_gap(&self, next: u64) {
        let mut shared = self.lock();
        let Some(c) = &mut shared.cluster else {
            return;
        };
        if c.mode != LinkMode::Linked || next <= c.read_position + 1 {
            return;
        }
        c.read_position = next - 1;
        c.switches += 1;
        // The same epoch's name, but a new stream: clients see it changed.
        let epoch: Arc<str> = Arc::from(&**shared.stream.epoch());
        self.reset_stream(&mut shared, epoch, next, false);
    }

    /// This hub's devices as it describes them to the others (its leases):
    /// hello, adoption, key, and whether it holds a session.
    pub fn cluster_holdings(&self) -> Vec<Holding> {
        let shared = self.lock();
        let mut ids: Vec<DeviceId> = shared.registry.device_ids().collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(|id| {
                let entry = shared.registry.device(id)?;
                let info = entry.info.as_ref();
                Some(Holding {
                    device: id,
                    info: RemoteInfo {
                        name: info.map(|i| i.name.clone()).unwrap_or_default(),
                        firmware: info.map(|i| i.firmware.clone()).unwrap_or_default(),
                        interval_ms: info.map_or(0, |i| i.interval_ms),
                        sensors: info.map(|i| i.sensors.clone()).unwrap_or_default(),
                        adopted: entry.adopted,
                        keyed: shared.state.is_keyed(id),
                    },
                    connected: entry.session.is_some(),
                })
            })
            .collect()
    }

    /// `hub` is gone (its lease lapsed, and this hub claimed the report):
    /// its devices are offline as of `now`, here and, through the shared
    /// stream, on every hub. Returns them.
    pub fn cluster_hub_lost(&self, hub: &str, now: Now) -> Vec<DeviceId> {
        let mut shared = self.lock();
        let Shared {
            stream, cluster, ..
        } = &mut *shared;
        let Some(c) = cluster else {
            return Vec::new();
        };
        let Some(about) = c
            .remote
            .iter()
            .find(|(_, d)| &*d.hub == hub)
            .map(|(_, d)| d.hub.clone())
        else {
            return Vec::new();
        };
        let went_offline: Vec<(DeviceId, Option<DeviceStatus>)> = {
            let mut ids: Vec<(DeviceId, Option<DeviceStatus>)> = c
                .remote
                .iter()
                .filter(|(_, d)| d.hub == about && d.status != Some(DeviceStatus::Offline))
                .map(|(id, d)| (id, d.status))
                .collect();
            ids.sort_unstable_by_key(|&(id, _)| id);
            ids
        };
        c.remote.hub_lost(hub, now.wall_ms);
        for &(device, previous) in &went_offline {
            log_status(device, DeviceStatus::Offline, previous);
            let event = Event::DeviceStatus {
                device,
                status: DeviceStatus::Offline,
                previous,
                at_ms: now.wall_ms,
            };
            match c.mode {
                LinkMode::Linked => {
                    c.outbox
                        .push_about(Arc::new(event), false, Some(about.clone()));
                }
                LinkMode::Alone => {
                    c.outbox
                        .push_about(Arc::new(event.clone()), true, Some(about.clone()));
                    stream.append(event);
                }
            }
        }
        self.outbox_ready.notify_one();
        self.head.send_replace(stream.head());
        went_offline.into_iter().map(|(id, _)| id).collect()
    }

    /// The hubs other hubs' devices are held by.
    pub fn cluster_remote_hubs(&self) -> Vec<Arc<str>> {
        let shared = self.lock();
        shared
            .cluster
            .as_ref()
            .map(|c| c.remote.per_hub().into_keys().collect())
            .unwrap_or_default()
    }

    /// Cluster figures of a hub that is not in a cluster: all zero.
    pub fn cluster_figures_idle(&self) -> ClusterFigures {
        ClusterFigures {
            hub: "".into(),
            mode: LinkMode::Alone,
            epoch: self.epoch(),
            read_position: 0,
            outbox_events: 0,
            outbox_bytes: 0,
            outbox: OutboxCounters::default(),
            remote_devices: 0,
            remote_per_hub: Vec::new(),
            remote_untracked: 0,
            switches: 0,
            local_devices: 0,
            out_of_order: 0,
        }
    }

    /// The cluster figures, if the hub is in one.
    pub fn cluster_figures(&self) -> Option<ClusterFigures> {
        let shared = self.lock();
        let c = shared.cluster.as_ref()?;
        Some(ClusterFigures {
            hub: c.hub.clone(),
            mode: c.mode,
            epoch: shared.stream.epoch().clone(),
            read_position: c.read_position,
            outbox_events: c.outbox.len(),
            outbox_bytes: c.outbox.bytes(),
            outbox: c.outbox.counters(),
            remote_devices: c.remote.len(),
            remote_per_hub: c.remote.per_hub().into_iter().collect(),
            remote_untracked: c.remote.untracked(),
            switches: c.switches,
            local_devices: shared.registry.device_count(),
            out_of_order: c.out_of_order + c.outbox.counters().skipped_read_back,
        })
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

/// Whether this hub holds a control session with `device`.
fn held_here(registry: &Registry, device: DeviceId) -> bool {
    registry.device(device).is_some_and(|e| e.session.is_some())
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
