//! The TCP control channel's shell: the listener with its connection limit
//! ([`run`]), one task per connection ([`session`]), token checks
//! ([`auth`]), the slowdown of failed hellos and the handshake budget
//! ([`guard`]), and why connections end ([`CloseReason`], counted in its
//! [`ControlMetrics`]). The decisions (sessions, liveness, commands) are the
//! [`Registry`](crate::registry::Registry)'s, reached through the
//! [`Core`]; everything a connection needs is in its [`ControlContext`].

pub mod auth;
pub mod guard;
pub mod session;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::SinkExt as _;
use sensor_hub_protocol::codec::{FrameCodec, WithBody};
use sensor_hub_protocol::control::{fit, DeviceMessage, HubMessage, RejectReason};
use strum::{EnumCount as _, IntoEnumIterator as _};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::ControlConfig;
use crate::core::Core;
use crate::device_file::DeviceDirectory;
use crate::metrics::{
    counter, labeled_counters, Collector, Counter, CounterArray, DescriptorEncoder,
};
use crate::supervisor::TaskResult;
use auth::Tokens;

/// Everything the control listener and its connections need.
#[derive(Debug, Clone)]
pub struct ControlContext {
    /// The hub's state.
    pub core: Arc<Core>,
    /// `[control]`.
    pub config: Arc<ControlConfig>,
    /// Commands a device may have in flight (sizes each session's queue).
    pub max_in_flight: usize,
    /// The device tokens it accepts.
    pub tokens: Arc<Tokens>,
    /// Adopted devices and their keys (the device file).
    pub devices: Arc<DeviceDirectory>,
    /// Failed-hello slowdown and the handshake budget.
    pub guard: Arc<guard::HelloGuard>,
    /// Time.
    pub clock: Clock,
    /// Its counters.
    pub metrics: Arc<ControlMetrics>,
    /// Fires at shutdown.
    pub cancel: CancellationToken,
    /// Tracks connection tasks so shutdown can wait for them.
    pub tasks: TaskTracker,
}

/// The control channel's counters.
#[derive(Debug, Default)]
pub struct ControlMetrics {
    /// Connections accepted.
    pub connections: Counter,
    /// Connections ended, by [`CloseReason::index`].
    pub closed: CounterArray<{ CloseReason::COUNT }>,
    /// Failed hellos not logged (over `control.failure_log_per_minute`).
    pub log_lines_left_out: Counter,
}

impl Collector for ControlMetrics {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> std::fmt::Result {
        counter(
            &mut e,
            "sensor_hub_control_connections",
            "TCP control-channel connections accepted.",
            self.connections.get(),
        )?;
        labeled_counters(
            &mut e,
            (
                "sensor_hub_control_closed",
                "Control connections ended, by reason.",
            ),
            "reason",
            CloseReason::iter().map(|r| (r.name(), self.closed.get(r.index()))),
        )?;
        counter(
            &mut e,
            "sensor_hub_control_failure_log_lines_left_out",
            "Control hellos with a bad token not written to the log (control.failure_log_per_minute).",
            self.log_lines_left_out.get(),
        )
    }
}

/// The collector of shared [`ControlMetrics`].
#[derive(Debug)]
pub struct ControlCollector(pub Arc<ControlMetrics>);

impl Collector for ControlCollector {
    fn encode(&self, e: DescriptorEncoder<'_>) -> std::fmt::Result {
        self.0.encode(e)
    }
}

/// Why a control connection ended (the metrics label is the snake_case
/// name).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::EnumCount, strum::EnumIter, strum::IntoStaticStr,
)]
#[strum(serialize_all = "snake_case")]
pub enum CloseReason {
    /// The device said `Bye` or closed the connection.
    PeerClosed,
    /// The first bytes were not the preamble.
    BadPreamble,
    /// The preamble named another control version.
    UnsupportedVersion,
    /// Preamble and hello did not arrive within `control.handshake_timeout_ms`.
    HandshakeTimeout,
    /// The first frame was not a valid hello.
    BadHello,
    /// Wrong or missing token, or a keyed hello whose proof failed (or
    /// for an id without a key), or the fleet token for a keyed device.
    BadToken,
    /// A hello for a device whose session was replaced moments ago
    /// (`control.min_replace_interval_ms`).
    TooSoon,
    /// A hello from an address still waiting after a bad token
    /// (`control.failure_delay_ms`); its token was not checked.
    Throttled,
    /// Ended before its hello by a newer connection, the handshake budget
    /// (`control.max_handshaking`) being full.
    HandshakeEvicted,
    /// `limits.max_devices` reached.
    TooManyDevices,
    /// `control.max_connections` reached.
    TooManyConnections,
    /// A frame announced more than `control.max_frame_bytes`.
    OversizedFrame,
    /// A frame body was not a valid message (or a second hello).
    UndecodableFrame,
    /// No frame for `control.idle_timeout_ms`.
    IdleTimeout,
    /// A newer session of the same device replaced it.
    Replaced,
    /// The owner forgot the device or changed its key.
    Revoked,
    /// The hub shut down.
    Shutdown,
    /// The connection failed.
    IoError,
}

impl CloseReason {
    /// snake_case name, the metrics label.
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// Position in declaration order (for counters indexed by reason).
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The hub side of a framed control connection (device frames keep their
/// body bytes, which a keyed hello's proof covers).
pub type HubFramed = Framed<tokio::net::TcpStream, FrameCodec<WithBody<DeviceMessage>, HubMessage>>;

/// Sends `Reject` (best effort: the peer may be gone already).
pub async fn reject(framed: &mut HubFramed, reason: RejectReason, detail: &str) {
    let detail = fit(detail);
    let _ = framed.send(HubMessage::Reject { reason, detail }).await;
}

/// One of `control.max_connections`, released when dropped.
#[derive(Debug)]
struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts control connections until `ctx.cancel` fires.
pub async fn run(ctx: ControlContext, listener: Arc<TcpListener>) -> TaskResult {
    let open = Arc::new(AtomicUsize::new(0));
    let next_id = AtomicU64::new(1);
    let max = ctx.config.max_connections;
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a control connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            }
        };
        ctx.metrics.connections.inc();
        let _ = stream.set_nodelay(true);
        let admitted = open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        let slot = admitted.then(|| ConnectionSlot(open.clone()));
        let session_ctx = ctx.clone();
        let id = next_id.fetch_add(1, Ordering::Relaxed);
        ctx.tasks.spawn(async move {
            let reason = match slot {
                Some(_slot) => session::serve(&session_ctx, stream, peer, id).await,
                None => {
                    let mut framed = session::framed(&session_ctx, stream);
                    reject(
                        &mut framed,
                        RejectReason::TooManyConnections,
                        "the hub has control.max_connections connections; retry later",
                    )
                    .await;
                    CloseReason::TooManyConnections
                }
            };
            session_ctx.metrics.closed.inc(reason.index());
            tracing::debug!(%peer, reason = reason.name(), "control connection closed");
        });
    }
}
