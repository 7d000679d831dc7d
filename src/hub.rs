//! The shared handle every task of a running hub holds: configuration,
//! the pure state behind one lock, the shell's counters, the broadcast ring
//! of live frames, and the shutdown token and task tracker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HubConfig;
use crate::control::auth::Tokens;
use crate::control::Outbound;
use crate::dispatch::dispatch;
use crate::history::History;
use crate::metrics::{bump, render, MetricsSnapshot, ShellMetrics};
use crate::net::{kernel_udp_stats, RecvBuffer};
use crate::registry::{CommandRecord, Registry, RegistryConfig, SessionId};
use crate::state::{HubState, WindowConfig};
use crate::stream::{Event, ReplayRing};

/// Current wall-clock time in Unix milliseconds (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Command updates kept for HTTP requests waiting on a result; a waiter
/// that falls behind re-reads the registry.
const COMMAND_UPDATES: usize = 1024;

/// Facts about the UDP socket the metrics need.
#[derive(Debug, Clone, Copy)]
pub struct UdpSocketInfo {
    /// Socket inode, for the kernel's drop counter (Linux).
    pub inode: Option<u64>,
    /// What the kernel granted for SO_RCVBUF.
    pub recv_buffer: RecvBuffer,
}

#[derive(Debug)]
struct Inner {
    config: HubConfig,
    state: Mutex<HubState>,
    metrics: ShellMetrics,
    ring: Mutex<ReplayRing>,
    head: watch::Sender<u64>,
    epoch: String,
    next_client: std::sync::atomic::AtomicU64,
    command_updates: broadcast::Sender<CommandRecord>,
    sessions: Mutex<HashMap<SessionId, tokio::sync::mpsc::Sender<Outbound>>>,
    tokens: Tokens,
    started: Instant,
    udp: UdpSocketInfo,
    history: Option<History>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// Cheap-to-clone handle to a running hub.
#[derive(Debug, Clone)]
pub struct Hub(Arc<Inner>);

impl Hub {
    /// A hub with empty state, keeping history in `history` (none: memory
    /// only).
    pub fn new(config: HubConfig, udp: UdpSocketInfo, history: Option<History>) -> Hub {
        let ring = Mutex::new(ReplayRing::new(config.ws.replay_bytes));
        let (head, _) = watch::channel(0);
        let (command_updates, _) = broadcast::channel(COMMAND_UPDATES);
        let registry = Registry::new(RegistryConfig {
            max_devices: config.limits.max_devices,
            default_interval_ms: config.liveness.default_interval_ms,
            late_after_intervals: config.liveness.late_after_intervals,
            offline_after_intervals: config.liveness.offline_after_intervals,
            command_ttl_ms: config.commands.ttl_ms,
            queue_per_device: config.commands.queue_per_device,
            max_in_flight: config.commands.max_in_flight,
            retain_finished: config.commands.retain_finished,
        });
        // Validated when the configuration was loaded.
        let tokens = Tokens::new(
            &config.control.fleet_token,
            config.device_tokens().unwrap_or_default(),
        );
        Hub(Arc::new(Inner {
            tokens,
            state: Mutex::new(HubState::new(
                config.limits.max_devices,
                WindowConfig {
                    windows_ms: config
                        .aggregation
                        .windows_s
                        .iter()
                        .map(|s| s * 1_000)
                        .collect(),
                    buckets: config.aggregation.buckets_per_window,
                },
                registry,
            )),
            config,
            metrics: ShellMetrics::default(),
            ring,
            head,
            epoch: format!("{:016x}", fastrand::u64(..)),
            next_client: std::sync::atomic::AtomicU64::new(1),
            command_updates,
            sessions: Mutex::new(HashMap::new()),
            started: Instant::now(),
            udp,
            history,
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
        }))
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &HubConfig {
        &self.0.config
    }

    /// Locks the state. A panic elsewhere while holding the lock leaves the
    /// counters consistent (each update is a few plain assignments), so a
    /// poisoned lock is used as is.
    pub fn lock_state(&self) -> MutexGuard<'_, HubState> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the registry at the current time and applies the effects
    /// it queued, in order, before the lock is released (every effect is a
    /// non-blocking send, so ordering is kept without a dispatcher task).
    pub fn control<R>(&self, f: impl FnOnce(&mut Registry, u64) -> R) -> R {
        let now = unix_ms();
        let mut state = self.lock_state();
        let result = f(&mut state.registry, now);
        dispatch(self, &mut state.registry);
        result
    }

    /// Registers the outbound queue of a control session.
    pub fn add_session(&self, session: SessionId, tx: tokio::sync::mpsc::Sender<Outbound>) {
        self.sessions().insert(session, tx);
    }

    /// Forgets a control session's outbound queue.
    pub fn remove_session(&self, session: SessionId) {
        self.sessions().remove(&session);
    }

    /// Queues a message for a control session without waiting. The queue is
    /// sized for the commands a device may have in flight, so a full queue
    /// means a stuck session: the message is dropped, counted, and the
    /// command times out.
    pub fn send_to_session(&self, session: SessionId, message: Outbound) {
        let sender = self.sessions().get(&session).cloned();
        if let Some(tx) = sender {
            if tx.try_send(message).is_err() {
                bump(&self.metrics().control_outbound_dropped);
            }
        }
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<SessionId, tokio::sync::mpsc::Sender<Outbound>>> {
        self.0.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes a command's new state to HTTP requests waiting on it.
    pub fn publish_command(&self, record: CommandRecord) {
        let _ = self.0.command_updates.send(record);
    }

    /// A receiver of every command update from now on.
    pub fn subscribe_commands(&self) -> broadcast::Receiver<CommandRecord> {
        self.0.command_updates.subscribe()
    }

    /// The device tokens the control channel accepts.
    pub fn tokens(&self) -> &Tokens {
        &self.0.tokens
    }

    /// The reading history, unless `storage.enabled` is false.
    pub fn history(&self) -> Option<&History> {
        self.0.history.as_ref()
    }

    /// The shell's counters.
    pub fn metrics(&self) -> &ShellMetrics {
        &self.0.metrics
    }

    /// Appends an event to the stream. Call it while holding the state lock,
    /// right after the change it describes: that keeps snapshots (taken
    /// under the same lock) consistent with the sequence numbers.
    pub fn publish(&self, event: Event) -> u64 {
        let seq = self.ring().push(event);
        self.0.head.send_replace(seq);
        seq
    }

    /// The replay ring.
    pub fn ring(&self) -> MutexGuard<'_, ReplayRing> {
        self.0.ring.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes whenever an event is published.
    pub fn watch_head(&self) -> watch::Receiver<u64> {
        self.0.head.subscribe()
    }

    /// This run's stream epoch: a resume from another epoch gets a resync.
    pub fn epoch(&self) -> &str {
        &self.0.epoch
    }

    /// A fresh WebSocket client id.
    pub fn next_client_id(&self) -> u64 {
        self.0
            .next_client
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Fires when the hub is shutting down.
    pub fn cancel_token(&self) -> CancellationToken {
        self.0.cancel.clone()
    }

    /// Tracks per-connection tasks so shutdown can wait for them.
    pub fn tasks(&self) -> &TaskTracker {
        &self.0.tasks
    }

    /// The Prometheus text of every metric, now.
    pub fn metrics_text(&self) -> String {
        render(&self.metrics_snapshot())
    }

    /// The JSON of `GET /api/hub`: the same figures as `/metrics`.
    pub fn hub_json(&self) -> String {
        crate::metrics::hub_json(&self.metrics_snapshot())
    }

    /// Every figure `/metrics` shows, gathered at one moment.
    pub fn metrics_snapshot(&self) -> MetricsSnapshot<'_> {
        let per_device_max = self.config().metrics.per_device_max;
        let kernel = self.0.udp.inode.and_then(kernel_udp_stats);
        let history = self.history().map(History::stats);
        let state = self.lock_state();
        let per_device = (state.device_count() <= per_device_max).then(|| {
            state
                .devices_by_id()
                .into_iter()
                .map(|d| (d.id, *d.seq.counts(), d.latency.clone()))
                .collect()
        });
        let (replay_bytes, stream_seq) = {
            let ring = self.ring();
            (ring.bytes(), ring.head())
        };
        MetricsSnapshot {
            ingest: state.counters().clone(),
            devices: state.device_count(),
            registry: state.registry.counters().clone(),
            device_status: state.registry.status_counts(),
            control_sessions: state.registry.sessions(),
            seq_totals: state.seq_totals(),
            latency: state.latency().clone(),
            per_device,
            replay_bytes,
            stream_seq,
            shell: self.metrics(),
            kernel,
            udp_recv_buffer_bytes: self.0.udp.recv_buffer.granted(),
            uptime_seconds: self.0.started.elapsed().as_secs_f64(),
            history,
        }
    }
}
