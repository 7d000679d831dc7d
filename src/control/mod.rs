//! The TCP control channel's shell: the listener with its connection limit
//! ([`run`]), one task per connection ([`session`]), token checks
//! ([`auth`]), and why connections end ([`CloseReason`], counted on
//! `/metrics`). The decisions (sessions, liveness, commands) are the
//! [`Registry`](crate::registry::Registry)'s.

pub mod auth;
pub mod session;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::SinkExt as _;
use sensor_hub_protocol::codec::FrameCodec;
use sensor_hub_protocol::control::{fit, CommandBody, DeviceMessage, HubMessage, RejectReason};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

use crate::hub::Hub;
use crate::metrics::bump;
use crate::registry::CommandId;

/// What the hub asks a session task to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Outbound {
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

/// Why a control connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Wrong or missing token.
    BadToken,
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
    /// The hub shut down.
    Shutdown,
    /// The connection failed.
    IoError,
}

impl CloseReason {
    /// Every reason, in index order.
    pub const ALL: [CloseReason; 14] = [
        CloseReason::PeerClosed,
        CloseReason::BadPreamble,
        CloseReason::UnsupportedVersion,
        CloseReason::HandshakeTimeout,
        CloseReason::BadHello,
        CloseReason::BadToken,
        CloseReason::TooManyDevices,
        CloseReason::TooManyConnections,
        CloseReason::OversizedFrame,
        CloseReason::UndecodableFrame,
        CloseReason::IdleTimeout,
        CloseReason::Replaced,
        CloseReason::Shutdown,
        CloseReason::IoError,
    ];
    /// Number of reasons.
    pub const COUNT: usize = CloseReason::ALL.len();

    /// snake_case name, the metrics label.
    pub fn name(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::BadPreamble => "bad_preamble",
            CloseReason::UnsupportedVersion => "unsupported_version",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::BadHello => "bad_hello",
            CloseReason::BadToken => "bad_token",
            CloseReason::TooManyDevices => "too_many_devices",
            CloseReason::TooManyConnections => "too_many_connections",
            CloseReason::OversizedFrame => "oversized_frame",
            CloseReason::UndecodableFrame => "undecodable_frame",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Replaced => "replaced",
            CloseReason::Shutdown => "shutdown",
            CloseReason::IoError => "io_error",
        }
    }

    /// Position in [`CloseReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The hub side of a framed control connection.
pub type HubFramed = Framed<tokio::net::TcpStream, FrameCodec<DeviceMessage, HubMessage>>;

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

/// Accepts control connections until the hub shuts down.
pub async fn run(hub: Hub, listener: TcpListener) {
    let cancel = hub.cancel_token();
    let open = Arc::new(AtomicUsize::new(0));
    let max = hub.config().control.max_connections;
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
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
        bump(&hub.metrics().control_connections);
        let _ = stream.set_nodelay(true);
        let admitted = open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        let slot = admitted.then(|| ConnectionSlot(open.clone()));
        let session_hub = hub.clone();
        hub.tasks().spawn(async move {
            let reason = match slot {
                Some(_slot) => session::serve(&session_hub, stream, peer).await,
                None => {
                    let mut framed = session::framed(&session_hub, stream);
                    reject(
                        &mut framed,
                        RejectReason::TooManyConnections,
                        "the hub has control.max_connections connections; retry later",
                    )
                    .await;
                    CloseReason::TooManyConnections
                }
            };
            bump(&session_hub.metrics().control_closed[reason.index()]);
            tracing::debug!(%peer, reason = reason.name(), "control connection closed");
        });
    }
}
