//! The shared handle every task of a running hub holds: configuration,
//! the pure state behind one lock, the shell's counters, the broadcast ring
//! of live frames, and the shutdown token and task tracker.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::HubConfig;
use crate::metrics::{render, MetricsSnapshot, ShellMetrics};
use crate::net::{kernel_udp_stats, RecvBuffer};
use crate::state::HubState;
use crate::ws::Frame;

/// Current wall-clock time in Unix milliseconds (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

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
    frames: broadcast::Sender<Frame>,
    started: Instant,
    udp: UdpSocketInfo,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

/// Cheap-to-clone handle to a running hub.
#[derive(Debug, Clone)]
pub struct Hub(Arc<Inner>);

impl Hub {
    /// A hub with empty state.
    pub fn new(config: HubConfig, udp: UdpSocketInfo) -> Hub {
        let (frames, _) = broadcast::channel(config.ws.broadcast_frames);
        Hub(Arc::new(Inner {
            state: Mutex::new(HubState::new(config.limits.max_devices)),
            config,
            metrics: ShellMetrics::default(),
            frames,
            started: Instant::now(),
            udp,
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

    /// The shell's counters.
    pub fn metrics(&self) -> &ShellMetrics {
        &self.0.metrics
    }

    /// A receiver of live frames, starting with the next one published.
    pub fn subscribe_frames(&self) -> broadcast::Receiver<Frame> {
        self.0.frames.subscribe()
    }

    /// Publishes a frame to every subscribed client; `false` if none is.
    pub fn publish(&self, frame: Frame) -> bool {
        self.0.frames.send(frame).is_ok()
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
        let (ingest, devices) = {
            let state = self.lock_state();
            (state.counters().clone(), state.device_count())
        };
        render(&MetricsSnapshot {
            ingest,
            devices,
            shell: self.metrics(),
            kernel: self.0.udp.inode.and_then(kernel_udp_stats),
            udp_recv_buffer_bytes: self.0.udp.recv_buffer.granted(),
            uptime_seconds: self.0.started.elapsed().as_secs_f64(),
        })
    }
}
